package stack

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var deployTime = time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)

// prodRaw is the prod stack's project config, keyed without the namespace.
func prodRaw(t *testing.T) map[string]string {
	t.Helper()
	raw := map[string]string{}
	for k, v := range prodConfig(t, nil) {
		if key, ok := strings.CutPrefix(k, ConfigNamespace+":"); ok {
			raw[key] = v
		}
	}
	return raw
}

// mustConfig is the prod config with overrides, validated.
func mustConfig(t *testing.T, overrides map[string]string) Config {
	t.Helper()
	raw := prodRaw(t)
	for k, v := range overrides {
		raw[k] = v
	}
	cfg, err := ParseConfig(raw, deployTime)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestProdConfigIsValid(t *testing.T) {
	cfg, err := ParseConfig(prodRaw(t), deployTime)
	if err != nil {
		t.Fatalf("Pulumi.prod.yaml does not validate: %v", err)
	}
	checks := map[string][2]any{
		"domain":        {cfg.Domain, "melody-flow.click"},
		"apiDomain":     {cfg.APIDomain(), "api.melody-flow.click"},
		"instanceType":  {cfg.InstanceType, "g4dn.xlarge"},
		"interruption":  {cfg.SpotInterruptionBehavior, "stop"},
		"rootVolumeGiB": {cfg.RootVolumeGiB, 150},
		"errorPage":     {cfg.ErrorPage, "spa"},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
}

func TestBadConfigValuesNameTheirKey(t *testing.T) {
	cases := []struct {
		key, value string
		want       string // part of the message
	}{
		{"domain", "not_a_domain", "is not a lower-case DNS name"},
		{"domain", "Melody-Flow.click", "is not a lower-case DNS name"},
		{"domain", "localhost", "is not a lower-case DNS name"},
		{"apiSubdomain", "api.v2", "single lower-case DNS label"},
		{"wwwAlias", "yes please", "is not true or false"},
		{"staticDir", "", "must not be empty"},
		{"errorPage", "500", "is not one of spa, 404"},
		{"priceClass", "PriceClass_50", "is not one of"},
		{"instanceType", "t3.large", "not an x86_64 NVIDIA GPU instance type"},
		{"instanceType", "g5g.xlarge", "not an x86_64 NVIDIA GPU instance type"},
		{"instanceType", "g4dn", "not an x86_64 NVIDIA GPU instance type"},
		{"amiId", "ami-xyz", "is not an AMI ID"},
		{"rootVolumeGiB", "0", "out of range"},
		{"rootVolumeGiB", "-20", "out of range"},
		{"rootVolumeGiB", "60", "out of range"},
		{"rootVolumeGiB", "big", "is not a whole number"},
		{"spotMaxPrice", "-0.5", "is not a positive price"},
		{"spotMaxPrice", "0", "is not a positive price"},
		{"spotMaxPrice", "$1", "is not a positive price"},
		{"spotInterruptionBehavior", "terminate", "is not one of stop, hibernate"},
		{"spotValidUntil", "next year", "is not an RFC 3339 time"},
		{"spotValidUntil", "2020-01-01T00:00:00Z", "has already passed"},
		{"sshIngressCidrs", `["10.0.0.0/33"]`, "is not a CIDR"},
		{"sshIngressCidrs", `["not-a-cidr"]`, "is not a CIDR"},
		{"sshIngressCidrs", `["203.0.113.7/24"]`, "has host bits set"},
		{"sshIngressCidrs", `"203.0.113.0/24"`, "is not a list of CIDRs"},
		{"sshAllowWorld", "maybe", "is not true or false"},
		{"acmeEmail", "", "must be set"},
		{"acmeEmail", "admin", "is not an e-mail address"},
		{"acmeEmail", "Admin <admin@melody-flow.click>", "is not an e-mail address"},
		{"acmeStaging", "2", "is not true or false"},
		{"apiImage", "UPPER/case:tag", "is not an image reference"},
		{"apiGitUrl", "ftp://example.com/repo.git", "is not an https:// or git@ repository URL"},
		{"apiGitRef", "main branch", "is not a branch, tag or commit"},
		{"apiHealthPath", "docs", "is not an absolute URL path"},
		{"alertEmail", "ops-at-example", "is not an e-mail address"},
		{"budgetMonthlyUsd", "-5", "out of range"},
		{"budgetMonthlyUsd", "lots", "is not a number"},
		{"alarmsEnabled", "on", "is not true or false"},
		{"idleStopMinutes", "7", "not a multiple of 5"},
		{"idleStopMinutes", "0", "out of range"},
		{"idleStopCpuPercent", "150", "out of range"},
		{"scheduleStopCron", "0 1 * * *", "is not an EventBridge cron expression"},
		{"scheduleStopCron", "cron(0 1 * * * *)", "exactly one of day-of-month and day-of-week"},
		{"scheduleStartCron", "cron(0 1 ? * ? *)", "exactly one of"},
		{"scheduleStartCron", "cron(0 1 * * ? * extra)", "is not an EventBridge cron expression"},
		{"scheduleStartCron", "cron(0 1 * * ? $)", "which is not a cron field"},
		{"scheduleTimezone", "Mars/Olympus", "is not an IANA time zone"},
		{"scheduleTimezone", "", "is not an IANA time zone"},
	}
	for _, c := range cases {
		t.Run(c.key+"="+c.value, func(t *testing.T) {
			raw := prodRaw(t)
			raw[c.key] = c.value
			_, err := ParseConfig(raw, deployTime)
			if err == nil {
				t.Fatalf("%s=%q was accepted", c.key, c.value)
			}
			if !strings.Contains(err.Error(), ConfigNamespace+":"+c.key+":") {
				t.Errorf("error does not name %s:%s: %v", ConfigNamespace, c.key, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func TestConfigCombinationsAreChecked(t *testing.T) {
	cases := []struct {
		name    string
		change  map[string]string
		wantKey string
	}{
		{"ssh open to the world without the switch", map[string]string{"sshAllowWorld": "false"}, "sshIngressCidrs"},
		{"neither image nor repository", map[string]string{"apiGitUrl": "", "apiImage": ""}, "apiImage"},
		{"both image and repository", map[string]string{"apiImage": "ghcr.io/melody-flow/api:1.0.0"}, "apiImage"},
		{"repository without a ref", map[string]string{"apiGitRef": ""}, "apiGitRef"},
		{"a missing key", map[string]string{"domain": "\x00delete"}, "domain"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := prodRaw(t)
			for k, v := range c.change {
				if v == "\x00delete" {
					delete(raw, k)
				} else {
					raw[k] = v
				}
			}
			_, err := ParseConfig(raw, deployTime)
			if err == nil || !strings.Contains(err.Error(), ConfigNamespace+":"+c.wantKey+":") {
				t.Fatalf("want an error naming %s, got %v", c.wantKey, err)
			}
		})
	}
}

func TestEveryBadValueIsReportedAtOnce(t *testing.T) {
	raw := prodRaw(t)
	raw["domain"] = "bad domain"
	raw["rootVolumeGiB"] = "10"
	raw["acmeEmail"] = "nobody"
	_, err := ParseConfig(raw, deployTime)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, key := range []string{"domain", "rootVolumeGiB", "acmeEmail"} {
		if !strings.Contains(err.Error(), ConfigNamespace+":"+key+":") {
			t.Errorf("error does not report %s: %v", key, err)
		}
	}
}

// A bad value must stop the program before it registers anything.
func TestBadConfigRegistersNothing(t *testing.T) {
	d, err := tryStack(t, map[string]string{"domain": "not_a_domain"})
	if err == nil || !strings.Contains(err.Error(), "melody-flow:domain:") {
		t.Fatalf("want an error naming melody-flow:domain, got %v", err)
	}
	if n := len(d.Resources()); n != 0 {
		t.Errorf("%d resources were registered before the config was refused", n)
	}
	if n := len(d.Invokes()); n != 0 {
		t.Errorf("%d invokes were made before the config was refused", n)
	}
}

func TestFileChecksNameTheirKey(t *testing.T) {
	for _, c := range []struct {
		overrides map[string]string
		key       string
	}{
		{map[string]string{"staticDir": "no-such-folder"}, "staticDir"},
		{map[string]string{"modelsDir": "no-such-models"}, "modelsDir"},
		{map[string]string{"staticDir": t.TempDir() + "/empty"}, "staticDir"},
	} {
		d, err := tryStack(t, c.overrides)
		if err == nil || !strings.Contains(err.Error(), "melody-flow:"+c.key+":") {
			t.Errorf("%v: want an error naming %s, got %v", c.overrides, c.key, err)
			continue
		}
		if n := len(d.Resources()); n != 0 {
			t.Errorf("%v: %d resources registered", c.overrides, n)
		}
	}
	// 404 mode needs a 404.html.
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/index.html", []byte("<p>hi</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tryStack(t, map[string]string{"staticDir": dir, "errorPage": "404"}); err == nil ||
		!strings.Contains(err.Error(), "melody-flow:errorPage:") {
		t.Errorf("404 mode without 404.html: want an error naming errorPage, got %v", err)
	}
}

// Pulumi.yaml, the Go key list and both READMEs' config tables list the same keys.
func TestConfigKeysAreDeclaredAndDocumented(t *testing.T) {
	data, err := os.ReadFile(projectRoot(t) + "/Pulumi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var project struct {
		Config map[string]yaml.Node `yaml:"config"`
	}
	if err := yaml.Unmarshal(data, &project); err != nil {
		t.Fatal(err)
	}
	var declared []string
	for k := range project.Config {
		declared = append(declared, k)
	}
	sort.Strings(declared)
	read := append([]string(nil), ConfigKeys...)
	sort.Strings(read)
	if strings.Join(declared, ",") != strings.Join(read, ",") {
		t.Errorf("Pulumi.yaml declares %v\nthe program reads %v", declared, read)
	}
	for _, readme := range []string{"README.md", "README.ja.md"} {
		text, err := os.ReadFile(projectRoot(t) + "/" + readme)
		if err != nil {
			t.Errorf("%s: %v", readme, err)
			continue
		}
		for _, key := range ConfigKeys {
			if !regexp.MustCompile("\\|\\s*`" + key + "`").Match(text) {
				t.Errorf("%s has no config table row for %s", readme, key)
			}
		}
	}
}

// README.ja.md is kept in step with README.md: the same sections, tables and commands.
func TestJapaneseREADMEIsInStep(t *testing.T) {
	shape := func(name string) (headings, rows int, code []string) {
		text, err := os.ReadFile(projectRoot(t) + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		inCode, diagram := false, false
		for _, line := range strings.Split(string(text), "\n") {
			switch {
			case strings.HasPrefix(line, "```"):
				inCode, diagram = !inCode, line == "```mermaid"
			case inCode && !diagram: // the diagram's labels are translated
				code = append(code, line)
			case strings.HasPrefix(line, "## "), strings.HasPrefix(line, "### "):
				headings++
			case strings.HasPrefix(line, "|"):
				rows++
			}
		}
		return headings, rows, code
	}
	enHeadings, enRows, enCode := shape("README.md")
	jaHeadings, jaRows, jaCode := shape("README.ja.md")
	if enHeadings != jaHeadings || enRows != jaRows {
		t.Errorf("README.md has %d headings and %d table rows, README.ja.md %d and %d", enHeadings, enRows, jaHeadings, jaRows)
	}
	if len(enCode) == 0 || strings.Join(enCode, "\n") != strings.Join(jaCode, "\n") {
		t.Error("the commands and code blocks of README.md and README.ja.md differ")
	}
}
