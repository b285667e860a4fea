package dockere2e

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/melody-flow/infra/internal/pebbletest"
	"github.com/melody-flow/infra/nginx"
	"github.com/melody-flow/infra/userdata"
)

const (
	// apiDomain is the name the stack serves; challtestsrv resolves every name to 127.0.0.1,
	// where nginx's published ports are.
	apiDomain  = "api.melody-flow.test"
	healthPath = "/docs"
)

// stack is the project's compose project in a temporary APP_DIR, driven like the remote
// commands drive it.
type stack struct {
	t           *testing.T
	appDir      string
	compose     string            // the COMPOSE command line the scripts get
	extra       map[string]string // test-only variables added to every step's environment
	shimDir     string            // holds a sudo that just runs its arguments
	certbotLogs string            // certbot's /var/log/letsencrypt (the test's override mounts it)
	bp          userdata.BootstrapParams
	d           *dockerd
}

// TestComposeStack runs the TLS bootstrap of the GPU host with the real compose file, scripts
// and nginx configs on Debian's dockerd, then the reboot drill.
func TestComposeStack(t *testing.T) {
	if !enabled() {
		t.Skipf("set %s=1 to run the compose stack end to end (root, dockerd; .ci/install-docker-tools)", envSwitch)
	}
	if os.Getenv(envInside) != "1" {
		t.Fatal("must run inside the namespaces TestMain sets up")
	}
	ph := newPhases(t)
	ctx := context.Background()
	tmp, err := os.MkdirTemp("", "mf-docker-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })

	ph.run("namespace: loopback, host address, private /etc/letsencrypt", func() error {
		return setUpNamespace(t, tmp)
	})

	d := newDockerd(t, tmp)
	t.Cleanup(func() {
		start := time.Now()
		ph.record("teardown: dockerd stop, no mounts left", start, d.stop(t))
	})
	ph.run(fmt.Sprintf("dockerd start (%s, data root %s)", d.driver, d.dataRoot), func() error { return d.start(t) })
	ph.run("remove containers, networks, volumes left by an earlier run", func() error { return purge(ctx, d) })

	images := map[string]string{}
	ph.run("images (build-images.sh images; cached by content tag)", func() error {
		out, err := run(ctx, packageDir(), append(os.Environ(), d.env()...), "bash", "build-images.sh", "images")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "build-images: ") {
				t.Log(line)
			}
			if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && strings.HasSuffix(k, "_IMAGE") {
				images[k] = v
			}
		}
		for _, k := range []string{"NGINX_IMAGE", "CERTBOT_IMAGE", "API_IMAGE"} {
			if images[k] == "" {
				return fmt.Errorf("build-images.sh printed no %s=…:\n%s", k, out)
			}
		}
		return nil
	})

	// pebble's ACME API on hostAddr, reachable from the certbot container; its DNS server answers
	// 127.0.0.1 for every name, so HTTP-01 validation reaches nginx's published port 80.
	var acme *pebbletest.Server
	ph.run("pebble + pebble-challtestsrv start", func() error {
		var err error
		acme, err = pebbletest.Start(t, filepath.Join(tmp, "pebble"), hostAddr)
		return err
	})
	issuingRoot := filepath.Join(tmp, "pebble", "issuing-root.pem")
	roots := x509.NewCertPool()
	ph.run("fetch pebble's issuing root", func() error {
		root, err := acme.IssuingRoot()
		if err != nil {
			return err
		}
		roots.AppendCertsFromPEM(root)
		return os.WriteFile(issuingRoot, root, 0o644)
	})

	s := &stack{t: t, d: d, appDir: filepath.Join(tmp, "opt", "melody-flow"), shimDir: filepath.Join(tmp, "shim")}
	ph.run("host files (userdata.HostFiles) into APP_DIR", func() error {
		return s.writeHostFiles(tmp, acme, images, issuingRoot)
	})
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLogs(ctx, acme)
		}
		start := time.Now()
		_, err := s.composeRun(ctx, "down", "--volumes", "--remove-orphans", "--timeout", "10")
		if err == nil {
			if out, _ := run(ctx, "", s.dockerEnv(), "docker", "ps", "-aq"); strings.TrimSpace(out) != "" {
				err = fmt.Errorf("containers left after compose down: %s", strings.Fields(out))
			}
		}
		ph.record("teardown: compose down --volumes, no container left", start, err)
	})

	// The remote chain, steps 3-6, each exactly as its remote command runs it.
	for _, step := range userdata.Steps {
		ph.run("bootstrap: "+string(step)+".sh", func() error { return s.runStep(ctx, step) })
	}

	var first *x509.Certificate
	ph.run("assert: certificate from pebble via nginx's webroot", func() error {
		var err error
		first, err = servedCert(apiDomain, roots)
		if err != nil {
			return fmt.Errorf("nginx does not serve a certificate for %s that chains to pebble's root: %w", apiDomain, err)
		}
		if !containsString(first.DNSNames, apiDomain) {
			return fmt.Errorf("served certificate is for %v, not %s", first.DNSNames, apiDomain)
		}
		onDisk, err := s.liveCert()
		if err != nil {
			return err
		}
		if issued := acme.Issued(); len(issued) != 1 || onDisk.SerialNumber.Cmp(first.SerialNumber) != 0 {
			return fmt.Errorf("pebble issued %v, live/ holds serial %s, nginx serves %s: want one certificate, the same everywhere",
				issued, onDisk.SerialNumber.Text(16), first.SerialNumber.Text(16))
		}
		// pebble really validated HTTP-01 against nginx (PEBBLE_VA_ALWAYS_VALID=0), and nginx
		// served that very token from the webroot certbot wrote into.
		peb, _ := os.ReadFile(acme.Log)
		m := regexp.MustCompile(`Attempting to validate w/ HTTP: http://` + regexp.QuoteMeta(apiDomain) +
			`(?::80)?/\.well-known/acme-challenge/([A-Za-z0-9_-]+)`).FindSubmatch(peb)
		if m == nil {
			return fmt.Errorf("pebble's log shows no HTTP-01 validation of %s:\n%s", apiDomain, tail(string(peb), 30))
		}
		token := string(m[1])
		logs, err := s.composeRun(ctx, "logs", "--no-color", "nginx")
		if err != nil {
			return err
		}
		if !regexp.MustCompile(`"GET /\.well-known/acme-challenge/` + regexp.QuoteMeta(token) + ` HTTP/1\.[01]" 200 `).MatchString(logs) {
			return fmt.Errorf("nginx's access log does not show token %s served with 200:\n%s", token, tail(logs, 30))
		}
		t.Logf("pebble validated token %s, served by nginx from the shared webroot", token)
		t.Logf("issued by %q, serial %s, for %v, valid until %s, OCSP %v", first.Issuer.CommonName,
			first.SerialNumber.Text(16), first.DNSNames, first.NotAfter.Format(time.DateOnly), first.OCSPServer)
		return nil
	})

	client := edgeClient(apiDomain, roots)
	ph.run("assert: HTTPS reaches the API with X-Forwarded-Proto https", func() error {
		return checkHTTPS(client)
	})
	ph.run("assert: http redirects to https (challenge path excepted)", func() error {
		return checkRedirect(client)
	})
	ph.run("assert: GPU reservation reached the engine (nvidia prestart hook ran for api)", func() error {
		return s.checkGPU(ctx)
	})

	ph.run("assert: the api healthcheck (as compose configured it) passes", func() error {
		return s.checkHealthcheck(ctx)
	})

	ph.run("second run of steps 3-6 (must not issue a new certificate)", func() error {
		issuedBefore := acme.Issued()
		for _, step := range userdata.Steps {
			if err := s.runStep(ctx, step); err != nil {
				return err
			}
		}
		// Checked where certbot writes and where pebble issues, not only on what nginx serves
		// (its reload is asynchronous: a new certificate could show up a moment later).
		if n := acme.Issued(); len(n) != len(issuedBefore) {
			return fmt.Errorf("the second run made pebble issue %d new certificate(s): %v", len(n)-len(issuedBefore), n[len(issuedBefore):])
		}
		onDisk, err := s.liveCert()
		if err != nil {
			return err
		}
		if onDisk.SerialNumber.Cmp(first.SerialNumber) != 0 {
			return fmt.Errorf("the second run replaced the certificate on disk: serial %s -> %s", first.SerialNumber.Text(16), onDisk.SerialNumber.Text(16))
		}
		return s.waitServing(client, roots, first, 10*time.Second)
	})

	var renewed *x509.Certificate
	ph.run("renewal: certbot renew in the certbot service, nginx reload", func() error {
		issuedBefore := acme.Issued()
		// What the certbot service's loop runs, forced (the certificate is not due) and pointed
		// at pebble explicitly; then what nginx's reload loop does.
		if _, err := s.composeRun(ctx, "run", "--rm", "certbot", "renew", "--webroot", "-w", "/var/www/certbot",
			"--no-random-sleep-on-renew", "--force-renewal", "--server", acme.Directory); err != nil {
			return err
		}
		if n := acme.Issued(); len(n) != len(issuedBefore)+1 {
			return fmt.Errorf("pebble issued %d certificate(s) for one forced renewal: %v", len(n)-len(issuedBefore), n[len(issuedBefore):])
		}
		var err error
		if renewed, err = s.liveCert(); err != nil {
			return err
		}
		if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return fmt.Errorf("certbot renew left serial %s in live/", first.SerialNumber.Text(16))
		}
		if _, err := s.composeRun(ctx, "exec", "-T", "nginx", "nginx", "-s", "reload"); err != nil {
			return err
		}
		return s.waitServing(client, roots, renewed, 10*time.Second)
	})

	// Reboot drill 1: a spot stop/start as the engine sees it. dockerd shuts down (stopping the
	// containers itself, not "by hand") and starts again; the restart policies alone must bring
	// the stack back, serving the same certificate, without any script.
	ph.run("reboot drill: dockerd stop (stops all containers)", func() error {
		if err := d.stop(t); err != nil {
			return err
		}
		if _, err := client.Get("https://" + apiDomain + healthPath); err == nil {
			return fmt.Errorf("HTTPS still answers with dockerd stopped")
		}
		return nil
	})
	ph.run("reboot drill: dockerd start, restart policies bring the stack back", func() error {
		if err := d.start(t); err != nil {
			return err
		}
		return s.waitServing(client, roots, renewed, 120*time.Second)
	})
	ph.run("reboot drill: containers stop + start (docker stop/start)", func() error {
		ids, err := s.containerIDs(ctx)
		if err != nil {
			return err
		}
		if _, err := run(ctx, "", s.dockerEnv(), "docker", append([]string{"stop", "-t", "10"}, ids...)...); err != nil {
			return err
		}
		if _, err := run(ctx, "", s.dockerEnv(), "docker", append([]string{"start"}, ids...)...); err != nil {
			return err
		}
		return s.waitServing(client, roots, renewed, 120*time.Second)
	})
	// Reboot drill 2: the host's own shutdown path. melody-flow.service's ExecStop runs
	// "docker compose stop", which marks the containers stopped by hand: after the engine
	// restarts, "unless-stopped" keeps them down, and the unit's ExecStart (start-stack.sh with
	// the unit's environment: .env + APP_DIR) must bring them back.
	ph.run("reboot drill (unit path): compose stop, dockerd restart, unit's start-stack.sh", func() error {
		if _, err := s.composeRun(ctx, "stop"); err != nil {
			return err
		}
		if err := d.stop(t); err != nil {
			return err
		}
		if err := d.start(t); err != nil {
			return err
		}
		ids, _ := s.runningIDs(ctx)
		t.Logf("after compose stop + engine restart, before the unit's ExecStart: %d container(s) running (unless-stopped keeps stopped-by-hand containers down)", len(ids))
		if err := s.runUnitStart(ctx); err != nil {
			return err
		}
		return s.waitServing(client, roots, renewed, 120*time.Second)
	})
	ph.run("assert: certbot service's renew loop ran against pebble (not due)", func() error {
		logs, err := s.composeRun(ctx, "logs", "--no-color", "certbot")
		if err != nil {
			return err
		}
		if !strings.Contains(logs, "not yet due for renewal") {
			return fmt.Errorf("the certbot service's loop did not report the certificate as not due:\n%s", tail(logs, 30))
		}
		return nil
	})
}

// setUpNamespace brings loopback up, puts hostAddr on it, and gives the namespace its own empty
// /etc/letsencrypt (the compose file and the scripts use that host path), so the machine's is
// never touched.
func setUpNamespace(t *testing.T, tmp string) error {
	if _, err := run(context.Background(), "", os.Environ(), "ip", "link", "set", "lo", "up"); err != nil {
		return err
	}
	if _, err := run(context.Background(), "", os.Environ(), "ip", "addr", "add", hostAddr+"/32", "dev", "lo"); err != nil {
		return err
	}
	le := "/etc/letsencrypt"
	if _, err := os.Stat(le); os.IsNotExist(err) {
		if err := os.Mkdir(le, 0o755); err != nil {
			return err
		}
		t.Cleanup(func() { _ = os.Remove(le) }) // only if still empty: it was ours
	}
	private := filepath.Join(tmp, "letsencrypt")
	if err := os.MkdirAll(private, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(private, le, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s over %s: %w", private, le, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(le, syscall.MNT_DETACH) })
	return nil
}

// purge removes what an interrupted earlier run may have left in the cached data root (images
// stay).
func purge(ctx context.Context, d *dockerd) error {
	env := append(os.Environ(), d.env()...)
	out, err := run(ctx, "", env, "docker", "ps", "-aq")
	if err != nil {
		return err
	}
	if ids := strings.Fields(out); len(ids) > 0 {
		if _, err := run(ctx, "", env, "docker", append([]string{"rm", "-f", "-v"}, ids...)...); err != nil {
			return err
		}
	}
	if _, err := run(ctx, "", env, "docker", "network", "prune", "-f"); err != nil {
		return err
	}
	_, err = run(ctx, "", env, "docker", "volume", "prune", "-f")
	return err
}

func (s *stack) writeHostFiles(tmp string, acme *pebbletest.Server, images map[string]string, issuingRoot string) error {
	np := nginx.Params{APIDomain: apiDomain, Upstream: "api:8000", Webroot: "/var/www/certbot", LetsEncryptDir: "/etc/letsencrypt"}
	httpConf, err := nginx.RenderHTTP(np)
	if err != nil {
		return err
	}
	httpsConf, err := nginx.RenderHTTPS(np)
	if err != nil {
		return err
	}
	p := userdata.Params{
		AppDir:         s.appDir,
		APIDomain:      apiDomain,
		FrontendOrigin: "https://melody-flow.test",
		APIImage:       "ghcr.io/melody-flow/api:e2e", // replaced by API_IMAGE from the environment
		HealthPath:     healthPath,
	}
	files, err := userdata.HostFiles(p, httpConf, httpsConf)
	if err != nil {
		return err
	}
	for rel, content := range files {
		path := filepath.Join(s.appDir, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(rel, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			return err
		}
	}

	// The test's own compose override (outside APP_DIR): certbot trusts pebble's listener
	// certificate. Nothing else of the project's compose file is changed.
	s.certbotLogs = filepath.Join(tmp, "certbot-logs")
	if err := os.MkdirAll(s.certbotLogs, 0o755); err != nil {
		return err
	}
	override := filepath.Join(tmp, "compose.e2e.yaml")
	overrideYAML := fmt.Sprintf(`# melody-flow docker e2e: certbot trusts the local ACME server (pebble).
services:
  certbot:
    environment:
      REQUESTS_CA_BUNDLE: /e2e/pebble-listener-ca.pem
    volumes:
      - %s:/e2e/pebble-listener-ca.pem:ro
      # certbot's debug logs, kept for the failure report.
      - %s:/var/log/letsencrypt
`, acme.ListenerCAFile, s.certbotLogs)
	if err := os.WriteFile(override, []byte(overrideYAML), 0o644); err != nil {
		return err
	}
	composeCmd := os.Getenv("MELODY_DOCKER_E2E_COMPOSE") // e.g. "docker compose" where the v2 plugin exists
	if composeCmd == "" {
		composeCmd = "docker-compose"
	}
	s.compose = fmt.Sprintf("%s -f %s -f %s", composeCmd, filepath.Join(s.appDir, "compose.yaml"), override)

	// sudo as the remote command uses it; root here, so a shim that runs its arguments keeps
	// the environment that "sudo env K=V ..." sets, whatever the machine's sudoers says.
	if err := os.MkdirAll(s.shimDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.shimDir, "sudo"), []byte("#!/bin/sh\nexec \"$@\"\n"), 0o755); err != nil {
		return err
	}

	s.bp = userdata.BootstrapParams{
		AppDir:      s.appDir,
		APIDomain:   apiDomain,
		ExpectedIP:  "127.0.0.1",
		NameServers: []string{"127.0.0.1"},
		ACMEEmail:   "ops@melody-flow.test",
		ACMEServer:  acme.Directory,
		HealthPath:  healthPath,
	}
	s.extra = map[string]string{
		"COMPOSE":        s.compose,
		"DOCKER_HOST":    s.d.host(),
		"NGINX_IMAGE":    images["NGINX_IMAGE"],
		"CERTBOT_IMAGE":  images["CERTBOT_IMAGE"],
		"API_IMAGE":      images["API_IMAGE"],
		"DNS_PORT":       "8053",      // pebble-challtestsrv answers as the zone's name server
		"DNS_INTERVAL":   "1",         // the record is there at once
		"CURL_CA_BUNDLE": issuingRoot, // enable-tls's check trusts pebble's issuing root
		"PATH":           s.shimDir + ":" + os.Getenv("PATH"),
	}
	return nil
}

// runStep runs step's script through userdata.RemoteCommand with userdata.StepEnv plus the
// test's extras (compose command, engine socket, image names, DNS port, CA bundle).
func (s *stack) runStep(ctx context.Context, step userdata.Step) error {
	env := userdata.StepEnv(step, s.bp)
	for k, v := range s.extra {
		if _, clash := env[k]; clash {
			return fmt.Errorf("test variable %s would override StepEnv's", k)
		}
		env[k] = v
	}
	cmdline := userdata.RemoteCommand(step, env)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := run(ctx, os.Getenv("HOME"), []string{"PATH=" + s.extra["PATH"], "HOME=/root"}, "bash", "-c", cmdline)
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	s.t.Logf("%s:\n%s", step, indentLines(tail(out, 25)))
	return nil
}

// runUnitStart runs what melody-flow.service's ExecStart runs, with the unit's environment:
// WorkingDirectory=APP_DIR, Environment=APP_DIR=…, EnvironmentFile=APP_DIR/.env.
func (s *stack) runUnitStart(ctx context.Context) error {
	env := []string{"PATH=" + s.extra["PATH"], "HOME=/root", "APP_DIR=" + s.appDir}
	dotenv, err := readDotenv(filepath.Join(s.appDir, ".env"))
	if err != nil {
		return err
	}
	env = append(env, dotenv...)
	// The engine and the local images, as for the steps (the unit's "docker compose" would use
	// the host's engine and the .env's API_IMAGE).
	for _, k := range []string{"COMPOSE", "DOCKER_HOST", "NGINX_IMAGE", "CERTBOT_IMAGE", "API_IMAGE"} {
		env = append(env, k+"="+s.extra[k])
	}
	out, err := run(ctx, s.appDir, env, "/usr/bin/bash", filepath.Join(s.appDir, "scripts", "start-stack.sh"))
	if err != nil {
		return fmt.Errorf("unit ExecStart: %w", err)
	}
	s.t.Logf("unit ExecStart (start-stack.sh):\n%s", indentLines(tail(out, 25)))
	return nil
}

func readDotenv(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var env []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		env = append(env, line)
	}
	return env, sc.Err()
}

func (s *stack) dockerEnv() []string {
	return append(os.Environ(), s.d.env()...)
}

// composeEnv is the environment the test's own compose calls get: the step's extras.
func (s *stack) composeEnv() []string {
	env := append(os.Environ(), s.d.env()...)
	for _, k := range []string{"NGINX_IMAGE", "CERTBOT_IMAGE", "API_IMAGE"} {
		env = append(env, k+"="+s.extra[k])
	}
	return env
}

// composeRun runs "$COMPOSE args..." in APP_DIR.
func (s *stack) composeRun(ctx context.Context, args ...string) (string, error) {
	if s.compose == "" {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	argv := append(strings.Fields(s.compose), args...)
	return run(ctx, s.appDir, s.composeEnv(), argv[0], argv[1:]...)
}

func (s *stack) containerIDs(ctx context.Context) ([]string, error) {
	out, err := s.composeRun(ctx, "ps", "-q")
	if err != nil {
		return nil, err
	}
	ids := strings.Fields(out)
	if len(ids) < 3 {
		return nil, fmt.Errorf("expected the nginx, api and certbot containers, got %q", ids)
	}
	return ids, nil
}

func (s *stack) runningIDs(ctx context.Context) ([]string, error) {
	out, err := run(ctx, "", s.dockerEnv(), "docker", "ps", "-q", "--filter", "label=com.docker.compose.project="+userdata.ProjectName)
	return strings.Fields(out), err
}

// liveCert is the certificate certbot's live/ link points at, read through the namespace's
// private /etc/letsencrypt (the host path the compose file mounts).
func (s *stack) liveCert() (*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join("/etc/letsencrypt/live", apiDomain, "cert.pem"))
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("live/%s/cert.pem holds no PEM block", apiDomain)
	}
	return x509.ParseCertificate(blk.Bytes)
}

// waitServing polls until nginx serves want over HTTPS and the API answers through it.
func (s *stack) waitServing(client *http.Client, roots *x509.CertPool, want *x509.Certificate, timeout time.Duration) error {
	return eventually(timeout, 250*time.Millisecond, func() error {
		c, err := servedCert(apiDomain, roots)
		if err != nil {
			return err
		}
		if c.SerialNumber.Cmp(want.SerialNumber) != 0 {
			return fmt.Errorf("serves serial %s, want %s", c.SerialNumber.Text(16), want.SerialNumber.Text(16))
		}
		return checkHTTPS(client)
	})
}

// checkGPU checks that compose passed the GPU reservation to the engine and that the engine ran
// the NVIDIA prestart hook for the api container.
func (s *stack) checkGPU(ctx context.Context) error {
	out, err := s.composeRun(ctx, "ps", "-q", "api")
	if err != nil {
		return err
	}
	id := strings.TrimSpace(out)
	if id == "" {
		return fmt.Errorf("no api container")
	}
	insp, err := run(ctx, "", s.dockerEnv(), "docker", "inspect", "--format", "{{json .HostConfig.DeviceRequests}}", id)
	if err != nil {
		return err
	}
	var reqs []struct {
		Driver       string
		Count        int
		Capabilities [][]string
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(insp)), &reqs); err != nil {
		return fmt.Errorf("api DeviceRequests %q: %w", insp, err)
	}
	if len(reqs) != 1 || reqs[0].Driver != "nvidia" || reqs[0].Count != -1 || len(reqs[0].Capabilities) == 0 ||
		!containsString(reqs[0].Capabilities[0], "gpu") {
		return fmt.Errorf("api DeviceRequests = %s, want one nvidia request for all GPUs with capability gpu", strings.TrimSpace(insp))
	}
	hook, err := os.ReadFile(s.d.hookLog)
	if err != nil || !strings.Contains(string(hook), "prestart") {
		return fmt.Errorf("the NVIDIA prestart hook did not run (%v): %q", err, hook)
	}
	return nil
}

// checkHealthcheck runs the api container's healthcheck command, as compose handed it to the
// engine (API_HEALTH_PATH interpolated from .env), inside the container. The engine's own first
// check comes only after the 30 s interval.
func (s *stack) checkHealthcheck(ctx context.Context) error {
	out, err := s.composeRun(ctx, "ps", "-q", "api")
	if err != nil {
		return err
	}
	id := strings.TrimSpace(out)
	insp, err := run(ctx, "", s.dockerEnv(), "docker", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", id)
	if err != nil {
		return err
	}
	var test []string
	if err := json.Unmarshal([]byte(strings.TrimSpace(insp)), &test); err != nil || len(test) < 2 {
		return fmt.Errorf("api healthcheck %q: %v", insp, err)
	}
	var argv []string
	switch test[0] {
	case "CMD":
		argv = test[1:]
	case "CMD-SHELL":
		argv = []string{"/bin/sh", "-c", test[1]}
	default:
		return fmt.Errorf("api healthcheck %q: unexpected form", insp)
	}
	if !strings.Contains(strings.Join(argv, " "), healthPath) {
		return fmt.Errorf("api healthcheck %q does not check %s (API_HEALTH_PATH from .env)", argv, healthPath)
	}
	if _, err := run(ctx, "", s.dockerEnv(), "docker", append([]string{"exec", id}, argv...)...); err != nil {
		return fmt.Errorf("api healthcheck failed: %w", err)
	}
	return nil
}

func checkHTTPS(client *http.Client) error {
	resp, err := client.Get("https://" + apiDomain + healthPath)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET https://%s%s: %s %s", apiDomain, healthPath, resp.Status, body)
	}
	var echo struct {
		Service         string `json:"service"`
		Path            string `json:"path"`
		XForwardedProto string `json:"x_forwarded_proto"`
	}
	if err := json.Unmarshal(body, &echo); err != nil || echo.Service != "stand-in-api" {
		return fmt.Errorf("GET https://%s%s did not reach the stand-in API: %s", apiDomain, healthPath, body)
	}
	if echo.XForwardedProto != "https" || echo.Path != healthPath {
		return fmt.Errorf("the API saw X-Forwarded-Proto %q and path %q, want https and %s", echo.XForwardedProto, echo.Path, healthPath)
	}
	if hsts := resp.Header.Get("Strict-Transport-Security"); hsts == "" {
		return fmt.Errorf("no Strict-Transport-Security header over HTTPS")
	}
	return nil
}

func checkRedirect(client *http.Client) error {
	resp, err := client.Get("http://" + apiDomain + "/generate?x=1")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "https://"+apiDomain+"/generate?x=1" {
		return fmt.Errorf("http://%s/generate?x=1: %s Location %q, want 301 to https://%s/generate?x=1",
			apiDomain, resp.Status, resp.Header.Get("Location"), apiDomain)
	}
	resp, err = client.Get("http://" + apiDomain + "/.well-known/acme-challenge/missing")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("the challenge path must not redirect: got %s", resp.Status)
	}
	return nil
}

// dumpLogs prints what helps to understand a failure.
func (s *stack) dumpLogs(ctx context.Context, acme *pebbletest.Server) {
	if out, err := s.composeRun(ctx, "ps"); err == nil {
		s.t.Logf("compose ps:\n%s", out)
	}
	if out, err := s.composeRun(ctx, "logs", "--no-color", "--tail", "40"); err == nil {
		s.t.Logf("compose logs:\n%s", out)
	}
	if acme != nil {
		s.t.Logf("pebble log:\n%s", tailFile(acme.Log, 30))
	}
	s.t.Logf("dockerd log (%s):\n%s", s.d.logPath, tailFile(s.d.logPath, 30))
	if s.certbotLogs != "" {
		s.t.Logf("certbot debug log:\n%s", tailFile(filepath.Join(s.certbotLogs, "letsencrypt.log"), 60))
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func indentLines(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
