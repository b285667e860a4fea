package userdata_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/melody-flow/infra/internal/testtool"
	"github.com/melody-flow/infra/userdata"
)

// TestScriptsPassShellcheck checks every script that runs on the host.
func TestScriptsPassShellcheck(t *testing.T) {
	sc := testtool.Need(t, "shellcheck")[0]
	scripts, err := filepath.Glob("scripts/*.sh")
	if err != nil || len(scripts) != len(userdata.Steps)+1 {
		t.Fatalf("want one script per step and the certificate metric in scripts/, found %v (%v)", scripts, err)
	}
	scripts = append(scripts, "host-setup.sh")
	for _, s := range scripts {
		out, err := exec.Command(sc, "--shell=bash", "--severity=style", s).CombinedOutput()
		if err != nil {
			t.Errorf("shellcheck %s: %v\n%s", s, err, out)
		}
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", s, err, out)
		}
	}
}

// TestCloudInitSchema validates the rendered user-data with cloud-init itself.
func TestCloudInitSchema(t *testing.T) {
	ci := testtool.Need(t, "cloud-init")[0]
	for name, p := range map[string]userdata.Params{"image": imageParams(), "git": gitParams()} {
		data, err := userdata.CloudInit(p)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "user-data")
		if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(ci, "schema", "--config-file", f).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Valid cloud-config") {
			t.Errorf("%s: cloud-init schema rejected the user-data: %v\n%s\n--- user-data ---\n%s", name, err, out, data)
		}
	}
}

// loadCompose loads the host's compose files the way "docker compose" does
// in AppDir, with the .env that HostFiles renders.
func loadCompose(t *testing.T, p userdata.Params, extraEnv map[string]string) (*types.Project, error) {
	t.Helper()
	env, err := userdata.Env(p)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range extraEnv {
		env[k] = v
	}
	files, err := userdata.HostFiles(p, "x", "y")
	if err != nil {
		t.Fatal(err)
	}
	var cfs []types.ConfigFile
	for _, name := range strings.Split(env["COMPOSE_FILE"], ":") {
		cfs = append(cfs, types.ConfigFile{Filename: filepath.Join(p.AppDir, name), Content: []byte(files[name])})
	}
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  p.AppDir,
		ConfigFiles: cfs,
		Environment: env,
	}, func(o *loader.Options) { o.SetProjectName(env["COMPOSE_PROJECT_NAME"], true) })
}

func volume(s types.ServiceConfig, target string) *types.ServiceVolumeConfig {
	for i := range s.Volumes {
		if s.Volumes[i].Target == target {
			return &s.Volumes[i]
		}
	}
	return nil
}

func networks(s types.ServiceConfig) []string {
	var n []string
	for k := range s.Networks {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

// TestComposeContract loads compose.yaml with compose-go and checks the
// properties the deployment relies on.
func TestComposeContract(t *testing.T) {
	p := imageParams()
	proj, err := loadCompose(t, p, nil)
	if err != nil {
		t.Fatalf("compose-go cannot load compose.yaml: %v", err)
	}
	if got := proj.ServiceNames(); !slices.Equal(sorted(got), []string{"api", "certbot", "nginx"}) {
		t.Fatalf("services = %v, want api, certbot, nginx", got)
	}
	nginx, api, certbot := proj.Services["nginx"], proj.Services["api"], proj.Services["certbot"]

	t.Run("only nginx publishes ports, 80 and 443", func(t *testing.T) {
		for _, s := range proj.Services {
			if s.Name != "nginx" && len(s.Ports) > 0 {
				t.Errorf("service %s publishes ports %v; only nginx may", s.Name, s.Ports)
			}
		}
		var pub []string
		for _, port := range nginx.Ports {
			pub = append(pub, port.Published+"->"+strconv.FormatUint(uint64(port.Target), 10))
		}
		if !slices.Equal(sorted(pub), []string{"443->443", "80->80"}) {
			t.Errorf("nginx ports = %v, want 80->80 and 443->443", pub)
		}
	})
	t.Run("api is internal, with a GPU and a healthcheck", func(t *testing.T) {
		if n := networks(api); !slices.Equal(n, []string{"internal"}) {
			t.Errorf("api networks = %v, want only internal", n)
		}
		if !proj.Networks["internal"].Internal {
			t.Errorf("network internal must be internal: true")
		}
		if proj.Networks["edge"].Internal {
			t.Errorf("network edge must not be internal (certbot needs outbound)")
		}
		if n := networks(nginx); !slices.Equal(n, []string{"edge", "internal"}) {
			t.Errorf("nginx networks = %v, want edge and internal", n)
		}
		if n := networks(certbot); !slices.Equal(n, []string{"edge"}) {
			t.Errorf("certbot networks = %v, want edge", n)
		}
		if api.Deploy == nil || api.Deploy.Resources.Reservations == nil {
			t.Fatalf("api has no deploy.resources.reservations")
		}
		gpu := false
		for _, d := range api.Deploy.Resources.Reservations.Devices {
			if d.Driver == "nvidia" && slices.Contains(d.Capabilities, "gpu") {
				gpu = true
			}
		}
		if !gpu {
			t.Errorf("api does not reserve an nvidia gpu device: %+v", api.Deploy.Resources.Reservations.Devices)
		}
		if api.HealthCheck == nil || !strings.Contains(strings.Join(api.HealthCheck.Test, " "), "http://127.0.0.1:8000/docs") {
			t.Errorf("api healthcheck must request http://127.0.0.1:8000/docs: %+v", api.HealthCheck)
		}
		if v := volume(api, "/app/models"); v == nil || v.Source != "/opt/melody-flow/models" || !v.ReadOnly {
			t.Errorf("api must mount /opt/melody-flow/models read-only at /app/models: %+v", v)
		}
		if o := api.Environment["FRONTEND_ORIGIN"]; o == nil || *o != p.FrontendOrigin {
			t.Errorf("api FRONTEND_ORIGIN = %v, want %s", o, p.FrontendOrigin)
		}
		if !slices.Contains([]string(api.Expose), "8000") {
			t.Errorf("api must expose 8000 to the internal network: %v", api.Expose)
		}
		if _, ok := nginx.DependsOn["api"]; !ok {
			t.Errorf("nginx must depend on api (its upstream)")
		}
	})
	t.Run("nginx and certbot share the webroot and the certificates", func(t *testing.T) {
		pairs := []struct{ nginxTarget, certbotTarget, source string }{
			{"/var/www/certbot", "/var/www/certbot", "/opt/melody-flow/acme-webroot"},
			{"/etc/letsencrypt", "/etc/letsencrypt", "/etc/letsencrypt"},
		}
		for _, pr := range pairs {
			nv, cv := volume(nginx, pr.nginxTarget), volume(certbot, pr.certbotTarget)
			if nv == nil || cv == nil || nv.Source != pr.source || cv.Source != pr.source {
				t.Errorf("%s: nginx %+v and certbot %+v must both mount %s", pr.nginxTarget, nv, cv, pr.source)
				continue
			}
			if !nv.ReadOnly || cv.ReadOnly {
				t.Errorf("%s: nginx must mount it read-only, certbot read-write", pr.source)
			}
		}
		if v := volume(nginx, "/etc/nginx/conf.d"); v == nil || v.Source != "/opt/melody-flow/nginx/conf.d" || !v.ReadOnly {
			t.Errorf("nginx must mount nginx/conf.d read-only: %+v", v)
		}
	})
	t.Run("renewal and reload loops", func(t *testing.T) {
		ep := strings.Join(certbot.Entrypoint, " ")
		for _, w := range []string{"certbot renew --webroot -w /var/www/certbot", "sleep 12h", `exec certbot "$@"`} {
			if !strings.Contains(ep, w) {
				t.Errorf("certbot entrypoint lacks %q:\n%s", w, ep)
			}
		}
		if strings.Contains(ep, "--force-renewal") {
			t.Errorf("certbot must never --force-renewal")
		}
		cmd := strings.Join(nginx.Command, " ")
		for _, w := range []string{"sleep 6h", "nginx -s reload", "exec nginx -g 'daemon off;'"} {
			if !strings.Contains(cmd, w) {
				t.Errorf("nginx command lacks %q: %s", w, cmd)
			}
		}
	})
	t.Run("restart policies", func(t *testing.T) {
		for _, s := range proj.Services {
			if s.Restart != "unless-stopped" {
				t.Errorf("service %s restart = %q, want unless-stopped", s.Name, s.Restart)
			}
		}
	})
	t.Run("images from variables with pinned official defaults", func(t *testing.T) {
		if nginx.Image != "nginx:1.28.0" || certbot.Image != "certbot/certbot:v5.1.0" || api.Image != p.APIImage {
			t.Errorf("images = nginx %q, certbot %q, api %q", nginx.Image, certbot.Image, api.Image)
		}
		proj, err := loadCompose(t, p, map[string]string{"NGINX_IMAGE": "registry.local/nginx:x", "CERTBOT_IMAGE": "registry.local/certbot:y"})
		if err != nil {
			t.Fatal(err)
		}
		if proj.Services["nginx"].Image != "registry.local/nginx:x" || proj.Services["certbot"].Image != "registry.local/certbot:y" {
			t.Errorf("NGINX_IMAGE/CERTBOT_IMAGE do not override the images")
		}
		if _, err := loadCompose(t, p, map[string]string{"API_IMAGE": ""}); err == nil || !strings.Contains(err.Error(), "API_IMAGE") {
			t.Errorf("an empty API_IMAGE must fail to load, naming it: %v", err)
		}
	})
	t.Run("the build override builds api from the git URL and ref", func(t *testing.T) {
		gp := gitParams()
		proj, err := loadCompose(t, gp, nil)
		if err != nil {
			t.Fatalf("compose-go cannot load compose.yaml + compose.build.yaml: %v", err)
		}
		api := proj.Services["api"]
		if api.Build == nil || api.Build.Context != gp.APIGitURL+"#"+gp.APIGitRef {
			t.Errorf("api build = %+v, want context %s#%s", api.Build, gp.APIGitURL, gp.APIGitRef)
		}
		if api.Image != userdata.BuildImageTag(gp.APIGitURL, gp.APIGitRef) {
			t.Errorf("built api image tag = %q", api.Image)
		}
	})
	t.Run("no top-level name (docker-compose v1.29)", func(t *testing.T) {
		files, _ := userdata.HostFiles(p, "x", "y")
		for _, f := range []string{"compose.yaml", "compose.build.yaml"} {
			for _, l := range strings.Split(files[f], "\n") {
				if strings.HasPrefix(l, "name:") || strings.HasPrefix(l, "version:") {
					t.Errorf("%s has a top-level %q", f, l)
				}
			}
		}
	})
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
