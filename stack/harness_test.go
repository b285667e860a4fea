package stack

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/melody-flow/infra/internal/mocks"
)

// projectRoot is the repository root, where Pulumi.yaml and static/ are.
func projectRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// prodConfig is the prod stack's config as the CLI would pass it, with overrides
// (project keys without the namespace, e.g. "domain").
func prodConfig(t *testing.T, overrides map[string]string) map[string]string {
	t.Helper()
	config, err := ReadStackConfig(projectRoot(t), "prod")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range overrides {
		config[fullKey(ConfigNamespace, k)] = v
	}
	return config
}

// deployment is one run of the program under the mocks.
type deployment struct {
	*mocks.Recorder
	outputs map[string]OutputValue
}

// runStack runs the real program against the mocks from the project root, with the prod
// config and the given overrides.
func runStack(t *testing.T, overrides map[string]string) *deployment {
	t.Helper()
	d, err := tryStack(t, overrides)
	if err != nil {
		t.Fatalf("program failed: %v", err)
	}
	return d
}

func tryStack(t *testing.T, overrides map[string]string) (*deployment, error) {
	t.Helper()
	t.Chdir(projectRoot(t))
	rec, outputs, err := RunOffline("prod", prodConfig(t, overrides))
	return &deployment{Recorder: rec, outputs: outputs}, err
}

// must returns the resource of the given type and name or fails the test.
func (d *deployment) must(t *testing.T, typ, name string) *mocks.Resource {
	t.Helper()
	r := d.Find(typ, name)
	if r == nil {
		t.Fatalf("no %s named %q was registered", typ, name)
	}
	return r
}

// input returns a resource input as a plain Go value (secrets unwrapped).
func input(r *mocks.Resource, key string) any { return r.Input(key) }
