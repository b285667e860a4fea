package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/melody-flow/infra/internal/pebbletest"
	"github.com/melody-flow/infra/internal/testtool"
	"github.com/melody-flow/infra/nginx"
	"github.com/melody-flow/infra/userdata"
)

const (
	domain      = "api.melody-flow.test"
	pebbleDir   = "https://127.0.0.1:14000/dir"
	apiAddr     = "127.0.0.1:8000"
	refusingDir = "https://127.0.0.1:14500/dir"
)

// host is one simulated GPU host plus its ACME server, all on loopback.
type host struct {
	t          *testing.T
	dir        string // everything lives here (0755 so nginx workers can read the webroot)
	appDir     string
	leDir      string
	nginxConf  string
	nginxPID   string
	accessLog  string
	shim       string
	shimLog    string
	listenerCA string // pebble's HTTPS listener CA, for certbot (REQUESTS_CA_BUNDLE)
	issuerRoot string // pebble's issuing root, for curl and our client (CURL_CA_BUNDLE)
	roots      *x509.CertPool
	files      map[string]string // HostFiles as rendered
	bootstrap  userdata.BootstrapParams
	pids       []int // every process started, checked dead at the end
}

func need(t *testing.T) {
	t.Helper()
	if netnsProblem != "" {
		testtool.Unavailable(t, "%s", netnsProblem)
	}
	testtool.Need(t, "nginx", "certbot", "pebble", "pebble-challtestsrv", "dig", "curl", "bash")
}

func newHost(t *testing.T) *host {
	t.Helper()
	need(t)
	dir, err := os.MkdirTemp("", "melody-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("E2E_KEEP") != "" {
			t.Logf("kept %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, dir: dir, appDir: filepath.Join(dir, "app"), leDir: filepath.Join(dir, "letsencrypt")}
	// Registered first, so it runs last: after every other cleanup, nothing we
	// started may still run.
	t.Cleanup(func() {
		for _, pid := range h.pids {
			if syscall.Kill(pid, 0) == nil {
				t.Errorf("process %d is still running after the test", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	for _, d := range []string{h.appDir, h.leDir, filepath.Join(dir, "nginx"), filepath.Join(dir, "certbot"), filepath.Join(dir, "pebble")} {
		h.must(os.MkdirAll(d, 0o755))
	}

	// The host files exactly as the deploy renders them, with the paths of
	// this test in place of the containers' mount points.
	np := nginx.Params{APIDomain: domain, Upstream: apiAddr, Webroot: filepath.Join(h.appDir, "acme-webroot"), LetsEncryptDir: h.leDir}
	httpConf, err := nginx.RenderHTTP(np)
	h.must(err)
	httpsConf, err := nginx.RenderHTTPS(np)
	h.must(err)
	h.files, err = userdata.HostFiles(userdata.Params{
		AppDir: h.appDir, APIDomain: domain, FrontendOrigin: "https://melody-flow.test",
		APIImage: "melody-flow/api:e2e", HealthPath: "/docs",
	}, httpConf, httpsConf)
	h.must(err)
	for name, content := range h.files {
		p := filepath.Join(h.appDir, name)
		h.must(os.MkdirAll(filepath.Dir(p), 0o755))
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		h.must(os.WriteFile(p, []byte(content), mode))
	}
	h.bootstrap = userdata.BootstrapParams{
		AppDir: h.appDir, APIDomain: domain, ExpectedIP: "127.0.0.1", NameServers: []string{"127.0.0.1"},
		ACMEEmail: "ops@melody-flow.test", ACMEServer: pebbleDir, HealthPath: "/docs",
	}

	h.startStandInAPI()
	h.startPebble()
	h.writeNginxMain()
	shim, err := filepath.Abs("testdata/compose-shim.sh")
	h.must(err)
	h.shim, h.shimLog = shim, filepath.Join(dir, "compose-shim.log")
	t.Cleanup(h.stopNginx)
	return h
}

func (h *host) must(err error) {
	h.t.Helper()
	if err != nil {
		h.t.Fatal(err)
	}
}

// start runs a long-lived program in its own process group; cleanup stops the
// whole group, even when the test fails.
func (h *host) start(name string, env []string, args ...string) {
	h.t.Helper()
	logf, err := os.Create(filepath.Join(h.dir, name+".log"))
	h.must(err)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	h.must(cmd.Start())
	h.pids = append(h.pids, cmd.Process.Pid)
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	h.t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if h.t.Failed() {
			out, _ := os.ReadFile(filepath.Join(h.dir, name+".log"))
			h.t.Logf("--- %s log (tail) ---\n%s", name, tail(string(out), 3000))
		}
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = ok(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
}

// startPebble starts the local ACME server (internal/pebbletest) and keeps what the steps and
// the assertions need: its listener CA for certbot, its issuing root for curl and our clients.
func (h *host) startPebble() {
	t := h.t
	pd := filepath.Join(h.dir, "pebble")
	acme, err := pebbletest.Start(t, pd, "127.0.0.1")
	h.must(err)
	h.pids = append(h.pids, acme.PIDs()...)
	h.listenerCA = acme.ListenerCAFile
	root, err := acme.IssuingRoot()
	h.must(err)
	h.issuerRoot = filepath.Join(pd, "issuer-root.pem")
	h.must(os.WriteFile(h.issuerRoot, root, 0o644))
	h.roots = x509.NewCertPool()
	h.roots.AppendCertsFromPEM(root)
	// A second "ACME server" that refuses everyone, with pebble's listener
	// certificate, for the failure path.
	cert, err := tls.LoadX509KeyPair(acme.CertFile, acme.KeyFile)
	h.must(err)
	ln, err := tls.Listen("tcp", "127.0.0.1:14500", &tls.Config{Certificates: []tls.Certificate{cert}})
	h.must(err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"type":"urn:ietf:params:acme:error:unauthorized","detail":"e2e: this ACME server refuses everyone","status":403}`)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// startStandInAPI serves what the FastAPI container would, on 127.0.0.1:8000:
// /docs answers 200, everything echoes the request as nginx forwarded it.
func (h *host) startStandInAPI() {
	ln, err := net.Listen("tcp", apiAddr)
	h.must(err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"path":              r.URL.RequestURI(),
			"host":              r.Host,
			"proto":             r.Proto,
			"x_forwarded_proto": r.Header.Get("X-Forwarded-Proto"),
			"x_forwarded_for":   r.Header.Get("X-Forwarded-For"),
			"x_real_ip":         r.Header.Get("X-Real-IP"),
			"connection":        r.Header.Get("Connection"),
		})
	})}
	go srv.Serve(ln)
	h.t.Cleanup(func() { srv.Close() })
}

// writeNginxMain writes the main nginx.conf: what /etc/nginx/nginx.conf is in
// the container, with this test's paths. It includes conf.d/*.conf like the
// real one; the rendered configs go there through the scripts.
func (h *host) writeNginxMain() {
	nd := filepath.Join(h.dir, "nginx")
	h.nginxConf = filepath.Join(nd, "nginx.conf")
	h.nginxPID = filepath.Join(nd, "nginx.pid")
	h.accessLog = filepath.Join(nd, "access.log")
	conf := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
worker_processes 1;
events { worker_connections 512; }
http {
    log_format e2e '$remote_addr "$request" $status "$http_user_agent"';
    access_log %[1]s/access.log e2e;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[2]s/nginx/conf.d/*.conf;
}
`, nd, h.appDir)
	h.must(os.WriteFile(h.nginxConf, []byte(conf), 0o644))
}

// stopNginx stops the nginx the shim started as a daemon, by its pid file.
func (h *host) stopNginx() {
	b, err := os.ReadFile(h.nginxPID)
	if err != nil {
		return
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil || pid <= 0 {
		return
	}
	h.pids = append(h.pids, pid)
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) == nil {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if h.t.Failed() {
		out, _ := os.ReadFile(filepath.Join(h.dir, "nginx", "error.log"))
		h.t.Logf("--- nginx error.log (tail) ---\n%s", tail(string(out), 3000))
	}
}

// env is the process environment of a step: the test's overrides (the shim,
// CA bundles, short timeouts) plus whatever the caller adds. The step's own
// variables come from userdata.StepEnv on the command line.
func (h *host) env(extra ...string) []string {
	base := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + h.dir,
		"COMPOSE=" + h.shim,
		"LE_DIR=" + h.leDir,
		"DNS_PORT=8053",
		"DNS_INTERVAL=1",
		"DNS_TIMEOUT=20",
		"VERIFY_TIMEOUT=20",
		"REQUESTS_CA_BUNDLE=" + h.listenerCA,
		"CURL_CA_BUNDLE=" + h.issuerRoot,
		"SHIM_NGINX_CONF=" + h.nginxConf,
		"SHIM_NGINX_PID=" + h.nginxPID,
		"SHIM_LE_DIR=" + h.leDir,
		"SHIM_CERTBOT_STATE=" + filepath.Join(h.dir, "certbot"),
		"SHIM_WEBROOT=" + filepath.Join(h.appDir, "acme-webroot"),
		"SHIM_LOG=" + h.shimLog,
	}
	return append(base, extra...)
}

type result struct {
	cmd    string
	out    string // stdout and stderr
	err    error
	elapse time.Duration
}

// step runs a remote step exactly as the deploy does: the command line from
// userdata.RemoteCommand (without sudo: the test already runs as root).
func (h *host) step(s userdata.Step, bp userdata.BootstrapParams, extraEnv ...string) result {
	h.t.Helper()
	cmdline := strings.TrimPrefix(userdata.RemoteCommand(s, userdata.StepEnv(s, bp)), "sudo ")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", cmdline)
	cmd.Env = h.env(extraEnv...)
	cmd.Dir = h.dir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	r := result{cmd: cmdline, out: string(out), err: err, elapse: time.Since(start)}
	h.t.Logf("%s (%s, err=%v)\n%s", s, r.elapse.Round(time.Millisecond), err, indent(r.out))
	return r
}

func indent(s string) string {
	return "    | " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    | ")
}

// shimRun runs a compose verb through the shim, as the containers' own loops
// do (certbot's renew loop, nginx's reload loop).
func (h *host) shimRun(args ...string) (string, error) {
	cmd := exec.Command(h.shim, args...)
	cmd.Env = h.env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// dial sends every connection to loopback, whatever the URL's host: the test
// domain resolves only inside pebble's DNS.
func dial(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
}

func (h *host) client() *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:       dial,
			TLSClientConfig:   &tls.Config{RootCAs: h.roots, ServerName: domain},
			ForceAttemptHTTP2: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type response struct {
	status int
	header http.Header
	body   string
	proto  string
}

func (h *host) get(url string) (response, error) {
	resp, err := h.client().Get(url)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(b), resp.Proto}, err
}

// servedSerial is the serial of the certificate nginx presents for the domain.
func (h *host) servedSerial() (*big.Int, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", "127.0.0.1:443",
		&tls.Config{RootCAs: h.roots, ServerName: domain})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// diskCert is the certificate certbot's live/ link points at.
func (h *host) diskCert() (*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join(h.leDir, "live", domain, "cert.pem"))
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("cert.pem is not PEM")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func (h *host) activeConf() string {
	b, _ := os.ReadFile(filepath.Join(h.appDir, "nginx", "conf.d", "melody-flow.conf"))
	return string(b)
}

func (h *host) readAccessLog() string {
	b, _ := os.ReadFile(h.accessLog)
	return string(b)
}
