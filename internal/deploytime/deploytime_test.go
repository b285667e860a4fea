package deploytime_test

import (
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/melody-flow/infra/internal/deploytime"
	"github.com/melody-flow/infra/internal/mocks"
	"github.com/melody-flow/infra/stack"
)

func prodGraph(t *testing.T) []*mocks.Resource {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	t.Chdir(root)
	config, err := stack.ReadStackConfig(root, "prod")
	if err != nil {
		t.Fatal(err)
	}
	rec, _, err := stack.RunOffline("prod", config)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Resources()
}

func find(t *testing.T, rs []*mocks.Resource, typ, name string) *mocks.Resource {
	t.Helper()
	for _, r := range rs {
		if r.Type == typ && r.Name == name {
			return r
		}
	}
	t.Fatalf("no %s %s", typ, name)
	return nil
}

// doneAt is when r is done if nothing but its own chain held it up.
func doneAt(rs []*mocks.Resource, r *mocks.Resource) time.Duration {
	var keep []*mocks.Resource
	want := map[string]bool{r.URN: true}
	for changed := true; changed; {
		changed = false
		for _, x := range rs {
			if want[x.URN] {
				for _, d := range x.Dependencies {
					if !want[d] {
						want[d], changed = true, true
					}
				}
			}
		}
	}
	for _, x := range rs {
		if want[x.URN] {
			keep = append(keep, x)
		}
	}
	return deploytime.Of(keep).Total
}

// The deploy takes as long as the slower branch, not the sum: the frontend branch
// (certificate → validation → distribution → alias) and the backend branch (spot → cloud-init →
// compose → certbot) run side by side.
func TestCriticalPathIsTheSlowerBranch(t *testing.T) {
	rs := prodGraph(t)
	est := deploytime.Of(rs)
	frontend := doneAt(rs, find(t, rs, "aws:route53/record:Record", "melody-flow.click-A"))
	backend := doneAt(rs, find(t, rs, "command:remote:Command", "enable-tls"))
	if want := max(frontend, backend); est.Total != want {
		t.Errorf("estimated %s, want the slower branch %s (frontend %s, backend %s)", est.Total, want, frontend, backend)
	}
	if est.Total >= frontend+backend || est.Total >= est.Serial {
		t.Errorf("estimated %s is not shorter than the branches in series (%s) or the serial sum (%s)", est.Total, frontend+backend, est.Serial)
	}
	last := est.CriticalPath[len(est.CriticalPath)-1].Resource
	if last.Name != "enable-tls" {
		t.Errorf("the critical path ends at %s %s", last.Type, last.Name)
	}
	for i := 1; i < len(est.CriticalPath); i++ {
		if est.CriticalPath[i].DoneAt < est.CriticalPath[i-1].DoneAt {
			t.Error("the path is not in order")
		}
	}
}

// A false edge between the branches lengthens the estimate: the estimate sees it.
func TestAFalseEdgeBetweenTheBranchesShows(t *testing.T) {
	rs := prodGraph(t)
	honest := deploytime.Of(rs).Total
	dist := find(t, rs, "aws:cloudfront/distribution:Distribution", "site")
	tls := find(t, rs, "command:remote:Command", "enable-tls")
	serialised := *dist
	serialised.Dependencies = append(append([]string(nil), dist.Dependencies...), tls.URN)
	var broken []*mocks.Resource
	for _, r := range rs {
		if r == dist {
			broken = append(broken, &serialised)
		} else {
			broken = append(broken, r)
		}
	}
	if got := deploytime.Of(broken).Total; got <= honest {
		t.Errorf("with the distribution waiting for the API host the estimate is %s, not longer than %s", got, honest)
	}
}

func TestWeights(t *testing.T) {
	if w := deploytime.Weight(&mocks.Resource{Type: "melody-flow:frontend:FrontendSite"}); w != 0 {
		t.Errorf("a component weighs %s", w)
	}
	if w := deploytime.Weight(&mocks.Resource{Type: "aws:cloudfront/distribution:Distribution", Custom: true}); w != 5*time.Minute {
		t.Errorf("distribution weighs %s", w)
	}
	if w := deploytime.Weight(&mocks.Resource{Type: "command:remote:Command", Name: "start-stack", Custom: true}); w != 8*time.Minute {
		t.Errorf("start-stack weighs %s", w)
	}
}
