// Package e2e runs the TLS bootstrap of the Melody Flow GPU host end to end,
// offline, in a private network namespace: pebble (a local ACME server) and
// pebble-challtestsrv (its DNS), nginx running the rendered configs, a
// stand-in API, certbot, and the project's own host scripts, driven through
// the same command lines the deploy runs over SSH.
package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

const inNetnsEnv = "MELODY_FLOW_E2E_NETNS"

// netnsProblem is set when the tests cannot get a private network namespace;
// they then skip (or fail in CI) instead of touching the host's network.
var netnsProblem string

// TestMain re-executes the test binary under "unshare --net --fork" so that
// every listener (nginx on 80/443, pebble, DNS, the API) lives on a loopback
// nothing else can reach, and nothing can leave the machine.
func TestMain(m *testing.M) {
	if os.Getenv(inNetnsEnv) == "1" {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: ip link set lo up: %v\n%s", err, out)
			os.Exit(1)
		}
		os.Exit(m.Run())
	}
	unshare, err := exec.LookPath("unshare")
	switch {
	case err != nil:
		netnsProblem = "unshare is not installed"
	case os.Geteuid() != 0:
		netnsProblem = "a private network namespace (unshare --net) needs root"
	default:
		if out, err := exec.Command(unshare, "--net", "--fork", "--kill-child", "true").CombinedOutput(); err != nil {
			netnsProblem = fmt.Sprintf("unshare --net does not work here: %v %s", err, out)
		} else if _, err := exec.LookPath("ip"); err != nil {
			netnsProblem = "ip (iproute2) is not installed"
		}
	}
	if netnsProblem != "" {
		os.Exit(m.Run()) // every test reports netnsProblem
	}
	cmd := exec.Command(unshare, append([]string{"--net", "--fork", "--kill-child", "--", os.Args[0]}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		fmt.Fprintf(os.Stderr, "e2e: running the tests in a network namespace: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}
