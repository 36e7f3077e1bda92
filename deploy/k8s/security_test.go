package k8s

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/ferry-migrate/ferry/shared/manifest"
)

// The NATS identities of deploy/nats/secure.conf that ferry's pods run as: setup alone as admin,
// every other workload as its own service user.
const adminIdentity = "admin"

// advisorIdentity is both the subcommand (`ferry advisor`: the max-deliveries advisor and the
// orphan sweeper, alone) and its secure.conf user (ADVISOR_NKEY), the only one that deletes
// work-queue messages; the fetcher, uploader and verifier run with FERRY_ADVISOR=false.
const advisorIdentity = "advisor"

// manifestIdentity is both the subcommand (`ferry manifest`: the DONE drain, alone) and its
// secure.conf user (MANIFEST_NKEY), the only one that purges DONE.
const manifestIdentity = manifest.Name

// natsSecret is the Secret holding an identity's NATS credentials (deploy/k8s/nats-secrets.sh
// creates one per identity of secure.conf): key natsSeedKey (an NKEY seed) for a service,
// natsPasswordKey for admin.
func natsSecret(identity string) string { return "ferry-nats-" + identity }

const (
	natsSeedKey     = "nkey"
	natsPasswordKey = "password"
	natsCAConfigMap = "ferry-nats-ca" // ca.crt: the CA of the NATS server certificate
	natsAuthSecret  = "nats-ferry-auth"
	natsAuthFile    = "auth.conf"
	natsNamespace   = "nats"
	// monitoringNamespace may scrape ferry's metrics and NATS monitoring; selected by the label the
	// API server sets on every namespace (it cannot be set by hand to another namespace's name).
	monitoringNamespace = "monitoring"
	kedaNamespace       = "keda"
	nsNameLabel         = "kubernetes.io/metadata.name"
)

// natsPodLabels are the labels of the NATS chart's server pods (release "nats"), not of its
// nats-box.
var natsPodLabels = labels.Set{"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats",
	"app.kubernetes.io/component": "nats"}

// deploymentCreates are the objects ferry's pods need that the base does not ship: each
// deployment creates them (deploy/k8s/nats-secrets.sh, the CA of the NATS certificate); the local
// overlay has examples of each.
func deploymentCreates() map[string]bool {
	m := map[string]bool{"ConfigMap/" + natsCAConfigMap: true}
	for _, id := range []string{adminIdentity, "producer", "fetcher", "uploader", "verifier", advisorIdentity, manifestIdentity} {
		m["Secret/"+natsSecret(id)] = true
	}
	return m
}

// pod is one ferry pod template with the NATS identity it must run as.
type pod struct {
	what     string
	identity string // secure.conf user: admin, producer, fetcher, …
	labels   labels.Set
	spec     *corev1.PodSpec
}

func podsOf(o *objects) []pod {
	var ps []pod
	for name, d := range o.deployments {
		id := ""
		if c := d.Spec.Template.Spec.Containers; len(c) > 0 && len(c[0].Args) > 0 {
			id = c[0].Args[0]
		}
		ps = append(ps, pod{"Deployment " + name, id, d.Spec.Template.Labels, &d.Spec.Template.Spec})
	}
	for name, j := range o.jobs {
		id := ""
		if c := j.Spec.Template.Spec.Containers; len(c) > 0 && len(c[0].Args) > 0 {
			id = c[0].Args[0]
		}
		if id == "setup" {
			id = adminIdentity
		}
		ps = append(ps, pod{"Job " + name, id, j.Spec.Template.Labels, &j.Spec.Template.Spec})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].what < ps[j].what })
	return ps
}

// secretsOf lists every Secret a pod reads: volumes (also projected), env and envFrom.
func secretsOf(ps *corev1.PodSpec) map[string]bool {
	s := map[string]bool{}
	for _, v := range ps.Volumes {
		if v.Secret != nil {
			s[v.Secret.SecretName] = true
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					s[src.Secret.Name] = true
				}
			}
		}
	}
	for _, c := range append(append([]corev1.Container{}, ps.InitContainers...), ps.Containers...) {
		for _, ef := range c.EnvFrom {
			if ef.SecretRef != nil {
				s[ef.SecretRef.Name] = true
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				s[e.ValueFrom.SecretKeyRef.Name] = true
			}
		}
	}
	return s
}

// mountOf is where the container mounts the volume that holds the Secret or ConfigMap name ("" if
// it does not).
func mountOf(ps *corev1.PodSpec, kind, name string) string {
	for _, v := range ps.Volumes {
		if (kind == "Secret" && v.Secret != nil && v.Secret.SecretName == name) ||
			(kind == "ConfigMap" && v.ConfigMap != nil && v.ConfigMap.Name == name) {
			for _, m := range ps.Containers[0].VolumeMounts {
				if m.Name == v.Name {
					return m.MountPath
				}
			}
		}
	}
	return ""
}

func envOf(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// checkNATSAccess: NATS over TLS (FERRY_NATS all tls://, the CA mounted where FERRY_NATS_CA
// says); every pod mounts exactly its own identity's NATS Secret and authenticates with it; only
// the setup Job holds admin; no credentials in the shared environment.
func checkNATSAccess(t *testing.T, o *objects, env *corev1.ConfigMap) {
	t.Helper()
	for _, u := range strings.Split(env.Data["FERRY_NATS"], ",") {
		if pu, err := url.Parse(strings.TrimSpace(u)); err != nil || pu.Scheme != "tls" || pu.Port() == "" {
			t.Errorf("ferry-env FERRY_NATS %q: want tls://host:port for every server (NATS over TLS)", env.Data["FERRY_NATS"])
		}
	}
	ca := env.Data["FERRY_NATS_CA"]
	if ca == "" {
		t.Errorf("ferry-env: no FERRY_NATS_CA (the CA that signs the NATS server certificate)")
	}
	for _, k := range []string{"FERRY_NATS_USER", "FERRY_NATS_PASSWORD", "FERRY_NATS_PASSWORD_FILE", "FERRY_NATS_NKEY", "FERRY_NATS_CREDS"} {
		if _, ok := env.Data[k]; ok {
			t.Errorf("ferry-env sets %s: credentials are per service, in each workload's own env", k)
		}
	}

	ids := map[string]int{}
	for _, p := range podsOf(o) {
		ids[p.identity]++
		c := p.spec.Containers[0]
		own := natsSecret(p.identity)
		var nats []string
		for s := range secretsOf(p.spec) {
			if strings.HasPrefix(s, "ferry-nats") {
				nats = append(nats, s)
			}
		}
		sort.Strings(nats)
		if !slices.Equal(nats, []string{own}) {
			t.Errorf("%s (NATS identity %s): reads the NATS Secrets %v, want exactly [%s]", p.what, p.identity, nats, own)
		}
		if p.identity != adminIdentity && slices.Contains(nats, natsSecret(adminIdentity)) {
			t.Errorf("%s: holds the admin credentials (%s); only the setup Job may", p.what, natsSecret(adminIdentity))
		}
		if u, _ := envOf(c, "FERRY_NATS_USER"); u == adminIdentity && p.identity != adminIdentity {
			t.Errorf("%s: connects as admin; only the setup Job may", p.what)
		}
		if m := mountOf(p.spec, "ConfigMap", natsCAConfigMap); m == "" || filepath.Dir(ca) != m {
			t.Errorf("%s: FERRY_NATS_CA is %s, but ConfigMap %s is mounted at %q", p.what, ca, natsCAConfigMap, m)
		}
		dir := mountOf(p.spec, "Secret", own)
		if dir == "" {
			t.Errorf("%s: does not mount Secret %s", p.what, own)
			continue
		}
		for _, v := range p.spec.Volumes {
			if (v.Secret != nil && v.Secret.SecretName == own && v.Secret.Optional != nil && *v.Secret.Optional) ||
				(v.ConfigMap != nil && v.ConfigMap.Name == natsCAConfigMap && v.ConfigMap.Optional != nil && *v.ConfigMap.Optional) {
				t.Errorf("%s: volume %s is optional: without it the pod would connect with no identity or trust", p.what, v.Name)
			}
		}
		keyFile := func(envName, key string) {
			v, _ := envOf(c, envName)
			if v != path.Join(dir, key) {
				t.Errorf("%s: %s=%q, want %s (key %s of Secret %s)", p.what, envName, v, path.Join(dir, key), key, own)
			}
			if s := o.secrets[own]; s != nil && !hasKey(s, key) {
				t.Errorf("Secret %s: no key %s (%s reads it)", own, key, p.what)
			}
		}
		if p.identity == adminIdentity {
			if u, _ := envOf(c, "FERRY_NATS_USER"); u != adminIdentity {
				t.Errorf("%s: FERRY_NATS_USER %q, want %s", p.what, u, adminIdentity)
			}
			keyFile("FERRY_NATS_PASSWORD_FILE", natsPasswordKey)
		} else {
			keyFile("FERRY_NATS_NKEY", natsSeedKey)
		}
	}
	if ids[adminIdentity] != 1 {
		t.Errorf("%d pods run as NATS admin, want 1 (the setup Job)", ids[adminIdentity])
	}
}

// Egress destinations a ferry pod may need.
const (
	toDNS       = "dns"
	toNATS      = "nats"
	toCassandra = "cassandra"
	toS3        = "s3"
)

// egressWanted is what each identity's pods must reach, and nothing else.
var egressWanted = map[string][]string{
	adminIdentity: {toDNS, toNATS},
	"producer":    {toCassandra, toDNS, toNATS, toS3}, // S3 key lists; Cassandra for --scan
	"fetcher":     {toCassandra, toDNS, toNATS},
	"uploader":    {toDNS, toNATS, toS3},
	"verifier":    {toDNS, toNATS, toS3},
	// ferry advisor touches NATS only: it holds no S3 or Cassandra credentials and must not reach them.
	advisorIdentity: {toDNS, toNATS},
	// ferry manifest writes its segments to S3; it holds no Cassandra credentials and must not reach it.
	manifestIdentity: {toDNS, toNATS, toS3},
}

func selects(t *testing.T, np *networkingv1.NetworkPolicy, l labels.Set) bool {
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Errorf("NetworkPolicy %s: %v", np.Name, err)
		return false
	}
	return sel.Matches(l)
}

func hasType(np *networkingv1.NetworkPolicy, pt networkingv1.PolicyType) bool {
	return slices.Contains(np.Spec.PolicyTypes, pt)
}

// namespaceOf is the namespace a peer's namespaceSelector names by kubernetes.io/metadata.name,
// "" when it has none or selects otherwise.
func namespaceOf(p networkingv1.NetworkPolicyPeer) string {
	if p.NamespaceSelector == nil || len(p.NamespaceSelector.MatchExpressions) > 0 || len(p.NamespaceSelector.MatchLabels) != 1 {
		return ""
	}
	return p.NamespaceSelector.MatchLabels[nsNameLabel]
}

func peerMatches(p networkingv1.NetworkPolicyPeer, l labels.Set) bool {
	if p.PodSelector == nil {
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(p.PodSelector)
	return err == nil && !sel.Empty() && sel.Matches(l)
}

func portStr(p networkingv1.NetworkPolicyPort) string {
	proto := "TCP"
	if p.Protocol != nil {
		proto = string(*p.Protocol)
	}
	port := "all"
	if p.Port != nil {
		port = p.Port.String()
	}
	if p.EndPort != nil {
		port += fmt.Sprintf("-%d", *p.EndPort)
	}
	return port + "/" + proto
}

// classifyEgress names the destination of one egress rule, or says why it is not one a ferry pod
// may have.
func classifyEgress(r networkingv1.NetworkPolicyEgressRule) (string, error) {
	if len(r.Ports) == 0 {
		return "", fmt.Errorf("egress on every port")
	}
	var ports []string
	for _, p := range r.Ports {
		ports = append(ports, portStr(p))
	}
	sort.Strings(ports)
	switch strings.Join(ports, ",") {
	case "53/TCP,53/UDP", "53/UDP":
		for _, p := range r.To {
			if namespaceOf(p) != "kube-system" || !peerMatches(p, labels.Set{"k8s-app": "kube-dns"}) {
				return "", fmt.Errorf("DNS to something other than kube-system's kube-dns pods")
			}
		}
		if len(r.To) == 0 {
			return "", fmt.Errorf("DNS to anywhere")
		}
		return toDNS, nil
	case "4222/TCP":
		for _, p := range r.To {
			if namespaceOf(p) != natsNamespace || !peerMatches(p, natsPodLabels) || peerMatches(p, labels.Set{"app.kubernetes.io/component": "nats-box"}) {
				return "", fmt.Errorf("NATS's port to something other than the NATS server pods of namespace %s", natsNamespace)
			}
		}
		if len(r.To) == 0 {
			return "", fmt.Errorf("NATS's port to anywhere")
		}
		return toNATS, nil
	case "9042/TCP":
		return toCassandra, nil
	case "443/TCP":
		return toS3, nil
	}
	return "", fmt.Errorf("egress on %v", ports)
}

// checkNetworkPolicies: the namespace denies everything by default; ferry's pods take connections
// only on the metrics port and only from the monitoring namespace; each reaches DNS, NATS and the
// stores its stage uses, and nothing else.
func checkNetworkPolicies(t *testing.T, o *objects, metricsPort int) {
	t.Helper()
	deny := false
	for name, np := range o.networkPolicies {
		if len(np.Spec.PodSelector.MatchLabels) == 0 && len(np.Spec.PodSelector.MatchExpressions) == 0 &&
			hasType(np, networkingv1.PolicyTypeIngress) && hasType(np, networkingv1.PolicyTypeEgress) &&
			len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 0 {
			deny = true
			t.Logf("NetworkPolicy %s: default deny", name)
		}
	}
	if !deny {
		t.Errorf("no default-deny NetworkPolicy (every pod, Ingress and Egress, no rules)")
	}
	for _, p := range podsOf(o) {
		var egress []string
		scraped := false
		for name, np := range o.networkPolicies {
			if !selects(t, np, p.labels) {
				continue
			}
			if hasType(np, networkingv1.PolicyTypeIngress) {
				for _, r := range np.Spec.Ingress {
					if len(r.From) == 0 || len(r.Ports) == 0 {
						t.Errorf("NetworkPolicy %s: lets anyone (no from, or every port) reach %s", name, p.what)
						continue
					}
					for _, f := range r.From {
						if namespaceOf(f) != monitoringNamespace || f.IPBlock != nil {
							t.Errorf("NetworkPolicy %s: lets %+v reach %s; only namespace %s may (by %s)", name, f, p.what, monitoringNamespace, nsNameLabel)
						}
					}
					for _, pp := range r.Ports {
						if s := portStr(pp); s != "metrics/TCP" && s != fmt.Sprintf("%d/TCP", metricsPort) {
							t.Errorf("NetworkPolicy %s: opens %s of %s; only the metrics port", name, s, p.what)
						}
					}
					scraped = true
				}
			}
			if hasType(np, networkingv1.PolicyTypeEgress) {
				for i, r := range np.Spec.Egress {
					dest, err := classifyEgress(r)
					if err != nil {
						t.Errorf("NetworkPolicy %s egress rule %d (selects %s): %v", name, i, p.what, err)
						continue
					}
					if !slices.Contains(egress, dest) {
						egress = append(egress, dest)
					}
				}
			}
		}
		sort.Strings(egress)
		if want, ok := egressWanted[p.identity]; !ok {
			t.Errorf("%s (%s): no egressWanted entry for this identity; teach the test what it may reach", p.what, p.identity)
		} else if !slices.Equal(egress, want) {
			t.Errorf("%s (%s): may reach %v, want %v", p.what, p.identity, egress, want)
		}
		if len(p.spec.Containers[0].Ports) > 0 && !scraped {
			t.Errorf("%s: has a metrics port, but no NetworkPolicy lets namespace %s scrape it", p.what, monitoringNamespace)
		}
	}
}

// natsValues is nats-values.yaml, untyped.
func natsValues(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile("nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// dig walks maps by keys.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

var (
	nkeySeedRe = regexp.MustCompile(`\bS[UOAN][A-Z2-7]{50,}`)
	bcryptRe   = regexp.MustCompile(`\$2[aby]?\$\d\d\$`)
	secretKeys = regexp.MustCompile(`(?i)^(pass|password|token|auth_token|nkey|seed|users|accounts|authorization|operator|resolver_preload)$`)
)

// noClearSecrets walks the values: no NKEY seed, bcrypt hash, password, token or user list inline.
func noClearSecrets(t *testing.T, where string, v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if secretKeys.MatchString(k) {
				t.Errorf("nats-values.yaml %s.%s: credentials or users in the values file; they belong in Secret %s", where, k, natsAuthSecret)
			}
			noClearSecrets(t, where+"."+k, e)
		}
	case []any:
		for i, e := range x {
			noClearSecrets(t, fmt.Sprintf("%s[%d]", where, i), e)
		}
	case string:
		if nkeySeedRe.MatchString(x) || bcryptRe.MatchString(x) {
			t.Errorf("nats-values.yaml %s: a seed or password hash in clear", where)
		}
	}
}

// patchAdds returns the values of a chart patch list's "add" operations on path.
func patchAdds(v any, p string) []map[string]any {
	var out []map[string]any
	ops, _ := v.([]any)
	for _, op := range ops {
		if m, ok := op.(map[string]any); ok && m["op"] == "add" && m["path"] == p {
			if val, ok := m["value"].(map[string]any); ok {
				out = append(out, val)
			}
		}
	}
	return out
}

// TestNATSValuesSecure: the NATS chart values serve clients and routes over TLS from a Secret,
// take their users from secure.conf's model through an included file that comes from a Secret
// (nothing secret in the values), run no nats-box, and ship a NetworkPolicy: the client port
// only from ferry's pods, the routes only between NATS pods, monitoring and metrics only from the
// monitoring namespace (and KEDA's operator, which reads consumer lag from monitoring).
func TestNATSValuesSecure(t *testing.T) {
	v := natsValues(t)
	cfg := dig(v, "config")

	// TLS.
	for _, k := range []string{"nats", "cluster"} {
		if dig(cfg, k, "tls", "enabled") != true || dig(cfg, k, "tls", "secretName") == nil {
			t.Errorf("config.%s.tls: want enabled, with secretName (the certificate's Secret)", k)
		}
	}
	if dig(v, "tlsCA", "enabled") != true || dig(v, "tlsCA", "secretName") == nil || dig(v, "tlsCA", "key") == nil {
		t.Errorf("tlsCA: want enabled with secretName and key (the CA the routes check each other against)")
	}
	if dig(cfg, "cluster", "tls", "merge", "verify") != true {
		t.Errorf("config.cluster.tls.merge.verify: want true (a route must present a certificate of the CA)")
	}
	if dig(cfg, "nats", "tls", "secretName") != dig(cfg, "cluster", "tls", "secretName") {
		t.Logf("config.nats.tls and config.cluster.tls use different Secrets")
	}

	// Auth: an include from a Secret mounted under /etc/ (the reloader watches it there).
	var include string
	merge, _ := dig(cfg, "merge").(map[string]any)
	for k, val := range merge {
		if strings.HasSuffix(k, "$include") {
			include, _ = val.(string)
		}
	}
	if include == "" {
		t.Fatalf("config.merge: no $include of the users (%s from Secret %s)", natsAuthFile, natsAuthSecret)
	}
	file := path.Clean(path.Join("/etc/nats-config", include)) // the chart: includes are relative to /etc/nats-config
	if path.Base(file) != natsAuthFile {
		t.Errorf("config.merge includes %s, want the %s of Secret %s", file, natsAuthFile, natsAuthSecret)
	}
	volumes := map[string]string{} // volume name -> Secret
	for _, vol := range patchAdds(dig(v, "podTemplate", "patch"), "/spec/volumes/-") {
		if s, ok := dig(vol, "secret", "secretName").(string); ok {
			volumes[vol["name"].(string)] = s
		}
	}
	mounted := ""
	for _, m := range patchAdds(dig(v, "container", "patch"), "/volumeMounts/-") {
		mp, _ := m["mountPath"].(string)
		if name, _ := m["name"].(string); volumes[name] == natsAuthSecret && path.Dir(file) == path.Clean(mp) {
			mounted = mp
			if !strings.HasPrefix(mp, "/etc/") {
				t.Errorf("Secret %s mounted at %s: the chart's reloader only sees mounts under /etc/", natsAuthSecret, mp)
			}
		}
	}
	if mounted == "" {
		t.Errorf("%s is not in a directory where container.patch mounts Secret %s (podTemplate.patch volume)", file, natsAuthSecret)
	}
	noClearSecrets(t, "", v)
	if dig(v, "natsBox", "enabled") != false {
		t.Errorf("natsBox.enabled: want false (it would hold no identity, and the NetworkPolicy does not let it in)")
	}

	// The NetworkPolicy of the NATS pods, shipped with the release.
	var nps []*networkingv1.NetworkPolicy
	extra, _ := dig(v, "extraResources").([]any)
	for i, r := range extra {
		if dig(r, "kind") != "NetworkPolicy" {
			continue
		}
		y, _ := yaml.Marshal(r)
		np := &networkingv1.NetworkPolicy{}
		if err := decodeStrict(y, np); err != nil {
			t.Errorf("extraResources[%d]: %v", i, err)
			continue
		}
		if np.APIVersion != "networking.k8s.io/v1" {
			t.Errorf("extraResources[%d]: apiVersion %s", i, np.APIVersion)
		}
		nps = append(nps, np)
	}
	if len(nps) == 0 {
		t.Fatalf("extraResources: no NetworkPolicy for the NATS pods")
	}
	ferryPods := podsOf(render(t, "base"))
	from := map[string][]networkingv1.NetworkPolicyPeer{} // port -> peers allowed in
	isolated := false
	for _, np := range nps {
		if !selects(t, np, natsPodLabels) {
			t.Errorf("NetworkPolicy %s does not select the NATS server pods %v", np.Name, natsPodLabels)
			continue
		}
		isolated = isolated || hasType(np, networkingv1.PolicyTypeIngress)
		for _, r := range np.Spec.Ingress {
			if len(r.Ports) == 0 || len(r.From) == 0 {
				t.Errorf("NetworkPolicy %s: an ingress rule without ports or without from opens NATS to every pod", np.Name)
				continue
			}
			for _, p := range r.Ports {
				from[portStr(p)] = append(from[portStr(p)], r.From...)
			}
		}
	}
	if !isolated {
		t.Errorf("no NetworkPolicy isolates the NATS pods for Ingress")
	}
	for port, peers := range from {
		for _, f := range peers {
			ns := namespaceOf(f)
			ok := false
			switch port {
			case "4222/TCP", "nats/TCP": // clients: ferry's pods only
				ok = ns == "ferry" && f.PodSelector != nil && !peerMatches(f, labels.Set{"app.kubernetes.io/name": "nats"})
				for _, p := range ferryPods {
					if ok && !peerMatches(f, p.labels) {
						t.Errorf("NATS client port: %s (labels %v) is not let in", p.what, p.labels)
					}
				}
			case "6222/TCP", "cluster/TCP": // routes: NATS pods only
				ok = f.NamespaceSelector == nil && peerMatches(f, natsPodLabels)
			case "8222/TCP", "monitor/TCP": // monitoring: Prometheus, and KEDA's scaler
				ok = (ns == monitoringNamespace && f.PodSelector == nil) ||
					(ns == kedaNamespace && peerMatches(f, labels.Set{"app.kubernetes.io/name": "keda-operator"}))
			case "7777/TCP", "prom-metrics/TCP": // the exporter
				ok = ns == monitoringNamespace && f.PodSelector == nil
			}
			if !ok || f.IPBlock != nil {
				t.Errorf("NATS NetworkPolicy: port %s open to %+v", port, f)
			}
		}
	}
	for _, port := range []string{"4222/TCP", "6222/TCP", "8222/TCP"} {
		if len(from[port]) == 0 {
			t.Errorf("NATS NetworkPolicy: nothing may reach port %s", port)
		}
	}
}

// secureConfAccounts are the accounts of deploy/nats/secure.conf.
func secureConfAccounts(t *testing.T) []string {
	t.Helper()
	m, err := conf.ParseFile(filepath.Join("..", "nats", "secure.conf"))
	if err != nil {
		t.Fatal(err)
	}
	acc, _ := m["accounts"].(map[string]any)
	var names []string
	for k := range acc {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// natsCLI finds the nats CLI (make tools installs it in .local/bin).
func natsCLI(t *testing.T) string {
	t.Helper()
	if p, err := filepath.Abs(filepath.Join("..", "..", ".local", "bin", "nats")); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	t.Skip("no nats CLI (make tools installs it in .local/bin)")
	return ""
}

// TestNATSSecretsScript runs deploy/k8s/nats-secrets.sh as a deployment would and checks what it
// writes: the Secret of every NATS identity ferry's pods mount (with the key they read), and
// Secret nats-ferry-auth, whose auth.conf is deploy/nats/secure.conf's accounts for this job. A
// nats-server loads that file as the chart's config includes it, and each identity logs in with
// what its Secret holds; no credentials, no login.
func TestNATSSecretsScript(t *testing.T) {
	cli := natsCLI(t)
	o := render(t, filepath.Join("overlays", "local"))
	job := o.configMaps["ferry-env"].Data["FERRY_JOB"]
	out := filepath.Join(t.TempDir(), "secrets")
	cmd := exec.Command("bash", "nats-secrets.sh", job, out)
	cmd.Env = append(os.Environ(), "NATS_CLI="+cli)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nats-secrets.sh %s %s: %v\n%s", job, out, err, b)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("%s: want a directory only its owner can read", out)
	}

	secrets := map[string]*corev1.Secret{}
	files, _ := filepath.Glob(filepath.Join(out, "*.yaml"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		s := &corev1.Secret{}
		if err := decodeStrict(b, s); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if fi, _ := os.Stat(f); fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want owner-only", f, fi.Mode().Perm())
		}
		secrets[s.Namespace+"/"+s.Name] = s
	}
	value := func(s *corev1.Secret, k string) string {
		if v, ok := s.StringData[k]; ok {
			return v
		}
		return string(s.Data[k])
	}

	// What ferry's pods mount.
	dir := t.TempDir()
	creds := map[string]nats.Option{}
	for _, p := range podsOf(o) {
		s := secrets["ferry/"+natsSecret(p.identity)]
		if s == nil {
			t.Errorf("%s mounts Secret %s: nats-secrets.sh does not create it in namespace ferry", p.what, natsSecret(p.identity))
			continue
		}
		if p.identity == adminIdentity {
			pw := strings.TrimSpace(value(s, natsPasswordKey))
			creds[p.identity] = nats.UserInfo(adminIdentity, pw)
			continue
		}
		seedFile := filepath.Join(dir, p.identity+".nk")
		if err := os.WriteFile(seedFile, []byte(value(s, natsSeedKey)), 0o600); err != nil {
			t.Fatal(err)
		}
		opt, err := nats.NkeyOptionFromSeed(seedFile)
		if err != nil {
			t.Errorf("Secret %s: key %s is not an NKEY seed: %v", s.Name, natsSeedKey, err)
			continue
		}
		creds[p.identity] = opt
	}

	auth := secrets[natsNamespace+"/"+natsAuthSecret]
	if auth == nil {
		t.Fatalf("nats-secrets.sh writes no Secret %s/%s", natsNamespace, natsAuthSecret)
	}
	ac := value(auth, natsAuthFile)
	if strings.Contains(ac, "photos") && job != "photos" {
		t.Errorf("%s: still names the example job photos", natsAuthFile)
	}
	for _, s := range []string{"_NKEY", "BCRYPT_HASH"} {
		if strings.Contains(ac, s) {
			t.Errorf("%s: placeholder *%s left in", natsAuthFile, s)
		}
	}

	// A server configured as the chart's nats.conf is: the file included from a subdirectory.
	sd := filepath.Join(dir, "nats-config")
	if err := os.MkdirAll(filepath.Join(sd, "ferry-auth"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sd, "ferry-auth", natsAuthFile), []byte(ac), 0o600); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf("listen: 127.0.0.1:-1\njetstream { store_dir: %q }\ninclude ./ferry-auth/%s;\n", filepath.Join(dir, "js"), natsAuthFile)
	if err := os.WriteFile(filepath.Join(sd, "nats.conf"), []byte(main), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(sd, "nats.conf"))
	if err != nil {
		t.Fatalf("nats-server refuses the generated %s: %v", natsAuthFile, err)
	}
	var accounts []string
	for _, a := range opts.Accounts {
		accounts = append(accounts, a.Name)
	}
	for _, a := range secureConfAccounts(t) {
		if !slices.Contains(accounts, a) {
			t.Errorf("%s: no account %s (secure.conf has it)", natsAuthFile, a)
		}
	}
	for _, u := range opts.Users {
		if u.Username == adminIdentity && creds[adminIdentity] != nil {
			pw := strings.TrimSpace(value(secrets["ferry/"+natsSecret(adminIdentity)], natsPasswordKey))
			if bcrypt.CompareHashAndPassword([]byte(u.Password), []byte(pw)) != nil {
				t.Errorf("%s: admin's bcrypt hash does not match Secret %s", natsAuthFile, natsSecret(adminIdentity))
			}
		}
	}
	opts.Port = -1
	opts.NoLog, opts.NoSigs = true, true
	// The server's first PING comes 2 s after a client connects; a bcrypt check (cost 11) on a
	// loaded machine outlasts it and the client takes the PING for a broken handshake.
	opts.DisableShortFirstPing = true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	// login connects with opts: nil, or the server's refusal. A bcrypt check (cost 11) on a loaded
	// machine can outlast the server's first PING, which the client takes for a broken handshake;
	// only a refusal (or success) is final.
	login := func(opts ...nats.Option) error {
		var err error
		for try := 0; try < 5; try++ {
			var nc *nats.Conn
			if nc, err = nats.Connect(srv.ClientURL(), append(opts, nats.Timeout(20*time.Second))...); err == nil {
				nc.Close()
				return nil
			}
			if errors.Is(err, nats.ErrAuthorization) {
				return err
			}
		}
		return err
	}
	for id, opt := range creds {
		if err := login(opt); err != nil {
			t.Errorf("identity %s: login with its Secret refused: %v", id, err)
		}
	}
	if err := login(); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("a client without credentials: %v, want refused", err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	f := filepath.Join(dir, "stranger.nk")
	if err := os.WriteFile(f, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	opt, err := nats.NkeyOptionFromSeed(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := login(opt); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("an NKEY of no identity: %v, want refused", err)
	}
}
