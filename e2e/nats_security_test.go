//go:build integration

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-migrate/ferry/shared/bus"
)

// TestNATSSecurity runs a migration through a nats-server started from deploy/nats/secure.conf:
// TLS with client certificates, each service its own NKEY user with only its stage's subjects,
// `ferry setup` as the admin user with a password. Then: the producer's user cannot publish to
// BLOBS nor pull as the fetcher; a wrong password, a certificate of another CA and no certificate
// are refused with a clear error; no secret appears in any output; and the services needed no
// subject the config does not grant (no permissions violation in the server log).
func TestNATSSecurity(t *testing.T) {
	keys, _ := seeded(t)
	start := time.Now()
	dir := t.TempDir()
	pki := newPKI(t, dir)

	adminPW := "adm-" + randHex(t, 12)
	hash, err := bcrypt.GenerateFromPassword([]byte(adminPW), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{adminPW, pki.keyPEM(t, "client-key.pem"), pki.keyPEM(t, "server-key.pem")}
	seeds, repl := nkeyUsers(t, dir) // service -> seed file, and the public keys for the config
	repl["ADMIN_BCRYPT_HASH"] = string(hash)
	for _, f := range seeds {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, string(b))
	}

	// The example config, for this job, these files and free ports.
	srv := startSecureNATS(t, dir, repl)
	url := fmt.Sprintf("nats://127.0.0.1:%d", srv.nodes[0].port)
	tlsEnv := []string{"FERRY_NATS_CA=" + pki.path("ca.pem"), "FERRY_NATS_CERT=" + pki.path("client.pem"), "FERRY_NATS_KEY=" + pki.path("client-key.pem")}
	admin := []string{"FERRY_NATS_USER=admin", "FERRY_NATS_PASSWORD=" + adminPW}
	adminConn := []nats.Option{nats.UserInfo("admin", adminPW), nats.RootCAs(pki.path("ca.pem")), nats.ClientCert(pki.path("client.pem"), pki.path("client-key.pem"))}

	r := newRig(t, "NATS TLS + per-service users", "secure", rigOptions{nats: url, env: tlsEnv, connect: adminConn})
	srv.rewrite(t, "photos", r.job) // the config was written for the job name only newRig knows
	all, want := r.keySet(keys, envInt("FERRY_E2E_SECURE_KEYS", 150), 5)

	user := func(svc string) []string { return []string{"FERRY_NATS_NKEY=" + seeds[svc], inboxEnv(svc)} }
	setupAsAdmin(r, user("producer"), admin)
	c := startServices(r, r.writeKeys("keys.txt", all), user)
	c.settle(3 * time.Minute)
	// The throttle (KV watch) and status as admin, the password from a file this time.
	pwFile := filepath.Join(dir, "admin.pw")
	if err := os.WriteFile(pwFile, []byte(adminPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var outputs []string
	for _, args := range [][]string{{"throttle", "--read-rate", "500"}, {"status"}, {"dlq", "ls"}} {
		out, code := r.runFerry(time.Minute, []string{"FERRY_NATS_USER=admin", "FERRY_NATS_PASSWORD_FILE=" + pwFile}, args...)
		if code != 0 {
			t.Errorf("ferry %s as admin: exit %d\n%s", args[0], code, out)
		}
		outputs = append(outputs, out)
	}
	time.Sleep(2 * time.Second) // the running fetcher sees the throttle (KV watch) under its permissions
	c.stop()
	if len(c.exits) > 0 {
		t.Errorf("services exited by themselves: %v", c.exits)
	}
	r.reconcile(plan{want: want, note: "each service its own NKEY user, TLS with client certificates"})
	// The manifest drain as its own user: DONE into segments in S3, then DONE purged.
	verified, _ := r.msgs(r.names.Done)
	out, code := r.runFerry(time.Minute, user("manifest"), "manifest", "--once", "--min-age", "0s")
	outputs = append(outputs, out)
	if left := r.held(r.names.Done); code != 0 || verified == 0 || left != 0 || !strings.Contains(out, fmt.Sprintf("in all %d entries", verified)) {
		t.Errorf("ferry manifest --once as the manifest user: exit %d, DONE %d → %d:\n%s", code, verified, left, out)
	}
	if v := srv.violations("ferry producer", "ferry fetcher", "ferry uploader", "ferry verifier", "ferry advisor", "ferry throttle", "ferry status", "ferry dlq", "ferry manifest"); len(v) > 0 {
		t.Errorf("the services needed subjects secure.conf does not grant:\n  %s", strings.Join(v, "\n  "))
	}
	t.Logf("migration through TLS and per-service users: %s", time.Since(start).Round(time.Second))

	// One service cannot touch another stage's subjects.
	nk, err := nats.NkeyOptionFromSeed(seeds["producer"])
	if err != nil {
		t.Fatal(err)
	}
	checkProducerConfined(r, url, nk, nats.RootCAs(pki.path("ca.pem")), nats.ClientCert(pki.path("client.pem"), pki.path("client-key.pem")))

	// Refused with a clear error: a wrong password, a certificate of another CA, no certificate.
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"wrong password", []string{"FERRY_NATS_USER=admin", "FERRY_NATS_PASSWORD=wrong-" + adminPW}, "authorization violation"},
		{"certificate of another CA", append(admin, "FERRY_NATS_CERT="+pki.path("rogue.pem"), "FERRY_NATS_KEY="+pki.path("rogue-key.pem")), "--nats-cert/--nats-key"},
		{"no client certificate", append(admin, "FERRY_NATS_CERT=", "FERRY_NATS_KEY="), "--nats-cert/--nats-key"},
		{"server not trusted", append(admin, "FERRY_NATS_CA="+pki.path("rogue-ca.pem")), "certificate signed by unknown authority"},
	} {
		out, code := r.runFerry(time.Minute, tc.env, "status")
		outputs = append(outputs, out)
		if code == 0 || !strings.Contains(strings.ToLower(out), tc.want) {
			t.Errorf("%s: exit %d, want a refusal mentioning %q:\n%s", tc.name, code, tc.want, out)
		} else {
			t.Logf("%s: %s", tc.name, lastLine(out))
		}
	}
	help, _ := r.runFerry(time.Minute, admin, "--help")
	outputs = append(outputs, help)

	// No secret in any output: services' logs, commands, help.
	r.mu.Lock()
	for _, p := range r.procs {
		b, _ := os.ReadFile(p.log)
		outputs = append(outputs, string(b))
	}
	r.mu.Unlock()
	for _, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, strings.TrimSpace(s)) || strings.Contains(out, secretCore(s)) {
				t.Errorf("a secret (%.6s…) appears in output:\n%s", s, tail([]byte(out), 1500))
			}
		}
	}
	t.Logf("whole test %s", time.Since(start).Round(time.Second))
}

// inboxEnv gives service svc its own inbox prefix, the only one its user may subscribe to
// (secure.conf: _INBOX_<service>.>).
func inboxEnv(svc string) string { return "FERRY_NATS_INBOX_PREFIX=_INBOX_" + svc }

// setupAsAdmin runs `ferry setup`: first as a service's user (env producer), which may not create
// streams, then as the admin (env admin).
func setupAsAdmin(r *rig, producer, admin []string) {
	r.t.Helper()
	if out, code := r.runFerry(time.Minute, producer, "setup"); code == 0 || !strings.Contains(strings.ToLower(out), "permissions violation") {
		r.t.Errorf("setup as the producer user: exit %d, want a permissions violation:\n%s", code, out)
	} else {
		r.t.Logf("setup as the producer user: %s", lastLine(out))
	}
	if out, code := r.runFerry(time.Minute, admin, "setup"); code != 0 {
		r.t.Fatalf("setup as admin: exit %d\n%s", code, out)
	}
}

// startServices starts the producer on the key list file, a fetcher, an uploader and a verifier
// (each without the advisor: their users may not delete messages) and `ferry advisor`, each with
// the environment user(service) gives it (its NATS user and inbox prefix).
func startServices(r *rig, keyFile string, user func(svc string) []string) *crew {
	c := r.crew()
	c.addEnv("producer", user("producer"), "producer", "--keys", keyFile)
	for _, svc := range []string{"fetcher", "uploader", "verifier"} {
		c.addEnv(svc, append(user(svc), "FERRY_ADVISOR=false"), svc, "--concurrency", "8")
	}
	c.addEnv("advisor", user("advisor"), "advisor")
	return c
}

// checkProducerConfined connects as the producer's user (auth and tls: its credentials and TLS
// options, with its inbox prefix added here) and checks that it may publish keys and nothing of
// another stage: not BLOBS nor DONE, not pull as the fetcher, not delete a stream, not subscribe
// to the fetcher's replies. A JetStream publish the server refuses gets no reply: the violation
// arrives as an async error, the call waits out its context.
func checkProducerConfined(r *rig, url string, auth ...nats.Option) {
	t := r.t
	t.Helper()
	errs := make(chan error, 16)
	opts := append(auth, nats.CustomInboxPrefix("_INBOX_producer"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	op := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	nc, js, err := bus.Connect(op(), url, "intruder", opts...)
	if err != nil {
		t.Fatalf("producer user: %v", err)
	}
	defer nc.Close()
	if _, err := js.Publish(op(), r.names.KeysSubject, []byte("allowed-probe")); err != nil {
		t.Errorf("producer publishing a key: %v", err)
	}
	if _, err := js.Publish(op(), r.names.BlobsSubject, []byte("x")); !isViolation(err, errs) {
		t.Errorf("producer publishing to %s: %v, want a permissions violation", r.names.BlobsSubject, err)
	}
	cons, err := js.Consumer(op(), r.names.Keys, r.names.Fetcher)
	if err != nil {
		t.Fatalf("consumer info as the producer: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
	if err == nil {
		for m := range batch.Messages() {
			t.Errorf("producer user pulled %q from the fetcher's consumer", m.Data())
		}
		err = batch.Error()
	}
	if !isViolation(err, errs) {
		t.Errorf("producer pulling as the fetcher: %v, want a permissions violation", err)
	}
	if _, err := js.Publish(op(), r.names.DoneSubject, []byte("x")); !isViolation(err, errs) {
		t.Errorf("producer publishing to DONE: %v, want a permissions violation", err)
	}
	if err := js.DeleteStream(op(), r.names.Done); !isViolation(err, errs) {
		t.Errorf("producer deleting DONE: %v, want a permissions violation", err)
	}
	// Replies are per service: the fetcher's inbox prefix, or the shared default one, is not the
	// producer's to read.
	for _, inbox := range []string{"_INBOX_fetcher.>", "_INBOX.>"} {
		sub, err := nc.SubscribeSync(inbox)
		if err == nil {
			err = nc.FlushTimeout(3 * time.Second) // the server's -ERR comes before its PONG
			_ = sub.Unsubscribe()
		}
		if !isViolation(err, errs) {
			t.Errorf("producer subscribing to %s: %v, want a permissions violation", inbox, err)
		}
	}
	t.Logf("the producer's user is refused BLOBS, DONE, the fetcher's consumer, stream deletes and the fetcher's and the shared inboxes")
}

// addEnv adds a service with its own environment (its NATS user), restarted with it by tend.
func (c *crew) addEnv(role string, env []string, args ...string) {
	m := &member{role: role, args: args, env: env}
	m.svc = c.r.startEnv(role, env, args...)
	c.members = append(c.members, m)
}

// isViolation: err, or an async error the server sent meanwhile, is a permissions violation.
func isViolation(err error, async <-chan error) bool {
	if err != nil && (errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(err.Error()), "permissions violation")) {
		return true
	}
	for {
		select {
		case e := <-async:
			if errors.Is(e, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(e.Error()), "permissions violation") {
				return true
			}
		case <-time.After(2 * time.Second):
			return false
		}
	}
}

// secretCore is the middle of a multi-line secret (a PEM body line), which a log could quote alone.
func secretCore(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) < 3 {
		return strings.TrimSpace(s)
	}
	return lines[1]
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// secureNATS is a nats-server started from deploy/nats/secure.conf.
type secureNATS struct {
	*natsCluster
	conf string
}

// startSecureNATS writes deploy/nats/secure.conf with repl applied, this machine's files and free
// ports, and starts nats-server on it.
func startSecureNATS(t *testing.T, dir string, repl map[string]string) *secureNATS {
	t.Helper()
	b, err := os.ReadFile("../deploy/nats/secure.conf")
	if err != nil {
		t.Fatal(err)
	}
	nd := &natsNode{name: "secure", port: freePort(t), http: freePort(t), store: filepath.Join(dir, "store"),
		conf: filepath.Join(dir, "nats.conf"), log: filepath.Join(dir, "nats.log")}
	conf := string(b)
	repl["0.0.0.0:4222"] = fmt.Sprintf("127.0.0.1:%d", nd.port)
	repl["127.0.0.1:8222"] = fmt.Sprintf("127.0.0.1:%d", nd.http)
	repl["/var/lib/nats"] = nd.store
	repl["/etc/nats/tls/"] = dir + "/"
	for from, to := range repl {
		if !strings.Contains(conf, from) {
			t.Fatalf("deploy/nats/secure.conf has no %q any more", from)
		}
		conf = strings.ReplaceAll(conf, from, to)
	}
	s := &secureNATS{natsCluster: &natsCluster{t: t, nodes: []*natsNode{nd}}, conf: conf}
	s.write(t)
	s.launch(0)
	t.Cleanup(func() {
		if nd.cmd != nil && nd.alive() {
			_ = nd.cmd.Process.Kill()
			<-nd.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(nd.log)
			t.Logf("--- nats-server log (last 3000 bytes):\n%s", tail(b, 3000))
		}
	})
	s.waitReady(0, time.Minute)
	return s
}

func (s *secureNATS) write(t *testing.T) {
	if err := os.WriteFile(s.nodes[0].conf, []byte(s.conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rewrite replaces from with to in the config and has the server reload it (SIGHUP).
func (s *secureNATS) rewrite(t *testing.T, from, to string) {
	t.Helper()
	s.conf = strings.ReplaceAll(s.conf, from, to)
	s.write(t)
	mark := s.reloads()
	if err := s.nodes[0].cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.reloads() == mark {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(s.nodes[0].log)
			t.Fatalf("nats-server did not reload its config:\n%s", tail(b, 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *secureNATS) reloads() int {
	b, _ := os.ReadFile(s.nodes[0].log)
	return strings.Count(string(b), "Reloaded server configuration")
}

var violationRE = regexp.MustCompile(`(?m)^.* Violation - .*$`)

// violations are the servers' permissions-violation lines so far of the clients named.
func (c *natsCluster) violations(clients ...string) []string {
	var b []byte
	for _, nd := range c.nodes {
		l, _ := os.ReadFile(nd.log)
		b = append(b, l...)
	}
	var out []string
	for _, l := range violationRE.FindAllString(string(b), -1) {
		for _, c := range clients {
			if strings.Contains(l, ":go:"+c+`"`) {
				out = append(out, l)
			}
		}
	}
	return out
}

// pki is a CA with a server and a client certificate, and a rogue CA with its own client
// certificate, as PEM files in dir.
type pki struct{ dir string }

func (p pki) path(name string) string { return filepath.Join(p.dir, name) }

func (p pki) keyPEM(t *testing.T, name string) string {
	b, err := os.ReadFile(p.path(name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	p := pki{dir: dir}
	ca, caKey := p.issue(t, "ca", "ferry test CA", nil, nil, true)
	p.issue(t, "server", "nats", ca, caKey, false)
	p.issue(t, "client", "ferry", ca, caKey, false)
	rogue, rogueKey := p.issue(t, "rogue-ca", "rogue CA", nil, nil, true)
	p.issue(t, "rogue", "ferry", rogue, rogueKey, false)
	return p
}

// issue writes name.pem and name-key.pem: a CA (self-signed when parent is nil) or a leaf for
// 127.0.0.1/localhost usable by servers and clients.
func (p pki) issue(t *testing.T, name, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames, tmpl.IPAddresses = []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}
	}
	signer, signerKey := parent, parentKey
	if parent == nil {
		signer, signerKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for file, blk := range map[string]*pem.Block{name + ".pem": {Type: "CERTIFICATE", Bytes: der}, name + "-key.pem": {Type: "EC PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(p.path(file), pem.EncodeToMemory(blk), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key
}
