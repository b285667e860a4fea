package userdata_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/melody-flow/infra/internal/testtool"
)

// stubs are the AMI's programs as host-setup.sh uses them; each logs its call.
var stubs = map[string]string{
	"docker": `case "$*" in
"compose version") echo "Docker Compose version v2.40.3" ;;
"info --format {{json .Runtimes}}") echo '{"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}' ;;
*) echo "unexpected docker $*" >&2; exit 1 ;;
esac`,
	"curl":                 `while [ $# -gt 1 ]; do [ "$1" = -o ] && out=$2; shift; done; cp "$STUB_DOWNLOAD" "$out"`,
	"nvidia-ctk":           `echo '{"runtimes":{"nvidia":{}}}' >"$DOCKER_DAEMON_JSON"`,
	"nvidia-container-cli": `[ -z "${STUB_NO_GPU:-}" ] || { echo "nvidia-container-cli: initialization error: nvml error: driver not loaded" >&2; exit 1; }; echo "NVRM version: 550"`,
	"systemctl":            `:`,
	"aws":                  `:`,
	"usermod":              `:`,
}

// TestHostSetupWithStubbedAMI runs host-setup.sh (what cloud-init runs at
// first boot) against stand-ins for Docker, the NVIDIA toolkit and systemd:
// the checksum check, idempotence and the loud GPU failure.
func TestHostSetupWithStubbedAMI(t *testing.T) {
	if os.Geteuid() != 0 {
		testtool.Unavailable(t, "host-setup.sh must run as root")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	for name, body := range stubs {
		script := "#!/bin/sh\necho \"" + name + " $*\" >>\"$STUB_LOG\"\n" + body + "\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	download := filepath.Join(dir, "docker-compose-linux-x86_64")
	os.WriteFile(download, []byte("#!/bin/sh\necho fake compose\n"), 0o755)
	sum := sha256.Sum256([]byte("#!/bin/sh\necho fake compose\n"))
	appDir := filepath.Join(dir, "opt", "melody-flow")
	log := filepath.Join(dir, "calls.log")
	run := func(extra ...string) (string, error) {
		cmd := exec.Command("bash", "host-setup.sh")
		cmd.Env = append([]string{
			"PATH=" + bin + ":" + os.Getenv("PATH"),
			"APP_DIR=" + appDir, "APP_USER=root",
			"COMPOSE_SHA256=" + hex.EncodeToString(sum[:]),
			"PLUGIN_DIR=" + filepath.Join(dir, "cli-plugins"),
			"LE_DIR=" + filepath.Join(dir, "letsencrypt"),
			"DOCKER_DAEMON_JSON=" + filepath.Join(dir, "daemon.json"),
			"STUB_LOG=" + log, "STUB_DOWNLOAD=" + download,
		}, extra...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run()
	if err != nil {
		t.Fatalf("host-setup.sh: %v\n%s", err, out)
	}
	calls, _ := os.ReadFile(log)
	for _, want := range []string{"systemctl enable --now docker.service", "usermod -aG docker root", "curl ",
		"nvidia-ctk runtime configure --runtime=docker", "systemctl restart docker.service",
		"nvidia-container-cli info", "systemctl enable melody-flow.service",
		"systemctl enable --now melody-flow-cert-metric.timer"} {
		if !strings.Contains(string(calls), want) {
			t.Errorf("first run did not call %q; calls:\n%s", want, calls)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "cli-plugins", "docker-compose")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("compose plugin not installed 0755: %v", err)
	}
	for _, d := range []string{"", "nginx/conf.d", "scripts", "models", "acme-webroot"} {
		if fi, err := os.Stat(filepath.Join(appDir, d)); err != nil || !fi.IsDir() {
			t.Errorf("app directory %s/%s missing: %v", appDir, d, err)
		}
	}

	// Idempotent: the second run downloads nothing and restarts nothing.
	os.Remove(log)
	if out, err := run(); err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	} else if !strings.Contains(out, "already installed") {
		t.Errorf("second run did not notice the installed plugin:\n%s", out)
	}
	calls, _ = os.ReadFile(log)
	if strings.Contains(string(calls), "curl ") || strings.Contains(string(calls), "restart docker") {
		t.Errorf("second run downloaded or restarted docker:\n%s", calls)
	}

	// A download that does not match the pinned checksum is not installed.
	os.RemoveAll(filepath.Join(dir, "cli-plugins"))
	out, err = run("COMPOSE_SHA256=" + strings.Repeat("0", 64))
	if err == nil || !strings.Contains(out, "checksum mismatch") {
		t.Errorf("a wrong checksum must fail loudly: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "cli-plugins", "docker-compose")); err == nil {
		t.Errorf("the plugin was installed despite the checksum mismatch")
	}

	// No GPU for containers: fail, saying so.
	out, err = run("STUB_NO_GPU=1")
	if err == nil || !strings.Contains(out, "containers cannot use the GPU") {
		t.Errorf("a broken NVIDIA runtime must fail loudly: %v\n%s", err, out)
	}
}
