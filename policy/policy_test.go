package policy

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"

	"github.com/melody-flow/infra/internal/mocks"
	"github.com/melody-flow/infra/stack"
)

// deployed runs the real program for the prod stack with overrides and returns its graph.
func deployed(t *testing.T, overrides map[string]string) *Graph {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	t.Chdir(root)
	config, err := stack.ReadStackConfig(root, "prod")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range overrides {
		config[stack.ConfigNamespace+":"+k] = v
	}
	rec, outputs, err := stack.RunOffline("prod", config)
	if err != nil {
		t.Fatal(err)
	}
	g := &Graph{Stack: "prod", Resources: rec.Resources(), Outputs: map[string]Output{},
		SSHAllowWorld: config[stack.ConfigNamespace+":sshAllowWorld"] == "true"}
	for name, o := range outputs {
		g.Outputs[name] = Output{Value: o.Value, Secret: o.Secret}
	}
	return g
}

func TestTheStackKeepsEveryRule(t *testing.T) {
	for name, overrides := range map[string]map[string]string{
		"prod":          nil,
		"narrow ssh":    {"sshIngressCidrs": `["198.51.100.0/24"]`, "sshAllowWorld": "false"},
		"www and 404":   {"wwwAlias": "true", "errorPage": "404"},
		"pinned, spot$": {"amiId": "ami-0123456789abcdef0", "spotMaxPrice": "0.4"},
	} {
		t.Run(name, func(t *testing.T) {
			for _, v := range Check(deployed(t, overrides)) {
				if !v.Warning {
					t.Error(v)
				}
			}
		})
	}
}

// prod opens SSH to the world on purpose (deploys from CI runners): that is a visible warning.
func TestSSHOpenToTheWorldIsAWarningWhenAllowed(t *testing.T) {
	var warnings []Violation
	for _, v := range Check(deployed(t, nil)) {
		if v.Warning {
			warnings = append(warnings, v)
		}
	}
	if len(warnings) != 1 || warnings[0].Rule != "ssh-not-open-to-world" {
		t.Errorf("warnings = %v, want the one SSH warning", warnings)
	}
	if v := Check(deployed(t, map[string]string{"sshIngressCidrs": `["10.0.0.0/8"]`, "sshAllowWorld": "false"})); len(v) != 0 {
		t.Errorf("narrow SSH still reports %v", v)
	}
}

// Each rule fails on a deliberately broken copy of the real graph, naming the resource.
func TestEveryRuleCatchesABrokenResource(t *testing.T) {
	base := deployed(t, map[string]string{"sshIngressCidrs": `["198.51.100.0/24"]`, "sshAllowWorld": "false"})
	cases := []struct {
		rule     string
		resource string // type name of the resource the rule must name
		breakIt  func(g *Graph)
	}{
		{"s3-no-public-read", "aws:s3/bucketV2:BucketV2 site", func(g *Graph) {
			set(g, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "site", "blockPublicPolicy", false)
		}},
		{"s3-no-public-read", "aws:s3/bucketObjectv2:BucketObjectv2 site/index.html", func(g *Graph) {
			set(g, "aws:s3/bucketObjectv2:BucketObjectv2", "site/index.html", "acl", "public-read")
		}},
		{"s3-no-public-read", "aws:s3/bucketPolicy:BucketPolicy site", func(g *Graph) {
			set(g, "aws:s3/bucketPolicy:BucketPolicy", "site", "policy",
				`{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"*"}]}`)
		}},
		{"cloudfront-https-only", "aws:cloudfront/distribution:Distribution site", func(g *Graph) {
			setNested(g, "aws:cloudfront/distribution:Distribution", "site", "defaultCacheBehavior", "viewerProtocolPolicy", "allow-all")
		}},
		{"cloudfront-modern-tls", "aws:cloudfront/distribution:Distribution site", func(g *Graph) {
			setNested(g, "aws:cloudfront/distribution:Distribution", "site", "viewerCertificate", "minimumProtocolVersion", "TLSv1")
		}},
		{"cloudfront-certificate-validated-us-east-1", "aws:cloudfront/distribution:Distribution site", func(g *Graph) {
			d := find(g, "aws:cloudfront/distribution:Distribution", "site")
			cert := find(g, "aws:acm/certificate:Certificate", "site")
			d.PropertyDeps = map[string][]string{"viewerCertificate": {cert.URN}}
		}},
		{"cloudfront-certificate-validated-us-east-1", "aws:cloudfront/distribution:Distribution site", func(g *Graph) {
			setNested(g, "aws:cloudfront/distribution:Distribution", "site", "viewerCertificate", "acmCertificateArn",
				"arn:aws:acm:ap-northeast-1:123456789012:certificate/x")
		}},
		{"imdsv2-required", "aws:ec2/spotInstanceRequest:SpotInstanceRequest api", func(g *Graph) {
			setNested(g, "aws:ec2/spotInstanceRequest:SpotInstanceRequest", "api", "metadataOptions", "httpTokens", "optional")
		}},
		{"ebs-encrypted", "aws:ec2/spotInstanceRequest:SpotInstanceRequest api", func(g *Graph) {
			setNested(g, "aws:ec2/spotInstanceRequest:SpotInstanceRequest", "api", "rootBlockDevice", "encrypted", false)
		}},
		{"ssh-not-open-to-world", "aws:ec2/securityGroup:SecurityGroup api", func(g *Graph) {
			addIngress(g, 22, 22, "0.0.0.0/0")
		}},
		{"only-web-ports-public", "aws:ec2/securityGroup:SecurityGroup api", func(g *Graph) {
			addIngress(g, 8000, 8000, "0.0.0.0/0")
		}},
		{"no-plain-secrets", "output sshPrivateKey", func(g *Graph) {
			g.Outputs["sshPrivateKey"] = Output{Value: mocks.MockPrivateKeyPEM}
		}},
		{"no-plain-secrets", "command:remote:Command start-stack", func(g *Graph) {
			set(g, "command:remote:Command", "start-stack", "stdin", mocks.MockPrivateKeyPEM)
		}},
		{"parented-to-component", "aws:ec2/eip:Eip api", func(g *Graph) {
			find(g, "aws:ec2/eip:Eip", "api").Parent = ""
		}},
		{"names-unique-per-stack", "aws:s3/bucketV2:BucketV2 site", func(g *Graph) {
			set(g, "aws:s3/bucketV2:BucketV2", "site", "bucket", "melody-flow.click")
		}},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			g := clone(base)
			c.breakIt(g)
			var hit bool
			for _, v := range Check(g) {
				if v.Rule == c.rule && v.Resource == c.resource && !v.Warning {
					hit = true
				}
			}
			if !hit {
				t.Errorf("rule %s did not flag %s; got %v", c.rule, c.resource, Check(g))
			}
		})
	}
	// The unbroken graph passes, so each failure above comes from the breakage alone.
	if v := Check(base); len(v) != 0 {
		t.Fatalf("the base graph already fails: %v", v)
	}
}

func TestEveryRuleIsTestedAndDocumented(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	readme := mustRead(t, filepath.Join(filepath.Dir(filepath.Dir(file)), "README.md"))
	self := mustRead(t, file)
	for _, r := range Rules {
		if !strings.Contains(self, `{"`+r.Name+`", "`) {
			t.Errorf("rule %s has no broken-resource case", r.Name)
		}
		if !strings.Contains(readme, "`"+r.Name+"`") {
			t.Errorf("README does not list rule %s", r.Name)
		}
	}
}

// --- graph surgery ---

func clone(g *Graph) *Graph {
	c := &Graph{Stack: g.Stack, SSHAllowWorld: g.SSHAllowWorld, Outputs: map[string]Output{}}
	for k, v := range g.Outputs {
		c.Outputs[k] = v
	}
	for _, r := range g.Resources {
		copied := *r
		copied.Inputs = r.Inputs.Copy()
		c.Resources = append(c.Resources, &copied)
	}
	return c
}

func find(g *Graph, typ, name string) *mocks.Resource {
	for _, r := range g.Resources {
		if r.Type == typ && r.Name == name {
			return r
		}
	}
	panic("no " + typ + " " + name)
}

func set(g *Graph, typ, name, key string, value any) {
	find(g, typ, name).Inputs[resource.PropertyKey(key)] = resource.NewPropertyValue(value)
}

func setNested(g *Graph, typ, name, key, field string, value any) {
	r := find(g, typ, name)
	obj := r.Inputs[resource.PropertyKey(key)].ObjectValue().Copy()
	obj[resource.PropertyKey(field)] = resource.NewPropertyValue(value)
	r.Inputs[resource.PropertyKey(key)] = resource.NewObjectProperty(obj)
}

func addIngress(g *Graph, from, to int, cidr string) {
	r := find(g, "aws:ec2/securityGroup:SecurityGroup", "api")
	rules := append([]resource.PropertyValue(nil), r.Inputs["ingress"].ArrayValue()...)
	rules = append(rules, resource.NewPropertyValue(map[string]any{
		"protocol": "tcp", "fromPort": from, "toPort": to, "cidrBlocks": []any{cidr},
	}))
	r.Inputs["ingress"] = resource.NewArrayProperty(rules)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
