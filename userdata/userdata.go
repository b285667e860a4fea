// Package userdata holds everything that lands on the Melody Flow GPU host
// besides the nginx configs: the cloud-init user-data, the systemd unit, the
// compose files, the .env file, and the host scripts of the remote bootstrap
// (start-stack, wait-dns, obtain-cert, enable-tls).
//
// The files are real files in this folder, embedded; the functions here only
// fill in values, validate them and say how to run a step. Every script takes
// its parameters from the environment and runs container actions through
// $COMPOSE (default "docker compose"), so tests run the very same scripts with
// nginx and certbot invoked natively.
package userdata

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"maps"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"text/template"
)

//go:embed cloud-init.yaml.tmpl melody-flow.service melody-flow-cert-metric.service melody-flow-cert-metric.timer host-setup.sh compose.yaml compose.build.yaml scripts/*.sh
var files embed.FS

// DefaultAppDir is where the stack lives on the host.
const DefaultAppDir = "/opt/melody-flow"

// ProjectName is the compose project name (COMPOSE_PROJECT_NAME).
const ProjectName = "melody-flow"

// Params describe the host and the API it runs.
type Params struct {
	AppDir         string // "/opt/melody-flow"
	APIDomain      string // "api.melody-flow.click"
	FrontendOrigin string // "https://melody-flow.click" (CORS)
	APIImage       string // image to run; if empty, APIGitURL+APIGitRef are built on the host
	APIGitURL      string
	APIGitRef      string
	HealthPath     string // "/docs"
}

var (
	hostLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// A value that compose's .env, systemd's EnvironmentFile and a shell all
	// read the same way: no whitespace, quotes, $, backslash or backtick.
	plainValue = regexp.MustCompile("^[^\\s'\"$\\\\`]+$")
	// Docker image reference, loosely: [registry[:port]/]path[:tag][@digest].
	imageRef = regexp.MustCompile(`^[a-z0-9]+([._/:@-]+[a-zA-Z0-9_]+)*$`)
	gitRef   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)
	envKey   = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)
)

func checkHostname(s string) error {
	if s == "" {
		return fmt.Errorf("is empty")
	}
	labels := strings.Split(s, ".")
	if len(s) > 253 || len(labels) < 2 {
		return fmt.Errorf("is not a hostname with at least two labels (like api.example.com)")
	}
	for _, l := range labels {
		if !hostLabel.MatchString(l) {
			return fmt.Errorf("is not a hostname: label %q must be 1-63 of a-z, 0-9 and inner '-'", l)
		}
	}
	return nil
}

func checkAppDir(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("is empty")
	case !path.IsAbs(s) || path.Clean(s) != s || s == "/":
		return fmt.Errorf("must be a clean absolute path other than /")
	case !plainValue.MatchString(s):
		return fmt.Errorf("must not contain whitespace, quotes, $, backslashes or backticks")
	}
	return nil
}

// Validate reports the first field that cannot be used, naming it.
func (p Params) Validate() error {
	if err := checkAppDir(p.AppDir); err != nil {
		return fmt.Errorf("userdata: Params.AppDir %q %w", p.AppDir, err)
	}
	if err := checkHostname(p.APIDomain); err != nil {
		return fmt.Errorf("userdata: Params.APIDomain %q %w", p.APIDomain, err)
	}
	u, err := url.Parse(p.FrontendOrigin)
	if p.FrontendOrigin == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil ||
		!plainValue.MatchString(p.FrontendOrigin) {
		return fmt.Errorf("userdata: Params.FrontendOrigin %q is not an origin like https://melody-flow.click", p.FrontendOrigin)
	}
	if !strings.HasPrefix(p.HealthPath, "/") || !plainValue.MatchString(p.HealthPath) {
		return fmt.Errorf("userdata: Params.HealthPath %q must be a path starting with / (like /docs), without spaces or quotes", p.HealthPath)
	}
	switch {
	case p.APIImage != "":
		if !imageRef.MatchString(p.APIImage) {
			return fmt.Errorf("userdata: Params.APIImage %q is not an image reference like ghcr.io/org/api:1.2.3", p.APIImage)
		}
		if p.APIGitURL != "" || p.APIGitRef != "" {
			return fmt.Errorf("userdata: Params.APIImage %q is set together with Params.APIGitURL/APIGitRef: set one or the other", p.APIImage)
		}
	case p.APIGitURL == "":
		return fmt.Errorf("userdata: Params.APIImage and Params.APIGitURL are both empty: set an image, or a git URL and ref to build on the host")
	default:
		if !plainValue.MatchString(p.APIGitURL) || strings.Contains(p.APIGitURL, "#") ||
			!(strings.HasPrefix(p.APIGitURL, "https://") || strings.HasPrefix(p.APIGitURL, "git@") || strings.HasPrefix(p.APIGitURL, "ssh://")) {
			return fmt.Errorf("userdata: Params.APIGitURL %q is not a git URL (https://, ssh:// or git@) without '#'", p.APIGitURL)
		}
		if !gitRef.MatchString(p.APIGitRef) {
			return fmt.Errorf("userdata: Params.APIGitRef %q is not a branch, tag or commit", p.APIGitRef)
		}
	}
	return nil
}

func read(name string) string {
	b, err := files.ReadFile(name)
	if err != nil {
		panic(err) // embedded at build time: cannot happen
	}
	return string(b)
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}

func execute(name, text string, data any) (string, error) {
	t, err := template.New(name).Option("missingkey=error").Funcs(template.FuncMap{"indent": indent}).Parse(text)
	if err != nil {
		return "", fmt.Errorf("userdata: parsing %s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("userdata: rendering %s: %w", name, err)
	}
	return b.String(), nil
}

// Unit renders the systemd unit that brings the compose project up at boot.
func Unit(p Params) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	return execute("melody-flow.service", read("melody-flow.service"), p)
}

// CloudInit renders the #cloud-config user-data of the host.
func CloudInit(p Params) (string, error) {
	unit, err := Unit(p)
	if err != nil {
		return "", err
	}
	return execute("cloud-init.yaml.tmpl", read("cloud-init.yaml.tmpl"), struct {
		AppDir, Unit, CertMetricService, CertMetricTimer, HostSetup string
	}{p.AppDir, unit, read("melody-flow-cert-metric.service"), read("melody-flow-cert-metric.timer"), read("host-setup.sh")})
}

// BuildImageTag is the local image tag used when the API is built on the host:
// it changes with the git URL and ref, so a new ref makes compose build again.
func BuildImageTag(gitURL, ref string) string {
	sum := sha256.Sum256([]byte(gitURL + "#" + ref))
	return "melody-flow-api:git-" + hex.EncodeToString(sum[:])[:12]
}

// Env returns the variables of the .env file next to compose.yaml.
func Env(p Params) (map[string]string, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	env := map[string]string{
		"COMPOSE_PROJECT_NAME": ProjectName,
		"COMPOSE_FILE":         "compose.yaml",
		"API_DOMAIN":           p.APIDomain,
		"API_HEALTH_PATH":      p.HealthPath,
		"FRONTEND_ORIGIN":      p.FrontendOrigin,
	}
	if p.APIImage != "" {
		env["API_IMAGE"] = p.APIImage
	} else {
		env["COMPOSE_FILE"] = "compose.yaml:compose.build.yaml"
		env["API_BUILD_CONTEXT"] = p.APIGitURL + "#" + p.APIGitRef
		env["API_IMAGE"] = BuildImageTag(p.APIGitURL, p.APIGitRef)
	}
	return env, nil
}

// HostFiles returns what is copied into AppDir on the host: path relative to
// AppDir -> content. nginxHTTP and nginxHTTPS are the rendered nginx configs
// (package nginx).
func HostFiles(p Params, nginxHTTP, nginxHTTPS string) (map[string]string, error) {
	env, err := Env(p)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(nginxHTTP) == "" {
		return nil, fmt.Errorf("userdata: HostFiles: nginxHTTP is empty")
	}
	if strings.TrimSpace(nginxHTTPS) == "" {
		return nil, fmt.Errorf("userdata: HostFiles: nginxHTTPS is empty")
	}
	var dotenv strings.Builder
	dotenv.WriteString("# Melody Flow: read by docker compose and by melody-flow.service. Written by the deploy.\n")
	for _, k := range slices.Sorted(maps.Keys(env)) {
		fmt.Fprintf(&dotenv, "%s=%s\n", k, env[k])
	}
	out := map[string]string{
		"compose.yaml":       read("compose.yaml"),
		"compose.build.yaml": read("compose.build.yaml"),
		".env":               dotenv.String(),
		"nginx/http.conf":    nginxHTTP,
		"nginx/https.conf":   nginxHTTPS,
	}
	for _, s := range Steps {
		out["scripts/"+string(s)+".sh"] = read("scripts/" + string(s) + ".sh")
	}
	out[CertMetricScript] = read(CertMetricScript)
	return out, nil
}

// Step is one remote step of the TLS bootstrap, run by its script.
type Step string

const (
	StepStartStack Step = "start-stack" // remote step 3
	StepWaitDNS    Step = "wait-dns"    // remote step 4
	StepObtainCert Step = "obtain-cert" // remote step 5
	StepEnableTLS  Step = "enable-tls"  // remote step 6
)

// CertMetricScript publishes the certificate's days left; a systemd timer runs it.
const CertMetricScript = "scripts/cert-days-left.sh"

// Steps lists the steps in the order they run.
var Steps = []Step{StepStartStack, StepWaitDNS, StepObtainCert, StepEnableTLS}

// BootstrapParams are the values the remote steps need.
type BootstrapParams struct {
	AppDir      string
	APIDomain   string
	ExpectedIP  string   // the Elastic IP the A record must show
	NameServers []string // the hosted zone's authoritative name servers
	ACMEEmail   string
	ACMEStaging bool
	ACMEServer  string // optional ACME directory URL (tests); empty = certbot's default
	HealthPath  string
}

// StepEnv returns the environment variables that step's script reads. An
// unknown step gets only APP_DIR and API_DOMAIN.
func StepEnv(step Step, p BootstrapParams) map[string]string {
	env := map[string]string{"APP_DIR": p.AppDir, "API_DOMAIN": p.APIDomain}
	switch step {
	case StepWaitDNS:
		env["EXPECTED_IP"] = p.ExpectedIP
		env["NAMESERVERS"] = strings.Join(p.NameServers, " ")
	case StepObtainCert:
		env["ACME_EMAIL"] = p.ACMEEmail
		env["ACME_STAGING"] = "0"
		if p.ACMEStaging {
			env["ACME_STAGING"] = "1"
		}
		if p.ACMEServer != "" {
			env["ACME_SERVER"] = p.ACMEServer
		}
	case StepEnableTLS:
		env["HEALTH_PATH"] = p.HealthPath
		if p.ACMEStaging {
			// Staging certificates chain to a root no trust store has.
			env["ACME_STAGING"] = "1"
		}
	}
	return env
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// RemoteCommand is the command line that runs step's script on the host as
// root: sudo env K='v' ... bash '<APP_DIR>/scripts/<step>.sh', keys sorted.
// Variables go on the command line because sshd drops client environment
// variables unless AcceptEnv allows them. APP_DIR comes from env (DefaultAppDir
// when absent). Keys that are not shell variable names are left out.
func RemoteCommand(step Step, env map[string]string) string {
	appDir := env["APP_DIR"]
	if appDir == "" {
		appDir = DefaultAppDir
	}
	var b strings.Builder
	b.WriteString("sudo env")
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if !envKey.MatchString(k) {
			continue
		}
		b.WriteString(" " + k + "=" + shellQuote(env[k]))
	}
	b.WriteString(" bash " + shellQuote(appDir+"/scripts/"+string(step)+".sh"))
	return b.String()
}
