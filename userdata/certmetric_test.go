package userdata_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/melody-flow/infra/internal/testtool"
)

// TestCertDaysLeftPublishesTheRemainingDays runs scripts/cert-days-left.sh on a real
// certificate made by openssl, with a stand-in for the AWS CLI that records its call.
func TestCertDaysLeftPublishesTheRemainingDays(t *testing.T) {
	openssl := testtool.Need(t, "openssl")[0]
	dir := t.TempDir()
	live := filepath.Join(dir, "letsencrypt", "live", "api.example.test")
	if err := os.MkdirAll(live, 0o700); err != nil {
		t.Fatal(err)
	}
	calls := filepath.Join(dir, "aws-calls")
	stub := filepath.Join(dir, "aws")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\necho \"$*\" >>"+calls+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func() (string, error) {
		cmd := exec.Command("bash", "scripts/cert-days-left.sh")
		cmd.Env = append(os.Environ(), "API_DOMAIN=api.example.test", "LE_DIR="+filepath.Join(dir, "letsencrypt"), "AWS="+stub)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// Before the first certificate there is nothing to publish, and that is not an error.
	if out, err := run(); err != nil || !strings.Contains(out, "nothing to report") {
		t.Fatalf("without a certificate: %v\n%s", err, out)
	}
	if _, err := os.Stat(calls); err == nil {
		t.Fatal("published a metric without a certificate")
	}

	gen := exec.Command(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", filepath.Join(live, "privkey.pem"), "-out", filepath.Join(live, "fullchain.pem"),
		"-days", "20", "-subj", "/CN=api.example.test")
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	out, err := run()
	if err != nil {
		t.Fatalf("cert-days-left.sh: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(calls)
	// The certificate ends 20 days after it was made, to the second: a second that passes in
	// between rounds the whole days down to 19.
	want := "cloudwatch put-metric-data --region us-east-1 --namespace MelodyFlow --metric-name CertificateDaysLeft " +
		"--dimensions Domain=api.example.test --unit Count --value "
	if call := strings.TrimSpace(string(got)); call != want+"20" && call != want+"19" {
		t.Errorf("AWS CLI called with\n%s\nwant\n%s20 (or 19)", call, want)
	}

	// A failing AWS CLI fails the run, naming what could not be published.
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 255\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := run(); err == nil || !strings.Contains(out, "could not publish MelodyFlow/CertificateDaysLeft") {
		t.Errorf("a failing AWS CLI: %v\n%s", err, out)
	}
}
