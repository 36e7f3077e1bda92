//go:build integration

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// TestNATSJWT runs a migration through a nats-server in operator mode (decentralized auth, as
// `nsc` sets it up): an operator, a system account and an account FERRY with JetStream, both
// preloaded into a MEMORY resolver. Every service connects with --nats-creds: a user JWT signed
// by the account, holding the permissions deploy/nats/secure.conf gives that service's NKEY user,
// and its own inbox prefix. Then: the producer's user is refused another stage's subjects and the
// other services' replies; a user of an account the server does not know, an expired user JWT, a
// creds file without its seed and a fetcher without its inbox prefix are refused with a one-line
// error; no seed appears in any output.
func TestNATSJWT(t *testing.T) {
	keys, _ := seeded(t)
	start := time.Now()
	dir := t.TempDir()
	op := newOperator(t, dir)
	srv := startNATSWith(t, natsSpec{nodes: 1, name: func(int) string { return "jwt" }, extra: op.serverConf})
	url := srv.URL()
	adminCreds := op.creds(t, "admin", op.account, jwt.Permissions{}, 0) // the whole account
	r := newRig(t, "NATS operator mode, a user JWT per service", "jwt", rigOptions{nats: url,
		connect: []nats.Option{nats.UserCredentials(adminCreds)}})

	creds := map[string]string{}
	for svc, p := range secureConfPermissions(t, r.job) {
		creds[svc] = op.creds(t, svc, op.account, p, 0)
	}
	user := func(svc string) []string { return []string{"FERRY_NATS_CREDS=" + creds[svc], inboxEnv(svc)} }
	admin := []string{"FERRY_NATS_CREDS=" + adminCreds}
	all, want := r.keySet(keys, envInt("FERRY_E2E_JWT_KEYS", 30), 3)

	setupAsAdmin(r, user("producer"), admin)
	c := startServices(r, r.writeKeys("keys.txt", all), user)
	c.settle(2 * time.Minute)
	c.stop()
	if len(c.exits) > 0 {
		t.Errorf("services exited by themselves: %v", c.exits)
	}
	r.reconcile(plan{want: want, note: "each service --nats-creds (a user JWT with secure.conf's permissions) and its own inbox prefix"})
	if v := srv.violations("ferry producer", "ferry fetcher", "ferry uploader", "ferry verifier", "ferry advisor"); len(v) > 0 {
		t.Errorf("the services needed subjects their user JWTs do not grant:\n  %s", strings.Join(v, "\n  "))
	}
	t.Logf("migration through user JWTs: %s", time.Since(start).Round(time.Second))

	checkProducerConfined(r, url, nats.UserCredentials(creds["producer"]))

	// Refused at start with a one-line error. A user of an account the server does not know gets
	// its Authorization Violation; an expired JWT and a creds file without its seed are caught
	// before connecting; a fetcher with the shared inbox prefix, or another service's, is denied
	// its replies, and says which flag to check.
	rogue, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(dir, "damaged.creds")
	b, _ := os.ReadFile(creds["fetcher"])
	jwtOnly, _, _ := strings.Cut(string(b), "*** IMPORTANT")
	if err := os.WriteFile(damaged, []byte(jwtOnly), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		cmd  string
		want string
	}{
		{"user of an unknown account", []string{"FERRY_NATS_CREDS=" + op.creds(t, "rogue", rogue, jwt.Permissions{}, 0)}, "status", "authorization violation"},
		{"expired user JWT", []string{"FERRY_NATS_CREDS=" + op.creds(t, "expired", op.account, jwt.Permissions{}, -time.Minute)}, "status", "expired at"},
		{"creds file without its seed", []string{"FERRY_NATS_CREDS=" + damaged}, "status", "no user NKEY seed"},
		{"fetcher without its inbox prefix", []string{"FERRY_NATS_CREDS=" + creds["fetcher"]}, "fetcher", "--nats-inbox-prefix"},
		{"fetcher with the uploader's inbox prefix", []string{"FERRY_NATS_CREDS=" + creds["fetcher"], inboxEnv("uploader")}, "fetcher", "--nats-inbox-prefix"},
	} {
		out, code := r.runFerry(time.Minute, tc.env, tc.cmd)
		if last := lastLine(out); code == 0 || !strings.Contains(strings.ToLower(last), strings.ToLower(tc.want)) {
			t.Errorf("%s: exit %d, want a refusal mentioning %q on its last line:\n%s", tc.name, code, tc.want, out)
		} else {
			t.Logf("%s: %s", tc.name, last)
		}
		op.outputs = append(op.outputs, out)
	}

	// No seed in any output: the services' logs and the refusals.
	r.mu.Lock()
	for _, p := range r.procs {
		b, _ := os.ReadFile(p.log)
		op.outputs = append(op.outputs, string(b))
	}
	r.mu.Unlock()
	for _, out := range op.outputs {
		for _, s := range op.seeds {
			if strings.Contains(out, s) {
				t.Errorf("a seed (%.6s…) appears in output:\n%s", s, tail([]byte(out), 1500))
			}
		}
	}
	t.Logf("whole test %s", time.Since(start).Round(time.Second))
}

// operator is an operator with a system account and the account FERRY (JetStream without
// limits), and the lines of a server configuration that trust it: the operator's JWT in a file,
// the accounts' JWTs preloaded into a MEMORY resolver.
type operator struct {
	dir        string
	account    nkeys.KeyPair // FERRY's, signs the users
	serverConf string
	seeds      []string // every user's seed, to look for in outputs
	outputs    []string
}

func newOperator(t *testing.T, dir string) *operator {
	t.Helper()
	must := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	opKP, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	sysKP, _ := nkeys.CreateAccount()
	accKP, _ := nkeys.CreateAccount()
	opPub, sysPub, accPub := must(opKP.PublicKey()), must(sysKP.PublicKey()), must(accKP.PublicKey())

	oc := jwt.NewOperatorClaims(opPub)
	oc.Name, oc.SystemAccount = "ferry-test", sysPub
	opFile := filepath.Join(dir, "operator.jwt")
	if err := os.WriteFile(opFile, []byte(must(oc.Encode(opKP))), 0o644); err != nil {
		t.Fatal(err)
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "FERRY"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	return &operator{dir: dir, account: accKP, serverConf: fmt.Sprintf(
		"operator: %q\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n  %s: %q\n  %s: %q\n}\n",
		opFile, sysPub, sysPub, must(sc.Encode(opKP)), accPub, must(ac.Encode(opKP)))}
}

// creds writes name.creds: a new user's JWT, signed by account, with perms (none: anything in
// the account), expiring after expires (0: never; negative: already expired), and its seed.
func (o *operator) creds(t *testing.T, name string, account nkeys.KeyPair, perms jwt.Permissions, expires time.Duration) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name, uc.Permissions = name, perms
	if expires != 0 {
		uc.Expires = time.Now().Add(expires).Unix()
	}
	tok, err := uc.Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(o.dir, name+".creds")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	o.seeds = append(o.seeds, string(seed))
	return path
}

// secureConfPermissions reads the permissions of each service's NKEY user out of
// deploy/nats/secure.conf, for job: the JWT users may do exactly what that file allows.
func secureConfPermissions(t *testing.T, job string) map[string]jwt.Permissions {
	t.Helper()
	b, err := os.ReadFile("../deploy/nats/secure.conf")
	if err != nil {
		t.Fatal(err)
	}
	m, err := conf.Parse(strings.ReplaceAll(string(b), "photos", job))
	if err != nil {
		t.Fatalf("deploy/nats/secure.conf: %v", err)
	}
	accounts, _ := m["accounts"].(map[string]any)
	ferry, _ := accounts["FERRY"].(map[string]any)
	users, _ := ferry["users"].([]any)
	list := func(perms map[string]any, dir string) jwt.StringList {
		d, _ := perms[dir].(map[string]any)
		allow, _ := d["allow"].([]any)
		var out jwt.StringList
		for _, s := range allow {
			out = append(out, fmt.Sprint(s))
		}
		return out
	}
	out := map[string]jwt.Permissions{}
	for _, u := range users {
		um, _ := u.(map[string]any)
		nk, _ := um["nkey"].(string)
		svc, ok := strings.CutSuffix(nk, "_NKEY")
		perms, _ := um["permissions"].(map[string]any)
		if !ok || perms == nil {
			continue
		}
		out[strings.ToLower(svc)] = jwt.Permissions{Pub: jwt.Permission{Allow: list(perms, "publish")}, Sub: jwt.Permission{Allow: list(perms, "subscribe")}}
	}
	for _, svc := range []string{"producer", "fetcher", "uploader", "verifier"} {
		if p := out[svc]; len(p.Pub.Allow) == 0 || len(p.Sub.Allow) == 0 {
			t.Fatalf("deploy/nats/secure.conf: no publish and subscribe permissions for %s's NKEY user (%s_NKEY)", svc, strings.ToUpper(svc))
		}
	}
	return out
}
