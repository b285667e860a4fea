package stack

import (
	"reflect"
	"strings"
	"testing"

	"github.com/melody-flow/infra/backend"
	"github.com/melody-flow/infra/internal/mocks"
)

func TestSpotInstance(t *testing.T) {
	d := runStack(t, nil)
	spot := d.must(t, typeSpot, "api")
	want := map[string]any{
		"instanceType":                 "g4dn.xlarge",
		"spotType":                     "persistent",
		"instanceInterruptionBehavior": "stop",
		"hibernation":                  false,
		"validUntil":                   "2030-12-31T23:59:59Z",
		"waitForFulfillment":           true,
		"ami":                          mocks.DLAMIID,
	}
	for k, v := range want {
		if got := input(spot, k); got != v {
			t.Errorf("spot request %s = %v, want %v", k, got, v)
		}
	}
	if input(spot, "spotPrice") != nil {
		t.Errorf("spotPrice = %v, want unset (capped at on-demand)", input(spot, "spotPrice"))
	}
	metadata := input(spot, "metadataOptions").(map[string]any)
	if metadata["httpTokens"] != "required" || metadata["httpPutResponseHopLimit"] != float64(2) {
		t.Errorf("metadata options = %v, want IMDSv2 required with hop limit 2", metadata)
	}
	root := input(spot, "rootBlockDevice").(map[string]any)
	if root["volumeType"] != "gp3" || root["encrypted"] != true || root["volumeSize"] != float64(150) {
		t.Errorf("root volume = %v", root)
	}
	if !strings.HasPrefix(input(spot, "userData").(string), "#cloud-config") {
		t.Error("user data is not cloud-config")
	}

	// The AMI comes from the public SSM parameter, and a newer one must not replace the host.
	var looked bool
	for _, inv := range d.Invokes() {
		if inv.Token == "aws:ssm/getParameter:getParameter" && inv.Args["name"].StringValue() == backend.DLAMIParameter {
			looked = true
		}
	}
	if !looked {
		t.Error("the DLAMI SSM parameter was not read")
	}
	if !reflect.DeepEqual(spot.Options.IgnoreChanges, []string{"ami"}) {
		t.Errorf("ignoreChanges = %v, want [ami]", spot.Options.IgnoreChanges)
	}
	if spot.Options.CustomTimeouts["create"] != "20m" {
		t.Errorf("create timeout = %v", spot.Options.CustomTimeouts)
	}

	profile := d.must(t, "aws:iam/instanceProfile:InstanceProfile", "api-host")
	if input(spot, "iamInstanceProfile") != profile.Outputs["name"].StringValue() {
		t.Error("the instance does not use the host's instance profile")
	}
	attachment := d.must(t, "aws:iam/rolePolicyAttachment:RolePolicyAttachment", "api-host-ssm")
	if input(attachment, "policyArn") != "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore" {
		t.Errorf("role policy = %v", input(attachment, "policyArn"))
	}
	if n := len(d.OfType("aws:iam/rolePolicyAttachment:RolePolicyAttachment")); n != 1 {
		t.Errorf("the host role has %d managed policies, want only SSM core", n)
	}
	metrics := input(d.must(t, "aws:iam/rolePolicy:RolePolicy", "api-host-metrics"), "policy").(string)
	for _, want := range []string{`"Action":"cloudwatch:PutMetricData"`, `"cloudwatch:namespace":"MelodyFlow"`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("host metrics policy %s lacks %s", metrics, want)
		}
	}
}

func TestPinnedAMIAndSpotOptionsFromConfig(t *testing.T) {
	d := runStack(t, map[string]string{
		"amiId": "ami-0123456789abcdef0", "spotMaxPrice": "0.35", "spotInterruptionBehavior": "hibernate",
		"instanceType": "g5.xlarge", "rootVolumeGiB": "200",
	})
	spot := d.must(t, typeSpot, "api")
	for k, v := range map[string]any{
		"ami": "ami-0123456789abcdef0", "spotPrice": "0.35", "instanceInterruptionBehavior": "hibernate",
		"hibernation": true, "instanceType": "g5.xlarge",
	} {
		if got := input(spot, k); got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
	if len(spot.Options.IgnoreChanges) != 0 {
		t.Errorf("a pinned AMI must roll forward when the pin changes; ignoreChanges = %v", spot.Options.IgnoreChanges)
	}
	for _, inv := range d.Invokes() {
		if inv.Token == "aws:ssm/getParameter:getParameter" {
			t.Error("the SSM parameter was read although the AMI is pinned")
		}
	}
}

func TestSecurityGroupRules(t *testing.T) {
	d := runStack(t, map[string]string{
		"sshIngressCidrs": `["198.51.100.0/24","2001:db8::/32"]`, "sshAllowWorld": "false",
	})
	sg := d.must(t, "aws:ec2/securityGroup:SecurityGroup", "api")
	type rule struct {
		port     float64
		v4, v6   string
		protocol string
	}
	var got []rule
	for _, r := range input(sg, "ingress").([]any) {
		r := r.(map[string]any)
		if r["fromPort"] != r["toPort"] {
			t.Errorf("rule %v opens a port range", r)
		}
		got = append(got, rule{r["fromPort"].(float64), join(r["cidrBlocks"]), join(r["ipv6CidrBlocks"]), r["protocol"].(string)})
	}
	want := []rule{
		{80, "0.0.0.0/0", "::/0", "tcp"},
		{443, "0.0.0.0/0", "::/0", "tcp"},
		{22, "198.51.100.0/24", "2001:db8::/32", "tcp"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ingress = %+v\nwant %+v", got, want)
	}
	egress := input(sg, "egress").([]any)[0].(map[string]any)
	if egress["protocol"] != "-1" || join(egress["cidrBlocks"]) != "0.0.0.0/0" {
		t.Errorf("egress = %v", egress)
	}
	spot := d.must(t, typeSpot, "api")
	if !contains(spot.PropertyDeps["vpcSecurityGroupIds"], sg.URN) {
		t.Error("the instance is not in the security group")
	}
}

func join(v any) string {
	list, _ := v.([]any)
	var s []string
	for _, x := range list {
		s = append(s, x.(string))
	}
	return strings.Join(s, ",")
}

func TestKeyPairAndElasticIP(t *testing.T) {
	d := runStack(t, nil)
	key := d.must(t, "tls:index/privateKey:PrivateKey", "ssh")
	if input(key, "algorithm") != "ED25519" {
		t.Errorf("key algorithm = %v", input(key, "algorithm"))
	}
	keyPair := d.must(t, "aws:ec2/keyPair:KeyPair", "ssh")
	if !contains(keyPair.PropertyDeps["publicKey"], key.URN) || input(keyPair, "publicKey") != key.Outputs["publicKeyOpenssh"].StringValue() {
		t.Error("the key pair does not take the tls key's public key")
	}
	spot := d.must(t, typeSpot, "api")
	if input(spot, "keyName") != keyPair.Outputs["keyName"].StringValue() {
		t.Error("the instance does not use the key pair")
	}
	eip := d.must(t, "aws:ec2/eip:Eip", "api")
	if input(eip, "domain") != "vpc" || input(eip, "vpc") != nil {
		t.Errorf("EIP domain = %v", input(eip, "domain"))
	}
	assoc := d.must(t, "aws:ec2/eipAssociation:EipAssociation", "api")
	if input(assoc, "allocationId") != eip.ID || input(assoc, "instanceId") != spot.Outputs["spotInstanceId"].StringValue() {
		t.Errorf("association = %v", assoc.Inputs.Mappable())
	}
}

// The remote steps run in the guide's order, each after the one before, and the certificate is
// requested only after the A record exists and the Elastic IP is attached.
func TestRemoteCommandsRunInOrder(t *testing.T) {
	d := runStack(t, nil)
	cmd := func(name string) *mocks.Resource { return d.must(t, typeCommand, name) }
	assoc := d.must(t, "aws:ec2/eipAssociation:EipAssociation", "api")
	record := d.must(t, typeRecord, "api.melody-flow.click-A")
	chain := []*mocks.Resource{cmd("wait-for-host"), cmd("start-stack"), cmd("wait-dns"), cmd("obtain-cert"), cmd("enable-tls")}
	for i := 1; i < len(chain); i++ {
		if !d.DependsOn(chain[i], chain[i-1]) {
			t.Errorf("%s does not depend on %s", chain[i].Name, chain[i-1].Name)
		}
	}
	if !contains(cmd("wait-for-host").Dependencies, assoc.URN) {
		t.Error("wait-for-host does not wait for the Elastic IP association")
	}
	for _, dep := range []*mocks.Resource{record, assoc} {
		if !contains(cmd("wait-dns").Dependencies, dep.URN) {
			t.Errorf("wait-dns does not depend on %s", dep.Name)
		}
	}
	if !d.DependsOn(cmd("obtain-cert"), record) {
		t.Error("certbot can run before the api record exists")
	}
	for _, c := range d.OfType("command:remote:CopyToRemote") {
		if !contains(cmd("start-stack").Dependencies, c.URN) {
			t.Errorf("start-stack does not wait for %s", c.Name)
		}
		if !contains(c.Dependencies, cmd("wait-for-host").URN) {
			t.Errorf("%s does not wait for the host", c.Name)
		}
	}
	if got := len(d.OfType("command:remote:CopyToRemote")); got != 10 {
		t.Errorf("%d files are copied, want compose (2), .env, nginx (2), 4 step scripts and the certificate metric", got)
	}
}

func TestRemoteCommandsConnectionAndTriggers(t *testing.T) {
	d := runStack(t, nil)
	instanceID := d.must(t, typeSpot, "api").Outputs["spotInstanceId"].StringValue()
	for _, c := range append(d.OfType(typeCommand), d.OfType("command:remote:CopyToRemote")...) {
		conn, ok := input(c, "connection").(map[string]any)
		if !ok {
			t.Fatalf("%s has no connection", c.Name)
		}
		if conn["user"] != "ec2-user" || conn["host"] != mocks.ElasticIP {
			t.Errorf("%s connects as %v to %v", c.Name, conn["user"], conn["host"])
		}
		if !c.Inputs["connection"].ContainsSecrets() {
			t.Errorf("%s: the connection (with the private key) is not secret", c.Name)
		}
		triggers, _ := input(c, "triggers").([]any)
		if len(triggers) == 0 || triggers[0] != instanceID {
			t.Errorf("%s triggers = %v, want the instance ID first", c.Name, triggers)
		}
	}
	boot := input(d.must(t, typeCommand, "wait-for-host"), "connection").(map[string]any)
	if boot["dialErrorLimit"] != float64(90) {
		t.Errorf("wait-for-host dial limit = %v", boot["dialErrorLimit"])
	}
	if !strings.Contains(input(d.must(t, typeCommand, "wait-for-host"), "create").(string), "cloud-init status --wait") {
		t.Error("wait-for-host does not wait for cloud-init")
	}
	for step, want := range map[string][]string{
		"start-stack": {"scripts/start-stack.sh", "API_DOMAIN='api.melody-flow.click'"},
		"wait-dns":    {"scripts/wait-dns.sh", "EXPECTED_IP='" + mocks.ElasticIP + "'", "NAMESERVERS='" + strings.Join(mocks.ZoneNameServers, " ") + "'"},
		"obtain-cert": {"scripts/obtain-cert.sh", "ACME_EMAIL='admin@melody-flow.click'"},
		"enable-tls":  {"scripts/enable-tls.sh", "HEALTH_PATH='/docs'"},
	} {
		create := input(d.must(t, typeCommand, step), "create").(string)
		for _, w := range want {
			if !strings.Contains(create, w) {
				t.Errorf("%s: %q lacks %q", step, create, w)
			}
		}
	}
}

// An image instead of a repository: the ref's default does not make it a build.
func TestAPIFromAnImage(t *testing.T) {
	d := runStack(t, map[string]string{"apiImage": "ghcr.io/melody-flow/api:1.4.0", "apiGitUrl": ""})
	env := input(d.must(t, "command:remote:CopyToRemote", "copy-.env"), "source")
	if env == nil {
		t.Fatal("no .env copied")
	}
	files, err := RenderHostFiles(mustConfig(t, map[string]string{"apiImage": "ghcr.io/melody-flow/api:1.4.0", "apiGitUrl": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(files.Files[".env"], "API_IMAGE=ghcr.io/melody-flow/api:1.4.0") ||
		strings.Contains(files.Files[".env"], "API_BUILD_CONTEXT") {
		t.Errorf(".env = %s", files.Files[".env"])
	}
}

// A change of one host file re-copies it and re-runs what reads it, nothing else.
func TestHostFileChangeReRunsOnlyWhatReadsIt(t *testing.T) {
	before := snapshot(t, runStack(t, nil))
	after := snapshot(t, runStack(t, map[string]string{"apiGitRef": "v2"}))
	var changed []string
	for urn, inputs := range after {
		if before[urn] != inputs {
			changed = append(changed, urn[strings.LastIndex(urn, "::")+2:])
		}
	}
	want := map[string]bool{"copy-.env": true, "start-stack": true}
	for _, c := range changed {
		if !want[c] {
			t.Errorf("changing apiGitRef also changed %s", c)
		}
	}
	for c := range want {
		if !contains(changed, c) {
			t.Errorf("changing apiGitRef did not change %s (changed: %v)", c, changed)
		}
	}
}

// The frontend and the backend branches deploy side by side: no edge serialises one behind the other.
func TestFrontendAndBackendAreIndependent(t *testing.T) {
	d := runStack(t, nil)
	var front, back []*mocks.Resource
	for _, r := range d.Resources() {
		parent := d.ByURN(r.Parent)
		switch {
		case parent == nil:
		case parent.Type == "melody-flow:frontend:FrontendSite":
			front = append(front, r)
		case parent.Type == "melody-flow:backend:GpuApiHost" || parent.Type == "melody-flow:backend:ApiBootstrap":
			back = append(back, r)
		}
	}
	for _, f := range front {
		for _, b := range back {
			if d.DependsOn(f, b) {
				t.Errorf("frontend %s waits for backend %s", f.Name, b.Name)
			}
			if d.DependsOn(b, f) {
				t.Errorf("backend %s waits for frontend %s", b.Name, f.Name)
			}
		}
	}
}
