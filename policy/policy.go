// Package policy holds the stack's guardrails: rules in the spirit of Pulumi CrossGuard
// policies (which cannot be written in Go yet), checked against every resource the program
// registers under the mock AWS. Each rule names the resource that breaks it and why.
package policy

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"

	"github.com/melody-flow/infra/internal/mocks"
)

// Graph is what the rules look at: the registered resources and the stack's outputs.
type Graph struct {
	Stack     string
	Resources []*mocks.Resource
	// Outputs are the exported values; Secret marks those exported as secrets.
	Outputs map[string]Output
	// SSHAllowWorld is the config switch that allows SSH from every address (with a warning).
	SSHAllowWorld bool
}

// Output is one exported value.
type Output struct {
	Value  any
	Secret bool
}

// Violation is one rule broken by one resource. A warning is reported but does not fail.
type Violation struct {
	Rule     string
	Resource string // "type name"
	Message  string
	Warning  bool
}

func (v Violation) String() string {
	level := "violation"
	if v.Warning {
		level = "warning"
	}
	return fmt.Sprintf("%s [%s] %s: %s", level, v.Rule, v.Resource, v.Message)
}

// Rule is a named check over the whole graph.
type Rule struct {
	Name        string
	Description string
	Check       func(g *Graph) []Violation
}

// Rules are every guardrail of the stack, in the order README lists them.
var Rules = []Rule{
	{"s3-no-public-read", "No S3 bucket is readable by the public: public-access block on, no public ACL, no policy principal * without CloudFront's source condition.", checkS3Private},
	{"cloudfront-https-only", "CloudFront never lets viewers use plain HTTP (viewer protocol policy is never allow-all).", checkViewerHTTPS},
	{"cloudfront-modern-tls", "CloudFront's minimum viewer TLS is TLSv1.2_2021 or newer.", checkMinimumTLS},
	{"cloudfront-certificate-validated-us-east-1", "Every ACM certificate CloudFront uses is in us-east-1 and reaches the distribution through its validation.", checkCloudFrontCertificate},
	{"imdsv2-required", "Every instance requires IMDSv2 tokens.", checkIMDSv2},
	{"ebs-encrypted", "Every EBS volume is encrypted.", checkEBSEncrypted},
	{"ssh-not-open-to-world", "No ingress on port 22 from 0.0.0.0/0 or ::/0 unless sshAllowWorld is set, and then a warning.", checkSSH},
	{"only-web-ports-public", "Nothing but 80 and 443 is open to the whole internet (22 only under sshAllowWorld).", checkWorldPorts},
	{"no-plain-secrets", "No secret (private key, token) in a plain output or a plain input.", checkSecrets},
	{"parented-to-component", "Every resource belongs to a component.", checkParents},
	{"names-unique-per-stack", "Names AWS needs unique (buckets, policies, OAC, roles, key pairs) are auto-named or derived from the stack.", checkNames},
}

// Check runs every rule and returns the violations and warnings, sorted.
func Check(g *Graph) []Violation {
	var all []Violation
	for _, r := range Rules {
		all = append(all, r.Check(g)...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].String() < all[j].String() })
	return all
}

// --- the rules ---

func checkS3Private(g *Graph) []Violation {
	var out []Violation
	blocked := map[string]bool{} // bucket ID -> all four flags on
	for _, r := range g.ofType("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock") {
		all := true
		for _, f := range []string{"blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"} {
			all = all && boolInput(r, f)
		}
		if all {
			blocked[str(r, "bucket")] = true
		}
	}
	for _, b := range append(g.ofType("aws:s3/bucketV2:BucketV2"), g.ofType("aws:s3/bucket:Bucket")...) {
		if !blocked[b.ID] {
			out = append(out, violation("s3-no-public-read", b, "has no public-access block with all four flags on"))
		}
		if isPublicACL(str(b, "acl")) {
			out = append(out, violation("s3-no-public-read", b, "has the public ACL "+str(b, "acl")))
		}
	}
	for _, r := range append(g.ofType("aws:s3/bucketObjectv2:BucketObjectv2"), g.ofType("aws:s3/bucketAclV2:BucketAclV2")...) {
		if isPublicACL(str(r, "acl")) {
			out = append(out, violation("s3-no-public-read", r, "has the public ACL "+str(r, "acl")))
		}
	}
	for _, p := range g.ofType("aws:s3/bucketPolicy:BucketPolicy") {
		var doc struct {
			Statement []struct {
				Effect    string
				Principal any
				Condition map[string]map[string]any
			}
		}
		if err := json.Unmarshal([]byte(str(p, "policy")), &doc); err != nil {
			out = append(out, violation("s3-no-public-read", p, "has a policy that is not JSON: "+err.Error()))
			continue
		}
		for _, s := range doc.Statement {
			if s.Effect != "Allow" || !isPublicPrincipal(s.Principal) {
				continue
			}
			if _, limited := s.Condition["StringEquals"]["AWS:SourceArn"]; !limited {
				out = append(out, violation("s3-no-public-read", p, "allows principal * without an AWS:SourceArn condition"))
			}
		}
	}
	return out
}

func isPublicACL(acl string) bool {
	return acl == "public-read" || acl == "public-read-write" || acl == "authenticated-read"
}

func isPublicPrincipal(p any) bool {
	switch p := p.(type) {
	case string:
		return p == "*"
	case map[string]any:
		aws, _ := p["AWS"].(string)
		return aws == "*"
	}
	return false
}

func checkViewerHTTPS(g *Graph) []Violation {
	var out []Violation
	for _, d := range g.ofType("aws:cloudfront/distribution:Distribution") {
		behaviors := []any{input(d, "defaultCacheBehavior")}
		if ordered, ok := input(d, "orderedCacheBehaviors").([]any); ok {
			behaviors = append(behaviors, ordered...)
		}
		for _, b := range behaviors {
			m, _ := b.(map[string]any)
			if policy, _ := m["viewerProtocolPolicy"].(string); policy != "redirect-to-https" && policy != "https-only" {
				out = append(out, violation("cloudfront-https-only", d, fmt.Sprintf("a cache behaviour has viewer protocol policy %q", policy)))
			}
		}
	}
	return out
}

var modernTLS = map[string]bool{"TLSv1.2_2021": true, "TLSv1.2_2025": true, "TLSv1.3_2025": true}

func checkMinimumTLS(g *Graph) []Violation {
	var out []Violation
	for _, d := range g.ofType("aws:cloudfront/distribution:Distribution") {
		vc, _ := input(d, "viewerCertificate").(map[string]any)
		if v, _ := vc["minimumProtocolVersion"].(string); !modernTLS[v] {
			out = append(out, violation("cloudfront-modern-tls", d, fmt.Sprintf("minimum viewer TLS is %q", v)))
		}
	}
	return out
}

func checkCloudFrontCertificate(g *Graph) []Violation {
	var out []Violation
	for _, d := range g.ofType("aws:cloudfront/distribution:Distribution") {
		vc, _ := input(d, "viewerCertificate").(map[string]any)
		arn, _ := vc["acmCertificateArn"].(string)
		if !strings.HasPrefix(arn, "arn:aws:acm:us-east-1:") {
			out = append(out, violation("cloudfront-certificate-validated-us-east-1", d, fmt.Sprintf("uses certificate %q, which is not in us-east-1", arn)))
		}
		var fromValidation bool
		for _, urn := range d.PropertyDeps["viewerCertificate"] {
			dep := g.byURN(urn)
			switch {
			case dep == nil:
			case dep.Type == "aws:acm/certificate:Certificate":
				out = append(out, violation("cloudfront-certificate-validated-us-east-1", d, "takes its certificate from the certificate itself, not from its validation"))
			case dep.Type == "aws:acm/certificateValidation:CertificateValidation":
				fromValidation = true
				if region := g.providerRegion(dep); region != "us-east-1" {
					out = append(out, violation("cloudfront-certificate-validated-us-east-1", dep, "validates in region "+region))
				}
			}
		}
		if !fromValidation {
			out = append(out, violation("cloudfront-certificate-validated-us-east-1", d, "its certificate does not come through an acm.CertificateValidation"))
		}
	}
	return out
}

var instanceTypes = []string{"aws:ec2/instance:Instance", "aws:ec2/spotInstanceRequest:SpotInstanceRequest", "aws:ec2/launchTemplate:LaunchTemplate"}

func checkIMDSv2(g *Graph) []Violation {
	var out []Violation
	for _, typ := range instanceTypes {
		for _, r := range g.ofType(typ) {
			m, _ := input(r, "metadataOptions").(map[string]any)
			if m["httpTokens"] != "required" {
				out = append(out, violation("imdsv2-required", r, fmt.Sprintf("metadata httpTokens is %v, not required", m["httpTokens"])))
			}
		}
	}
	return out
}

func checkEBSEncrypted(g *Graph) []Violation {
	var out []Violation
	for _, typ := range instanceTypes[:2] {
		for _, r := range g.ofType(typ) {
			root, _ := input(r, "rootBlockDevice").(map[string]any)
			if root["encrypted"] != true {
				out = append(out, violation("ebs-encrypted", r, "root volume is not encrypted"))
			}
			devices, _ := input(r, "ebsBlockDevices").([]any)
			for _, dev := range devices {
				if m, _ := dev.(map[string]any); m["encrypted"] != true {
					out = append(out, violation("ebs-encrypted", r, fmt.Sprintf("EBS volume %v is not encrypted", m["deviceName"])))
				}
			}
		}
	}
	for _, v := range g.ofType("aws:ebs/volume:Volume") {
		if !boolInput(v, "encrypted") {
			out = append(out, violation("ebs-encrypted", v, "is not encrypted"))
		}
	}
	return out
}

// ingress is one rule open to the world.
type ingress struct {
	res      *mocks.Resource
	from, to int
	protocol string
}

func (g *Graph) worldIngress() []ingress {
	var out []ingress
	for _, sg := range g.ofType("aws:ec2/securityGroup:SecurityGroup") {
		rules, _ := input(sg, "ingress").([]any)
		for _, r := range rules {
			m, _ := r.(map[string]any)
			if !openToWorld(m["cidrBlocks"]) && !openToWorld(m["ipv6CidrBlocks"]) {
				continue
			}
			from, _ := m["fromPort"].(float64)
			to, _ := m["toPort"].(float64)
			protocol, _ := m["protocol"].(string)
			out = append(out, ingress{sg, int(from), int(to), protocol})
		}
	}
	for _, r := range g.ofType("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") {
		if openToWorld([]any{input(r, "cidrIpv4")}) || openToWorld([]any{input(r, "cidrIpv6")}) {
			from, _ := input(r, "fromPort").(float64)
			to, _ := input(r, "toPort").(float64)
			out = append(out, ingress{r, int(from), int(to), str(r, "ipProtocol")})
		}
	}
	return out
}

func openToWorld(list any) bool {
	items, _ := list.([]any)
	for _, c := range items {
		s, _ := c.(string)
		if p, err := netip.ParsePrefix(s); err == nil && p.Bits() == 0 {
			return true
		}
	}
	return false
}

func (i ingress) covers(port int) bool {
	return i.protocol == "-1" || i.protocol == "all" || (i.from <= port && port <= i.to)
}

func checkSSH(g *Graph) []Violation {
	var out []Violation
	for _, i := range g.worldIngress() {
		if !i.covers(22) {
			continue
		}
		if g.SSHAllowWorld {
			w := violation("ssh-not-open-to-world", i.res, "SSH is open to the whole internet (allowed by sshAllowWorld; key-only authentication)")
			w.Warning = true
			out = append(out, w)
		} else {
			out = append(out, violation("ssh-not-open-to-world", i.res, "opens SSH to the whole internet without sshAllowWorld"))
		}
	}
	return out
}

func checkWorldPorts(g *Graph) []Violation {
	var out []Violation
	for _, i := range g.worldIngress() {
		web := i.protocol == "tcp" && i.from == i.to && (i.from == 80 || i.from == 443)
		ssh := i.protocol == "tcp" && i.from == 22 && i.to == 22 && g.SSHAllowWorld
		if !web && !ssh {
			out = append(out, violation("only-web-ports-public", i.res, fmt.Sprintf("opens %s %d-%d to the whole internet", i.protocol, i.from, i.to)))
		}
	}
	return out
}

// secretMarkers are what secrets look like in plain text.
var secretMarkers = []string{"PRIVATE KEY-----", "aws_secret_access_key", "ghp_", "github_pat_"}

func looksSecret(s string) bool {
	for _, m := range secretMarkers {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

func checkSecrets(g *Graph) []Violation {
	var out []Violation
	names := make([]string, 0, len(g.Outputs))
	for name := range g.Outputs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		o := g.Outputs[name]
		if !o.Secret && (looksSecret(fmt.Sprint(o.Value)) || strings.Contains(strings.ToLower(name), "privatekey")) {
			out = append(out, Violation{Rule: "no-plain-secrets", Resource: "output " + name, Message: "a secret is exported in the clear"})
		}
	}
	for _, r := range g.Resources {
		for k, v := range r.Inputs {
			if plainSecret(v) {
				out = append(out, violation("no-plain-secrets", r, "input "+string(k)+" holds a secret in the clear"))
			}
		}
	}
	return out
}

// plainSecret reports whether a value holds secret-looking text outside a secret.
func plainSecret(v resource.PropertyValue) bool {
	switch {
	case v.IsSecret():
		return false
	case v.IsOutput():
		return !v.OutputValue().Secret && plainSecret(v.OutputValue().Element)
	case v.IsString():
		return looksSecret(v.StringValue())
	case v.IsArray():
		for _, e := range v.ArrayValue() {
			if plainSecret(e) {
				return true
			}
		}
	case v.IsObject():
		for _, e := range v.ObjectValue() {
			if plainSecret(e) {
				return true
			}
		}
	}
	return false
}

func checkParents(g *Graph) []Violation {
	var out []Violation
	for _, r := range g.Resources {
		if !r.Custom && strings.HasPrefix(r.Type, "melody-flow:") {
			continue // the components themselves sit at the stack's root
		}
		parent := g.byURN(r.Parent)
		if parent == nil || parent.Custom || !strings.HasPrefix(parent.Type, "melody-flow:") {
			out = append(out, violation("parented-to-component", r, "is not parented to one of the stack's components"))
		}
	}
	return out
}

// globalNames are the inputs that carry a name AWS needs unique in the account (or globally).
var globalNames = map[string]string{
	"aws:s3/bucketV2:BucketV2":                                   "bucket",
	"aws:s3/bucket:Bucket":                                       "bucket",
	"aws:cloudfront/originAccessControl:OriginAccessControl":     "name",
	"aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy": "name",
	"aws:cloudfront/cachePolicy:CachePolicy":                     "name",
	"aws:iam/role:Role":                                          "name",
	"aws:iam/instanceProfile:InstanceProfile":                    "name",
	"aws:iam/policy:Policy":                                      "name",
	"aws:ec2/keyPair:KeyPair":                                    "keyName",
	"aws:sns/topic:Topic":                                        "name",
	"aws:budgets/budget:Budget":                                  "name",
	"aws:cloudwatch/metricAlarm:MetricAlarm":                     "name",
	"aws:scheduler/schedule:Schedule":                            "name",
}

func checkNames(g *Graph) []Violation {
	var out []Violation
	for _, r := range g.Resources {
		key, ok := globalNames[r.Type]
		if !ok {
			continue
		}
		name := str(r, key)
		if name != "" && !strings.Contains(name, g.Stack) {
			out = append(out, violation("names-unique-per-stack", r, fmt.Sprintf("%s %q is fixed and does not name the stack %q: two stacks in one account would collide", key, name, g.Stack)))
		}
	}
	return out
}

// --- helpers ---

func violation(rule string, r *mocks.Resource, msg string) Violation {
	return Violation{Rule: rule, Resource: r.Type + " " + r.Name, Message: msg}
}

func (g *Graph) ofType(typ string) []*mocks.Resource {
	var out []*mocks.Resource
	for _, r := range g.Resources {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

func (g *Graph) byURN(urn string) *mocks.Resource {
	for _, r := range g.Resources {
		if r.URN == urn {
			return r
		}
	}
	return nil
}

// providerRegion is the region of a resource's explicit provider ("" for the default one).
func (g *Graph) providerRegion(r *mocks.Resource) string {
	if r.Provider == "" {
		return ""
	}
	p := g.byURN(r.ProviderURN())
	if p == nil {
		return ""
	}
	return str(p, "region")
}

func input(r *mocks.Resource, key string) any { return r.Input(key) }

func str(r *mocks.Resource, key string) string {
	s, _ := input(r, key).(string)
	return s
}

func boolInput(r *mocks.Resource, key string) bool {
	b, _ := input(r, key).(bool)
	return b
}
