package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/melody-flow/infra/internal/testtool"
	"github.com/melody-flow/infra/userdata"
)

func contains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, indent(s))
		}
	}
}

// nginxStillBootstrapping asserts nginx keeps serving the HTTP-only config.
func (h *host) nginxStillBootstrapping(t *testing.T) {
	t.Helper()
	if h.activeConf() != h.files["nginx/http.conf"] {
		t.Errorf("the active nginx config is no longer the bootstrap config:\n%s", h.activeConf())
	}
	r, err := h.get("http://" + domain + "/")
	if err != nil || r.status != 503 || !strings.Contains(r.body, "bootstrapping") {
		t.Errorf("nginx does not serve the bootstrap answer any more: %d %q %v", r.status, r.body, err)
	}
}

// TestTLSBootstrap runs remote steps 3-6 with the project's scripts against
// pebble, then the failure paths, the idempotent re-run and a renewal.
func TestTLSBootstrap(t *testing.T) {
	start := time.Now()
	h := newHost(t)
	t.Logf("environment up in %s", time.Since(start).Round(time.Millisecond))

	if !t.Run("start-stack serves the bootstrap config", func(t *testing.T) {
		r := h.step(userdata.StepStartStack, h.bootstrap)
		if r.err != nil {
			t.Fatalf("start-stack failed: %v", r.err)
		}
		h.nginxStillBootstrapping(t)
		// The challenge path is served from the webroot.
		p := filepath.Join(h.appDir, "acme-webroot", ".well-known", "acme-challenge")
		h.must(os.MkdirAll(p, 0o755))
		h.must(os.WriteFile(filepath.Join(p, "hello"), []byte("token-body"), 0o644))
		resp, err := h.get("http://" + domain + "/.well-known/acme-challenge/hello")
		if err != nil || resp.status != 200 || resp.body != "token-body" {
			t.Errorf("challenge path over HTTP: %d %q %v", resp.status, resp.body, err)
		}
		// Idempotent: a second start-stack changes nothing.
		if r := h.step(userdata.StepStartStack, h.bootstrap); r.err != nil {
			t.Fatalf("start-stack re-run failed: %v", r.err)
		}
		h.nginxStillBootstrapping(t)
	}) {
		t.FailNow()
	}

	t.Run("failure: DNS wait times out naming record, expected and seen addresses", func(t *testing.T) {
		bp := h.bootstrap
		bp.ExpectedIP = "203.0.113.7"
		r := h.step(userdata.StepWaitDNS, bp, "DNS_TIMEOUT=2")
		if r.err == nil {
			t.Fatalf("wait-dns succeeded although the record is 127.0.0.1, not 203.0.113.7")
		}
		contains(t, "wait-dns error", r.out, "timed out after 2s", "A record of "+domain, "to be 203.0.113.7", "127.0.0.1 answered 127.0.0.1")
		if r.elapse > 10*time.Second {
			t.Errorf("wait-dns took %s with DNS_TIMEOUT=2", r.elapse)
		}
	})

	t.Run("failure: enable-tls before there is a certificate", func(t *testing.T) {
		r := h.step(userdata.StepEnableTLS, h.bootstrap)
		if r.err == nil {
			t.Fatalf("enable-tls succeeded without a certificate")
		}
		contains(t, "enable-tls error", r.out, "no certificate for "+domain, "run obtain-cert first")
		h.nginxStillBootstrapping(t)
	})

	t.Run("failure: the ACME server refuses", func(t *testing.T) {
		bp := h.bootstrap
		bp.ACMEServer = refusingDir
		r := h.step(userdata.StepObtainCert, bp)
		if r.err == nil {
			t.Fatalf("obtain-cert succeeded against a refusing ACME server")
		}
		contains(t, "obtain-cert error", r.out,
			"certbot could not obtain a certificate for "+domain+" from "+refusingDir,
			"nginx was not changed and keeps serving its current configuration")
		h.nginxStillBootstrapping(t)
	})

	t.Run("failure: wrong webroot, pebble's validation fails", func(t *testing.T) {
		wrong := filepath.Join(h.dir, "not-the-webroot")
		h.must(os.MkdirAll(wrong, 0o755))
		// The certbot "container" writes its challenge file where nginx does not look.
		r := h.step(userdata.StepObtainCert, h.bootstrap, "SHIM_WEBROOT="+wrong)
		if r.err == nil {
			t.Fatalf("obtain-cert succeeded with a webroot nginx does not serve")
		}
		contains(t, "obtain-cert error", r.out,
			"certbot could not obtain a certificate for "+domain+" from "+pebbleDir,
			"nginx was not changed", "404")
		// pebble really asked nginx for the token, and nginx said 404.
		if !regexp.MustCompile(`"GET /\.well-known/acme-challenge/[A-Za-z0-9_-]{20,} HTTP/1\.1" 404`).MatchString(h.readAccessLog()) {
			t.Errorf("no challenge request answered 404 in nginx's access log:\n%s", h.readAccessLog())
		}
		h.nginxStillBootstrapping(t)
		if _, err := os.Stat(filepath.Join(h.leDir, "live", domain)); err == nil {
			t.Errorf("a certificate appeared although validation failed")
		}
	})

	if !t.Run("wait-dns sees the record at the authoritative server", func(t *testing.T) {
		if r := h.step(userdata.StepWaitDNS, h.bootstrap); r.err != nil {
			t.Fatalf("wait-dns failed: %v", r.err)
		}
	}) {
		t.FailNow()
	}

	if !t.Run("obtain-cert gets a certificate validated by pebble", func(t *testing.T) {
		before := len(h.readAccessLog())
		r := h.step(userdata.StepObtainCert, h.bootstrap)
		if r.err != nil {
			t.Fatalf("obtain-cert failed: %v", r.err)
		}
		// The validation went through nginx: a token (not our pre-flight probe) answered 200.
		newLog := h.readAccessLog()[before:]
		if !regexp.MustCompile(`"GET /\.well-known/acme-challenge/[A-Za-z0-9_-]{20,} HTTP/1\.1" 200`).MatchString(newLog) {
			t.Errorf("pebble's challenge request is not in nginx's access log:\n%s", newLog)
		}
		c, err := h.diskCert()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(c.Issuer.CommonName, "Pebble") || len(c.DNSNames) != 1 || c.DNSNames[0] != domain {
			t.Errorf("certificate: issuer %q, names %v", c.Issuer.CommonName, c.DNSNames)
		}
		// obtain-cert does not touch nginx.
		h.nginxStillBootstrapping(t)
	}) {
		t.FailNow()
	}

	if !t.Run("enable-tls switches nginx to TLS and verifies the health path", func(t *testing.T) {
		r := h.step(userdata.StepEnableTLS, h.bootstrap)
		if r.err != nil {
			t.Fatalf("enable-tls failed: %v", r.err)
		}
		contains(t, "enable-tls output", r.out, "https://"+domain+"/docs answers over TLS")
		if h.activeConf() != h.files["nginx/https.conf"] {
			t.Errorf("active config is not nginx/https.conf")
		}
	}) {
		t.FailNow()
	}

	t.Run("https reaches the API with X-Forwarded-Proto https", func(t *testing.T) {
		r, err := h.get("https://" + domain + "/v1/generate?seed=3")
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != 200 {
			t.Fatalf("%d %q: %v", r.status, r.body, err)
		}
		if got["x_forwarded_proto"] != "https" || got["path"] != "/v1/generate?seed=3" || got["host"] != domain ||
			got["x_forwarded_for"] != "127.0.0.1" || got["x_real_ip"] != "127.0.0.1" || got["proto"] != "HTTP/1.1" || got["connection"] != "" {
			t.Errorf("the API saw %v", got)
		}
		if r.proto != "HTTP/2.0" {
			t.Errorf("client got %s, want HTTP/2 from nginx", r.proto)
		}
		if hsts := r.header.Get("Strict-Transport-Security"); !strings.HasPrefix(hsts, "max-age=") {
			t.Errorf("no HSTS header: %q", hsts)
		}
		if s := r.header.Get("Server"); s != "nginx" {
			t.Errorf("Server header %q: want bare nginx (server_tokens off)", s)
		}
	})

	t.Run("http redirects to https except the challenge path", func(t *testing.T) {
		// enable-tls verified https, served only by new workers; an old worker
		// (bootstrap config) may accept on port 80 for a few ms more: poll.
		waitFor(t, "http to redirect to https", 3*time.Second, func() error {
			r, err := h.get("http://" + domain + "/docs?x=1")
			if err != nil || r.status != 301 || r.header.Get("Location") != "https://"+domain+"/docs?x=1" {
				return fmt.Errorf("http /docs: %d Location=%q %v", r.status, r.header.Get("Location"), err)
			}
			return nil
		})
		r, err := h.get("http://" + domain + "/.well-known/acme-challenge/hello")
		if err != nil || r.status != 200 || r.body != "token-body" {
			t.Errorf("challenge path over HTTP after TLS: %d %q %v", r.status, r.body, err)
		}
	})

	var serial string
	t.Run("a second run of all steps issues no new certificate and keeps TLS", func(t *testing.T) {
		s1, err := h.servedSerial()
		if err != nil {
			t.Fatal(err)
		}
		serial = s1.String()
		for _, s := range userdata.Steps {
			if r := h.step(s, h.bootstrap); r.err != nil {
				t.Fatalf("re-run of %s failed: %v", s, r.err)
			}
		}
		if h.activeConf() != h.files["nginx/https.conf"] {
			t.Errorf("after the re-run the active config is not the TLS one")
		}
		c, err := h.diskCert()
		if err != nil {
			t.Fatal(err)
		}
		s2, err := h.servedSerial()
		if err != nil {
			t.Fatal(err)
		}
		if c.SerialNumber.String() != serial || s2.String() != serial {
			t.Errorf("serial changed: first %s, now on disk %s, served %s", serial, c.SerialNumber, s2)
		}
		if _, err := os.Stat(filepath.Join(h.leDir, "archive", domain, "cert2.pem")); err == nil {
			t.Errorf("certbot stored a second certificate")
		}
	})

	t.Run("certbot renew (pointed at pebble) renews; nginx serves the new certificate after reload", func(t *testing.T) {
		// What the certbot service's loop runs, plus --force-renewal (this test
		// only) and --server so that it can only ever reach pebble.
		out, err := h.shimRun("run", "--rm", "certbot", "renew", "--webroot", "-w", "/var/www/certbot",
			"--no-random-sleep-on-renew", "--force-renewal", "--server", pebbleDir, "--non-interactive")
		if err != nil {
			t.Fatalf("certbot renew: %v\n%s", err, out)
		}
		c, err := h.diskCert()
		if err != nil {
			t.Fatal(err)
		}
		if c.SerialNumber.String() == serial {
			t.Fatalf("certbot renew did not replace the certificate (serial %s)", serial)
		}
		// nginx's 6-hourly reload loop; the reload is asynchronous: poll.
		if out, err := h.shimRun("exec", "-T", "nginx", "nginx", "-s", "reload"); err != nil {
			t.Fatalf("reload: %v\n%s", err, out)
		}
		waitFor(t, "nginx to serve the renewed certificate", 5*time.Second, func() error {
			s, err := h.servedSerial()
			if err != nil {
				return err
			}
			if s.Cmp(c.SerialNumber) != 0 {
				return os.ErrNotExist
			}
			return nil
		})
	})

	t.Run("failure: nginx rejects a broken final config; the previous one keeps serving", func(t *testing.T) {
		good := h.files["nginx/https.conf"]
		https := filepath.Join(h.appDir, "nginx", "https.conf")
		broken := strings.Replace(good, "server_tokens off;", "server_tokens off;\n    this_is_not_a_directive on;", 1)
		h.must(os.WriteFile(https, []byte(broken), 0o644))
		defer os.WriteFile(https, []byte(good), 0o644)
		r := h.step(userdata.StepEnableTLS, h.bootstrap)
		if r.err == nil {
			t.Fatalf("enable-tls accepted a config nginx rejects")
		}
		contains(t, "enable-tls error", r.out, "unknown directive", "nginx rejected "+https, "restored the previous configuration")
		if h.activeConf() != good {
			t.Errorf("the previous (good) config was not restored")
		}
		resp, err := h.get("https://" + domain + "/still")
		if err != nil || resp.status != 200 || !strings.Contains(resp.body, `"x_forwarded_proto":"https"`) {
			t.Errorf("nginx stopped serving TLS: %d %q %v", resp.status, resp.body, err)
		}
	})

	t.Run("the scripts used only the compose verbs of the contract", func(t *testing.T) {
		b, err := os.ReadFile(h.shimLog)
		if err != nil {
			t.Fatal(err)
		}
		allowed := regexp.MustCompile(`^(up -d --remove-orphans|exec -T nginx nginx -t|exec -T nginx nginx -s reload|run --rm certbot (certonly|renew) .*)$`)
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if !allowed.MatchString(l) {
				t.Errorf("unexpected compose call: %q", l)
			}
		}
	})
	t.Logf("whole bootstrap test: %s", time.Since(start).Round(time.Millisecond))
}

// TestShimIsShellcheckClean keeps the test's compose stand-in as strict as
// the scripts it serves.
func TestShimIsShellcheckClean(t *testing.T) {
	sc := testtool.Need(t, "shellcheck")[0]
	if out, err := exec.Command(sc, "testdata/compose-shim.sh").CombinedOutput(); err != nil {
		t.Errorf("shellcheck testdata/compose-shim.sh: %v\n%s", err, out)
	}
}
