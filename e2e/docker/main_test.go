// Package dockere2e runs the GPU host's real compose stack end to end: Debian's dockerd in a
// private network, mount and PID namespace, the project's compose file, host scripts and nginx
// configs, local images built without a registry (build-images.sh), pebble as the ACME server and
// a stand-in API. It is switched on by MELODY_DOCKER_E2E=1 (and must then pass); otherwise it
// skips.
//
// The test binary re-executes itself under
//
//	unshare --net --mount --pid --fork --mount-proc
//
// so that nothing it starts can reach another address than the namespace's own, its mounts
// (dockerd's overlays, the bind over /etc/letsencrypt) are private, and every process it started
// dies with the namespace even if the test is killed. Only the Debian rootfs for the images is
// made before entering it (debootstrap needs the Debian mirror); it is cached on the machine.
package dockere2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

const (
	envSwitch = "MELODY_DOCKER_E2E"
	// Set in the re-executed test binary, inside the namespaces.
	envInside = "MELODY_DOCKER_E2E_INSIDE"
)

// enabled reports whether the compose end-to-end run was asked for.
func enabled() bool { return os.Getenv(envSwitch) == "1" }

func TestMain(m *testing.M) {
	if !enabled() || os.Getenv(envInside) == "1" {
		os.Exit(m.Run())
	}
	os.Exit(outside())
}

// outside prepares what needs the network (the Debian rootfs), then runs the same test binary
// inside fresh namespaces and returns its exit code.
func outside() int {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		fmt.Fprintf(os.Stderr, "%s=1 needs root on Linux (dockerd, namespaces)\n", envSwitch)
		return 1
	}
	for _, tool := range []string{"unshare", "ip", "dockerd", "docker", "docker-compose", "debootstrap", "pebble", "pebble-challtestsrv"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "%s=1: %s not found on PATH (run .ci/install-docker-tools)\n", envSwitch, tool)
			return 1
		}
	}
	start := time.Now()
	cmd := exec.Command("bash", filepath.Join(packageDir(), "build-images.sh"), "rootfs")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = append(os.Environ(), "MELODY_IMAGE_CACHE="+cacheDir())
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build-images.sh rootfs: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "phase rootfs (debootstrap, outside the namespace): %s\n", time.Since(start).Round(time.Millisecond))

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// bash as PID 1 of the new PID namespace reaps the orphans (containerd shims, docker-proxy)
	// that dockerd restarts leave behind; when the test binary exits, bash exits and the kernel
	// kills whatever is left in the namespace.
	args := append([]string{"--net", "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
		"bash", "-c", `"$@"; rc=$?; exit $rc`, "melody-docker-e2e", self}, os.Args[1:]...)
	inner := exec.Command("unshare", args...)
	inner.Stdin, inner.Stdout, inner.Stderr = nil, os.Stdout, os.Stderr
	inner.Env = append(os.Environ(), envInside+"=1")
	err = inner.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "unshare: %v\n", err)
		return 1
	}
}

// packageDir is this package's folder (go test runs the binary there).
func packageDir() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return wd
}

// cacheDir keeps the Debian rootfs and dockerd's data root (the images) between runs on the
// same machine.
func cacheDir() string {
	if d := os.Getenv("MELODY_IMAGE_CACHE"); d != "" {
		return d
	}
	return "/var/cache/melody-flow-docker"
}
