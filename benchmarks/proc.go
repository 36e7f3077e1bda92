package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// child is a process the harness started and measures: its CPU time comes from the kernel's
// rusage when it has exited, its peak RSS from its VmHWM, so both are the child's alone.
type child struct {
	name  string
	cmd   *exec.Cmd
	start time.Time
	done  chan struct{} // closed when the process has exited
	err   error         // Wait's result, valid after done
	stdio []io.Closer
	hwm   atomic.Int64 // VmHWM in KiB, last read (0: never read)
}

// startChild starts args with env; stdout and stderr go to the writers (nil: discarded). When ctx
// ends the child gets SIGTERM. With Pdeathsig a child never outlives the harness.
func startChild(ctx context.Context, name string, env []string, stdout, stderr io.Writer, args ...string) (*child, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	c.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, strings.Join(args, " "), err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	go c.followHWM()
	go func() {
		select {
		case <-ctx.Done():
			c.stop(30 * time.Second)
		case <-c.done:
		}
	}()
	return c, nil
}

// startLogged starts a child whose stdout and stderr go to dir/name.out and dir/name.log.
func startLogged(ctx context.Context, dir, name string, env []string, args ...string) (*child, error) {
	out, err := os.Create(filepath.Join(dir, name+".out"))
	if err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		out.Close()
		return nil, err
	}
	c, err := startChild(ctx, name, env, out, log, args...)
	if err != nil {
		out.Close()
		log.Close()
		return nil, err
	}
	c.stdio = []io.Closer{out, log}
	return c, nil
}

// exited reports whether the process has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit and returns its error.
func (c *child) wait(ctx context.Context) error {
	select {
	case <-c.done:
	case <-ctx.Done():
		c.stop(30 * time.Second)
	}
	for _, f := range c.stdio {
		f.Close()
	}
	if c.err != nil {
		return fmt.Errorf("%s: %w", c.name, c.err)
	}
	return nil
}

// stop sends SIGTERM and, if the process is still there after grace, SIGKILL. It returns once the
// process has exited.
func (c *child) stop(grace time.Duration) {
	if c.exited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// usage is what the kernel says a finished child used.
type usage struct {
	CPUSeconds float64 `json:"cpu_seconds"` // user + system
	MaxRSSKiB  int64   `json:"max_rss_kib"`
}

func (c *child) usage() usage {
	if c.cmd.ProcessState == nil {
		return usage{}
	}
	ru, ok := c.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return usage{}
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	u := usage{CPUSeconds: tv(ru.Utime) + tv(ru.Stime), MaxRSSKiB: c.hwm.Load()}
	if u.MaxRSSKiB == 0 { // exited before its first read
		u.MaxRSSKiB = ru.Maxrss // KiB on Linux
	}
	return u
}

// followHWM reads the child's VmHWM until it exits. rusage's maxrss is no good for a child of a
// Go program: the kernel counts the parent's RSS at the exec in it (the child starts on the
// parent's memory, CLONE_VM), so every child would look at least as big as the harness.
func (c *child) followHWM() {
	for {
		if kib, err := procStatusKiB(c.cmd.Process.Pid, "VmHWM"); err == nil {
			c.hwm.Store(kib)
		}
		select {
		case <-c.done:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// peakRSS returns a func giving the child's peak RSS so far in MiB (0: never read).
func peakRSS(c *child) func() float64 {
	return func() float64 { return float64(c.hwm.Load()) / 1024 }
}

// procStatusKiB reads one "kB" field of /proc/<pid>/status (VmRSS, VmHWM).
func procStatusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// childEnv is the harness's environment without FERRY_* settings (the harness passes every setting
// as a flag, and `ferry run` must not see FERRY_NATS), except the Cassandra password.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FERRY_") && !strings.HasPrefix(kv, "FERRY_CASSANDRA_PASSWORD=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// procCPU is the CPU seconds a running process (not ours) has used so far, from /proc.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields are counted after its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	utime, err1 := strconv.ParseFloat(f[11], 64) // field 14 of stat
	stime, err2 := strconv.ParseFloat(f[12], 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const clkTck = 100 // USER_HZ on every Linux we run on
	return (utime + stime) / clkTck, nil
}

// pidFile reads a pid from a file such as .local/run/nats.pid.
func pidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// machineCPU is the machine's busy and total CPU time so far (all cores, /proc/stat jiffies).
func machineCPU() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// busyMeter measures how busy the whole machine was (every process, the servers and anyone
// else's work too) between start and stop: on a small machine that explains a slow run.
type busyMeter struct{ busy, total float64 }

func startBusy() busyMeter {
	b, t := machineCPU()
	return busyMeter{b, t}
}

// percent is the share of all cores that was busy since start.
func (m busyMeter) percent() float64 {
	b, t := machineCPU()
	if t <= m.total {
		return 0
	}
	return 100 * (b - m.busy) / (t - m.total)
}
