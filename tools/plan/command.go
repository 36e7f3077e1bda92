package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/bytesize"

	"github.com/ferry-migrate/ferry/shared/config"
)

// Command is `ferry plan`.
func Command() *cli.Command {
	in := DefaultInput()
	var keys, size string
	var asJSON bool
	var fromBench cli.StringSlice
	return &cli.Command{
		Name:  "plan",
		Usage: "work out the processes, NATS cluster, Cassandra read rate and S3 request cost of a migration before it starts (connects to nothing)",
		Flags: append(in.flags(&keys, &size, &asJSON),
			&cli.StringSliceFlag{Name: "from-bench", Destination: &fromBench, Usage: "a ferry bench source or dest --json result (`FILE`, repeatable): the source's mean blob size when --mean-size is not given, and the requests in flight each dependency needs at the peak"}),
		Action: func(c *cli.Context) error {
			var results []benchResult
			var errs []error
			for _, f := range fromBench.Value() {
				r, err := readBench(f)
				if err != nil {
					return config.Invalid(err)
				}
				results = append(results, r)
			}
			var err error
			if in.Keys, err = ParseCount(keys); err != nil {
				errs = append(errs, fmt.Errorf("--keys: %w", err))
			}
			if in.MeanSize, err = meanSize(size, results); err != nil {
				errs = append(errs, err)
			}
			if err := errors.Join(errs...); err != nil {
				return config.Invalid(err)
			}
			p, err := Make(in)
			if err != nil {
				return config.Invalid(err)
			}
			if len(results) > 0 {
				m, err := measure(p, results)
				if err != nil {
					return config.Invalid(err)
				}
				p.Measured = &m
			}
			if asJSON {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(p)
			}
			return p.WriteText(c.App.Writer)
		},
	}
}

func (in *Input) flags(keys, size *string, asJSON *bool) []cli.Flag {
	const rates, nats, s3 = "per-core rates", "NATS", "S3"
	return []cli.Flag{
		&cli.StringFlag{Name: "keys", Destination: keys, Usage: "keys to migrate: 150000000000 or 150e9"},
		&cli.StringFlag{Name: "mean-size", Destination: size, Usage: "mean blob size in bytes, or with a unit: 30KiB, 1.5MiB, 2GiB (also kB, MB, GB)"},
		&cli.Float64Flag{Name: "days", Destination: &in.Days, Usage: "days the migration may take"},
		&cli.Float64Flag{Name: "headroom", Value: in.Headroom, Destination: &in.Headroom, Usage: "peak over mean rate that processes, partitions and servers are sized for (the seed system: 10,000 peak over 4,300 mean)"},
		&cli.BoolFlag{Name: "json", Destination: asJSON, Usage: "print the plan as JSON"},

		&cli.Float64Flag{Name: "fetcher-rate", Value: in.FetcherRate, Destination: &in.FetcherRate, Usage: "files/s a fetcher does per core (the defaults: make bench on 2026-12-07)", Category: rates},
		&cli.Float64Flag{Name: "uploader-rate", Value: in.UploaderRate, Destination: &in.UploaderRate, Usage: "files/s an uploader does per core", Category: rates},
		&cli.Float64Flag{Name: "verifier-rate", Value: in.VerifierRate, Destination: &in.VerifierRate, Usage: "files/s a verifier does per core", Category: rates},
		&cli.Float64Flag{Name: "cores-per-process", Value: in.CoresPerProcess, Destination: &in.CoresPerProcess, Usage: "cores each fetcher, uploader and verifier process gets", Category: rates},
		&cli.Float64Flag{Name: "broker-cpu", Value: in.BrokerCPU, Destination: &in.BrokerCPU, Usage: "nats-server CPU seconds per 1,000 files, per replica (every write fsynced)", Category: rates},

		&cli.IntFlag{Name: "replicas", Value: in.Replicas, Destination: &in.Replicas, Usage: "stream replicas (1, 3 or 5): each multiplies the bytes stored", Category: nats},
		&cli.Float64Flag{Name: "leader-mbps", Value: in.LeaderMBps, Destination: &in.LeaderMBps, Usage: "BLOBS MB/s one stream leader carries at most (a leader sends R times what it takes in)", Category: nats},
		&cli.Float64Flag{Name: "leader-msgs", Value: in.LeaderMsgs, Destination: &in.LeaderMsgs, Usage: "messages/s one stream leader takes at most", Category: nats},
		&cli.Float64Flag{Name: "nats-node-cores", Value: in.NodeCores, Destination: &in.NodeCores, Usage: "cores of one NATS server", Category: nats},
		&cli.Float64Flag{Name: "record-bytes", Value: in.RecordBytes, Destination: &in.RecordBytes, Usage: "bytes of a KEYS, UPLOADED or DONE message as stored (key, headers, overhead)", Category: nats},
		categorized(bytesize.Flag("blobs-max-bytes", in.BlobsMaxBytes, "", &in.BlobsMaxBytes, "byte cap of each BLOBS stream (as ferry setup)"), nats),
		&cli.Int64Flag{Name: "high-water", Value: in.HighWater, Destination: &in.HighWater, Usage: "KEYS backlog the producer keeps at most (its --high-water)", Category: nats},
		&cli.DurationFlag{Name: "done-drain", Value: in.DoneDrain, Destination: &in.DoneDrain, Usage: "time DONE holds verified keys before a drain writes them to a manifest", Category: nats},
		&cli.DurationFlag{Name: "ack-wait", Value: in.AckWait, Destination: &in.AckWait, Usage: "consumers' ack wait (as ferry setup)", Category: nats},
		&cli.DurationFlag{Name: "dedupe-window", Value: in.Dedupe, Destination: &in.Dedupe, Usage: "Nats-Msg-Id duplicate window (as ferry setup; longer than --ack-wait)", Category: nats},

		categorized(bytesize.Flag("inline-limit", in.InlineLimit, "", &in.InlineLimit, "the fetcher's --inline-limit: larger blobs go through the object store and get a HEAD before the PUT"), s3),
		categorized(bytesize.Flag("multipart-threshold", in.PartSize, "", &in.PartSize, "the uploader's --multipart-threshold: larger blobs are uploaded in parts of this size"), s3),
		&cli.BoolFlag{Name: "skip-existing", Destination: &in.SkipExisting, Usage: "the uploader runs with --skip-existing (a HEAD before every PUT)", Category: s3},
		&cli.Float64Flag{Name: "deep-sample", Value: in.DeepSample, Destination: &in.DeepSample, Usage: "the verifier's --deep-sample: share of objects read back in full (one GET each)", Category: s3},
		&cli.IntFlag{Name: "listings", Value: in.Listings, Destination: &in.Listings, Usage: "full bucket listings (a prune lists once, its proof included; ferry diff --bucket once)", Category: s3},
		&cli.Float64Flag{Name: "put-price", Value: in.Prices.PutPer1000, Destination: &in.Prices.PutPer1000, Usage: "USD per 1,000 PUT, COPY, POST or LIST requests (S3 Standard, us-east-1, 2026-12-07)", Category: s3},
		&cli.Float64Flag{Name: "get-price", Value: in.Prices.GetPer1000, Destination: &in.Prices.GetPer1000, Usage: "USD per 1,000 GET or HEAD requests", Category: s3},
		&cli.Float64Flag{Name: "storage-price", Value: in.Prices.StorageGBMonth, Destination: &in.Prices.StorageGBMonth, Usage: "USD per GB-month stored (first 50 TB; 0.021 above 500 TB)", Category: s3},
	}
}

// meanSize is --mean-size, or else the mean size of the blobs a bench source result found.
func meanSize(flag string, results []benchResult) (float64, error) {
	if flag != "" {
		n, err := ParseSize(flag)
		if err != nil {
			return 0, fmt.Errorf("--mean-size: %w", err)
		}
		return n, nil
	}
	for _, r := range results {
		if r.source != nil {
			if n := sourceMeanSize(r.source); n > 0 {
				return n, nil
			}
			return 0, fmt.Errorf("--mean-size: required: the bench source result %s found no blob to take a size from", r.file)
		}
	}
	return 0, errors.New("--mean-size: required (e.g. 30KiB), or a ferry bench source result given with --from-bench")
}

// ParseCount reads a key count: an integer (150000000000) or a number in e-notation (150e9,
// 1.5e11). It must be positive and whole.
func ParseCount(s string) (float64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, errors.New("a key count is required, e.g. 150e9")
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(t, "xXpP_") {
		return 0, fmt.Errorf("%q is not a count: want an integer or e-notation, e.g. 150000000000 or 150e9", s)
	}
	if f < 1 || f != math.Trunc(f) {
		return 0, fmt.Errorf("%q: must be a whole number of keys, at least 1", s)
	}
	return f, nil
}

var units = []struct {
	suffix string
	mult   float64
}{
	// Longest suffixes first, so "KiB" is not read as "B".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"b", 1},
}

func categorized(f *cli.GenericFlag, category string) *cli.GenericFlag {
	f.Category = category
	return f
}

// ParseSize reads a byte size: "30720", "30KiB", "1.5MiB", "2GiB" (binary units KiB, MiB, GiB,
// TiB; decimal kB, MB, GB, TB; case-insensitive). It must be at least 1 byte and at most 5 TiB,
// S3's largest object.
func ParseSize(s string) (float64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	if t == "" {
		return 0, fmt.Errorf("%q: no number; want bytes such as 30720, 30KiB or 1.5MiB", s)
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(t, "xXpP_") {
		return 0, fmt.Errorf("%q is not a size: want bytes such as 30720, 30KiB or 1.5MiB", s)
	}
	n := f * mult
	if n < 1 || n > 5<<40 {
		return 0, fmt.Errorf("%q: must be 1 byte to 5TiB", s)
	}
	return n, nil
}

// WriteText writes the plan as the table `ferry plan` prints.
func (p Plan) WriteText(w io.Writer) error {
	in, r, pr, n, d, c, s := p.Input, p.Rate, p.Processes, p.NATS, p.Dedupe, p.Cassandra, p.S3
	var b strings.Builder
	f := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	f("%s keys of %s (%s) in %g days; sized for a peak of %g × the mean\n", count(in.Keys), binary(in.MeanSize), binary(r.TotalBytes), in.Days, in.Headroom)
	f("(rates in 10^3 units: MB/s, GB/s; disk and memory in 2^10 units: GiB, TiB)\n\n")

	f("pace\n")
	f("  files/s              %s mean, %s peak\n", count(r.FilesPerSec), count(r.PeakFilesSec))
	f("  bytes/s              %s mean, %s peak\n\n", decimal(r.BytesPerSec), decimal(r.PeakBytesSec))

	f("processes at the peak (%g core each)    files/s a core   cores   processes\n", pr.CoresPerProcess)
	for _, st := range []struct {
		name string
		s    Stage
	}{{"fetcher", pr.Fetcher}, {"uploader", pr.Uploader}, {"verifier", pr.Verifier}} {
		f("  %-38s %14s %7.1f %11d\n", st.name, count(st.s.RatePerCore), st.s.Cores, st.s.Processes)
	}
	f("  %-38s %14s %7.1f %11d\n\n", "total", "", pr.Cores, pr.Fetcher.Processes+pr.Uploader.Processes+pr.Verifier.Processes)

	f("NATS (R%d)\n", n.Replicas)
	f("  partitions           %d streams a stage: BLOBS %s at %g MB/s a leader: %d; %s msgs/s at %s a leader: %d\n",
		n.Partitions, decimal(n.BlobsBytesPerSec), in.LeaderMBps, n.PartitionsForBytes,
		count(r.PeakFilesSec), count(in.LeaderMsgs), n.PartitionsForMsgs)
	f("  servers              %d: at least R (%d), one BLOBS leader each (%d), CPU %.0f cores at %g a server (%d)\n",
		n.Nodes, n.Replicas, n.Partitions, n.CPUCores, in.NodeCores, int(math.Ceil(n.CPUCores/in.NodeCores)))
	f("  disk writes          %s, all replicas; %s a server\n", decimal(n.ReplicatedPerSec), decimal(n.WritesPerNode))
	f("  disk                 %s: BLOBS %s (%d × %s cap × R%d), DONE %s (%s between drains), KEYS %s (high-water %s); %s a server\n",
		binary(n.Disk), binary(n.BlobsDisk), n.Partitions, binary(float64(in.BlobsMaxBytes)), n.Replicas,
		binary(n.DoneDisk), duration(in.DoneDrain), binary(n.KeysDisk), count(float64(in.HighWater)), binary(n.DiskPerNode))
	f("  DONE without a drain %s (every key kept)\n", binary(n.DoneNoDrain))
	if n.ObjectStoreUse {
		f("  note                 the mean blob is above --inline-limit: blobs travel through the object store, one stream, not partitioned\n")
	}
	f("\n")

	f("dedupe windows (~%d bytes an id, %d streams, every replica)\n", DedupeIDBytes, DedupeStreams)
	f("  --dedupe-window %-5s %s ids a stream, %s; %s a server\n", duration(d.Window), count(d.IDsPerStream), binary(d.Bytes), binary(d.BytesPerNode))
	f("  recommended          --dedupe-window %s (--ack-wait %s plus a minute): %s\n\n", duration(d.Recommended), duration(in.AckWait), binary(d.RecommendBytes))

	f("Cassandra (one read a file)\n")
	f("  reads/s              %s mean, %s peak\n", count(c.ReadsPerSec), count(c.PeakReadsPerSec))
	f("  bytes/s              %s mean, %s peak\n\n", decimal(c.BytesPerSec), decimal(c.PeakBytesPerSec))

	f("S3 requests and cost (list prices, USD: PUT/COPY/POST/LIST %s, GET/HEAD %s per 1,000; storage %s per GB-month;\n",
		price(s.Prices.PutPer1000), price(s.Prices.GetPer1000), price(s.Prices.StorageGBMonth))
	f("  S3 Standard us-east-1 as of 2026-12-07; set --put-price, --get-price, --storage-price for yours)\n")
	put := "a conditional PUT"
	if s.Multipart {
		put = "create, parts, complete"
	}
	head := "the verifier's"
	if s.HeadPerKey > 1 {
		head = "the uploader's first, the verifier's"
	}
	row := func(name, n, why, cost string) { f("  %-6s %19s  %-48s %12s\n", name, n, why, cost) }
	row("PUT", count(s.Puts), fmt.Sprintf("%g a key: %s", s.PutPerKey, put), money(s.PutCost))
	row("HEAD", count(s.Heads), fmt.Sprintf("%g a key: %s", s.HeadPerKey, head), money(s.HeadCost))
	row("LIST", count(s.Lists), fmt.Sprintf("1 a 1,000 keys, --listings %d", in.Listings), money(s.ListCost))
	row("GET", count(s.Gets), fmt.Sprintf("--deep-sample %g", in.DeepSample), money(s.GetCost))
	row("total", "", "requests", money(s.RequestCost))
	row("stored", count(s.StorageGB)+" GB", "a month", money(s.StorageMonthly))
	if m := p.Measured; m != nil {
		f("\nmeasured (--from-bench; requests in flight at the peak = the peak rate × the measured mean latency)\n")
		if s := m.Source; s != nil {
			f("  Cassandra            %s reads/s from %s at concurrency %d, %.1f ms mean; the peak is %.1f× that: %s reads in flight (%s)\n",
				count(s.ReadsPerSec), s.Target, s.Concurrency, s.MeanLatencyMS, s.PeakOverRate, count(s.InFlight), s.File)
		}
		if d := m.Dest; d != nil {
			f("  S3 PUT               %s/s of %s at concurrency %d, %.1f ms mean; the peak needs %s/s: %s in flight (%s)\n",
				count(d.PutsPerSec), binary(float64(d.Size)), d.Concurrency, d.PutLatencyMS, count(d.PeakPuts), count(d.PutsInFlight), d.File)
			if d.HeadsPerSec > 0 {
				f("  S3 HEAD              %s/s, %.1f ms mean; the peak needs %s/s: %s in flight\n",
					count(d.HeadsPerSec), d.HeadLatencyMS, count(d.PeakHeads), count(d.HeadsInFlight))
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// count writes a number rounded to a whole, with thousands separators.
func count(v float64) string {
	s := strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// decimal writes a rate in bytes/s with SI units, as networks and S3 quote them.
func decimal(v float64) string {
	for _, u := range []struct {
		unit string
		div  float64
	}{{"TB/s", 1e12}, {"GB/s", 1e9}, {"MB/s", 1e6}, {"kB/s", 1e3}} {
		if v >= u.div {
			return strconv.FormatFloat(v/u.div, 'f', 2, 64) + " " + u.unit
		}
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + " B/s"
}

// binary writes a size with binary units, as disks and memory are sized.
func binary(v float64) string {
	for _, u := range []struct {
		unit string
		div  float64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v >= u.div {
			return strconv.FormatFloat(v/u.div, 'f', 1, 64) + " " + u.unit
		}
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + " B"
}

// money writes US dollars: whole dollars from $1,000, cents below, more digits for a price.
func money(v float64) string {
	switch {
	case v >= 1000:
		return "$" + count(v)
	case v >= 0.01 || v == 0:
		return "$" + strconv.FormatFloat(v, 'f', 2, 64)
	}
	return "$" + strconv.FormatFloat(v, 'f', -1, 64)
}

// price writes a list price as it is quoted: $0.0004.
func price(v float64) string { return "$" + strconv.FormatFloat(v, 'f', -1, 64) }

// duration writes 3m0s as 3m and 1h0m0s as 1h.
func duration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
