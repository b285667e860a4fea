// Package mocks runs the real Pulumi program against an in-memory AWS: resource outputs that
// look like AWS's (ARNs, IDs, CloudFront domains, ACM validation options, an Elastic IP, tls
// keys) and invokes for the look-ups the program makes. It records every registered resource
// and invoke, with parents, providers, options and dependencies, so tests and the offline plan
// can inspect the whole graph. Nothing here touches the network.
package mocks

import (
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Fixed identities of the simulated account, visible in the plan and asserted by tests.
const (
	AccountID         = "123456789012"
	HostedZoneID      = "Z0123456789MELODYFLOW"
	CloudFrontZoneID  = "Z2FDTNDATAQYW2" // CloudFront's alias hosted zone, the same for every distribution
	ElasticIP         = "203.0.113.10"   // TEST-NET-3: never routable
	DLAMIID           = "ami-0dla0123456789abc"
	MockPrivateKeyPEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nbW9jay1lZDI1NTE5LWtleQ==\n-----END OPENSSH PRIVATE KEY-----\n"
)

// ZoneNameServers are the authoritative name servers the zone look-up returns.
var ZoneNameServers = []string{
	"ns-101.awsdns-12.com", "ns-1203.awsdns-22.org", "ns-2021.awsdns-60.co.uk", "ns-870.awsdns-44.net",
}

// Resource is one registered resource as the engine saw it.
type Resource struct {
	URN          string
	ID           string
	Type         string
	Name         string
	Parent       string // URN
	Provider     string // provider reference "urn::id", empty for the default provider
	Custom       bool
	Inputs       resource.PropertyMap
	Outputs      resource.PropertyMap
	Dependencies []string            // URNs from dependsOn and from every input's dependencies
	PropertyDeps map[string][]string // input name -> URNs it depends on
	Options      Options
}

// Options are the resource options the program set that matter for an update.
type Options struct {
	IgnoreChanges           []string
	DeleteBeforeReplace     bool
	Protect                 bool
	RetainOnDelete          bool
	AdditionalSecretOutputs []string
	ReplaceOnChanges        []string
	CustomTimeouts          map[string]string
}

// Invoke is one function call (data source) the program made.
type Invoke struct {
	Token    string
	Args     resource.PropertyMap
	Provider string
}

// Recorder is a pulumi.MockResourceMonitor that answers like AWS and remembers everything.
type Recorder struct {
	project, stack string
	mu             sync.Mutex
	resources      []*Resource
	invokes        []Invoke
}

// Run executes program under the mocks with the given config (full keys, for example
// "melody-flow:domain" and "aws:region") and returns what it registered.
func Run(project, stack string, config map[string]string, program pulumi.RunFunc) (*Recorder, error) {
	rec := &Recorder{project: project, stack: stack}
	err := pulumi.RunErr(program, pulumi.WithMocks(project, stack, rec), func(info *pulumi.RunInfo) {
		info.Config = config
	})
	return rec, err
}

// Resources returns the registered resources sorted by URN, which is stable across runs.
func (r *Recorder) Resources() []*Resource {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]*Resource(nil), r.resources...)
	sort.Slice(out, func(i, j int) bool { return out[i].URN < out[j].URN })
	return out
}

// Invokes returns the invokes in the order they were made.
func (r *Recorder) Invokes() []Invoke {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Invoke(nil), r.invokes...)
}

// Find returns the resource of the given type and name, or nil.
func (r *Recorder) Find(typ, name string) *Resource {
	for _, res := range r.Resources() {
		if res.Type == typ && res.Name == name {
			return res
		}
	}
	return nil
}

// OfType returns every resource of the given type, sorted by URN.
func (r *Recorder) OfType(typ string) []*Resource {
	var out []*Resource
	for _, res := range r.Resources() {
		if res.Type == typ {
			out = append(out, res)
		}
	}
	return out
}

// ByURN returns the resource with the given URN, or nil.
func (r *Recorder) ByURN(urn string) *Resource {
	for _, res := range r.Resources() {
		if res.URN == urn {
			return res
		}
	}
	return nil
}

// DependsOn reports whether from depends on to, directly or through other resources.
func (r *Recorder) DependsOn(from, to *Resource) bool {
	seen := map[string]bool{}
	var walk func(urn string) bool
	walk = func(urn string) bool {
		if seen[urn] {
			return false
		}
		seen[urn] = true
		res := r.ByURN(urn)
		if res == nil {
			return false
		}
		for _, dep := range res.Dependencies {
			if dep == to.URN || walk(dep) {
				return true
			}
		}
		return false
	}
	return walk(from.URN)
}

// NewResource implements pulumi.MockResourceMonitor.
func (r *Recorder) NewResource(args pulumi.MockResourceArgs) (string, resource.PropertyMap, error) {
	res := &Resource{
		Type:     args.TypeToken,
		Name:     args.Name,
		Provider: args.Provider,
		Custom:   args.Custom,
		Inputs:   args.Inputs,
	}
	if req := args.RegisterRPC; req != nil {
		res.Parent = req.GetParent()
		res.Dependencies = dedupe(req.GetDependencies())
		res.PropertyDeps = map[string][]string{}
		for prop, deps := range req.GetPropertyDependencies() {
			res.PropertyDeps[prop] = dedupe(deps.GetUrns())
			res.Dependencies = dedupe(append(res.Dependencies, deps.GetUrns()...))
		}
		res.Options = Options{
			IgnoreChanges:           req.GetIgnoreChanges(),
			DeleteBeforeReplace:     req.GetDeleteBeforeReplace(),
			Protect:                 req.GetProtect(),
			RetainOnDelete:          req.GetRetainOnDelete(),
			AdditionalSecretOutputs: req.GetAdditionalSecretOutputs(),
			ReplaceOnChanges:        req.GetReplaceOnChanges(),
		}
		if t := req.GetCustomTimeouts(); t != nil {
			res.Options.CustomTimeouts = map[string]string{"create": t.GetCreate(), "update": t.GetUpdate(), "delete": t.GetDelete()}
		}
	}
	res.URN = r.urn(res.Parent, res.Type, res.Name)

	id, outputs := r.simulate(res)
	res.ID, res.Outputs = id, outputs

	r.mu.Lock()
	r.resources = append(r.resources, res)
	r.mu.Unlock()
	return id, outputs, nil
}

// Call implements pulumi.MockResourceMonitor for invokes.
func (r *Recorder) Call(args pulumi.MockCallArgs) (resource.PropertyMap, error) {
	r.mu.Lock()
	r.invokes = append(r.invokes, Invoke{Token: args.Token, Args: args.Args, Provider: args.Provider})
	r.mu.Unlock()

	switch args.Token {
	case "aws:route53/getZone:getZone":
		name := strings.TrimSuffix(args.Args["name"].StringValue(), ".")
		return resource.NewPropertyMapFromMap(map[string]any{
			"id": HostedZoneID, "zoneId": HostedZoneID, "name": name,
			"nameServers":            toAny(ZoneNameServers),
			"privateZone":            false,
			"arn":                    "arn:aws:route53:::hostedzone/" + HostedZoneID,
			"resourceRecordSetCount": 2,
		}), nil
	case "aws:ssm/getParameter:getParameter":
		return resource.NewPropertyMapFromMap(map[string]any{
			"id": args.Args["name"].StringValue(), "name": args.Args["name"].StringValue(),
			"type": "String", "value": DLAMIID, "insecureValue": DLAMIID, "version": 42,
		}), nil
	case "aws:index/getCallerIdentity:getCallerIdentity":
		return resource.NewPropertyMapFromMap(map[string]any{
			"accountId": AccountID, "arn": "arn:aws:iam::" + AccountID + ":user/deployer", "userId": "AIDAMOCK",
			"id": AccountID,
		}), nil
	case "aws:index/getRegion:getRegion":
		return resource.NewPropertyMapFromMap(map[string]any{"name": "ap-northeast-1", "id": "ap-northeast-1"}), nil
	}
	return nil, fmt.Errorf("mocks: no simulated answer for invoke %s", args.Token)
}

// urn computes the URN the mock monitor gives a resource (the same rule as the engine).
func (r *Recorder) urn(parent, typ, name string) string {
	parentType := tokens.Type("")
	if p := resource.URN(parent); p != "" && p.QualifiedType() != resource.RootStackType {
		parentType = p.QualifiedType()
	}
	return string(resource.NewURN(tokens.QName(r.stack), tokens.PackageName(r.project), parentType, tokens.Type(typ), name))
}

// regionOf returns the region of the explicit provider a resource uses, or the stack's region.
func (r *Recorder) regionOf(res *Resource) string {
	if res.Provider != "" {
		if p := r.ByURN(res.ProviderURN()); p != nil {
			if region, ok := p.Inputs["region"]; ok && region.IsString() {
				return region.StringValue()
			}
		}
	}
	return "ap-northeast-1"
}

// simulate returns the ID and the outputs AWS would give the resource.
func (r *Recorder) simulate(res *Resource) (string, resource.PropertyMap) {
	out := res.Inputs.Copy()
	h := shortHash(res.URN)
	set := func(k string, v any) { out[resource.PropertyKey(k)] = resource.NewPropertyValue(v) }
	str := func(k string) string {
		if v, ok := res.Inputs[resource.PropertyKey(k)]; ok && v.IsString() {
			return v.StringValue()
		}
		return ""
	}
	region := r.regionOf(res)
	id := res.Name + "-" + h[:8]

	switch res.Type {
	case "aws:s3/bucketV2:BucketV2":
		bucket := str("bucket")
		if bucket == "" {
			bucket = res.Name + "-" + h[:7] // Pulumi's auto-naming: logical name plus a random suffix
		}
		id = bucket
		set("bucket", bucket)
		set("arn", "arn:aws:s3:::"+bucket)
		set("bucketDomainName", bucket+".s3.amazonaws.com")
		set("bucketRegionalDomainName", bucket+".s3."+region+".amazonaws.com")
		set("region", region)
	case "aws:cloudfront/distribution:Distribution":
		id = "E" + strings.ToUpper(h[:13])
		set("arn", "arn:aws:cloudfront::"+AccountID+":distribution/"+id)
		set("domainName", "d"+h[:13]+".cloudfront.net")
		set("hostedZoneId", CloudFrontZoneID)
		set("status", "Deployed")
	case "aws:cloudfront/originAccessControl:OriginAccessControl":
		id = "E" + strings.ToUpper(h[:13])
	case "aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy":
		id = h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	case "aws:acm/certificate:Certificate":
		id = "arn:aws:acm:" + region + ":" + AccountID + ":certificate/" + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
		set("arn", id)
		set("status", "PENDING_VALIDATION")
		names := []string{str("domainName")}
		if sans, ok := res.Inputs["subjectAlternativeNames"]; ok && sans.IsArray() {
			for _, san := range sans.ArrayValue() {
				names = append(names, san.StringValue())
			}
		}
		var options []any
		for _, name := range names {
			base := strings.TrimPrefix(name, "*.")
			token := shortHash("validation:" + base)
			options = append(options, map[string]any{
				"domainName":          name,
				"resourceRecordName":  "_" + token[:32] + "." + base + ".",
				"resourceRecordType":  "CNAME",
				"resourceRecordValue": "_" + token[32:64] + ".xlfgrmvvlj.acm-validations.aws.",
			})
		}
		set("domainValidationOptions", options)
	case "aws:acm/certificateValidation:CertificateValidation":
		id = str("certificateArn")
	case "aws:route53/record:Record":
		id = HostedZoneID + "_" + str("name") + "_" + str("type")
		set("fqdn", strings.TrimSuffix(str("name"), "."))
	case "aws:ec2/eip:Eip":
		id = "eipalloc-0" + h[:16]
		set("allocationId", id)
		set("publicIp", ElasticIP)
		set("publicDns", "ec2-"+strings.ReplaceAll(ElasticIP, ".", "-")+"."+region+".compute.amazonaws.com")
	case "aws:ec2/eipAssociation:EipAssociation":
		id = "eipassoc-0" + h[:16]
	case "aws:ec2/spotInstanceRequest:SpotInstanceRequest":
		id = "sir-" + h[:8]
		set("spotInstanceId", "i-0"+h[:16])
		set("spotRequestState", "active")
		set("arn", "arn:aws:ec2:"+region+":"+AccountID+":spot-instances-request/"+id)
	case "aws:ec2/securityGroup:SecurityGroup":
		id = "sg-0" + h[:16]
		set("arn", "arn:aws:ec2:"+region+":"+AccountID+":security-group/"+id)
	case "aws:ec2/keyPair:KeyPair":
		id = str("keyName")
		if id == "" {
			id = res.Name + "-" + h[:7]
		}
		set("keyName", id)
	case "aws:iam/role:Role":
		id = res.Name + "-" + h[:7]
		set("name", id)
		set("arn", "arn:aws:iam::"+AccountID+":role/"+id)
	case "aws:iam/instanceProfile:InstanceProfile":
		id = res.Name + "-" + h[:7]
		set("name", id)
		set("arn", "arn:aws:iam::"+AccountID+":instance-profile/"+id)
	case "aws:sns/topic:Topic":
		id = "arn:aws:sns:" + region + ":" + AccountID + ":" + res.Name + "-" + h[:7]
		set("arn", id)
	case "aws:cloudwatch/metricAlarm:MetricAlarm", "aws:route53/healthCheck:HealthCheck":
		set("arn", "arn:aws:cloudwatch:"+region+":"+AccountID+":alarm:"+id)
	case "tls:index/privateKey:PrivateKey":
		out["privateKeyOpenssh"] = resource.MakeSecret(resource.NewProperty(MockPrivateKeyPEM))
		out["privateKeyPem"] = resource.MakeSecret(resource.NewProperty(MockPrivateKeyPEM))
		set("publicKeyOpenssh", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"+h[:43]+" melody-flow\n")
		set("publicKeyFingerprintSha256", "SHA256:"+h[:43])
	case "pulumi:providers:aws":
		id = "provider-" + h[:8]
	}
	return id, out
}

// shortHash gives 128 stable hex digits from s, for IDs that differ per resource but never per run.
func shortHash(s string) string {
	sum := sha512.Sum512([]byte(s))
	return hex.EncodeToString(sum[:])
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// Input returns an input as a plain Go value (maps, slices, strings, float64, bool); secrets
// are unwrapped, unknown values are nil and assets give their path.
func (r *Resource) Input(key string) any {
	v, ok := r.Inputs[resource.PropertyKey(key)]
	if !ok {
		return nil
	}
	return Plain(v)
}

// Plain turns a property value into a plain Go value, as Input does.
func Plain(v resource.PropertyValue) any {
	switch {
	case v.IsSecret():
		return Plain(v.SecretValue().Element)
	case v.IsOutput():
		if v.OutputValue().Known {
			return Plain(v.OutputValue().Element)
		}
		return nil
	case v.IsComputed():
		return nil
	case v.IsAsset():
		return v.AssetValue().Path
	case v.IsArchive():
		return v.ArchiveValue().Path
	}
	return v.Mappable()
}

// ProviderURN is the URN of the explicit provider the resource uses ("" for the default one).
func (r *Resource) ProviderURN() string {
	// A provider reference is "<urn>::<id>".
	return r.Provider[:max(strings.LastIndex(r.Provider, "::"), 0)]
}
