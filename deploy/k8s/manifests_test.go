// Package k8s holds the Kubernetes manifests of ferry (base/, overlays/, nats-values.yaml); this
// test renders them with kustomize, decodes every object strictly into the Kubernetes API types
// (an unknown or misspelled field fails), and checks the rules docs/kubernetes.md promises: probes on the
// metrics port, a grace period longer than the 30 s drain, non-root pods, one PodDisruptionBudget
// and one KEDA ScaledObject per stage on the stage's own stream and consumer, one `ferry advisor`
// (one replica, a PodDisruptionBudget, no ScaledObject, NATS credentials only) with the stages'
// own advisors off (FERRY_ADVISOR=false), one `ferry manifest` (the same, with the job file and S3
// credentials but no Cassandra ones), flags and FERRY_* variables that the command they are given
// to has, and a job file that ferry itself accepts. security_test.go adds NATS over TLS, one NATS identity per pod (admin for
// the setup Job alone), the NetworkPolicies here and in nats-values.yaml, and nats-secrets.sh;
// charts_test.go the pinned Helm charts.
package k8s

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/ferry-migrate/ferry/advisor"
	"github.com/ferry-migrate/ferry/fetcher"
	"github.com/ferry-migrate/ferry/producer"
	"github.com/ferry-migrate/ferry/shared/bus"
	"github.com/ferry-migrate/ferry/shared/cass"
	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/shared/manifest"
	"github.com/ferry-migrate/ferry/shared/service"
	"github.com/ferry-migrate/ferry/uploader"
	"github.com/ferry-migrate/ferry/verifier"
)

// scaledObject mirrors the fields of KEDA's keda.sh/v1alpha1 ScaledObject that these manifests use
// (KEDA's own module is far too large to import for a type). Decoded strictly, so a field KEDA does
// not know, or one this struct was not taught, fails the test.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		Advanced        *struct {
			RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
			HorizontalPodAutoscalerConfig *struct {
				Name     string                                         `json:"name,omitempty"`
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type              string            `json:"type"`
			Name              string            `json:"name,omitempty"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
				Kind string `json:"kind,omitempty"`
			} `json:"authenticationRef,omitempty"`
		} `json:"triggers"`
	} `json:"spec"`
}

// objects is one rendered kustomization, by kind and name.
type objects struct {
	namespaces      map[string]*corev1.Namespace
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	services        map[string]*corev1.Service
	deployments     map[string]*appsv1.Deployment
	jobs            map[string]*batchv1.Job
	pdbs            map[string]*policyv1.PodDisruptionBudget
	scaledObjects   map[string]*scaledObject
	networkPolicies map[string]*networkingv1.NetworkPolicy
}

// apiVersions is the group/version each kind must be written in.
var apiVersions = map[string]string{
	"Namespace": "v1", "ConfigMap": "v1", "Secret": "v1", "Service": "v1",
	"Deployment": "apps/v1", "Job": "batch/v1", "PodDisruptionBudget": "policy/v1",
	"ScaledObject": "keda.sh/v1alpha1", "NetworkPolicy": "networking.k8s.io/v1",
}

// render builds the kustomization in dir (as `kubectl kustomize dir`) and decodes every object.
func render(t *testing.T, dir string) *objects {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	o := &objects{
		namespaces: map[string]*corev1.Namespace{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, services: map[string]*corev1.Service{},
		deployments: map[string]*appsv1.Deployment{}, jobs: map[string]*batchv1.Job{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, scaledObjects: map[string]*scaledObject{},
		networkPolicies: map[string]*networkingv1.NetworkPolicy{},
	}
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		kind, name := r.GetKind(), r.GetName()
		if want, ok := apiVersions[kind]; !ok {
			t.Errorf("%s %s: no check for this kind; teach the test", kind, name)
			continue
		} else if got := r.GetApiVersion(); got != want {
			t.Errorf("%s %s: apiVersion %s, want %s", kind, name, got, want)
		}
		var dst any
		switch kind {
		case "Namespace":
			dst = into(o.namespaces, name)
		case "ConfigMap":
			dst = into(o.configMaps, name)
		case "Secret":
			dst = into(o.secrets, name)
		case "Service":
			dst = into(o.services, name)
		case "Deployment":
			dst = into(o.deployments, name)
		case "Job":
			dst = into(o.jobs, name)
		case "PodDisruptionBudget":
			dst = into(o.pdbs, name)
		case "ScaledObject":
			dst = into(o.scaledObjects, name)
		case "NetworkPolicy":
			dst = into(o.networkPolicies, name)
		}
		if err := decodeStrict(y, dst); err != nil {
			t.Errorf("%s %s: %v", kind, name, err)
		}
	}
	return o
}

// into adds a new T under name and returns it to decode into.
func into[T any](m map[string]*T, name string) *T {
	v := new(T)
	m[name] = v
	return v
}

// decodeStrict turns YAML into JSON (duplicate keys fail) and decodes it with unknown fields
// failing, as the API server's strict field validation does.
func decodeStrict(y []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	// encoding/json matches field names case-insensitively; the API server does not. A field that
	// only decoded by case folding is lost on the way back out.
	back, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var in, out map[string]any
	if err := json.Unmarshal(j, &in); err != nil {
		return err
	}
	if err := json.Unmarshal(back, &out); err != nil {
		return err
	}
	return sameKeys("", in, out)
}

// sameKeys reports a key of in that out lacks (out may have more: zero-valued struct fields).
func sameKeys(path string, in, out any) error {
	switch a := in.(type) {
	case map[string]any:
		b, _ := out.(map[string]any)
		for k, v := range a {
			w, ok := b[k]
			if !ok {
				if v == nil {
					continue // an explicit null
				}
				return fmt.Errorf("field %s%s: not a field of the type (wrong case?)", path, k)
			}
			if err := sameKeys(path+k+".", v, w); err != nil {
				return err
			}
		}
	case []any:
		b, _ := out.([]any)
		for i, v := range a {
			if i < len(b) {
				if err := sameKeys(fmt.Sprintf("%s%d.", path, i), v, b[i]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// stageOf is each worker stage's stream and durable consumer, from ferry's own naming.
func stageOf(job string) map[string][2]string {
	n := bus.For(job)
	return map[string][2]string{
		"fetcher":  {n.Keys, n.Fetcher},
		"uploader": {n.Blobs, n.Uploader},
		"verifier": {n.Uploaded, n.Verifier},
	}
}

const drainSeconds = 30 // the runner's shutdown drain (docs/kubernetes.md: graceful shutdown)

// singleton is a Deployment of one replica beside the worker stages, with a PodDisruptionBudget
// and no ScaledObject, and what it may read besides its own NATS identity's Secret.
type singleton struct {
	secrets []string // the other Secrets it reads, exactly
	jobFile bool     // mounts the job file (ConfigMap ferry-job)
	s3      bool     // may carry AWS_* variables
}

var singletons = map[string]singleton{
	// ferry advisor deletes work-queue messages: NATS only, apart from everything that talks to
	// the stores, not even the job file.
	advisorIdentity: {},
	// ferry manifest purges DONE: the job file (manifest.bucket, manifest.prefix) and the S3
	// credentials to write its segments, nothing of Cassandra.
	manifestIdentity: {secrets: []string{"ferry-aws"}, jobFile: true, s3: true},
}

// commands are the ferry subcommands the workloads run, by name, for their flags and FERRY_*
// variables. Not setup: main's own command, which a test here cannot import.
func commands() map[string]*cli.Command {
	m := map[string]*cli.Command{}
	for _, c := range []*cli.Command{producer.Command(), fetcher.Command(), uploader.Command(),
		verifier.Command(), advisor.Command(), manifest.Command()} {
		m[c.Name] = c
	}
	return m
}

// baseImage is the image the base manifests name: a registry under .invalid (RFC 6761), which no
// resolver answers, so that base applied without an overlay setting the real image fails to pull
// instead of fetching someone else's "ferry" from a public registry.
const baseImage = "registry.example.invalid/ferry:unset"

func TestBase(t *testing.T) {
	o := render(t, "base")
	check(t, o, baseImage)
}

func TestOverlayLocal(t *testing.T) {
	o := render(t, filepath.Join("overlays", "local"))
	check(t, o, "localhost/ferry:dev")
	for _, name := range []string{"ferry-aws", "ferry-cassandra"} {
		if o.secrets[name] == nil {
			t.Errorf("overlay local: example Secret %s missing", name)
		}
	}
	for obj := range deploymentCreates() {
		kind, name, _ := strings.Cut(obj, "/")
		if (kind == "Secret" && o.secrets[name] == nil) || (kind == "ConfigMap" && o.configMaps[name] == nil) {
			t.Errorf("overlay local: no example %s (a deployment creates it)", obj)
		}
	}
	for name, d := range o.deployments {
		if p := d.Spec.Template.Spec.Containers[0].ImagePullPolicy; p != corev1.PullNever {
			t.Errorf("overlay local: Deployment %s imagePullPolicy %q, want Never (a local image)", name, p)
		}
	}
	for name, so := range o.scaledObjects {
		if so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount != 2 {
			t.Errorf("overlay local: ScaledObject %s maxReplicaCount not 2", name)
		}
	}
}

// TestBaseListsEveryFile: a manifest added to base/ but not to its kustomization would silently
// not be deployed (nor tested).
func TestBaseListsEveryFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("base", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join("base", "*.yaml"))
	for _, f := range files {
		if name := filepath.Base(f); name != "kustomization.yaml" && !slices.Contains(k.Resources, name) {
			t.Errorf("base/%s is not in base/kustomization.yaml's resources", name)
		}
	}
}

// check applies the rules every rendering must satisfy; image is the workers' expected image.
func check(t *testing.T, o *objects, image string) {
	t.Helper()
	if len(o.namespaces) != 1 {
		t.Fatalf("want one Namespace, got %d", len(o.namespaces))
	}
	var ns string
	for ns = range o.namespaces {
	}
	inNamespace := func(kind string, m metav1.ObjectMeta) {
		if m.Namespace != ns {
			t.Errorf("%s %s: namespace %q, want %q", kind, m.Name, m.Namespace, ns)
		}
	}

	// The environment every container loads.
	env := o.configMaps["ferry-env"]
	if env == nil {
		t.Fatal("ConfigMap ferry-env missing")
	}
	inNamespace("ConfigMap", env.ObjectMeta)
	job := env.Data["FERRY_JOB"]
	if err := config.ValidateJobName(job); err != nil {
		t.Errorf("ferry-env FERRY_JOB: %v", err)
	}
	if _, ok := env.Data["FERRY_NATS_INBOX_PREFIX"]; ok {
		t.Errorf("ferry-env sets FERRY_NATS_INBOX_PREFIX: it is per service (each workload's env)")
	}
	if env.Data["FERRY_LOG_FORMAT"] != "json" {
		t.Errorf("ferry-env FERRY_LOG_FORMAT %q, want json", env.Data["FERRY_LOG_FORMAT"])
	}
	_, p, err := net.SplitHostPort(env.Data["FERRY_METRICS_ADDR"])
	metricsPort, err2 := strconv.Atoi(p)
	if err != nil || err2 != nil {
		t.Fatalf("ferry-env FERRY_METRICS_ADDR %q: want [host]:port", env.Data["FERRY_METRICS_ADDR"])
	}

	// The job file, parsed and validated by ferry itself.
	cfgPath := env.Data["FERRY_CONFIG"]
	jobCM := o.configMaps["ferry-job"]
	if jobCM == nil {
		t.Fatal("ConfigMap ferry-job missing")
	}
	inNamespace("ConfigMap", jobCM.ObjectMeta)
	if doc, ok := jobCM.Data[filepath.Base(cfgPath)]; !ok {
		t.Errorf("ferry-job has no key %q (FERRY_CONFIG=%s)", filepath.Base(cfgPath), cfgPath)
	} else if _, err := config.Parse([]byte(doc), "ferry-job"); err != nil {
		t.Errorf("ferry-job: %v", err)
	}

	// Each worker stage: one Deployment, PDB and ScaledObject. And one Deployment of ferry advisor
	// (deployOf[advisorIdentity]): one replica, a PDB, no ScaledObject.
	stages := stageOf(job)
	cmds := commands()
	deployOf := map[string]*appsv1.Deployment{}
	for name, d := range o.deployments {
		inNamespace("Deployment", d.ObjectMeta)
		ps := &d.Spec.Template.Spec
		c := ps.Containers[0]
		if len(c.Args) == 0 {
			t.Errorf("Deployment %s: no args (want the stage subcommand)", name)
			continue
		}
		stage := c.Args[0]
		s, single := singletons[stage]
		if _, ok := stages[stage]; !ok && !single {
			t.Errorf("Deployment %s: runs %q, not a worker stage, the advisor nor the manifest drain", name, stage)
			continue
		}
		if deployOf[stage] != nil {
			t.Errorf("two Deployments run %s", stage)
		}
		deployOf[stage] = d
		if cmd := cmds[stage]; cmd == nil {
			t.Errorf("Deployment %s: runs %q; teach commands() its flags", name, stage)
		} else {
			checkFlags(t, "Deployment "+name, c, cmd)
		}
		if single {
			checkSingleton(t, d, stage, s)
		} else {
			if d.Spec.Replicas != nil {
				t.Errorf("Deployment %s: sets replicas; KEDA owns the count (an apply would reset it)", name)
			}
			// With one NATS identity per service the stage's user may not delete work-queue
			// messages: its advisor would only log Permissions Violations, and none would run.
			if v, ok := envOf(c, service.AdvisorEnv); !ok {
				t.Errorf("Deployment %s: no %s in its env; want false (ferry advisor runs the advisor under its own identity)", name, service.AdvisorEnv)
			} else if b, err := strconv.ParseBool(v); err != nil || b {
				t.Errorf("Deployment %s: %s=%q, want false (ferry advisor runs the advisor under its own identity)", name, service.AdvisorEnv, v)
			}
		}
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Deployment %s: selector does not match its pod template", name)
		}
		checkPod(t, o, "Deployment "+name, ps, image, cfgPath)
		checkProbes(t, "Deployment "+name, c, metricsPort)
		checkInbox(t, "Deployment "+name, c, stage)
		if g := ps.TerminationGracePeriodSeconds; g == nil || *g <= drainSeconds {
			t.Errorf("Deployment %s: terminationGracePeriodSeconds must exceed the %d s drain", name, drainSeconds)
		}
	}
	for stage := range stages {
		if deployOf[stage] == nil {
			t.Errorf("no Deployment runs %s", stage)
		}
	}
	if deployOf[advisorIdentity] == nil {
		t.Errorf("no Deployment runs ferry advisor (the stages run with %s=false: without it no advisor runs)", service.AdvisorEnv)
	}
	if deployOf[manifestIdentity] == nil {
		t.Errorf("no Deployment runs ferry manifest (without it DONE keeps every entry)")
	}

	// PodDisruptionBudgets: one per stage, selecting exactly that stage's pods.
	pdbOf := map[string]int{}
	for name, pdb := range o.pdbs {
		inNamespace("PodDisruptionBudget", pdb.ObjectMeta)
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			t.Errorf("PodDisruptionBudget %s: %v", name, err)
			continue
		}
		if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
			t.Errorf("PodDisruptionBudget %s: neither maxUnavailable nor minAvailable", name)
		}
		for stage, d := range deployOf {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				pdbOf[stage]++
			}
		}
		for _, j := range o.jobs {
			if sel.Matches(labels.Set(j.Spec.Template.Labels)) {
				t.Errorf("PodDisruptionBudget %s selects the pods of Job %s", name, j.Name)
			}
		}
	}
	for stage := range deployOf {
		if pdbOf[stage] != 1 {
			t.Errorf("%s: %d PodDisruptionBudgets select its pods, want 1", stage, pdbOf[stage])
		}
	}

	// ScaledObjects: one per stage, on its stream and consumer.
	soOf := map[string]int{}
	for name, so := range o.scaledObjects {
		inNamespace("ScaledObject", so.ObjectMeta)
		ref := so.Spec.ScaleTargetRef
		if ref.Kind != "" && ref.Kind != "Deployment" {
			t.Errorf("ScaledObject %s: targets a %s", name, ref.Kind)
		}
		d := o.deployments[ref.Name]
		if d == nil {
			t.Errorf("ScaledObject %s: targets Deployment %q, which does not exist", name, ref.Name)
			continue
		}
		stage := d.Spec.Template.Spec.Containers[0].Args[0]
		soOf[stage]++
		want, ok := stages[stage]
		if !ok {
			t.Errorf("ScaledObject %s: targets Deployment %s (%s), not a worker stage", name, ref.Name, stage)
			continue
		}
		lo, hi := so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount
		if lo == nil || hi == nil || *lo < 0 || *hi < 1 || *lo > *hi {
			t.Errorf("ScaledObject %s: want 0 <= minReplicaCount <= maxReplicaCount, >= 1", name)
		}
		if so.Spec.PollingInterval == nil || so.Spec.CooldownPeriod == nil {
			t.Errorf("ScaledObject %s: set pollingInterval and cooldownPeriod", name)
		}
		if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "nats-jetstream" {
			t.Errorf("ScaledObject %s: want one nats-jetstream trigger", name)
			continue
		}
		md := so.Spec.Triggers[0].Metadata
		if md["stream"] != want[0] || md["consumer"] != want[1] {
			t.Errorf("ScaledObject %s (%s): stream/consumer %s/%s, want %s/%s",
				name, stage, md["stream"], md["consumer"], want[0], want[1])
		}
		if accounts := secureConfAccounts(t); !slices.Contains(accounts, md["account"]) {
			t.Errorf("ScaledObject %s: account %q, want the job's NATS account, one of %v (deploy/nats/secure.conf)", name, md["account"], accounts)
		}
		if n, err := strconv.ParseInt(md["lagThreshold"], 10, 64); err != nil || n <= 0 {
			t.Errorf("ScaledObject %s: lagThreshold %q, want a positive integer", name, md["lagThreshold"])
		}
		if _, _, err := net.SplitHostPort(md["natsServerMonitoringEndpoint"]); err != nil {
			t.Errorf("ScaledObject %s: natsServerMonitoringEndpoint %q: want host:port", name, md["natsServerMonitoringEndpoint"])
		}
		for k := range md {
			if !slices.Contains([]string{"natsServerMonitoringEndpoint", "account", "stream", "consumer",
				"lagThreshold", "activationLagThreshold", "useHttps"}, k) {
				t.Errorf("ScaledObject %s: trigger metadata %q is not a nats-jetstream parameter", name, k)
			}
		}
	}
	for stage := range deployOf {
		want := 1
		if _, ok := singletons[stage]; ok {
			want = 0 // one replica: no backlog to scale on, and two would only race on the same work
		}
		if soOf[stage] != want {
			t.Errorf("%s: %d ScaledObjects target it, want %d", stage, soOf[stage], want)
		}
	}

	// Jobs: setup at R3 and the producer.
	var setup, producer *batchv1.Job
	for name, j := range o.jobs {
		inNamespace("Job", j.ObjectMeta)
		ps := &j.Spec.Template.Spec
		if ps.RestartPolicy != corev1.RestartPolicyNever && ps.RestartPolicy != corev1.RestartPolicyOnFailure {
			t.Errorf("Job %s: restartPolicy %q", name, ps.RestartPolicy)
		}
		args := ps.Containers[0].Args
		switch {
		case len(args) > 0 && args[0] == "setup":
			setup = j
			i := slices.Index(args, "--replicas")
			if i < 0 || i+1 >= len(args) || args[i+1] != "3" {
				t.Errorf("Job %s: want ferry setup --replicas 3, got %q", name, args)
			} else if env.Data["FERRY_REPLICAS"] != "" && env.Data["FERRY_REPLICAS"] != args[i+1] {
				t.Errorf("Job %s: --replicas %s but ferry-env FERRY_REPLICAS=%s", name, args[i+1], env.Data["FERRY_REPLICAS"])
			}
		case len(args) > 0 && args[0] == "producer":
			producer = j
			if !slices.Contains(args, "--keys") && !slices.Contains(args, "--scan") {
				t.Errorf("Job %s: producer without --keys or --scan: %q", name, args)
			}
			checkInbox(t, "Job "+name, ps.Containers[0], "producer")
			checkFlags(t, "Job "+name, ps.Containers[0], cmds["producer"])
		default:
			t.Errorf("Job %s: runs %q; want setup or producer", name, args)
		}
		checkPod(t, o, "Job "+name, ps, image, cfgPath)
		if !failsOnExit2(j) {
			t.Errorf("Job %s: a usage error (exit 2) must fail the Job, not be retried (podFailurePolicy)", name)
		}
	}
	if setup == nil || producer == nil {
		t.Errorf("want a setup Job and a producer Job")
	}
	if producer != nil {
		if g := producer.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g <= drainSeconds {
			t.Errorf("Job %s: terminationGracePeriodSeconds must exceed %d s", producer.Name, drainSeconds)
		}
	}

	// The metrics Service reaches every worker's metrics port, ready or not.
	for name, s := range o.services {
		inNamespace("Service", s.ObjectMeta)
		sel := labels.SelectorFromSet(s.Spec.Selector)
		for stage, d := range deployOf {
			if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Errorf("Service %s: does not select the %s pods", name, stage)
			}
		}
		if !s.Spec.PublishNotReadyAddresses {
			t.Errorf("Service %s: publishNotReadyAddresses off: unready workers would not be scraped", name)
		}
		if len(s.Spec.Ports) != 1 || (s.Spec.Ports[0].TargetPort.String() != "metrics" && s.Spec.Ports[0].TargetPort.IntValue() != metricsPort) {
			t.Errorf("Service %s: want one port to the metrics port", name)
		}
	}

	// NATS: TLS, one identity per pod, admin for setup alone; and the NetworkPolicies.
	checkNATSAccess(t, o, env)
	for _, np := range o.networkPolicies {
		inNamespace("NetworkPolicy", np.ObjectMeta)
	}
	checkNetworkPolicies(t, o, metricsPort)
}

// checkPod applies the rules of every ferry pod: one container of the ferry image, the non-root
// security context, resources, and references to ConfigMaps and Secrets that exist (or are optional).
func checkPod(t *testing.T, o *objects, what string, ps *corev1.PodSpec, image, cfgPath string) {
	t.Helper()
	if len(ps.Containers) != 1 || ps.Containers[0].Name != "ferry" {
		t.Errorf("%s: want one container named ferry", what)
		return
	}
	c := ps.Containers[0]
	if c.Image != image {
		t.Errorf("%s: image %q, want %q", what, c.Image, image)
	}
	if err := checkImageRef(c.Image); err != nil {
		t.Errorf("%s: image %q: %v", what, c.Image, err)
	}
	psc := ps.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("%s: the pod must set runAsNonRoot and a non-zero runAsUser", what)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile RuntimeDefault missing", what)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: container must have readOnlyRootFilesystem, no privilege escalation, drop ALL", what)
	}
	if sc != nil && sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", what)
	}
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Errorf("%s: ferry needs no Kubernetes API token (automountServiceAccountToken: false)", what)
	}

	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
		t.Errorf("%s: want cpu and memory requests and a memory limit", what)
	}
	if lim.Memory().Cmp(*req.Memory()) < 0 {
		t.Errorf("%s: memory limit below its request", what)
	}
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			q, err := goMemLimit(e.Value)
			if err != nil {
				t.Errorf("%s: GOMEMLIMIT: %v", what, err)
			} else if q.Cmp(*lim.Memory()) >= 0 {
				t.Errorf("%s: GOMEMLIMIT %s is not below the memory limit %s", what, e.Value, lim.Memory())
			}
		}
	}

	// References.
	// A reference must exist, be optional, or be one of the objects every deployment creates.
	provided := deploymentCreates()
	hasCM := func(name string, optional *bool) {
		if o.configMaps[name] == nil && (optional == nil || !*optional) && !provided["ConfigMap/"+name] {
			t.Errorf("%s: ConfigMap %s does not exist", what, name)
		}
	}
	hasSecret := func(name string, optional *bool) {
		if o.secrets[name] == nil && (optional == nil || !*optional) && !provided["Secret/"+name] {
			t.Errorf("%s: Secret %s is required but not created here (make it optional or create it)", what, name)
		}
	}
	loadsEnv := false
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			hasCM(ef.ConfigMapRef.Name, ef.ConfigMapRef.Optional)
			loadsEnv = loadsEnv || ef.ConfigMapRef.Name == "ferry-env"
		}
		if ef.SecretRef != nil {
			hasSecret(ef.SecretRef.Name, ef.SecretRef.Optional)
		}
	}
	if !loadsEnv {
		t.Errorf("%s: does not load ferry-env", what)
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			continue
		}
		if r := e.ValueFrom.SecretKeyRef; r != nil {
			hasSecret(r.Name, r.Optional)
			if s := o.secrets[r.Name]; s != nil && !hasKey(s, r.Key) {
				t.Errorf("%s: Secret %s has no key %s (env %s)", what, r.Name, r.Key, e.Name)
			}
		}
		if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
			hasCM(r.Name, r.Optional)
		}
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	for _, v := range ps.Volumes {
		if _, ok := mounts[v.Name]; !ok {
			t.Errorf("%s: volume %s is not mounted", what, v.Name)
		}
		if v.ConfigMap != nil {
			hasCM(v.ConfigMap.Name, v.ConfigMap.Optional)
			// The job file must be where FERRY_CONFIG says.
			if v.ConfigMap.Name == "ferry-job" && filepath.Join(mounts[v.Name], filepath.Base(cfgPath)) != cfgPath {
				t.Errorf("%s: ferry-job mounted at %s, but FERRY_CONFIG is %s", what, mounts[v.Name], cfgPath)
			}
		}
		if v.Secret != nil {
			hasSecret(v.Secret.SecretName, v.Secret.Optional)
		}
	}
	for name := range mounts {
		if !slices.ContainsFunc(ps.Volumes, func(v corev1.Volume) bool { return v.Name == name }) {
			t.Errorf("%s: mounts volume %s, which the pod does not define", what, name)
		}
	}
}

// checkSingleton: the Deployment of ferry advisor or ferry manifest (identity) runs one replica and
// reads its own identity's NATS Secret and exactly s.secrets besides: never Cassandra credentials
// (each may delete or purge what no other service may, so it is kept apart from the stores it
// does not need), S3 ones only where s allows, the job file only where s says.
func checkSingleton(t *testing.T, d *appsv1.Deployment, identity string, s singleton) {
	t.Helper()
	what := fmt.Sprintf("Deployment %s (ferry %s)", d.Name, identity)
	if r := d.Spec.Replicas; r == nil || *r != 1 {
		t.Errorf("%s: want replicas: 1", what)
	}
	ps := &d.Spec.Template.Spec
	var secrets []string
	for name := range secretsOf(ps) {
		secrets = append(secrets, name)
	}
	slices.Sort(secrets)
	own := natsSecret(identity)
	want := slices.Sorted(slices.Values(append([]string{own}, s.secrets...)))
	if !slices.Equal(secrets, want) {
		t.Errorf("%s: reads the Secrets %v, want exactly %v", what, secrets, want)
	}
	if mountOf(ps, "Secret", own) == "" {
		t.Errorf("%s: does not mount Secret %s", what, own)
	}
	if m := mountOf(ps, "ConfigMap", "ferry-job"); s.jobFile && m == "" {
		t.Errorf("%s: does not mount the job file (ConfigMap ferry-job)", what)
	} else if !s.jobFile && m != "" {
		t.Errorf("%s: mounts the job file (ConfigMap ferry-job) at %s; it needs none", what, m)
	}
	for _, c := range append(append([]corev1.Container{}, ps.InitContainers...), ps.Containers...) {
		for _, e := range c.Env {
			if strings.HasPrefix(e.Name, "FERRY_CASSANDRA") || (!s.s3 && strings.HasPrefix(e.Name, "AWS_")) {
				t.Errorf("%s: env %s: it needs no such access", what, e.Name)
			}
		}
	}
}

// checkFlags: the flags in the container's args after its command are flags of that command
// (`ferry <command> --help`: urfave/cli takes no global flag after the command), and the FERRY_*
// variables of its env are those of the command's or the global flags (one misspelled is
// silently ignored).
func checkFlags(t *testing.T, what string, c corev1.Container, cmd *cli.Command) {
	t.Helper()
	names := map[string]bool{"help": true, "h": true}
	envs := map[string]bool{cass.PasswordEnv: true} // read by the Cassandra client, not a flag
	for _, f := range cmd.Flags {
		for _, n := range f.Names() {
			names[n] = true
		}
	}
	for _, f := range append(service.GlobalFlags(), cmd.Flags...) {
		if df, ok := f.(cli.DocGenerationFlag); ok {
			for _, e := range df.GetEnvVars() {
				envs[e] = true
			}
		}
	}
	for _, a := range c.Args[1:] {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		if n, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); !names[n] {
			t.Errorf("%s: arg %s is not a flag of ferry %s (see ferry %s --help)", what, a, cmd.Name, cmd.Name)
		}
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "FERRY_") && !envs[e.Name] {
			t.Errorf("%s: env %s is the variable of no flag of ferry %s nor of the global flags", what, e.Name, cmd.Name)
		}
	}
}

// checkImageRef refuses an image reference that a container runtime would complete with a public
// registry (no registry host: Docker Hub), names Docker Hub itself, or has no fixed version
// (no tag, or latest, and no digest).
func checkImageRef(ref string) error {
	name, digest, _ := strings.Cut(ref, "@")
	host, path, ok := strings.Cut(name, "/")
	if !ok || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return fmt.Errorf("no registry host: a runtime pulls it from Docker Hub, whoever publishes it there")
	}
	if slices.Contains([]string{"docker.io", "index.docker.io", "registry-1.docker.io"}, host) {
		return fmt.Errorf("a public registry")
	}
	tag := ""
	if i := strings.LastIndex(path, ":"); i >= 0 {
		tag = path[i+1:]
	}
	if digest == "" && (tag == "" || tag == "latest") {
		return fmt.Errorf("no tag or digest, or latest: the image changes under the manifests")
	}
	return nil
}

func hasKey(s *corev1.Secret, key string) bool {
	_, a := s.Data[key]
	_, b := s.StringData[key]
	return a || b
}

// checkProbes: liveness on /healthz, readiness on /readyz, both on the metrics port.
func checkProbes(t *testing.T, what string, c corev1.Container, metricsPort int) {
	t.Helper()
	named := map[string]int32{}
	for _, p := range c.Ports {
		named[p.Name] = p.ContainerPort
	}
	if named["metrics"] != int32(metricsPort) {
		t.Errorf("%s: no container port metrics: %d (FERRY_METRICS_ADDR)", what, metricsPort)
	}
	probe := func(kind string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: no HTTP %s probe", what, kind)
			return
		}
		port := int32(p.HTTPGet.Port.IntValue())
		if p.HTTPGet.Port.String() != "" && port == 0 {
			port = named[p.HTTPGet.Port.String()]
		}
		if p.HTTPGet.Path != path || port != int32(metricsPort) {
			t.Errorf("%s: %s probe GET %s on port %d, want %s on %d", what, kind, p.HTTPGet.Path, port, path, metricsPort)
		}
	}
	probe("liveness", c.LivenessProbe, "/healthz")
	probe("readiness", c.ReadinessProbe, "/readyz")
	if c.StartupProbe != nil {
		probe("startup", c.StartupProbe, "/healthz")
	}
}

// failsOnExit2 reports whether the Job's podFailurePolicy fails it on the ferry container's exit 2.
func failsOnExit2(j *batchv1.Job) bool {
	pfp := j.Spec.PodFailurePolicy
	if pfp == nil {
		return false
	}
	for _, r := range pfp.Rules {
		if r.Action == batchv1.PodFailurePolicyActionFailJob && r.OnExitCodes != nil &&
			r.OnExitCodes.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn && slices.Contains(r.OnExitCodes.Values, 2) {
			return true
		}
	}
	return false
}

// goMemLimit parses a GOMEMLIMIT value (bytes, or a B/KiB/MiB/GiB/TiB suffix) as a quantity.
func goMemLimit(s string) (resource.Quantity, error) {
	return resource.ParseQuantity(strings.TrimSuffix(s, "B"))
}

// TestNATSValues checks the Helm values against what ferry and KEDA need from the NATS cluster:
// 3 replicas with JetStream on file storage, and monitoring on the port the ScaledObjects read,
// through the release's headless service.
func TestNATSValues(t *testing.T) {
	b, err := os.ReadFile("nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool `json:"enabled"`
				Replicas int  `json:"replicas"`
			} `json:"cluster"`
			JetStream struct {
				Enabled   bool `json:"enabled"`
				FileStore struct {
					Enabled bool `json:"enabled"`
					PVC     struct {
						Enabled bool   `json:"enabled"`
						Size    string `json:"size"`
					} `json:"pvc"`
				} `json:"fileStore"`
			} `json:"jetstream"`
			Monitor struct {
				Enabled bool `json:"enabled"`
				Port    int  `json:"port"`
			} `json:"monitor"`
		} `json:"config"`
		Container struct {
			Merge struct {
				Resources corev1.ResourceRequirements `json:"resources"`
			} `json:"merge"`
		} `json:"container"`
	}
	if err := yaml.Unmarshal(b, &v); err != nil { // not strict: the chart has many more values
		t.Fatal(err)
	}
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 {
		t.Errorf("cluster: want enabled with 3 replicas (R3 streams), got %+v", c.Cluster)
	}
	if !c.JetStream.Enabled || !c.JetStream.FileStore.Enabled || !c.JetStream.FileStore.PVC.Enabled {
		t.Errorf("jetstream: want enabled on a file store with a PVC")
	}
	if q, err := resource.ParseQuantity(c.JetStream.FileStore.PVC.Size); err != nil || q.Cmp(resource.MustParse("10Gi")) < 0 {
		t.Errorf("jetstream.fileStore.pvc.size %q: want a quantity of at least 10Gi", c.JetStream.FileStore.PVC.Size)
	}
	if !c.Monitor.Enabled || c.Monitor.Port == 0 {
		t.Errorf("monitor: must be enabled, KEDA reads consumer lag from it")
	}
	if r := v.Container.Merge.Resources; r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		t.Errorf("container.merge.resources: want memory requests and limits")
	}

	// The ScaledObjects and ferry-env must point at this release: FERRY_NATS is nats://<svc>.<ns>…,
	// KEDA the headless service <svc>-headless.<ns>… on the monitor port.
	o := render(t, "base")
	u, err := url.Parse(o.configMaps["ferry-env"].Data["FERRY_NATS"])
	if err != nil {
		t.Fatal(err)
	}
	svc, rest, _ := strings.Cut(u.Hostname(), ".")
	want := net.JoinHostPort(svc+"-headless."+rest, strconv.Itoa(c.Monitor.Port))
	for name, so := range o.scaledObjects {
		if got := so.Spec.Triggers[0].Metadata["natsServerMonitoringEndpoint"]; got != want {
			t.Errorf("ScaledObject %s: natsServerMonitoringEndpoint %s, want %s (the release's headless service)", name, got, want)
		}
	}
}

// checkInbox: a service's container sets FERRY_NATS_INBOX_PREFIX to _INBOX_<service>, the only
// inbox deploy/nats/secure.conf lets that service's user subscribe to.
func checkInbox(t *testing.T, what string, c corev1.Container, service string) {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == "FERRY_NATS_INBOX_PREFIX" {
			if e.Value != "_INBOX_"+service {
				t.Errorf("%s: FERRY_NATS_INBOX_PREFIX %q, want _INBOX_%s (deploy/nats/secure.conf)", what, e.Value, service)
			}
			return
		}
	}
	t.Errorf("%s: no FERRY_NATS_INBOX_PREFIX (want _INBOX_%s, its replies only, as deploy/nats/secure.conf allows)", what, service)
}
