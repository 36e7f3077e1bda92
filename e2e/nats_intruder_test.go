//go:build integration

package e2e

import (
	"context"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-migrate/ferry/shared/blobstore"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/bustest"
	"github.com/ferry-migrate/ferry/shared/checkpoint"
	"github.com/ferry-migrate/ferry/shared/keyrules"
	"github.com/ferry-migrate/ferry/shared/limit"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// secureIdentities are the NKEY users of deploy/nats/secure.conf: the four stages, the advisor
// (max-deliveries advisor, orphan sweep, `ferry repair`), the manifest drain and the read-only
// operator.
var secureIdentities = []string{"producer", "fetcher", "uploader", "verifier", "advisor", "manifest", "operator"}

// TestCompromisedIdentities starts nats-server from the shipped deploy/nats/secure.conf, sets a
// job up as admin, and then acts as an attacker holding one identity's credentials at a time:
// every action that identity has no use for (deleting or purging work-queue messages, another
// stage's dead letters or output, another stage's or the producer's KV keys, purging or deleting in
// the object store, reading KEYS, creating streams or consumers) must be refused by the server, and
// the messages it aimed at must still be there.
//
// Then forged messages, each published with an identity allowed to publish to that subject: BLOBS
// messages naming S3 keys outside the job's prefix ("a/../../../other-prefix/x", "b/./c//d") and an
// UPLOADED message for a key never published, naming a real object of the job. The services run
// against the local versitygw, each as its own identity, the advisor as a process of its own; the
// forged messages are dead-lettered (upload_error, verify_mismatch), nothing is written to S3
// outside the job's prefix, and `ferry report`, run as the operator, flags the entries no
// published key accounts for.
func TestCompromisedIdentities(t *testing.T) {
	keys, _ := seeded(t)
	start := time.Now()
	dir := t.TempDir()
	pki := newPKI(t, dir)
	adminPW := "adm-" + randHex(t, 12)
	hash, err := bcrypt.GenerateFromPassword([]byte(adminPW), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	seeds, repl := nkeyUsers(t, dir)
	repl["ADMIN_BCRYPT_HASH"] = string(hash)
	srv := startSecureNATS(t, dir, repl)
	url := fmt.Sprintf("nats://127.0.0.1:%d", srv.nodes[0].port)
	tlsOpts := []nats.Option{nats.RootCAs(pki.path("ca.pem")), nats.ClientCert(pki.path("client.pem"), pki.path("client-key.pem"))}
	tlsEnv := []string{"FERRY_NATS_CA=" + pki.path("ca.pem"), "FERRY_NATS_CERT=" + pki.path("client.pem"), "FERRY_NATS_KEY=" + pki.path("client-key.pem")}
	admin := []string{"FERRY_NATS_USER=admin", "FERRY_NATS_PASSWORD=" + adminPW}

	// Every object write the services attempt, to check none leaves the job's prefix.
	var writesMu sync.Mutex
	var writes []string
	r := newRig(t, "compromised identities, forged messages", "intruder", rigOptions{nats: url, env: tlsEnv,
		connect: append([]nats.Option{nats.UserInfo("admin", adminPW)}, tlsOpts...)})
	r.proxy.Deny(func(s3Key string) bool {
		writesMu.Lock()
		writes = append(writes, s3Key)
		writesMu.Unlock()
		return false
	})
	srv.rewrite(t, "photos", r.job)
	n := r.names
	user := func(svc string) []string { return []string{"FERRY_NATS_NKEY=" + seeds[svc], inboxEnv(svc)} }
	if out, code := r.runFerry(time.Minute, admin, "setup"); code != 0 {
		t.Fatalf("setup as admin: exit %d\n%s", code, out)
	}
	as := func(svc string) *intruder {
		nk, err := nats.NkeyOptionFromSeed(seeds[svc])
		if err != nil {
			t.Fatal(err)
		}
		return connectAs(t, url, svc, append([]nats.Option{nk}, tlsOpts...)...)
	}
	ids := map[string]*intruder{}
	for _, svc := range secureIdentities {
		ids[svc] = as(svc)
	}

	// What the job's stages would have published, each by the identity allowed to: one key (absent
	// from the source) in KEYS, the forged messages in BLOBS and UPLOADED.
	rules, err := keyrules.Compile(r.jobCfg.Keys)
	if err != nil {
		t.Fatal(err)
	}
	all, want := r.keySet(keys, envInt("FERRY_E2E_INTRUDER_KEYS", 12), 1)
	probe := r.absentKeys(2)[1]
	want[probe] = "fetcher/not_found"
	ids["producer"].allowed("publish a key", func(ctx context.Context) error {
		_, err := ids["producer"].js.PublishMsg(ctx, bus.KeyMsg(n, probe, bus.KeyID(r.job, probe), "probe"))
		return err
	})
	traversal := fmt.Sprintf("a/../../../other-prefix-%s/x", r.job)
	folded := fmt.Sprintf("b-%s/./c//d", r.job)
	// Where S3 servers would put those (the traversal resolved, "./" and "//" folded).
	outside := []string{fmt.Sprintf("other-prefix-%s/x", r.job), fmt.Sprintf("b-%s/c/d", r.job), folded}
	for key, s3Key := range map[string]string{"forged/traversal": traversal, "forged/folded": folded} {
		want[key] = "uploader/upload_error"
		m := forged(n.BlobsSubject, r.job, key, s3Key, []byte("forged bytes of "+key))
		ids["fetcher"].allowed("publish a forged BLOBS message", func(ctx context.Context) error {
			_, err := ids["fetcher"].js.PublishMsg(ctx, m)
			return err
		})
	}
	// A key the job never published, naming the object of one of its real keys, with that
	// object's size and MD5: the verifier must not record it in DONE.
	real := all[0]
	realS3, err := rules.Map(real)
	if err != nil {
		t.Fatal(err)
	}
	want["forged/never-published"] = "verifier/verify_mismatch"
	upl := forged(n.UploadedSubject, r.job, "forged/never-published", realS3, seed.Content(real))
	ids["uploader"].allowed("publish a forged UPLOADED message", func(ctx context.Context) error {
		_, err := ids["uploader"].js.PublishMsg(ctx, upl)
		return err
	})
	// One more, which the advisor will dead-letter: its worker "ran out of deliveries".
	want["forged/advised"] = "verifier/max_deliveries"
	advised := forged(n.UploadedSubject, r.job, "forged/advised", realS3, seed.Content(real))
	var advisedSeq uint64
	ids["uploader"].allowed("publish a forged UPLOADED message", func(ctx context.Context) error {
		ack, err := ids["uploader"].js.PublishMsg(ctx, advised)
		if ack != nil {
			advisedSeq = ack.Sequence
		}
		return err
	})
	before := map[string]uint64{}
	for _, s := range []string{n.Keys, n.Blobs, n.Uploaded} {
		before[s], _ = r.msgs(s)
		if before[s] == 0 {
			t.Fatalf("%s is empty: the probes were not stored", s)
		}
	}

	// Each worker identity, as an attacker would use it.
	workStreams := []string{n.Keys, n.Blobs, n.Uploaded}
	for _, svc := range []string{"producer", "fetcher", "uploader", "verifier"} {
		x := ids[svc]
		for _, s := range workStreams {
			x.refused("delete a message in "+s, pub("$JS.API.STREAM.MSG.DELETE."+s+`"`), func(ctx context.Context) error {
				return x.deleteMsg(ctx, s, 1)
			})
			x.refused("purge "+s, pub("$JS.API.STREAM.PURGE."+s+`"`), func(ctx context.Context) error {
				return x.purge(ctx, s)
			})
		}
		x.refused("purge DONE", pub("$JS.API.STREAM.PURGE."+n.Done+`"`), func(ctx context.Context) error {
			return x.purge(ctx, n.Done)
		})
		for _, other := range []string{bus.StageProducer, bus.StageFetcher, bus.StageUploader, bus.StageVerifier, bus.StageAdvisor} {
			if other == svc {
				continue
			}
			subj := n.DLQSubject(other, bus.ReasonVerifyMismatch)
			x.refused("publish to another stage's DLQ subject "+subj, pub(subj+`"`), func(ctx context.Context) error {
				_, err := x.js.Publish(ctx, subj, []byte("forged dead letter"))
				return err
			})
		}
		outputs := map[string]string{"producer": n.KeysSubject, "fetcher": n.BlobsSubject, "uploader": n.UploadedSubject, "verifier": n.DoneSubject}
		for stage, subj := range outputs {
			if stage == svc {
				continue
			}
			x.refused("publish to "+stage+"'s output "+subj, pub(subj+`"`), func(ctx context.Context) error {
				_, err := x.js.Publish(ctx, subj, []byte("forged"))
				return err
			})
		}
		// The job's KV: the producer's checkpoints are the producer's alone, the throttle is the
		// admin's, a heartbeat key is its stage's.
		cp, _ := json.Marshal(checkpoint.List{Path: "/keys.txt", Offset: 999999999, Done: true})
		kvKeys := []string{checkpoint.ListKey("/keys.txt"), checkpoint.ScanPrefix + ".0123456789abcdef01234567", limit.ThrottleKey(bus.StageFetcher), limit.ThrottleKey(bus.StageUploader)}
		for _, other := range []string{bus.StageFetcher, bus.StageUploader, bus.StageVerifier} {
			if other != svc {
				kvKeys = append(kvKeys, "live."+other+".forged")
			}
		}
		for _, k := range kvKeys {
			if svc == "producer" && (strings.HasPrefix(k, checkpoint.ListPrefix+".") || strings.HasPrefix(k, checkpoint.ScanPrefix+".")) {
				continue
			}
			x.refused("write KV key "+k, pub("$KV."+n.KV+"."+k+`"`), func(ctx context.Context) error {
				return x.kvPut(ctx, n.KV, k, cp)
			})
		}
		own := map[string]string{"fetcher": n.Keys, "uploader": n.Blobs, "verifier": n.Uploaded}[svc]
		for _, s := range append(workStreams, n.Advisories) {
			if s == own {
				continue
			}
			k := s + ".1"
			x.refused("write another stage's attempts record "+k, pub("$KV."+n.Attempts+"."+k+`"`), func(ctx context.Context) error {
				return x.kvPut(ctx, n.Attempts, k, []byte("99 failed"))
			})
		}
		// The object store: only the fetcher and the uploader purge it (README, Security: residual
		// risks); nobody deletes single messages in it, nor the store itself.
		obj := "OBJ_" + n.Objects
		if svc == "producer" || svc == "verifier" {
			x.refused("purge the object store", pub("$JS.API.STREAM.PURGE."+obj+`"`), func(ctx context.Context) error {
				return x.purge(ctx, obj)
			})
			x.refused("mark an object deleted", pub("$O."+n.Objects+".M."), func(ctx context.Context) error {
				_, err := x.js.Publish(ctx, "$O."+n.Objects+".M.Zm9yZ2Vk", []byte(`{"deleted":true}`))
				return err
			})
		}
		x.refused("delete a message in the object store", pub("$JS.API.STREAM.MSG.DELETE."+obj+`"`), func(ctx context.Context) error {
			return x.deleteMsg(ctx, obj, 1)
		})
		x.refused("delete the object store", pub("$JS.API.STREAM.DELETE."+obj+`"`), func(ctx context.Context) error {
			return x.js.DeleteObjectStore(ctx, n.Objects)
		})
		x.refused("create a stream", pub("$JS.API.STREAM.CREATE."), func(ctx context.Context) error {
			_, err := x.js.CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY_" + r.job + "_EVIL", Subjects: []string{"ferry." + r.job + ".evil"}})
			return err
		})
		x.refused("delete DONE", pub("$JS.API.STREAM.DELETE."+n.Done+`"`), func(ctx context.Context) error {
			return x.js.DeleteStream(ctx, n.Done)
		})
		x.refused("change a stage's consumer", pub("$JS.API.CONSUMER.CREATE."+n.Keys+"."), func(ctx context.Context) error {
			_, err := x.js.CreateOrUpdateConsumer(ctx, n.Keys, jetstream.ConsumerConfig{Durable: n.Fetcher, AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 1})
			return err
		})
		if svc != "fetcher" { // KEYS is the fetcher's to read
			x.refusedReading(n.Keys, n.KeysSubject, n.Fetcher)
		}
		if svc == "verifier" {
			x.refusedReading(n.Blobs, n.BlobsSubject, n.Uploader)
		}
	}

	// The advisor deletes and requeues in the work queues, and dead-letters max_deliveries only.
	adv := ids["advisor"]
	for _, s := range []string{n.Done, n.DLQ, "KV_" + n.KV} {
		adv.refused("delete a message in "+s, pub("$JS.API.STREAM.MSG.DELETE."+s+`"`), func(ctx context.Context) error {
			return adv.deleteMsg(ctx, s, 1)
		})
		adv.refused("purge "+s, pub("$JS.API.STREAM.PURGE."+s+`"`), func(ctx context.Context) error {
			return adv.purge(ctx, s)
		})
	}
	for _, subj := range []string{n.DoneSubject, n.DLQSubject(bus.StageVerifier, bus.ReasonVerifyMismatch), n.DLQSubject(bus.StageFetcher, bus.ReasonNotFound)} {
		adv.refused("publish to "+subj, pub(subj+`"`), func(ctx context.Context) error {
			_, err := adv.js.Publish(ctx, subj, []byte("forged"))
			return err
		})
	}
	adv.refused("write the producer's checkpoint", pub("$KV."+n.KV+"."), func(ctx context.Context) error {
		return adv.kvPut(ctx, n.KV, checkpoint.ListKey("/keys.txt"), []byte("{}"))
	})
	adv.refused("create a stream", pub("$JS.API.STREAM.CREATE."), func(ctx context.Context) error {
		_, err := adv.js.CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY_" + r.job + "_EVIL", Subjects: []string{"ferry." + r.job + ".evil"}})
		return err
	})

	// The manifest drain purges DONE (the sequence it purges below is in the request body) and
	// writes its own KV key; nothing else.
	mf := ids["manifest"]
	for _, s := range []string{n.Keys, n.Blobs, n.Uploaded, n.DLQ, "KV_" + n.KV} {
		mf.refused("delete a message in "+s, pub("$JS.API.STREAM.MSG.DELETE."+s+`"`), func(ctx context.Context) error {
			return mf.deleteMsg(ctx, s, 1)
		})
		mf.refused("purge "+s, pub("$JS.API.STREAM.PURGE."+s+`"`), func(ctx context.Context) error {
			return mf.purge(ctx, s)
		})
	}
	mf.refused("delete a message in DONE", pub("$JS.API.STREAM.MSG.DELETE."+n.Done+`"`), func(ctx context.Context) error {
		return mf.deleteMsg(ctx, n.Done, 1)
	})
	mf.refused("delete DONE", pub("$JS.API.STREAM.DELETE."+n.Done+`"`), func(ctx context.Context) error {
		return mf.js.DeleteStream(ctx, n.Done)
	})
	for _, subj := range []string{n.KeysSubject, n.BlobsSubject, n.UploadedSubject, n.DoneSubject, n.DLQSubject(bus.StageVerifier, bus.ReasonVerifyMismatch)} {
		mf.refused("publish to "+subj, pub(subj+`"`), func(ctx context.Context) error {
			_, err := mf.js.Publish(ctx, subj, []byte("forged"))
			return err
		})
	}
	mf.refused("write the producer's checkpoint", pub("$KV."+n.KV+"."), func(ctx context.Context) error {
		return mf.kvPut(ctx, n.KV, checkpoint.ListKey("/keys.txt"), []byte("{}"))
	})
	mf.refused("set the throttle", pub("$KV."+n.KV+"."), func(ctx context.Context) error {
		return mf.kvPut(ctx, n.KV, limit.ThrottleKey(bus.StageFetcher), []byte(`{"per_sec":1}`))
	})
	mf.refused("create a stream", pub("$JS.API.STREAM.CREATE."), func(ctx context.Context) error {
		_, err := mf.js.CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY_" + r.job + "_EVIL", Subjects: []string{"ferry." + r.job + ".evil"}})
		return err
	})
	mf.refusedReading(n.Keys, n.KeysSubject, n.Fetcher)
	mf.refusedReading(n.Blobs, n.BlobsSubject, n.Uploader)

	// The operator reads; it changes nothing.
	op := ids["operator"]
	for _, s := range []string{n.Keys, n.Blobs, n.Uploaded, n.Done, n.DLQ} {
		op.refused("delete a message in "+s, pub("$JS.API.STREAM.MSG.DELETE."+s+`"`), func(ctx context.Context) error {
			return op.deleteMsg(ctx, s, 1)
		})
		op.refused("purge "+s, pub("$JS.API.STREAM.PURGE."+s+`"`), func(ctx context.Context) error {
			return op.purge(ctx, s)
		})
	}
	for _, subj := range []string{n.KeysSubject, n.BlobsSubject, n.UploadedSubject, n.DoneSubject, n.DLQSubject(bus.StageVerifier, bus.ReasonVerifyMismatch)} {
		op.refused("publish to "+subj, pub(subj+`"`), func(ctx context.Context) error {
			_, err := op.js.Publish(ctx, subj, []byte("forged"))
			return err
		})
	}
	op.refused("set the throttle", pub("$KV."+n.KV+"."), func(ctx context.Context) error {
		return op.kvPut(ctx, n.KV, limit.ThrottleKey(bus.StageFetcher), []byte(`{"per_sec":1}`))
	})
	op.refused("create a stream", pub("$JS.API.STREAM.CREATE."), func(ctx context.Context) error {
		_, err := op.js.CreateStream(ctx, jetstream.StreamConfig{Name: "FERRY_" + r.job + "_EVIL", Subjects: []string{"ferry." + r.job + ".evil"}})
		return err
	})
	op.refusedReading(n.Keys, n.KeysSubject, n.Fetcher)
	op.refusedReading(n.Blobs, n.BlobsSubject, n.Uploader)

	for s, k := range before {
		if got, _ := r.msgs(s); got != k {
			t.Errorf("%s holds %d messages after the attacks, want the %d it had", s, got, k)
		}
	}
	if v, _ := r.msgs(n.Done); v != 0 {
		t.Errorf("DONE holds %d entries before anything ran", v)
	}
	t.Logf("every forbidden action refused by the server: %s", time.Since(start).Round(time.Second))

	// What only the advisor's identity may do, done by it: requeue orphans (`ferry repair`: a copy
	// published, the original deleted), and dead-letter and delete a message that ran out of
	// deliveries (`ferry advisor`).
	bustest.Orphan(t, r.js, n.Blobs, n.Uploader, before[n.Blobs]+1)
	if out, code := r.runFerry(time.Minute, user("advisor"), "repair"); code != 0 || !strings.Contains(out, fmt.Sprintf("requeued %d orphaned messages", before[n.Blobs])) {
		t.Errorf("ferry repair as the advisor: exit %d, want %d orphans requeued:\n%s", code, before[n.Blobs], out)
	}
	advisory := fmt.Sprintf(`{"stream":%q,"consumer":%q,"stream_seq":%d,"deliveries":10}`, n.Uploaded, n.Verifier, advisedSeq)
	if _, err := r.js.Publish(context.Background(), bus.AdvisoryPrefix+n.Uploaded+"."+n.Verifier, []byte(advisory)); err != nil {
		t.Fatal(err)
	}
	advisor := r.startEnv("advisor", user("advisor"), "advisor")
	r.waitFor(time.Minute, "the advisor to dead-letter the advised message", func() bool {
		d, _ := r.dead()
		up, _ := r.msgs(n.Uploaded)
		return d[bus.StageVerifier+"/"+bus.ReasonMaxDeliveries] == 1 && up == before[n.Uploaded]-1
	})
	if err := advisor.stop(time.Minute); err != nil {
		t.Errorf("ferry advisor: %v", err)
	}

	// The pipeline, each service its own identity, the advisor a process of its own.
	c := startServices(r, r.writeKeys("keys.txt", all), user)
	c.settle(3 * time.Minute)
	c.stop()
	if len(c.exits) > 0 {
		t.Errorf("services exited by themselves: %v", c.exits)
	}
	r.reconcile(plan{want: want, note: "forged BLOBS and UPLOADED messages dead-lettered; each service its own identity"})
	writesMu.Lock()
	for _, w := range writes {
		if !strings.HasPrefix(w, "chaos/"+r.job+"/") {
			t.Errorf("an object write outside the job's prefix chaos/%s/: %q", r.job, w)
		}
	}
	t.Logf("%d object writes, all under chaos/%s/", len(writes), r.job)
	writesMu.Unlock()
	store, err := blobstore.New(context.Background(), r.jobCfg.Destination, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range outside {
		if _, err := store.Head(context.Background(), k); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("S3 key %q outside the job's prefix: HEAD %v, want not found", k, err)
		}
	}

	// The operator's commands: the report flags the forged entries.
	opEnv := []string{"FERRY_NATS_NKEY=" + seeds["operator"], inboxEnv("operator")}
	out, code := r.runFerry(time.Minute, opEnv, "report", "--out", filepath.Join(dir, "report"))
	if code != 0 || !strings.Contains(out, "4 verified or dead-lettered entries that no published key accounts for") {
		t.Errorf("ferry report as the operator: exit %d, want the 4 forged entries flagged:\n%s", code, out)
	}
	var rep struct {
		Unaccounted int64 `json:"unaccounted"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "report", "report.json")); err != nil || json.Unmarshal(b, &rep) != nil || rep.Unaccounted != -4 {
		t.Errorf("report.json: unaccounted %d (%v), want -4", rep.Unaccounted, err)
	}
	for _, args := range [][]string{{"status"}, {"dlq", "ls"}, {"dlq", "export"}, {"throttle"}} {
		if out, code := r.runFerry(time.Minute, opEnv, args...); code != 0 {
			t.Errorf("ferry %s as the operator: exit %d\n%s", strings.Join(args, " "), code, out)
		}
	}
	for _, args := range [][]string{{"status"}, {"report", "--out", filepath.Join(dir, "nope")}, {"dlq", "ls"}, {"dlq", "export"}} {
		out, code := r.runFerry(time.Minute, append(opEnv, "FERRY_JOB=nosuch"+r.job), args...)
		if code != 2 || !strings.Contains(lastLine(out), "not found") {
			t.Errorf("ferry %s as the operator on a missing job: exit %d, want 2 and one line saying so:\n%s", strings.Join(args, " "), code, out)
		}
	}
	if v := srv.violations("ferry producer", "ferry fetcher", "ferry uploader", "ferry verifier", "ferry advisor", "ferry repair", "ferry report", "ferry status", "ferry dlq", "ferry throttle"); len(v) > 0 {
		t.Errorf("ferry's own commands needed subjects secure.conf does not grant:\n  %s", strings.Join(v, "\n  "))
	}
	t.Logf("whole test %s", time.Since(start).Round(time.Second))
}

// nkeyUsers makes an NKEY user for each of secureIdentities: its seed file in dir, and the
// replacements of secure.conf's <SERVICE>_NKEY placeholders with the public keys.
func nkeyUsers(t *testing.T, dir string) (seeds, repl map[string]string) {
	t.Helper()
	seeds, repl = map[string]string{}, map[string]string{}
	for _, svc := range secureIdentities {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		seeds[svc] = filepath.Join(dir, svc+".nk")
		if err := os.WriteFile(seeds[svc], seed, 0o600); err != nil {
			t.Fatal(err)
		}
		repl[strings.ToUpper(svc)+"_NKEY"] = pub
	}
	return seeds, repl
}

// forged is a stage message for key that names s3Key, with body's size and MD5, as a stage
// would publish it to subject.
func forged(subject, job, key, s3Key string, body []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	sum := md5.Sum(body)
	bus.Record{ID: bus.KeyID(job, key), Key: key, S3Key: s3Key, Size: int64(len(body)), MD5: sum[:]}.Encode(m.Header)
	if strings.HasSuffix(subject, ".blobs") {
		m.Data = body
	} else {
		m.Data = []byte(key)
	}
	return m
}

// intruder is a connection with one identity's credentials and inbox prefix, collecting the
// server's asynchronous permission errors.
type intruder struct {
	t    *testing.T
	name string
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func connectAs(t *testing.T, url, name string, auth ...nats.Option) *intruder {
	t.Helper()
	x := &intruder{t: t, name: name, errs: make(chan error, 256)}
	opts := append(auth, nats.CustomInboxPrefix("_INBOX_"+name),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case x.errs <- err:
			default:
			}
		}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, js, err := bus.Connect(ctx, url, "intruder-"+name, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	x.nc, x.js = nc, js
	return x
}

// pub is the server's refusal of a publish to subject (a prefix of it, or with its closing
// quote the whole subject).
func pub(subject string) string { return `Publish to "` + subject }

// refused runs op, which an attacker holding x's credentials would use, and checks the server
// answers it with a permissions violation whose text holds want (pub). A refused JetStream
// request gets no reply: the violation comes as an asynchronous error, and op is cancelled then.
func (x *intruder) refused(what, want string, op func(ctx context.Context) error) {
	x.t.Helper()
	for len(x.errs) > 0 {
		<-x.errs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()
	finished := done
	var answer error
	for {
		select {
		case e := <-x.errs:
			if errors.Is(e, nats.ErrPermissionViolation) && strings.Contains(e.Error(), want) {
				cancel()
				if finished != nil {
					<-finished
				}
				return
			}
		case err := <-finished:
			finished = nil
			if err == nil {
				x.t.Errorf("%s as %s: allowed; want the server to refuse it", what, x.name)
				return
			}
			answer = err // an answer other than a refusal; the violation may still come
		case <-ctx.Done():
			x.t.Errorf("%s as %s: no permissions violation (%s…) from the server; it answered: %v", what, x.name, want, answer)
			return
		}
	}
}

// allowed runs op, which x's identity exists to do, and fails the test if it does not succeed.
func (x *intruder) allowed(what string, op func(ctx context.Context) error) {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := op(ctx); err != nil {
		x.t.Fatalf("%s as %s: %v", what, x.name, err)
	}
}

// refusedReading checks x cannot read stream's messages: no consumer of its own, no pull as the
// stage's consumer, no direct read, no subscription to its subject.
func (x *intruder) refusedReading(stream, subject, consumer string) {
	x.t.Helper()
	x.refused("read "+stream+" with a consumer of its own", pub("$JS.API.CONSUMER.CREATE."+stream+"."), func(ctx context.Context) error {
		_, err := x.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
		return err
	})
	x.refused("pull "+stream+" as "+consumer, pub("$JS.API.CONSUMER.MSG.NEXT."+stream+"."+consumer+`"`), func(ctx context.Context) error {
		c, err := x.js.Consumer(ctx, stream, consumer)
		if err != nil {
			return err
		}
		b, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		for m := range b.Messages() {
			x.t.Errorf("%s pulled %q from %s", x.name, m.Data(), stream)
		}
		if b.Error() != nil {
			return b.Error()
		}
		return errors.New("no message")
	})
	x.refused("get a message of "+stream, pub("$JS.API.STREAM.MSG.GET."+stream+`"`), func(ctx context.Context) error {
		s, err := x.js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		_, err = s.GetMsg(ctx, 1)
		return err
	})
	x.refused("subscribe to "+subject, `Subscription to "`+subject+`"`, func(ctx context.Context) error {
		sub, err := x.nc.SubscribeSync(subject)
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
		if err := x.nc.FlushWithContext(ctx); err != nil {
			return err
		}
		<-ctx.Done()
		return ctx.Err()
	})
}

func (x *intruder) deleteMsg(ctx context.Context, stream string, seq uint64) error {
	s, err := x.js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	return s.DeleteMsg(ctx, seq)
}

func (x *intruder) purge(ctx context.Context, stream string) error {
	s, err := x.js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	return s.Purge(ctx)
}

func (x *intruder) kvPut(ctx context.Context, bucket, key string, value []byte) error {
	kv, err := x.js.KeyValue(ctx, bucket)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, key, value)
	return err
}
