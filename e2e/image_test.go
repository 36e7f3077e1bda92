//go:build integration

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-migrate/ferry/shared/config"
	"github.com/ferry-migrate/ferry/tools/seed"
)

// TestImage builds the container image (deploy/image/build.sh, what `make image` runs) and migrates
// a small seeded set with `ferry setup` and the four services each in its own container, on the host
// network against the local stack, the job file and the key list mounted read-only. Every present
// key must end in S3 byte for byte and in DONE, the absent ones in the DLQ as not_found. The image
// runs as user 65532, has no shell, and each service stops cleanly on `podman stop` (SIGTERM).
func TestImage(t *testing.T) {
	pm := newPodman(t)
	const (
		seedN, count, absent, fallback = 93001, 45, 2, 2
		big                            = 1_500_000 // above the 1 MiB inline limit: the object store path
	)

	// The image as built: non-root, /ferry as the entrypoint, no shell.
	if u := pm.out("image", "inspect", "--format", "{{.Config.User}}", pm.image); u != "65532:65532" {
		t.Errorf("image user %q, want 65532:65532", u)
	}
	if ep := pm.out("image", "inspect", "--format", "{{json .Config.Entrypoint}}", pm.image); ep != `["/ferry"]` {
		t.Errorf("image entrypoint %s, want [\"/ferry\"]", ep)
	}
	if help := pm.out("run", "--rm", pm.image, "--help"); !strings.Contains(help, "producer") || !strings.Contains(help, "verifier") {
		t.Errorf("ferry --help in the container does not list the services:\n%s", help)
	}
	if out, err := pm.cmd("run", "--rm", "--entrypoint", "/bin/sh", pm.image, "-c", "true").CombinedOutput(); err == nil {
		t.Errorf("the image has a shell: /bin/sh ran\n%s", out)
	}

	// The data: 45 + 1 large keys in dc1, 2 only in dc2, 2 nowhere; no object left from an earlier run.
	list := filepath.Join(t.TempDir(), "keys.txt")
	if out, err := exec.Command(bin, "--config", cfgPath, "seed", "--count", fmt.Sprint(count), "--absent", fmt.Sprint(absent),
		"--fallback", fmt.Sprint(fallback), "--sizes", fmt.Sprint(big), "--seed", fmt.Sprint(seedN), "--keys-out", list).CombinedOutput(); err != nil {
		t.Fatalf("ferry seed: %v\n%s", err, out)
	}
	keys := seed.PlanKeys(seedN, count, fallback, absent, []int{big})
	deleteObjects(t, keys.All())
	if err := os.Chmod(list, 0o644); err != nil { // readable by the container's user
		t.Fatal(err)
	}
	wantVerified := uint64(len(keys.Main) + len(keys.Fallback))
	wantTotal := wantVerified + absent

	h := newRig(t, "", "image", rigOptions{plain: true})
	job, err := os.ReadFile(h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{
		"-e", "FERRY_JOB=" + h.job, "-e", "FERRY_NATS=" + natsURL, "-e", "FERRY_CONFIG=/etc/ferry/job.yaml",
		"-e", "FERRY_PROGRESS=false", "-e", "AWS_REGION=us-east-1",
		"-e", "AWS_ACCESS_KEY_ID", "-e", "AWS_SECRET_ACCESS_KEY", // passed on from the test's environment
		"-v", h.cfg + ":/etc/ferry/job.yaml:ro",
	}
	start := time.Now()
	pm.out(slices.Concat([]string{"run", "--rm", "--network=host"}, env, []string{pm.image, "setup"})...)
	for _, s := range []string{"fetcher", "verifier"} {
		pm.start(h.job+"-"+s, env, s, "--concurrency", "8")
	}
	prod := pm.start(h.job+"-producer", slices.Concat(env, []string{"-v", list + ":/keys/keys.txt:ro"}), "producer", "--keys", "/keys/keys.txt")
	progress := func() string {
		return fmt.Sprintf("verified %d of %d, dead %v, backlog %d", h.mustMsgs(h.names.Done), wantVerified, h.mustDead(), h.mustBacklog())
	}

	// The first uploader starts on a full BLOBS behind a proxy that slows each PUT down, and gets
	// `podman stop` (SIGTERM) as soon as it has acked something: it must finish its in-flight PUTs,
	// ack every one of them, hand back the rest and exit 0. The second uploader does the rest.
	var puts atomic.Int64
	slow := slowS3(t, &puts, 250*time.Millisecond)
	slowCfg := filepath.Join(h.dir, "slow-s3.yaml")
	if err := os.WriteFile(slowCfg, []byte(regexp.MustCompile(`(?m)^  endpoint: .*$`).ReplaceAllString(string(job), "  endpoint: "+slow)), 0o644); err != nil {
		t.Fatal(err)
	}
	h.waitUntil(90*time.Second, progress, func() bool { return h.mustMsgs(h.names.Blobs) == wantVerified })
	up1 := pm.start(h.job+"-uploader1", slices.Concat(env, []string{"-v", slowCfg + ":/etc/ferry/slow.yaml:ro", "-e", "FERRY_CONFIG=/etc/ferry/slow.yaml"}),
		"uploader", "--concurrency", "4")
	h.waitUntil(60*time.Second, progress, func() bool { return h.mustMsgs(h.names.Blobs) < wantVerified })
	pm.stop(up1)
	acked := wantVerified - h.mustMsgs(h.names.Blobs)
	t.Logf("uploader1 stopped after %d PUTs, %d of %d blobs acked", puts.Load(), acked, wantVerified)
	if acked != uint64(puts.Load()) {
		t.Errorf("uploader1 made %d PUTs but acked %d blobs: in-flight work was not drained", puts.Load(), acked)
	}
	if acked == wantVerified {
		t.Errorf("uploader1 uploaded all %d blobs before its stop: the drain was not exercised", acked)
	}
	up2 := pm.start(h.job+"-uploader2", env, "uploader", "--concurrency", "8")
	h.waitUntil(90*time.Second, progress, func() bool {
		return h.mustMsgs(h.names.Done)+h.mustDead().Total() >= wantTotal && h.mustBacklog() == 0
	})
	t.Logf("%d keys through the containers in %s", wantTotal, time.Since(start).Round(100*time.Millisecond))
	if code := pm.wait(prod, 30*time.Second); code != 0 {
		t.Errorf("producer container exited %d, want 0", code)
	}

	// The services run as 65532 on the host too: the process, not just the image's metadata.
	if pid := pm.out("inspect", "--format", "{{.State.Pid}}", h.job+"-fetcher"); pid == "0" {
		t.Errorf("the fetcher container is not running")
	} else {
		status, err := os.ReadFile("/proc/" + pid + "/status")
		if err != nil {
			t.Errorf("fetcher process: %v", err)
		} else if uid := procField(status, "Uid:"); len(uid) < 2 || uid[1] != "65532" {
			t.Errorf("fetcher process runs with Uid %v, want 65532", uid)
		}
	}

	done, total := h.doneEntries()
	if uint64(total) != wantVerified || uint64(len(done)) != wantVerified {
		t.Errorf("DONE holds %d entries for %d keys, want %d each", total, len(done), wantVerified)
	}
	for _, k := range keys.Main {
		if src, ok := done[k]; !ok || src != "dc1" {
			t.Errorf("key %s: verified %v by %q, want dc1", k, ok, src)
		}
	}
	for _, k := range keys.Fallback {
		if src := done[k]; src != "dc2-old" {
			t.Errorf("fallback key %s served by %q, want dc2-old", k, src)
		}
	}
	if dead := h.mustDead(); dead.Total() != absent || dead["fetcher/not_found"] != absent {
		t.Errorf("dead letters %v, want fetcher/not_found=%d only", dead, absent)
	}
	checkS3(t, h.cfg, append(slices.Clone(keys.Main), keys.Fallback...))

	for _, name := range []string{h.job + "-fetcher", up2, h.job + "-verifier"} {
		pm.stop(name)
	}
}

// slowS3 is a proxy in front of the job's S3 endpoint that delays each PUT; puts counts the PUTs
// that succeeded.
func slowS3(t *testing.T, puts *atomic.Int64, delay time.Duration) string {
	t.Helper()
	job, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(job.Destination.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(r *http.Response) error {
		if r.Request.Method == http.MethodPut && r.StatusCode/100 == 2 {
			puts.Add(1)
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			time.Sleep(delay)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func procField(status []byte, name string) []string {
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			return strings.Fields(rest)
		}
	}
	return nil
}

// podman runs podman with the settings deploy/image/build.sh writes (.local/podman/containers.conf).
type podman struct {
	t     *testing.T
	image string
	conf  string
}

// newPodman builds the image with deploy/image/build.sh (podman and runc installed with apt-get if
// missing). It skips the test, saying why, when podman cannot be installed or cannot run here.
func newPodman(t *testing.T) *podman {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	pm := &podman{t: t, image: envOr("FERRY_E2E_IMAGE", "localhost/ferry:dev"), conf: filepath.Join(root, ".local", "podman", "containers.conf")}
	t0 := time.Now()
	build := exec.Command("bash", filepath.Join(root, "deploy", "image", "build.sh"))
	build.Env = append(os.Environ(), "IMAGE="+pm.image)
	out, err := build.CombinedOutput()
	if _, lookErr := exec.LookPath("podman"); lookErr != nil {
		t.Skipf("podman is not installed and deploy/image/build.sh could not install it (apt-get install podman runc): %v\n%s", err, out)
	}
	if info, infoErr := pm.cmd("info", "--format", "{{.Host.OCIRuntime.Name}}").CombinedOutput(); infoErr != nil {
		t.Skipf("podman is installed but cannot run here (`podman info` with %s): %v\n%s", pm.conf, infoErr, info)
	}
	if err != nil {
		t.Fatalf("deploy/image/build.sh: %v\n%s", err, out)
	}
	t.Logf("image %s ready in %s", pm.image, time.Since(t0).Round(100*time.Millisecond))
	return pm
}

func (pm *podman) cmd(args ...string) *exec.Cmd {
	c := exec.Command("podman", args...)
	c.Env = append(os.Environ(), "CONTAINERS_CONF="+pm.conf)
	return c
}

// out runs podman to completion and returns its trimmed stdout; a failure fails the test.
func (pm *podman) out(args ...string) string {
	pm.t.Helper()
	var stdout, stderr bytes.Buffer
	c := pm.cmd(args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		pm.t.Fatalf("podman %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// start runs `ferry args...` in a detached container on the host network. The container is removed
// when the test ends; its log is shown if the test failed.
func (pm *podman) start(name string, opts []string, args ...string) string {
	pm.t.Helper()
	_ = pm.cmd("rm", "-f", "-t", "0", name).Run() // a leftover of an interrupted run
	pm.out(slices.Concat([]string{"run", "-d", "--name", name, "--network=host"}, opts, []string{pm.image}, args)...)
	pm.t.Cleanup(func() {
		if pm.t.Failed() {
			log, _ := pm.cmd("logs", name).CombinedOutput()
			pm.t.Logf("--- container %s log (last 3000 bytes):\n%s", name, tail(log, 3000))
		}
		if out, err := pm.cmd("rm", "-f", "-t", "0", name).CombinedOutput(); err != nil {
			pm.t.Logf("podman rm -f %s: %v\n%s", name, err, out)
		}
	})
	return name
}

// stop runs `podman stop -t 40`: SIGTERM, then SIGKILL after 40 s. The service must drain and exit
// 0 well before that.
func (pm *podman) stop(name string) {
	pm.t.Helper()
	t0 := time.Now()
	pm.out("stop", "-t", "40", name)
	code := pm.out("inspect", "--format", "{{.State.ExitCode}}", name)
	if took := time.Since(t0); code != "0" || took > 35*time.Second {
		pm.t.Errorf("%s: exit code %s %s after podman stop, want 0 after a clean drain", name, code, took.Round(100*time.Millisecond))
	} else {
		pm.t.Logf("%s: stopped, exit code 0, in %s", name, took.Round(100*time.Millisecond))
	}
}

// wait waits for the container to exit and returns its exit code (-1: still running at timeout).
func (pm *podman) wait(name string, timeout time.Duration) int {
	pm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "podman", "wait", name)
	c.Env = pm.cmd().Env
	var stdout bytes.Buffer
	c.Stdout = &stdout
	if err := c.Run(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			pm.t.Errorf("container %s still running after %s", name, timeout)
			return -1
		}
		pm.t.Fatalf("podman wait %s: %v", name, err)
	}
	var code int
	if _, err := fmt.Sscan(stdout.String(), &code); err != nil {
		pm.t.Fatalf("podman wait %s: %q", name, stdout.String())
	}
	return code
}
