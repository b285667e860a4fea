// Command bench measures what the project's nginx config costs in front of
// the API, on loopback in a private network namespace: wrk against the
// stand-in API directly, through the final nginx config over HTTPS (upstream
// keepalive), and through a naive HTTPS config without upstream keepalive.
// Run it with bench/proxy.sh (root, wrk and nginx needed). Not a test.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/melody-flow/infra/nginx"
)

const (
	domain  = "api.bench.test"
	apiAddr = "127.0.0.1:8000"
	inNetns = "MELODY_FLOW_BENCH_NETNS"
)

func main() {
	duration := flag.Duration("d", 10*time.Second, "wrk duration per target")
	conns := flag.Int("c", 32, "wrk connections")
	threads := flag.Int("t", 1, "wrk threads")
	flag.IntVar(&workers, "w", 1, "nginx worker_processes")
	flag.Parse()
	if *duration <= 0 || *duration > 2*time.Minute {
		log.Fatalf("-d %s: want a duration up to 2m", *duration)
	}
	if os.Getenv(inNetns) != "1" {
		reexec()
		return
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		log.Fatalf("ip link set lo up: %v %s", err, out)
	}
	if err := run(*duration, *conns, *threads); err != nil {
		log.Fatal(err)
	}
}

// reexec runs this program again in a private network namespace: nothing it
// starts is reachable from, or reaches, outside.
func reexec() {
	cmd := exec.Command("unshare", append([]string{"--net", "--fork", "--kill-child", "--", os.Args[0]}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), inNetns+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		log.Fatalf("unshare --net (needs root): %v", err)
	}
}

var workers = 1

type result struct {
	name          string
	rps           float64
	p50, p99, max time.Duration
	errors        string
}

func run(d time.Duration, conns, threads int) error {
	dir, err := os.MkdirTemp("", "melody-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)

	// Stand-in API: a small JSON answer, like a cheap FastAPI endpoint.
	ln, err := net.Listen("tcp", apiAddr)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"status": "ok", "model": "melody-flow"})
	api := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})}
	go api.Serve(ln)
	defer api.Close()

	le := filepath.Join(dir, "letsencrypt")
	if err := selfSigned(filepath.Join(le, "live", domain)); err != nil {
		return err
	}
	p := nginx.Params{APIDomain: domain, Upstream: apiAddr, Webroot: filepath.Join(dir, "webroot"), LetsEncryptDir: le}
	final, err := nginx.RenderHTTPS(p)
	if err != nil {
		return err
	}
	naive, err := naiveConfig(final)
	if err != nil {
		return err
	}
	stopFinal, err := startNginx(filepath.Join(dir, "final"), final)
	if err != nil {
		return err
	}
	defer stopFinal()
	stopNaive, err := startNginx(filepath.Join(dir, "naive"), naive)
	if err != nil {
		return err
	}
	defer stopNaive()

	targets := []struct{ name, url string }{
		{"direct (API, plain HTTP)", "http://" + apiAddr + "/"},
		{"project nginx (HTTPS, keepalive)", "https://127.0.0.1:443/"},
		{"naive nginx (HTTPS, no keepalive)", "https://127.0.0.1:8443/"},
	}
	fmt.Printf("wrk -t%d -c%d -d%s --latency, %d CPUs, nginx worker_processes %d, all on loopback in a private netns\n\n",
		threads, conns, d, numCPU(), workers)
	var results []result
	for _, tg := range targets {
		// Short warm-up (connections, TLS sessions, upstream pool), then measure.
		if _, err := wrk(tg.url, time.Second, conns, threads); err != nil {
			return fmt.Errorf("%s warm-up: %w", tg.name, err)
		}
		r, err := wrk(tg.url, d, conns, threads)
		if err != nil {
			return fmt.Errorf("%s: %w", tg.name, err)
		}
		r.name = tg.name
		results = append(results, r)
	}
	fmt.Printf("%-36s %12s %10s %10s %10s  %s\n", "target", "req/s", "p50", "p99", "max", "errors")
	for _, r := range results {
		fmt.Printf("%-36s %12.0f %10s %10s %10s  %s\n", r.name, r.rps, us(r.p50), us(r.p99), us(r.max), r.errors)
	}
	// Unloaded latency: one connection, so p50 is the per-request cost of the
	// proxy rather than queueing behind 32 connections on 2 CPUs.
	direct, project, naiveR := results[0], results[1], results[2]
	var lat []result
	for _, tg := range targets {
		r, err := wrk(tg.url, d/2, 1, 1)
		if err != nil {
			return fmt.Errorf("%s (1 connection): %w", tg.name, err)
		}
		r.name = tg.name
		lat = append(lat, r)
	}
	fmt.Printf("\nsame, 1 connection (unloaded latency), %s each:\n", d/2)
	for _, r := range lat {
		fmt.Printf("%-36s %12.0f %10s %10s %10s  %s\n", r.name, r.rps, us(r.p50), us(r.p99), us(r.max), r.errors)
	}
	fmt.Printf("\nproject/direct req/s: %.2f (target >= 0.50)   p50 added: %s (target <= 100us)\n",
		project.rps/direct.rps, us(project.p50-direct.p50))
	fmt.Printf("naive/direct   req/s: %.2f                     p50 added: %s\n",
		naiveR.rps/direct.rps, us(naiveR.p50-direct.p50))
	fmt.Printf("project/naive  req/s: %.2f\n", project.rps/naiveR.rps)
	fmt.Printf("1 connection: p50 added by the project config: %s (target <= 100us), by the naive one: %s\n",
		us(lat[1].p50-lat[0].p50), us(lat[2].p50-lat[0].p50))
	return nil
}

func numCPU() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fus", float64(d)/float64(time.Microsecond)) }

// naiveConfig is the final config with upstream keepalive removed (and on
// port 8443 only): a new TCP connection to the API for every request.
func naiveConfig(final string) (string, error) {
	c := final
	for _, r := range []struct{ old, new string }{
		{"    keepalive 32;\n", ""},
		{"    keepalive_timeout 4s;\n", ""},
		{"    keepalive_requests 10000;\n", ""},
		{"        proxy_http_version 1.1;\n", ""},
		{"        proxy_set_header Connection \"\";\n", ""},
		{"melody_flow_api", "naive_api"},
		{"listen 443 ssl http2;", "listen 8443 ssl http2;"},
		{"shared:MelodyFlowTLS:10m", "shared:NaiveTLS:10m"},
	} {
		if !strings.Contains(c, r.old) {
			return "", fmt.Errorf("naive config: %q not found in the rendered final config", r.old)
		}
		c = strings.ReplaceAll(c, r.old, r.new)
	}
	// Drop the port-80 server (the final instance has it).
	i := strings.Index(c, "server {\n    listen 80;")
	j := strings.Index(c, "server {\n    listen 8443")
	if i < 0 || j < i {
		return "", fmt.Errorf("naive config: cannot find the port-80 server")
	}
	return c[:i] + c[j:], nil
}

func startNginx(dir, site string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	os.WriteFile(filepath.Join(dir, "site.conf"), []byte(site), 0o644)
	conf := fmt.Sprintf(`daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
worker_processes %[2]d;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    include %[1]s/site.conf;
}
`, dir, workers)
	os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644)
	cmd := exec.Command("nginx", "-e", "stderr", "-c", filepath.Join(dir, "nginx.conf"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case <-done:
		return nil, fmt.Errorf("nginx in %s exited at start", dir)
	default:
	}
	return stop, nil
}

var (
	reqRate = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	pct     = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s)\s*$`)
	maxLat  = regexp.MustCompile(`(?m)^\s+Latency\s+\S+\s+\S+\s+([0-9.]+)(us|ms|s)`)
	errLine = regexp.MustCompile(`(?m)^\s+(Non-2xx or 3xx responses: \d+|Socket errors: .*)$`)
)

func dur(v, unit string) time.Duration {
	f, _ := strconv.ParseFloat(v, 64)
	switch unit {
	case "us":
		return time.Duration(f * float64(time.Microsecond))
	case "ms":
		return time.Duration(f * float64(time.Millisecond))
	}
	return time.Duration(f * float64(time.Second))
}

func wrk(url string, d time.Duration, conns, threads int) (result, error) {
	out, err := exec.Command("wrk", "-t"+strconv.Itoa(threads), "-c"+strconv.Itoa(conns),
		"-d"+strconv.Itoa(int(d.Seconds()))+"s", "--latency", "-H", "Host: "+domain, url).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	s := string(out)
	var r result
	m := reqRate.FindStringSubmatch(s)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec in wrk output:\n%s", s)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	for _, m := range pct.FindAllStringSubmatch(s, -1) {
		if m[1] == "50" {
			r.p50 = dur(m[2], m[3])
		} else {
			r.p99 = dur(m[2], m[3])
		}
	}
	if m := maxLat.FindStringSubmatch(s); m != nil {
		r.max = dur(m[1], m[2])
	}
	var errs []string
	for _, m := range errLine.FindAllStringSubmatch(s, -1) {
		errs = append(errs, m[1])
	}
	r.errors = strings.Join(errs, "; ")
	if r.p50 == 0 || r.p99 == 0 {
		return r, fmt.Errorf("no latency distribution in wrk output:\n%s", s)
	}
	return r, nil
}

func selfSigned(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: domain},
		DNSNames: []string{domain}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "fullchain.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "privkey.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
}
