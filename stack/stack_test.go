package stack

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/melody-flow/infra/internal/mocks"
)

const (
	typeRecord       = "aws:route53/record:Record"
	typeDistribution = "aws:cloudfront/distribution:Distribution"
	typeObject       = "aws:s3/bucketObjectv2:BucketObjectv2"
	typeCommand      = "command:remote:Command"
	typeSpot         = "aws:ec2/spotInstanceRequest:SpotInstanceRequest"
)

func TestDNSRecords(t *testing.T) {
	d := runStack(t, nil)
	distribution := d.must(t, typeDistribution, "site")
	eip := d.must(t, "aws:ec2/eip:Eip", "api")
	component := d.must(t, "melody-flow:dns:DnsRecords", "dns")

	for _, recordType := range []string{"A", "AAAA"} {
		r := d.must(t, typeRecord, "melody-flow.click-"+recordType)
		if r.Parent != component.URN {
			t.Errorf("apex %s record is not parented to DnsRecords", recordType)
		}
		want := map[string]any{"zoneId": mocks.HostedZoneID, "name": "melody-flow.click", "type": recordType}
		for k, v := range want {
			if got := input(r, k); got != v {
				t.Errorf("apex %s: %s = %v, want %v", recordType, k, got, v)
			}
		}
		aliases := input(r, "aliases").([]any)
		alias := aliases[0].(map[string]any)
		if alias["name"] != distribution.Outputs["domainName"].StringValue() || alias["zoneId"] != mocks.CloudFrontZoneID ||
			alias["evaluateTargetHealth"] != false {
			t.Errorf("apex %s alias = %v, want the distribution's domain in zone %s without target health", recordType, alias, mocks.CloudFrontZoneID)
		}
		if deps := r.PropertyDeps["aliases"]; !contains(deps, distribution.URN) {
			t.Errorf("apex %s alias does not depend on the distribution: %v", recordType, deps)
		}
	}

	api := d.must(t, typeRecord, "api.melody-flow.click-A")
	if input(api, "name") != "api.melody-flow.click" || input(api, "type") != "A" || input(api, "ttl") != float64(60) {
		t.Errorf("api record: name %v type %v ttl %v", input(api, "name"), input(api, "type"), input(api, "ttl"))
	}
	if got := input(api, "records"); !reflect.DeepEqual(got, []any{mocks.ElasticIP}) {
		t.Errorf("api record points at %v, want the Elastic IP %s", got, mocks.ElasticIP)
	}
	if !contains(api.PropertyDeps["records"], eip.URN) {
		t.Errorf("api record does not depend on the Elastic IP")
	}
	if got := len(d.OfType(typeRecord)); got != 4 {
		t.Errorf("%d records, want apex A+AAAA, api A and one validation record", got)
	}
}

func TestWWWAliasAddsNamesEverywhere(t *testing.T) {
	d := runStack(t, map[string]string{"wwwAlias": "true"})
	cert := d.must(t, "aws:acm/certificate:Certificate", "site")
	if got := input(cert, "subjectAlternativeNames"); !reflect.DeepEqual(got, []any{"www.melody-flow.click"}) {
		t.Errorf("certificate SANs = %v", got)
	}
	if got := input(d.must(t, typeDistribution, "site"), "aliases"); !reflect.DeepEqual(got, []any{"melody-flow.click", "www.melody-flow.click"}) {
		t.Errorf("aliases = %v", got)
	}
	for _, name := range []string{"www.melody-flow.click-A", "www.melody-flow.click-AAAA", "validation-www.melody-flow.click"} {
		d.must(t, typeRecord, name)
	}
	env := d.must(t, "command:remote:CopyToRemote", "copy-.env")
	if src := input(env, "source"); src == nil {
		t.Fatal("no .env source")
	}
}

func TestOutputs(t *testing.T) {
	d := runStack(t, nil)
	want := map[string]any{
		"siteUrl":                "https://melody-flow.click",
		"apiUrl":                 "https://api.melody-flow.click",
		"bucketName":             d.must(t, "aws:s3/bucketV2:BucketV2", "site").Outputs["bucket"].StringValue(),
		"distributionId":         d.must(t, typeDistribution, "site").ID,
		"distributionDomainName": d.must(t, typeDistribution, "site").Outputs["domainName"].StringValue(),
		"apiPublicIp":            mocks.ElasticIP,
		"instanceId":             d.must(t, typeSpot, "api").Outputs["spotInstanceId"].StringValue(),
		"hostedZoneId":           mocks.HostedZoneID,
		"sshUser":                "ec2-user",
	}
	for name, value := range want {
		got, ok := d.outputs[name]
		if !ok {
			t.Errorf("output %s is not exported", name)
			continue
		}
		if got.Value != value || got.Secret {
			t.Errorf("output %s = %v (secret %v), want %v in the clear", name, got.Value, got.Secret, value)
		}
	}
	if arn, _ := d.outputs["certificateArn"].Value.(string); !strings.HasPrefix(arn, "arn:aws:acm:us-east-1:") {
		t.Errorf("certificateArn = %q, want a us-east-1 certificate", arn)
	}
	if !d.outputs["spotRequestId"].Known {
		t.Error("spotRequestId is not exported")
	}
}

// The private key may only ever leave the program as a secret.
func TestNoOutputOrInputLeaksThePrivateKey(t *testing.T) {
	d := runStack(t, nil)
	key, ok := d.outputs["sshPrivateKey"]
	if !ok || !key.Secret {
		t.Fatalf("sshPrivateKey must be exported as a secret, got %+v", key)
	}
	marker := strings.TrimSpace(strings.Split(mocks.MockPrivateKeyPEM, "\n")[1])
	for name, out := range d.outputs {
		if !out.Secret && strings.Contains(fmt.Sprint(out.Value), marker) {
			t.Errorf("output %s carries the private key in the clear", name)
		}
	}
	for _, r := range d.Resources() {
		for k, v := range r.Inputs {
			if v.ContainsSecrets() {
				continue
			}
			if strings.Contains(fmt.Sprint(v.Mappable()), marker) {
				t.Errorf("%s %s: input %s carries the private key in the clear", r.Type, r.Name, k)
			}
		}
	}
}

// Same config, same program: identical resources and inputs, so a second `pulumi up` is a no-op.
func TestTwoRunsRegisterIdenticalResources(t *testing.T) {
	first, second := snapshot(t, runStack(t, nil)), snapshot(t, runStack(t, nil))
	if len(first) == 0 {
		t.Fatal("nothing registered")
	}
	for urn, inputs := range first {
		if second[urn] != inputs {
			t.Errorf("%s differs between two runs:\n%s\n%s", urn, inputs, second[urn])
		}
	}
	if len(first) != len(second) {
		t.Errorf("%d resources, then %d", len(first), len(second))
	}
}

// snapshot maps each URN to its inputs, dependencies and options as canonical JSON.
func snapshot(t *testing.T, d *deployment) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range d.Resources() {
		b, err := json.Marshal(map[string]any{
			"inputs": r.Inputs.Mappable(), "deps": r.Dependencies, "parent": r.Parent,
			"provider": r.Provider, "options": r.Options,
		})
		if err != nil {
			t.Fatal(err)
		}
		out[r.URN] = string(b)
	}
	return out
}

// Every resource belongs to one of the four components.
func TestEveryResourceIsParentedToAComponent(t *testing.T) {
	d := runStack(t, nil)
	components := map[string]bool{}
	for _, r := range d.Resources() {
		if !r.Custom && strings.HasPrefix(r.Type, "melody-flow:") {
			components[r.URN] = true
		}
	}
	if len(components) != 5 {
		t.Errorf("%d components, want FrontendSite, GpuApiHost, DnsRecords, ApiBootstrap and Operations", len(components))
	}
	for _, r := range d.Resources() {
		if !components[r.URN] && !components[r.Parent] {
			t.Errorf("%s %s is not parented to a component", r.Type, r.Name)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// copyDir copies a folder's regular files, for tests that change the site.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(to, rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
