// Package nginx renders the two nginx server configurations of the Melody Flow
// GPU host: the HTTP-only bootstrap that serves ACME challenges, and the final
// TLS reverse proxy in front of the API.
//
// Both outputs are server-level files for /etc/nginx/conf.d/ (the http{}
// context of Debian's nginx 1.22 and of the official nginx image includes
// them). Rendering is a pure function of Params.
package nginx

import (
	"bytes"
	"embed"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"text/template"
)

//go:embed http.conf.tmpl https.conf.tmpl
var templateFS embed.FS

var templates = template.Must(template.New("nginx").Option("missingkey=error").ParseFS(templateFS, "*.tmpl"))

// Params are the values the templates need, as nginx sees them.
type Params struct {
	APIDomain      string // "api.melody-flow.click"
	Upstream       string // host:port of the FastAPI service; "api:8000" under compose, "127.0.0.1:8000" in tests
	Webroot        string // ACME webroot as nginx sees it, "/var/www/certbot" under compose
	LetsEncryptDir string // certbot's config dir as nginx sees it, "/etc/letsencrypt" under compose
}

// RenderHTTP renders the HTTP-only bootstrap configuration.
func RenderHTTP(p Params) (string, error) { return render("http.conf.tmpl", p) }

// RenderHTTPS renders the final configuration. It expects the certificate at
// <LetsEncryptDir>/live/<APIDomain>/fullchain.pem and the key at privkey.pem
// next to it, where certbot puts them.
func RenderHTTPS(p Params) (string, error) { return render("https.conf.tmpl", p) }

func render(name string, p Params) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, p); err != nil {
		return "", fmt.Errorf("nginx: rendering %s: %w", name, err)
	}
	return b.String(), nil
}

var (
	hostLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// Characters that would end or escape an nginx directive argument.
	unsafePath = regexp.MustCompile(`[\s;{}'"\\$#]`)
)

// Validate reports the first field that cannot be used, naming it.
func (p Params) Validate() error {
	if err := checkHostname(p.APIDomain); err != nil {
		return fmt.Errorf("nginx: Params.APIDomain %q %w", p.APIDomain, err)
	}
	if err := checkHostPort(p.Upstream); err != nil {
		return fmt.Errorf("nginx: Params.Upstream %q %w", p.Upstream, err)
	}
	if err := checkDir(p.Webroot); err != nil {
		return fmt.Errorf("nginx: Params.Webroot %q %w", p.Webroot, err)
	}
	if err := checkDir(p.LetsEncryptDir); err != nil {
		return fmt.Errorf("nginx: Params.LetsEncryptDir %q %w", p.LetsEncryptDir, err)
	}
	return nil
}

// checkHostname accepts lower-case DNS names with at least two labels.
func checkHostname(s string) error {
	if s == "" {
		return fmt.Errorf("is empty")
	}
	if len(s) > 253 {
		return fmt.Errorf("is not a hostname: longer than 253 characters")
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return fmt.Errorf("is not a hostname: it needs at least two labels (like api.example.com)")
	}
	for _, l := range labels {
		if !hostLabel.MatchString(l) {
			return fmt.Errorf("is not a hostname: label %q must be 1-63 of a-z, 0-9 and inner '-'", l)
		}
	}
	return nil
}

func checkHostPort(s string) error {
	if s == "" {
		return fmt.Errorf("is empty")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("is not host:port: %v", err)
	}
	if host == "" {
		return fmt.Errorf("is not host:port: the host is empty")
	}
	if net.ParseIP(host) == nil && !hostLabel.MatchString(host) {
		if err := checkHostname(host); err != nil {
			return fmt.Errorf("is not host:port: host %q is neither an IP address nor a hostname", host)
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("is not host:port: port %q is not a number from 1 to 65535", port)
	}
	return nil
}

func checkDir(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is empty")
	case !strings.HasPrefix(s, "/"):
		return fmt.Errorf("is not an absolute path")
	case unsafePath.MatchString(s):
		return fmt.Errorf("contains whitespace, quotes or one of ;{}$#\\, which nginx would misread")
	case len(s) > 1 && strings.HasSuffix(s, "/"):
		return fmt.Errorf("must not end with '/'")
	}
	return nil
}
