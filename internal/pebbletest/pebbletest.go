// Package pebbletest runs a local ACME server for the end-to-end tests: pebble, with
// pebble-challtestsrv as its DNS server answering 127.0.0.1 for every name, a throw-away
// listener certificate, HTTP-01 validation on port 80, real validation and no authorization
// reuse (reuse would hide a broken webroot on a renewal). Both end-to-end tests use it, so
// they prove the certificate flow against the same ACME setup.
package pebbletest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DNSAddr is where pebble-challtestsrv answers DNS; tests point dig there too.
const DNSAddr = "127.0.0.1:8053"

const managementURL = "https://127.0.0.1:15000"

// Server is a running pebble and its DNS server; the test's cleanup stops both.
type Server struct {
	// Directory is the ACME directory URL to give certbot with --server.
	Directory string
	// ListenerCAFile is the PEM CA of pebble's HTTPS listener: certbot trusts it through
	// REQUESTS_CA_BUNDLE.
	ListenerCAFile string
	// CertFile and KeyFile are the listener's certificate and key.
	CertFile, KeyFile string
	// Log is pebble's log.
	Log string

	listenerCA []byte
	procs      []*process
}

// Start starts pebble-challtestsrv and pebble with their files in dir. The ACME API listens on
// listenIP:14000 (127.0.0.1, or an address containers reach); the management API on 127.0.0.1.
func Start(t testing.TB, dir, listenIP string) (*Server, error) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	caPEM, certPEM, keyPEM, err := listenerCert([]string{"localhost", "pebble"}, ipsOf(listenIP, "127.0.0.1"))
	if err != nil {
		return nil, err
	}
	s := &Server{
		Directory:      "https://" + net.JoinHostPort(listenIP, "14000") + "/dir",
		ListenerCAFile: filepath.Join(dir, "ca.pem"),
		CertFile:       filepath.Join(dir, "cert.pem"),
		KeyFile:        filepath.Join(dir, "key.pem"),
		Log:            filepath.Join(dir, "pebble.log"),
		listenerCA:     caPEM,
	}
	for path, b := range map[string][]byte{s.ListenerCAFile: caPEM, s.CertFile: certPEM, s.KeyFile: keyPEM} {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return nil, err
		}
	}
	config, _ := json.MarshalIndent(map[string]any{"pebble": map[string]any{ // strings and numbers only
		"listenAddress":                  net.JoinHostPort(listenIP, "14000"),
		"managementListenAddress":        "127.0.0.1:15000",
		"certificate":                    s.CertFile,
		"privateKey":                     s.KeyFile,
		"httpPort":                       80,
		"tlsPort":                        5001,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}}, "", "  ")
	configPath := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(configPath, config, 0o644); err != nil {
		return nil, err
	}

	chall, err := start(t, dir, "challtestsrv", nil, "pebble-challtestsrv",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", DNSAddr,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-management", "127.0.0.1:8055")
	if err != nil {
		return nil, err
	}
	peb, err := start(t, dir, "pebble",
		[]string{"PEBBLE_VA_ALWAYS_VALID=0", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"},
		"pebble", "-config", configPath, "-dnsserver", DNSAddr)
	if err != nil {
		return nil, err
	}
	s.procs = []*process{chall, peb}

	client := s.Client()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = nil
		if !peb.running() || !chall.running() {
			err = errors.New("pebble or pebble-challtestsrv exited")
		} else if resp, getErr := client.Get(s.Directory); getErr != nil {
			err = getErr
		} else {
			resp.Body.Close()
		}
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) || !peb.running() || !chall.running() {
			return nil, fmt.Errorf("pebble not ready: %w\n--- pebble:\n%s\n--- challtestsrv:\n%s",
				err, tailFile(peb.log, 20), tailFile(chall.log, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Client trusts pebble's listener.
func (s *Server) Client() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.listenerCA)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// IssuingRoot is the PEM root pebble signs certificates with (new on every start).
func (s *Server) IssuingRoot() ([]byte, error) {
	resp, err := s.Client().Get(managementURL + "/roots/0")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !x509.NewCertPool().AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("pebble's /roots/0 answered %s with no PEM root: %q", resp.Status, b)
	}
	return b, nil
}

// Issued lists the serials pebble has issued so far, from its log.
func (s *Server) Issued() []string {
	b, _ := os.ReadFile(s.Log)
	var serials []string
	for _, m := range issuedRE.FindAllSubmatch(b, -1) {
		serials = append(serials, string(m[1]))
	}
	return serials
}

var issuedRE = regexp.MustCompile(`Issued certificate serial ([0-9a-f]+)`)

// PIDs are the processes started, for tests that check nothing outlives them.
func (s *Server) PIDs() []int {
	var pids []int
	for _, p := range s.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	return pids
}

// process is a program run in its own process group, logging to dir/<name>.log.
type process struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs bin; the test's cleanup stops its whole process group (SIGTERM, then SIGKILL).
func start(t testing.TB, dir, name string, env []string, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
	return p, nil
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func ipsOf(addrs ...string) []net.IP {
	var ips []net.IP
	seen := map[string]bool{}
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip != nil && !seen[a] {
			seen[a] = true
			ips = append(ips, ip)
		}
	}
	return ips
}

// listenerCert makes a throw-away CA and a server certificate for pebble's listener.
func listenerCert(names []string, ips []net.IP) (caPEM, certPEM, keyPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "melody-flow e2e pebble listener CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		IPAddresses:  ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}
