// Package testtool is the one place that decides what a test does when a
// real tool (nginx, certbot, pebble, shellcheck, ...) is missing: skip on a
// laptop, fail in CI (CI=true), where .ci/install-host-tools installs them.
package testtool

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Need returns the path of each named program, or skips the test (fails it
// when CI=true) if one is missing.
func Need(t testing.TB, names ...string) []string {
	t.Helper()
	paths := make([]string, len(names))
	for i, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			Unavailable(t, "%s is not installed (see .ci/install-host-tools)", n)
		}
		paths[i] = p
	}
	return paths
}

// Unavailable skips the test, or fails it when CI=true, with the reason.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required in CI: "+format, args...)
	}
	t.Skipf(format, args...)
}
