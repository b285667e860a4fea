package nginx_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/melody-flow/infra/internal/testtool"
	"github.com/melody-flow/infra/nginx"
)

func compose() nginx.Params {
	return nginx.Params{
		APIDomain:      "api.melody-flow.click",
		Upstream:       "api:8000",
		Webroot:        "/var/www/certbot",
		LetsEncryptDir: "/etc/letsencrypt",
	}
}

type renderer struct {
	name   string
	render func(nginx.Params) (string, error)
}

var renderers = []renderer{{"RenderHTTP", nginx.RenderHTTP}, {"RenderHTTPS", nginx.RenderHTTPS}}

func TestRenderedConfigsSayWhatTheContractSays(t *testing.T) {
	httpConf, err := nginx.RenderHTTP(compose())
	if err != nil {
		t.Fatal(err)
	}
	httpsConf, err := nginx.RenderHTTPS(compose())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, conf string
		want       []string
		notWant    []string
	}{
		{"http", httpConf, []string{
			"listen 80;",
			"server_name api.melody-flow.click;",
			"location ^~ /.well-known/acme-challenge/ {",
			"root /var/www/certbot;",
			"server_tokens off;",
			"return 503",
		}, []string{"ssl", "proxy_pass", "{{", "<no value>"}},
		{"https", httpsConf, []string{
			"upstream melody_flow_api {\n    server api:8000;",
			"keepalive 32;",
			"proxy_http_version 1.1;",
			`proxy_set_header Connection "";`,
			"return 301 https://api.melody-flow.click$request_uri;",
			"listen 443 ssl http2;",
			"ssl_certificate /etc/letsencrypt/live/api.melody-flow.click/fullchain.pem;",
			"ssl_certificate_key /etc/letsencrypt/live/api.melody-flow.click/privkey.pem;",
			"ssl_protocols TLSv1.2 TLSv1.3;",
			"ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;",
			`add_header Strict-Transport-Security "max-age=63072000" always;`,
			"server_tokens off;",
			"proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
			"proxy_set_header X-Forwarded-Proto $scheme;",
			"proxy_set_header X-Real-IP $remote_addr;",
			"proxy_set_header Host $host;",
			"proxy_read_timeout 300s;",
			"client_max_body_size 50m;",
			"root /var/www/certbot;",
		}, []string{"ssl_stapling", "http2 on", ":DHE-", "ssl_dhparam", "TLSv1.1", "{{", "<no value>"}},
	}
	for _, tt := range tests {
		for _, w := range tt.want {
			if !strings.Contains(tt.conf, w) {
				t.Errorf("%s config: missing %q", tt.name, w)
			}
		}
		for _, nw := range tt.notWant {
			if strings.Contains(tt.conf, nw) {
				t.Errorf("%s config: must not contain %q", tt.name, nw)
			}
		}
	}
	// The challenge location must come before the redirect and not be shadowed by it.
	if strings.Index(httpsConf, "acme-challenge") > strings.Index(httpsConf, "return 301") {
		t.Errorf("https config: the ACME challenge location must precede the redirect")
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	for _, r := range renderers {
		a, err := r.render(compose())
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			b, _ := r.render(compose())
			if a != b {
				t.Fatalf("%s: two renders of the same Params differ", r.name)
			}
		}
	}
}

func TestBadParamsNameTheField(t *testing.T) {
	tests := []struct {
		field string
		edit  func(*nginx.Params)
	}{
		{"APIDomain", func(p *nginx.Params) { p.APIDomain = "" }},
		{"APIDomain", func(p *nginx.Params) { p.APIDomain = "api" }},
		{"APIDomain", func(p *nginx.Params) { p.APIDomain = "api.melody flow.click" }},
		{"APIDomain", func(p *nginx.Params) { p.APIDomain = "api.example.com; include /etc/passwd" }},
		{"APIDomain", func(p *nginx.Params) { p.APIDomain = "-api.example.com" }},
		{"Upstream", func(p *nginx.Params) { p.Upstream = "" }},
		{"Upstream", func(p *nginx.Params) { p.Upstream = "api" }},
		{"Upstream", func(p *nginx.Params) { p.Upstream = ":8000" }},
		{"Upstream", func(p *nginx.Params) { p.Upstream = "api:http" }},
		{"Upstream", func(p *nginx.Params) { p.Upstream = "api:70000" }},
		{"Upstream", func(p *nginx.Params) { p.Upstream = "api;:8000" }},
		{"Webroot", func(p *nginx.Params) { p.Webroot = "" }},
		{"Webroot", func(p *nginx.Params) { p.Webroot = "var/www/certbot" }},
		{"Webroot", func(p *nginx.Params) { p.Webroot = "/var/www/cert bot" }},
		{"Webroot", func(p *nginx.Params) { p.Webroot = "/var/www/certbot;" }},
		{"LetsEncryptDir", func(p *nginx.Params) { p.LetsEncryptDir = "" }},
		{"LetsEncryptDir", func(p *nginx.Params) { p.LetsEncryptDir = "/etc/letsencrypt/" }},
		{"LetsEncryptDir", func(p *nginx.Params) { p.LetsEncryptDir = "/etc/{letsencrypt}" }},
	}
	for _, tt := range tests {
		for _, r := range renderers {
			p := compose()
			tt.edit(&p)
			out, err := r.render(p)
			if err == nil {
				t.Errorf("%s(%+v): no error, want one naming %s", r.name, p, tt.field)
				continue
			}
			if !strings.Contains(err.Error(), "Params."+tt.field+" ") {
				t.Errorf("%s(%+v): error %q does not name Params.%s", r.name, p, err, tt.field)
			}
			if out != "" {
				t.Errorf("%s: returned output with an error", r.name)
			}
		}
	}
	for _, ok := range []string{"127.0.0.1:8000", "api:8000", "[::1]:8000", "api.internal.example:443"} {
		p := compose()
		p.Upstream = ok
		if _, err := nginx.RenderHTTPS(p); err != nil {
			t.Errorf("Upstream %q: %v", ok, err)
		}
	}
}

// TestNginxAcceptsRenderedConfigs runs the real "nginx -t" on both configs, the
// final one with a throw-away certificate where certbot will put the real one.
func TestNginxAcceptsRenderedConfigs(t *testing.T) {
	bin := testtool.Need(t, "nginx")[0]
	dir := t.TempDir()
	p := nginx.Params{
		APIDomain:      "api.melody-flow.test",
		Upstream:       "127.0.0.1:8000",
		Webroot:        filepath.Join(dir, "webroot"),
		LetsEncryptDir: filepath.Join(dir, "letsencrypt"),
	}
	writeSelfSigned(t, filepath.Join(p.LetsEncryptDir, "live", p.APIDomain), p.APIDomain)
	for _, r := range renderers {
		t.Run(r.name, func(t *testing.T) {
			conf, err := r.render(p)
			if err != nil {
				t.Fatal(err)
			}
			out, err := NginxTest(bin, t.TempDir(), conf)
			if err != nil {
				t.Fatalf("nginx -t rejected the %s config: %v\n%s\n--- config ---\n%s", r.name, err, out, conf)
			}
			if strings.Contains(out, "[warn]") {
				t.Errorf("nginx -t warns about the %s config:\n%s", r.name, out)
			}
		})
	}
}

// NginxTest runs "nginx -t" with a minimal main config whose http{} context
// includes conf, as /etc/nginx/nginx.conf includes conf.d/*.conf.
func NginxTest(bin, dir, conf string) (string, error) {
	if err := os.WriteFile(filepath.Join(dir, "site.conf"), []byte(conf), 0o644); err != nil {
		return "", err
	}
	main := "pid " + dir + "/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n" +
		"    client_body_temp_path " + dir + "/body;\n    proxy_temp_path " + dir + "/proxy;\n" +
		"    include " + dir + "/site.conf;\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644); err != nil {
		return "", err
	}
	out, err := exec.Command(bin, "-t", "-q", "-e", "stderr", "-p", dir, "-c", filepath.Join(dir, "nginx.conf")).CombinedOutput()
	return string(out), err
}

func writeSelfSigned(t *testing.T, dir, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(dir, "fullchain.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "privkey.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
