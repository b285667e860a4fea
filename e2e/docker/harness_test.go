package dockere2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hostAddr is an address of the namespace's host side that containers reach through their
// network's gateway (it is put on lo). pebble's ACME API listens there.
const hostAddr = "10.200.0.1"

// phases records how long each phase took and prints the table when the test ends.
type phases struct {
	t    *testing.T
	mu   sync.Mutex
	rows []phaseRow
}

func newPhases(t *testing.T) *phases {
	p := &phases{t: t}
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		width := 0
		for _, r := range p.rows {
			width = max(width, len(r.name))
		}
		var b strings.Builder
		var total time.Duration
		for _, r := range p.rows {
			fmt.Fprintf(&b, "\n  %-*s %9s  %s", width, r.name, r.d, r.status)
			total += r.d
		}
		fmt.Fprintf(&b, "\n  %-*s %9s", width, "total", total.Round(time.Millisecond))
		t.Logf("phase timings:%s", b.String())
	})
	return p
}

type phaseRow struct {
	name, status string
	d            time.Duration
}

// record adds a row without failing the test (teardown steps).
func (p *phases) record(name string, start time.Time, err error) {
	d := time.Since(start).Round(time.Millisecond)
	status := "ok"
	if err != nil {
		status = "FAILED: " + strings.SplitN(err.Error(), "\n", 2)[0]
		p.t.Errorf("%s: %v", name, err)
	}
	p.mu.Lock()
	p.rows = append(p.rows, phaseRow{name, status, d})
	p.mu.Unlock()
}

// run times fn as one phase; a failing fn ends the test.
func (p *phases) run(name string, fn func() error) {
	p.t.Helper()
	start := time.Now()
	err := fn()
	d := time.Since(start).Round(time.Millisecond)
	status := "ok"
	if err != nil {
		status = "FAILED"
	}
	p.mu.Lock()
	p.rows = append(p.rows, phaseRow{name, status, d})
	p.mu.Unlock()
	p.t.Logf("phase %q: %s (%s)", name, d, status)
	if err != nil {
		p.t.Fatalf("phase %q: %v", name, err)
	}
}

// run executes a command, returning its combined output in the error when it fails.
func run(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out.String(), 60))
	}
	return out.String(), nil
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = append([]string{fmt.Sprintf("[... %d lines ...]", len(l)-lines)}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "\n")
}

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return tail(string(b), lines)
}

// eventually polls fn until it succeeds or the timeout passes, returning the last error.
func eventually(timeout, every time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(every)
	}
}

// process is a long-running helper (pebble, challtestsrv) stopped at cleanup.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startProcess starts bin in its own process group, logging to dir/name.log, and stops it when
// the test ends.
func startProcess(t *testing.T, dir, name string, env []string, bin string, args ...string) *process {
	t.Helper()
	p := spawn(t, dir, name, env, bin, args...)
	t.Cleanup(func() { p.stop(t, 10*time.Second) })
	return p
}

// spawn is startProcess without the cleanup (the caller stops the process).
func spawn(t *testing.T, dir, name string, env []string, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	return p
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process alone (as systemd's KillMode=process does for dockerd: it
// stops its containers and its containerd itself), SIGKILL to its whole process group after the
// timeout, and SIGKILL to whatever is left in the group once it has exited.
func (p *process) stop(t *testing.T, timeout time.Duration) {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(timeout):
			t.Logf("%s did not stop within %s after SIGTERM: SIGKILL", p.name, timeout)
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// ---------------------------------------------------------------------------------------------
// dockerd

// dockerd is Debian's engine with its data root in the machine's cache (the images survive the
// run) and everything else (exec root, socket, pidfile, logs) in the test's temp folder.
type dockerd struct {
	dataRoot, execRoot, sock, pidfile, logPath string
	driver                                     string
	hookBin, hookLog                           string
	proc                                       *process
	starts                                     int
}

// newDockerd prepares a dockerd; the data root is locked against a concurrent run on the machine.
func newDockerd(t *testing.T, tmp string) *dockerd {
	t.Helper()
	driver := os.Getenv("MELODY_DOCKER_STORAGE_DRIVER")
	if driver == "" {
		driver = "overlay2"
	}
	if err := os.MkdirAll(cacheDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir(), "dockerd.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("another run holds %s for more than 10 minutes", lock.Name())
		}
		t.Logf("waiting for another run to release %s", lock.Name())
		time.Sleep(5 * time.Second)
	}
	t.Cleanup(func() { lock.Close() })

	d := &dockerd{
		dataRoot: filepath.Join(cacheDir(), "data-"+driver),
		execRoot: filepath.Join(tmp, "exec"),
		sock:     filepath.Join(tmp, "docker.sock"),
		pidfile:  filepath.Join(tmp, "docker.pid"),
		logPath:  filepath.Join(tmp, "dockerd.log"),
		driver:   driver,
		hookBin:  filepath.Join(tmp, "gpu-bin"),
		hookLog:  filepath.Join(tmp, "gpu-hook.log"),
	}
	// The api service reserves NVIDIA GPUs (deploy.resources.reservations.devices, driver
	// nvidia). dockerd registers its "nvidia" device driver when nvidia-container-runtime-hook is
	// on its PATH and runs it as the container's OCI prestart hook. This machine has no GPU: a
	// stand-in hook records the call and lets the container start, so the compose file's GPU
	// reservation reaches the engine unchanged.
	if err := os.MkdirAll(d.hookBin, 0o755); err != nil {
		t.Fatal(err)
	}
	hook := "#!/bin/sh\n# stand-in for the NVIDIA prestart hook (no GPU on the test machine)\n" +
		"state=$(cat)\necho \"$(date +%s) $* $state\" >>" + d.hookLog + "\nexit 0\n"
	if err := os.WriteFile(filepath.Join(d.hookBin, "nvidia-container-runtime-hook"), []byte(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *dockerd) host() string { return "unix://" + d.sock }

// env is the environment for docker clients and the project's scripts.
func (d *dockerd) env() []string {
	return []string{"DOCKER_HOST=" + d.host(), "DOCKER_BUILDKIT=0", "COMPOSE_DOCKER_CLI_BUILD=0"}
}

func (d *dockerd) start(t *testing.T) error {
	t.Helper()
	d.starts++
	args := []string{
		"--data-root", d.dataRoot,
		"--exec-root", d.execRoot,
		"-H", d.host(),
		"--pidfile", d.pidfile,
		"--storage-driver", d.driver,
	}
	env := append(os.Environ(), "PATH="+d.hookBin+":"+os.Getenv("PATH"))
	name := fmt.Sprintf("dockerd-%d", d.starts)
	// Stopped by d.stop, whose cleanup runs after the compose project's teardown.
	d.proc = spawn(t, filepath.Dir(d.logPath), name, env, "dockerd", args...)
	d.logPath = d.proc.log
	client := unixClient(d.sock)
	err := eventually(60*time.Second, 200*time.Millisecond, func() error {
		if !d.proc.running() {
			return errors.New("dockerd exited")
		}
		resp, err := client.Get("http://docker/_ping")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/_ping: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dockerd %s did not become ready: %w\n--- dockerd log (%s):\n%s",
			strings.Join(args, " "), err, d.logPath, tailFile(d.logPath, 40))
	}
	return nil
}

// stop shuts dockerd down the way a host shutdown does (SIGTERM: it stops the containers
// itself, without marking them stopped by hand), then checks that none of its mounts is left.
func (d *dockerd) stop(t *testing.T) error {
	t.Helper()
	if d.proc == nil || !d.proc.running() {
		return nil
	}
	d.proc.stop(t, 60*time.Second)
	left := mountsUnder(d.dataRoot, d.execRoot)
	for _, m := range left {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if len(left) > 0 {
		return fmt.Errorf("dockerd left %d mount(s), unmounted now: %s", len(left), strings.Join(left, " "))
	}
	return nil
}

// mountsUnder lists the mount points below the given folders (deepest first).
func mountsUnder(dirs ...string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := fields[4]
		for _, d := range dirs {
			if strings.HasPrefix(mp, d+"/") || mp == d {
				out = append([]string{mp}, out...)
			}
		}
	}
	return out
}

func unixClient(sock string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", sock)
		}},
	}
}

// ---------------------------------------------------------------------------------------------
// clients of the stack: everything goes to the namespace's 127.0.0.1, where nginx publishes 80/443.

// edgeClient talks to nginx as a browser would to https://<domain>, verifying the certificate
// against pebble's roots; it does not follow redirects.
func edgeClient(domain string, roots *x509.CertPool) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:       dial,
			TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: domain},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// servedCert is the leaf certificate nginx serves for domain on 127.0.0.1:443, verified against
// roots.
func servedCert(domain string, roots *x509.CertPool) (*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", "127.0.0.1:443",
		&tls.Config{RootCAs: roots, ServerName: domain})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}
