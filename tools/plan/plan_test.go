package plan

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/tools/bench"
)

// input is the default input for keys of size bytes in days.
func input(keys, size, days float64) Input {
	in := DefaultInput()
	in.Keys, in.MeanSize, in.Days = keys, size, days
	return in
}

func near(got, want float64) bool { return math.Abs(got-want) <= 1e-6*math.Max(1, math.Abs(want)) }

func TestMake(t *testing.T) {
	seed := input(150e9, 30<<10, 40) // the target: ten times the seed system
	msgBound := input(150e9, 1<<10, 40)
	oneCore := input(8.64e6, 1000, 1) // 100 files/s
	oneCore.FetcherRate, oneCore.UploaderRate, oneCore.VerifierRate, oneCore.Headroom = 100, 50, 100, 1
	twoCores := oneCore
	twoCores.CoresPerProcess = 2
	twoCores.UploaderRate = 10 // 10 cores
	r1 := seed
	r1.Replicas = 1
	cases := []struct {
		name  string
		in    Input
		check func(t *testing.T, p Plan)
	}{
		{"150e9 keys of 30 KiB in 40 days", seed, func(t *testing.T, p Plan) {
			if want := 150e9 / (40 * 86400); !near(p.Rate.FilesPerSec, want) || math.Round(p.Rate.FilesPerSec) != 43403 {
				t.Errorf("files/s %f, want %f (~43,403)", p.Rate.FilesPerSec, want)
			}
			if !near(p.Rate.PeakBytesSec, 2e9) { // 43,403 × 30,720 × 1.5
				t.Errorf("peak bytes/s %f, want 2e9", p.Rate.PeakBytesSec)
			}
			if p.NATS.PartitionsForBytes != 5 || p.NATS.PartitionsForMsgs != 2 || p.NATS.Partitions != 5 {
				t.Errorf("partitions %d (bytes %d, msgs %d), want 5 (5, 2)", p.NATS.Partitions, p.NATS.PartitionsForBytes, p.NATS.PartitionsForMsgs)
			}
			if p.Processes.Uploader.Processes != int(math.Ceil(p.Rate.PeakFilesSec/DefaultUploaderRate)) {
				t.Errorf("uploaders %d", p.Processes.Uploader.Processes)
			}
			// 65,104 ids/s × 180 s, 200 bytes an id, 4 streams, 3 replicas.
			if !near(p.Dedupe.IDsPerStream, 11_718_750) || !near(p.Dedupe.Bytes, 11_718_750*200*4*3) {
				t.Errorf("dedupe %f ids, %f bytes", p.Dedupe.IDsPerStream, p.Dedupe.Bytes)
			}
			if p.Dedupe.Recommended != 2*time.Minute || !near(p.Dedupe.RecommendBytes, p.Dedupe.Bytes*2/3) {
				t.Errorf("recommended %s, %f bytes", p.Dedupe.Recommended, p.Dedupe.RecommendBytes)
			}
			if !near(p.NATS.BlobsDisk, 5*(1<<30)*3) || !near(p.NATS.DoneNoDrain, 150e9*400*3) {
				t.Errorf("BLOBS disk %f, DONE without drain %f", p.NATS.BlobsDisk, p.NATS.DoneNoDrain)
			}
			if !near(p.Cassandra.PeakReadsPerSec, p.Rate.PeakFilesSec) || !near(p.Cassandra.BytesPerSec, p.Rate.BytesPerSec) {
				t.Errorf("Cassandra %+v", p.Cassandra)
			}
			if p.NATS.Nodes < p.NATS.Partitions || p.NATS.Nodes < 3 {
				t.Errorf("%d servers for %d partitions at R3", p.NATS.Nodes, p.NATS.Partitions)
			}
		}},
		{"R1 stores a third", r1, func(t *testing.T, p Plan) {
			if !near(p.NATS.BlobsDisk, 5*(1<<30)) || !near(p.Dedupe.Bytes, 11_718_750*200*4) {
				t.Errorf("R1: BLOBS disk %f, dedupe %f", p.NATS.BlobsDisk, p.Dedupe.Bytes)
			}
		}},
		{"small blobs: partitions for the message rate", msgBound, func(t *testing.T, p Plan) {
			if p.NATS.PartitionsForBytes != 1 || p.NATS.Partitions != 2 {
				t.Errorf("partitions %d (bytes %d), want 2 (1)", p.NATS.Partitions, p.NATS.PartitionsForBytes)
			}
		}},
		{"processes round up", oneCore, func(t *testing.T, p Plan) {
			if !near(p.Rate.FilesPerSec, 100) || p.Processes.Fetcher.Processes != 1 || p.Processes.Uploader.Processes != 2 || p.Processes.Verifier.Processes != 1 {
				t.Errorf("%f files/s, processes %+v", p.Rate.FilesPerSec, p.Processes)
			}
			if p.NATS.Nodes != 3 || p.NATS.Partitions != 1 {
				t.Errorf("%d servers, %d partitions, want 3, 1", p.NATS.Nodes, p.NATS.Partitions)
			}
		}},
		{"cores per process", twoCores, func(t *testing.T, p Plan) {
			if !near(p.Processes.Uploader.Cores, 10) || p.Processes.Uploader.Processes != 5 {
				t.Errorf("uploader %+v, want 10 cores in 5 processes", p.Processes.Uploader)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Make(c.in)
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, p)
		})
	}
}

func TestRequestsPerKey(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		name       string
		size       float64
		skip       bool
		puts, head float64
		multipart  bool
	}{
		{"30 KiB: one conditional PUT, the verifier's HEAD", 30 << 10, false, 1, 1, false},
		{"--skip-existing: a HEAD first", 30 << 10, true, 1, 2, false},
		{"at the inline limit: inline", mib, false, 1, 1, false},
		{"above the inline limit: the object store, a HEAD first", mib + 1, false, 1, 2, false},
		{"at the part size: single", 16 * mib, false, 1, 2, false},
		{"a byte above: two parts, create and complete", 16*mib + 1, false, 4, 2, true},
		{"100 MiB: 7 parts", 100 * mib, false, 9, 2, true},
		// 5 TiB would be 327,680 parts of 16 MiB: the part size grows to 5 TiB / 10,000.
		{"5 TiB: 10,000 parts", 5 << 40, false, 10_002, 2, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			puts, heads, multi := RequestsPerKey(c.size, DefaultInlineLimit, DefaultPartSize, c.skip)
			if puts != c.puts || heads != c.head || multi != c.multipart {
				t.Errorf("got %g PUTs, %g HEADs, multipart %v; want %g, %g, %v", puts, heads, multi, c.puts, c.head, c.multipart)
			}
		})
	}
}

func TestS3Cost(t *testing.T) {
	million := input(1e6, 30<<10, 1)
	deep := million
	deep.DeepSample, deep.Listings = 0.01, 3
	big := input(1e6, 100<<20, 1) // 9 PUT-class requests and 2 HEADs a key
	own := million
	own.Prices = Prices{PutPer1000: 0.01, GetPer1000: 0.001, StorageGBMonth: 0.01}
	cases := []struct {
		name                          string
		in                            Input
		put, head, get, list, storage float64
	}{
		// 1,000,000 PUTs at $0.005 a 1,000; 1,000,000 HEADs at $0.0004; 1,000 LISTs.
		{"defaults", million, 5, 0.4, 0, 0.005, 1e6 * (30 << 10) / (1 << 30) * 0.023},
		{"deep sample and listings", deep, 5, 0.4, 10_000 * 0.0004 / 1000, 3 * 0.005, 1e6 * (30 << 10) / (1 << 30) * 0.023},
		{"multipart", big, 9 * 5, 2 * 0.4, 0, 0.005, 1e6 * 100 / 1024 * 0.023},
		{"own prices", own, 10, 1, 0, 0.01, 1e6 * (30 << 10) / (1 << 30) * 0.01},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Make(c.in)
			if err != nil {
				t.Fatal(err)
			}
			s := p.S3
			if !near(s.PutCost, c.put) || !near(s.HeadCost, c.head) || !near(s.GetCost, c.get) || !near(s.ListCost, c.list) || !near(s.StorageMonthly, c.storage) {
				t.Errorf("costs PUT %g HEAD %g GET %g LIST %g storage %g; want %g %g %g %g %g",
					s.PutCost, s.HeadCost, s.GetCost, s.ListCost, s.StorageMonthly, c.put, c.head, c.get, c.list, c.storage)
			}
			if !near(s.RequestCost, s.PutCost+s.HeadCost+s.GetCost+s.ListCost) {
				t.Errorf("request cost %g is not the sum", s.RequestCost)
			}
		})
	}
}

func TestParse(t *testing.T) {
	counts := []struct {
		in      string
		want    float64
		errPart string
	}{
		{"150e9", 150e9, ""},
		{"150000000000", 150e9, ""},
		{" 1.5e11 ", 150e9, ""},
		{"", 0, "required"},
		{"150G", 0, "not a count"},
		{"0x10", 0, "not a count"},
		{"1_000", 0, "not a count"},
		{"1e400", 0, "not a count"},
		{"1.5", 0, "whole number"},
		{"-3", 0, "whole number"},
		{"0", 0, "whole number"},
	}
	for _, c := range counts {
		got, err := ParseCount(c.in)
		if c.errPart == "" && (err != nil || got != c.want) {
			t.Errorf("ParseCount(%q) = %g, %v; want %g", c.in, got, err, c.want)
		}
		if c.errPart != "" && (err == nil || !strings.Contains(err.Error(), c.errPart)) {
			t.Errorf("ParseCount(%q): error %v, want one saying %q", c.in, err, c.errPart)
		}
	}
	sizes := []struct {
		in      string
		want    float64
		errPart string
	}{
		{"30KiB", 30 << 10, ""},
		{"30 kib", 30 << 10, ""},
		{"1.5MiB", 1.5 * (1 << 20), ""},
		{"2GiB", 2 << 30, ""},
		{"100kB", 100e3, ""},
		{"30720", 30720, ""},
		{"512B", 512, ""},
		{"KiB", 0, "no number"},
		{"30XB", 0, "not a size"},
		{"thirty", 0, "not a size"},
		{"0", 0, "1 byte to 5TiB"},
		{"6TiB", 0, "1 byte to 5TiB"},
	}
	for _, c := range sizes {
		got, err := ParseSize(c.in)
		if c.errPart == "" && (err != nil || got != c.want) {
			t.Errorf("ParseSize(%q) = %g, %v; want %g", c.in, got, err, c.want)
		}
		if c.errPart != "" && (err == nil || !strings.Contains(err.Error(), c.errPart)) {
			t.Errorf("ParseSize(%q): error %v, want one saying %q", c.in, err, c.errPart)
		}
	}
}

func TestValidate(t *testing.T) {
	mod := func(f func(*Input)) Input {
		in := input(1e6, 1000, 1)
		f(&in)
		return in
	}
	cases := []struct {
		name    string
		in      Input
		errPart string
	}{
		{"no days", mod(func(in *Input) { in.Days = 0 }), "--days 0: must be a positive number"},
		{"window within the ack wait", mod(func(in *Input) { in.Dedupe = in.AckWait }), "--dedupe-window 1m0s: must be longer than --ack-wait"},
		{"R2", mod(func(in *Input) { in.Replicas = 2 }), "--replicas 2: must be 1, 3 or 5"},
		{"headroom below 1", mod(func(in *Input) { in.Headroom = 0.5 }), "--headroom 0.5"},
		{"deep sample above 1", mod(func(in *Input) { in.DeepSample = 2 }), "--deep-sample 2"},
		{"a negative price", mod(func(in *Input) { in.Prices.PutPer1000 = -1 }), "prices must not be negative"},
		{"small parts", mod(func(in *Input) { in.PartSize = 1 << 20 }), "--multipart-threshold at least 5 MiB"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Make(c.in)
			if err == nil || !strings.Contains(err.Error(), c.errPart) {
				t.Errorf("error %v, want one saying %q", err, c.errPart)
			}
		})
	}
}

// run runs `ferry plan args…` and returns what it printed.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := &cli.App{Name: "ferry", Writer: &out, ErrWriter: &out, Commands: []*cli.Command{Command()}}
	err := app.Run(append([]string{"ferry", "plan"}, args...))
	return out.String(), err
}

func TestCommand(t *testing.T) {
	out, err := run(t, "--keys", "150e9", "--mean-size", "30KiB", "--days", "40")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"43,403 mean, 65,104 peak", "1.33 GB/s mean, 2.00 GB/s peak", "5 streams a stage",
		"$750,000", "$60,000", "$810,750", "--dedupe-window 2m", "S3 Standard us-east-1 as of 2026-12-07"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, err = run(t, "--keys", "1e6", "--mean-size", "1MiB", "--days", "1", "--json", "--deep-sample", "0.5")
	if err != nil {
		t.Fatal(err)
	}
	var p Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if p.Rate.Keys != 1e6 || p.S3.Gets != 5e5 || p.NATS.Replicas != 3 {
		t.Errorf("--json: %+v", p)
	}

	for _, c := range []struct {
		args    []string
		errPart string
	}{
		{[]string{"--keys", "150G", "--mean-size", "30KiB", "--days", "40"}, `--keys: "150G" is not a count`},
		{[]string{"--keys", "150e9", "--mean-size", "30 KB/s", "--days", "40"}, `--mean-size: "30 KB/s" is not a size`},
		{[]string{"--keys", "150e9", "--mean-size", "30KiB", "--days", "40", "--dedupe-window", "30s"}, "--dedupe-window 30s"},
	} {
		_, err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.errPart) || !config.IsInvalid(err) {
			t.Errorf("%v: error %v, want a usage error saying %q", c.args, err, c.errPart)
		}
	}
}

// benchFile writes a ferry bench result as `--json` does and returns its path.
func benchFile(t *testing.T, name string, report any) string {
	t.Helper()
	b, err := json.Marshal(report)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFromBench(t *testing.T) {
	source := benchFile(t, "source.json", bench.SourceReport{Concurrency: 64, Targets: []bench.TargetResult{
		{Target: "down", Unmeasurable: "no route"},
		// The mean size is over every target's blobs: (40,000 + 20,000) / 2,000 = 30 bytes.
		{Target: "dc1", Reads: 1000, Found: 1000, Bytes: 40_000, ReadsPerSec: 500, Latency: bench.Latency{Mean: 20 * time.Millisecond}},
		{Target: "dc2", Reads: 1000, Found: 1000, Bytes: 20_000, ReadsPerSec: 250},
	}})
	dest := benchFile(t, "dest.json", bench.DestReport{Bucket: "b", Concurrency: 32, Sizes: []bench.SizeResult{
		{Size: 16 << 10, Put: bench.OpResult{FilesPerSec: 400, Latency: bench.Latency{Mean: 80 * time.Millisecond}},
			Head: &bench.OpResult{FilesPerSec: 2000, Latency: bench.Latency{Mean: 10 * time.Millisecond}}},
		{Size: 256 << 10, Put: bench.OpResult{FilesPerSec: 100}},
	}})
	neither := benchFile(t, "other.json", map[string]int{"keys": 1})
	base := []string{"--keys", "8.64e6", "--days", "1", "--headroom", "1", "--json"} // 100 files/s

	out, err := run(t, append(base, "--from-bench", source, "--from-bench", dest)...)
	if err != nil {
		t.Fatal(err)
	}
	var p Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	if p.Rate.MeanSize != 30 {
		t.Errorf("mean size %g, want 30 (the source result's blobs)", p.Rate.MeanSize)
	}
	s, d := p.Measured.Source, p.Measured.Dest
	if s == nil || s.Target != "dc1" || s.ReadsPerSec != 500 || !near(s.PeakOverRate, 0.2) || !near(s.InFlight, 2) {
		t.Errorf("source %+v, want dc1 at 500 reads/s, 0.2×, 2 in flight (100/s × 20 ms)", s)
	}
	if d == nil || d.Size != 16<<10 || !near(d.PeakPuts, 100) || !near(d.PutsInFlight, 8) || !near(d.PeakHeads, 100) || !near(d.HeadsInFlight, 1) {
		t.Errorf("dest %+v, want 16 KiB, 100 PUTs/s and 8 in flight, 100 HEADs/s and 1", d)
	}

	out, err = run(t, "--keys", "8.64e6", "--days", "1", "--mean-size", "1KiB", "--from-bench", dest)
	if err != nil || !strings.Contains(out, "S3 PUT               400/s of 16.0 KiB at concurrency 32") {
		t.Errorf("text with a dest result: %v\n%s", err, out)
	}

	for _, c := range []struct {
		args    []string
		errPart string
	}{
		{[]string{"--keys", "1e6", "--days", "1"}, "--mean-size: required"},
		{[]string{"--keys", "1e6", "--days", "1", "--from-bench", dest}, "--mean-size: required"},
		{[]string{"--keys", "1e6", "--days", "1", "--from-bench", neither}, "neither a ferry bench source nor a ferry bench dest result"},
		{[]string{"--keys", "1e6", "--days", "1", "--from-bench", source, "--from-bench", source}, "two ferry bench source results"},
		{[]string{"--keys", "1e6", "--days", "1", "--from-bench", filepath.Join(t.TempDir(), "none.json")}, "no such file"},
	} {
		_, err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.errPart) || !config.IsInvalid(err) {
			t.Errorf("%v: error %v, want a usage error saying %q", c.args, err, c.errPart)
		}
	}
}
