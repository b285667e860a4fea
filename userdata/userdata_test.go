package userdata_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/melody-flow/infra/userdata"
)

func imageParams() userdata.Params {
	return userdata.Params{
		AppDir:         "/opt/melody-flow",
		APIDomain:      "api.melody-flow.click",
		FrontendOrigin: "https://melody-flow.click",
		APIImage:       "ghcr.io/melody-flow/api:1.4.2",
		HealthPath:     "/docs",
	}
}

func gitParams() userdata.Params {
	p := imageParams()
	p.APIImage = ""
	p.APIGitURL = "https://github.com/melody-flow/melody-flow.git"
	p.APIGitRef = "v1.4.2"
	return p
}

func TestBadParamsNameTheField(t *testing.T) {
	tests := []struct {
		field string
		edit  func(*userdata.Params)
	}{
		{"AppDir", func(p *userdata.Params) { p.AppDir = "" }},
		{"AppDir", func(p *userdata.Params) { p.AppDir = "opt/melody-flow" }},
		{"AppDir", func(p *userdata.Params) { p.AppDir = "/opt/melody flow" }},
		{"AppDir", func(p *userdata.Params) { p.AppDir = "/opt/melody-flow/" }},
		{"AppDir", func(p *userdata.Params) { p.AppDir = "/" }},
		{"APIDomain", func(p *userdata.Params) { p.APIDomain = "" }},
		{"APIDomain", func(p *userdata.Params) { p.APIDomain = "API.melody-flow.click" }},
		{"APIDomain", func(p *userdata.Params) { p.APIDomain = "localhost" }},
		{"FrontendOrigin", func(p *userdata.Params) { p.FrontendOrigin = "" }},
		{"FrontendOrigin", func(p *userdata.Params) { p.FrontendOrigin = "melody-flow.click" }},
		{"FrontendOrigin", func(p *userdata.Params) { p.FrontendOrigin = "https://melody-flow.click/app" }},
		{"FrontendOrigin", func(p *userdata.Params) { p.FrontendOrigin = "https://melody-flow.click'" }},
		{"HealthPath", func(p *userdata.Params) { p.HealthPath = "" }},
		{"HealthPath", func(p *userdata.Params) { p.HealthPath = "docs" }},
		{"HealthPath", func(p *userdata.Params) { p.HealthPath = "/do cs" }},
		{"APIImage", func(p *userdata.Params) { p.APIImage = "Not An Image" }},
		{"APIImage", func(p *userdata.Params) { p.APIGitURL = "https://github.com/x/y.git" }},
		{"APIGitURL", func(p *userdata.Params) { p.APIImage = "" }},
		{"APIGitURL", func(p *userdata.Params) { p.APIImage, p.APIGitURL, p.APIGitRef = "", "ftp://x/y", "main" }},
		{"APIGitURL", func(p *userdata.Params) { p.APIImage, p.APIGitURL, p.APIGitRef = "", "https://x/y.git#main", "main" }},
		{"APIGitRef", func(p *userdata.Params) { p.APIImage, p.APIGitURL, p.APIGitRef = "", "https://x/y.git", "" }},
		{"APIGitRef", func(p *userdata.Params) {
			p.APIImage, p.APIGitURL, p.APIGitRef = "", "https://x/y.git", "main; rm -rf /"
		}},
	}
	calls := map[string]func(userdata.Params) error{
		"CloudInit": func(p userdata.Params) error { _, err := userdata.CloudInit(p); return err },
		"HostFiles": func(p userdata.Params) error { _, err := userdata.HostFiles(p, "http", "https"); return err },
	}
	for _, tt := range tests {
		for name, call := range calls {
			p := imageParams()
			tt.edit(&p)
			err := call(p)
			if err == nil {
				t.Errorf("%s(%+v): no error, want one naming %s", name, p, tt.field)
			} else if !strings.Contains(err.Error(), "Params."+tt.field) {
				t.Errorf("%s(%+v): error %q does not name Params.%s", name, p, err, tt.field)
			}
		}
	}
	if _, err := userdata.HostFiles(imageParams(), "", "x"); err == nil || !strings.Contains(err.Error(), "nginxHTTP") {
		t.Errorf("HostFiles with an empty nginxHTTP: err = %v", err)
	}
}

func TestHostFilesAreExactlyWhatIsCopied(t *testing.T) {
	files, err := userdata.HostFiles(imageParams(), "HTTP CONF", "HTTPS CONF")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for k := range files {
		got = append(got, k)
	}
	sort.Strings(got)
	want := []string{".env", "compose.build.yaml", "compose.yaml", "nginx/http.conf", "nginx/https.conf",
		"scripts/cert-days-left.sh", "scripts/enable-tls.sh", "scripts/obtain-cert.sh", "scripts/start-stack.sh", "scripts/wait-dns.sh"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("HostFiles keys = %v, want %v", got, want)
	}
	if files["nginx/http.conf"] != "HTTP CONF" || files["nginx/https.conf"] != "HTTPS CONF" {
		t.Errorf("nginx configs are not passed through unchanged")
	}
	for _, s := range userdata.Steps {
		body := files["scripts/"+string(s)+".sh"]
		if !strings.HasPrefix(body, "#!/usr/bin/env bash\n") || !strings.Contains(body, "set -euo pipefail") {
			t.Errorf("scripts/%s.sh: want a bash shebang and set -euo pipefail", s)
		}
		if !strings.Contains(body, `COMPOSE=${COMPOSE:-docker compose}`) && s != userdata.StepWaitDNS {
			t.Errorf("scripts/%s.sh: container actions must go through $COMPOSE", s)
		}
		if strings.Contains(body, "--force-renewal") {
			t.Errorf("scripts/%s.sh must never use --force-renewal", s)
		}
	}
	// Deterministic.
	again, _ := userdata.HostFiles(imageParams(), "HTTP CONF", "HTTPS CONF")
	if !reflect.DeepEqual(files, again) {
		t.Errorf("HostFiles is not deterministic")
	}
}

func TestDotEnv(t *testing.T) {
	tests := []struct {
		name string
		p    userdata.Params
		want []string
	}{
		{"image", imageParams(), []string{
			"API_DOMAIN=api.melody-flow.click",
			"API_HEALTH_PATH=/docs",
			"API_IMAGE=ghcr.io/melody-flow/api:1.4.2",
			"COMPOSE_FILE=compose.yaml",
			"COMPOSE_PROJECT_NAME=melody-flow",
			"FRONTEND_ORIGIN=https://melody-flow.click",
		}},
		{"git", gitParams(), []string{
			"API_BUILD_CONTEXT=https://github.com/melody-flow/melody-flow.git#v1.4.2",
			"API_DOMAIN=api.melody-flow.click",
			"API_HEALTH_PATH=/docs",
			"API_IMAGE=" + userdata.BuildImageTag("https://github.com/melody-flow/melody-flow.git", "v1.4.2"),
			"COMPOSE_FILE=compose.yaml:compose.build.yaml",
			"COMPOSE_PROJECT_NAME=melody-flow",
			"FRONTEND_ORIGIN=https://melody-flow.click",
		}},
	}
	for _, tt := range tests {
		files, err := userdata.HostFiles(tt.p, "a", "b")
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(files[".env"]), "\n") {
			if !strings.HasPrefix(l, "#") {
				lines = append(lines, l)
			}
		}
		if !reflect.DeepEqual(lines, tt.want) {
			t.Errorf("%s: .env =\n%s\nwant (sorted):\n%s", tt.name, strings.Join(lines, "\n"), strings.Join(tt.want, "\n"))
		}
	}
	a := userdata.BuildImageTag("https://x/y.git", "main")
	if a == userdata.BuildImageTag("https://x/y.git", "v2") || !strings.HasPrefix(a, "melody-flow-api:git-") {
		t.Errorf("BuildImageTag must change with the ref: %s", a)
	}
}

func TestCloudInit(t *testing.T) {
	ci, err := userdata.CloudInit(imageParams())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ci, "#cloud-config\n") {
		t.Fatalf("user-data must start with #cloud-config")
	}
	// EC2 user-data is limited to 16 KiB.
	if len(ci) > 16*1024 {
		t.Errorf("user-data is %d bytes, more than EC2's 16 KiB", len(ci))
	}
	for _, w := range []string{
		"- bind-utils",
		"path: /etc/systemd/system/melody-flow.service",
		"      WorkingDirectory=/opt/melody-flow\n",
		"      ConditionPathExists=/opt/melody-flow/compose.yaml\n",
		"      Requires=docker.service\n",
		"COMPOSE_VERSION=${COMPOSE_VERSION:-v2.40.3}",
		"dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372",
		"nvidia-ctk runtime configure --runtime=docker",
		"nvidia-container-cli info",
		"systemctl enable --now docker.service",
		`usermod -aG docker "$APP_USER"`,
		`"APP_DIR=/opt/melody-flow"`,
	} {
		if !strings.Contains(ci, w) {
			t.Errorf("user-data: missing %q", w)
		}
	}
	if again, _ := userdata.CloudInit(imageParams()); again != ci {
		t.Errorf("CloudInit is not deterministic")
	}
}

func TestStepEnvAndRemoteCommand(t *testing.T) {
	bp := userdata.BootstrapParams{
		AppDir:      "/opt/melody-flow",
		APIDomain:   "api.melody-flow.click",
		ExpectedIP:  "203.0.113.10",
		NameServers: []string{"ns-1.awsdns-01.org", "ns-2.awsdns-02.co.uk"},
		ACMEEmail:   "ops@melody-flow.click",
		ACMEStaging: true,
		HealthPath:  "/docs",
	}
	base := map[string]string{"APP_DIR": "/opt/melody-flow", "API_DOMAIN": "api.melody-flow.click"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		step userdata.Step
		want map[string]string
		cmd  string
	}{
		{userdata.StepStartStack, with(),
			`sudo env API_DOMAIN='api.melody-flow.click' APP_DIR='/opt/melody-flow' bash '/opt/melody-flow/scripts/start-stack.sh'`},
		{userdata.StepWaitDNS, with("EXPECTED_IP", "203.0.113.10", "NAMESERVERS", "ns-1.awsdns-01.org ns-2.awsdns-02.co.uk"),
			`sudo env API_DOMAIN='api.melody-flow.click' APP_DIR='/opt/melody-flow' EXPECTED_IP='203.0.113.10' NAMESERVERS='ns-1.awsdns-01.org ns-2.awsdns-02.co.uk' bash '/opt/melody-flow/scripts/wait-dns.sh'`},
		{userdata.StepObtainCert, with("ACME_EMAIL", "ops@melody-flow.click", "ACME_STAGING", "1"),
			`sudo env ACME_EMAIL='ops@melody-flow.click' ACME_STAGING='1' API_DOMAIN='api.melody-flow.click' APP_DIR='/opt/melody-flow' bash '/opt/melody-flow/scripts/obtain-cert.sh'`},
		// Staging certificates are untrusted: enable-tls is told so.
		{userdata.StepEnableTLS, with("HEALTH_PATH", "/docs", "ACME_STAGING", "1"),
			`sudo env ACME_STAGING='1' API_DOMAIN='api.melody-flow.click' APP_DIR='/opt/melody-flow' HEALTH_PATH='/docs' bash '/opt/melody-flow/scripts/enable-tls.sh'`},
	}
	for _, tt := range tests {
		env := userdata.StepEnv(tt.step, bp)
		if !reflect.DeepEqual(env, tt.want) {
			t.Errorf("StepEnv(%s) = %v, want %v", tt.step, env, tt.want)
		}
		if got := userdata.RemoteCommand(tt.step, env); got != tt.cmd {
			t.Errorf("RemoteCommand(%s) =\n%s\nwant\n%s", tt.step, got, tt.cmd)
		}
	}
	bp.ACMEStaging, bp.ACMEServer = false, "https://127.0.0.1:14000/dir"
	env := userdata.StepEnv(userdata.StepObtainCert, bp)
	if env["ACME_STAGING"] != "0" || env["ACME_SERVER"] != "https://127.0.0.1:14000/dir" {
		t.Errorf("StepEnv(obtain-cert) without staging, with a server: %v", env)
	}
	if env := userdata.StepEnv(userdata.StepEnableTLS, bp); env["ACME_STAGING"] != "" {
		t.Errorf("StepEnv(enable-tls) without staging: %v", env)
	}
}

// TestRemoteCommandRoundTrip runs the command line through bash (sudo left
// out) and checks the script receives every value byte for byte.
func TestRemoteCommandRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/usr/bin/env bash\nprintf '%s\\n' \"$APP_DIR\" \"$TRICKY\" \"$EMPTY\" \"$API_DOMAIN\"\n"
	if err := os.WriteFile(filepath.Join(dir, "scripts", "wait-dns.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"APP_DIR":    dir,
		"TRICKY":     `it's "quoted" $HOME $(id) ; | & \ ` + "`x`",
		"EMPTY":      "",
		"API_DOMAIN": "api.x.test",
		"bad key":    "dropped",
	}
	cmd := userdata.RemoteCommand(userdata.StepWaitDNS, env)
	if strings.Contains(cmd, "dropped") {
		t.Errorf("a key that is not a variable name was kept: %s", cmd)
	}
	out, err := exec.Command("bash", "-c", strings.TrimPrefix(cmd, "sudo ")).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	want := dir + "\n" + env["TRICKY"] + "\n\napi.x.test\n"
	if string(out) != want {
		t.Errorf("values changed on the way:\n got %q\nwant %q", out, want)
	}
	if userdata.RemoteCommand(userdata.StepWaitDNS, env) != cmd {
		t.Errorf("RemoteCommand is not deterministic")
	}
}
