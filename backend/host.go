// Package backend builds the API host: GpuApiHost (the spot GPU instance, its network and
// identity) and ApiBootstrap (the remote commands that bring up the compose stack and its TLS).
package backend

import (
	"net/netip"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/ec2"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/iam"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/ssm"
	"github.com/pulumi/pulumi-tls/sdk/v5/go/tls"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/melody-flow/infra/internal/iampolicy"
)

// DLAMIParameter is AWS's public SSM parameter with the latest "Deep Learning Base OSS Nvidia
// Driver GPU AMI (Amazon Linux 2023)" of the region.
const DLAMIParameter = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id"

// MetricNamespace is the CloudWatch namespace the host may publish to.
const MetricNamespace = "MelodyFlow"

// SSHUser is the default user of Amazon Linux.
const SSHUser = "ec2-user"

// HostArgs configure a GpuApiHost.
type HostArgs struct {
	// NamePrefix makes names unique per stack, e.g. "melody-flow-prod".
	NamePrefix   string
	InstanceType string
	// AMIID pins the image; empty takes the latest DLAMI when the instance is created.
	AMIID         string
	RootVolumeGiB int
	// SpotMaxPrice in USD per hour; empty caps it at the on-demand price.
	SpotMaxPrice             string
	SpotInterruptionBehavior string // "stop" or "hibernate"
	SpotValidUntil           string // RFC 3339
	SSHIngressCIDRs          []string
	// UserData is the rendered cloud-init.
	UserData string
}

// Host is the GpuApiHost component.
type Host struct {
	pulumi.ResourceState

	SpotRequestID   pulumi.IDOutput
	InstanceID      pulumi.StringOutput
	PublicIP        pulumi.StringOutput
	SecurityGroupID pulumi.IDOutput
	// SSHPrivateKey is the OpenSSH private key of SSHUser; always a secret.
	SSHPrivateKey pulumi.StringOutput
	// EIPAssociation is done when the instance answers on PublicIP.
	EIPAssociation *ec2.EipAssociation
}

// NewHost registers the key, the security group, the role, the spot instance and its Elastic IP.
func NewHost(ctx *pulumi.Context, name string, args *HostArgs, opts ...pulumi.ResourceOption) (*Host, error) {
	host := &Host{}
	if err := ctx.RegisterComponentResource("melody-flow:backend:GpuApiHost", name, host, opts...); err != nil {
		return nil, err
	}
	parent := pulumi.Parent(host)

	// The deploy's SSH key: generated here so that no one has to hand one over.
	key, err := tls.NewPrivateKey(ctx, "ssh", &tls.PrivateKeyArgs{Algorithm: pulumi.String("ED25519")}, parent)
	if err != nil {
		return nil, err
	}
	keyPair, err := ec2.NewKeyPair(ctx, "ssh", &ec2.KeyPairArgs{PublicKey: key.PublicKeyOpenssh}, parent)
	if err != nil {
		return nil, err
	}

	securityGroup, err := ec2.NewSecurityGroup(ctx, "api", &ec2.SecurityGroupArgs{
		Description: pulumi.String("Melody Flow API host: HTTP and HTTPS from anywhere, SSH from the deployers"),
		Ingress:     ingressRules(args.SSHIngressCIDRs),
		Egress: ec2.SecurityGroupEgressArray{&ec2.SecurityGroupEgressArgs{
			Description:    pulumi.String("All outbound: packages, images, Let's Encrypt"),
			Protocol:       pulumi.String("-1"),
			FromPort:       pulumi.Int(0),
			ToPort:         pulumi.Int(0),
			CidrBlocks:     pulumi.ToStringArray([]string{"0.0.0.0/0"}),
			Ipv6CidrBlocks: pulumi.ToStringArray([]string{"::/0"}),
		}},
	}, parent)
	if err != nil {
		return nil, err
	}

	profile, err := newInstanceProfile(ctx, parent)
	if err != nil {
		return nil, err
	}

	// A new AMI in the SSM parameter must not replace a running host: the parameter is read
	// when the instance is created, and later changes of it are ignored (see README to roll forward).
	ami := args.AMIID
	var amiOptions []pulumi.ResourceOption
	if ami == "" {
		latest, err := ssm.LookupParameter(ctx, &ssm.LookupParameterArgs{Name: DLAMIParameter})
		if err != nil {
			return nil, err
		}
		ami = latest.Value
		amiOptions = append(amiOptions, pulumi.IgnoreChanges([]string{"ami"}))
	}

	// A persistent spot request whose interruptions stop (or hibernate) the instance: it comes
	// back by itself with the same disk, ID and Elastic IP. Destroying the request cancels it and
	// terminates its instance, so nothing is left to launch instances later.
	spotArgs := &ec2.SpotInstanceRequestArgs{
		Ami:                          pulumi.String(ami),
		InstanceType:                 pulumi.String(args.InstanceType),
		SpotType:                     pulumi.String("persistent"),
		InstanceInterruptionBehavior: pulumi.String(args.SpotInterruptionBehavior),
		Hibernation:                  pulumi.Bool(args.SpotInterruptionBehavior == "hibernate"),
		ValidUntil:                   pulumi.String(args.SpotValidUntil),
		WaitForFulfillment:           pulumi.Bool(true),
		KeyName:                      keyPair.KeyName,
		IamInstanceProfile:           profile.Name,
		VpcSecurityGroupIds:          pulumi.StringArray{securityGroup.ID().ToStringOutput()},
		UserData:                     pulumi.String(args.UserData),
		MetadataOptions: &ec2.SpotInstanceRequestMetadataOptionsArgs{
			HttpEndpoint: pulumi.String("enabled"),
			HttpTokens:   pulumi.String("required"),
			// Two hops: a container behind Docker's bridge can still reach IMDSv2.
			HttpPutResponseHopLimit: pulumi.Int(2),
		},
		RootBlockDevice: &ec2.SpotInstanceRequestRootBlockDeviceArgs{
			VolumeType:          pulumi.String("gp3"),
			VolumeSize:          pulumi.Int(args.RootVolumeGiB),
			Encrypted:           pulumi.Bool(true),
			DeleteOnTermination: pulumi.Bool(true),
		},
		Tags: pulumi.StringMap{"Name": pulumi.String(args.NamePrefix + "-api")},
	}
	if args.SpotMaxPrice != "" {
		spotArgs.SpotPrice = pulumi.String(args.SpotMaxPrice)
	}
	spot, err := ec2.NewSpotInstanceRequest(ctx, "api", spotArgs, append([]pulumi.ResourceOption{parent,
		// GPU spot capacity can take a while to be found.
		pulumi.Timeouts(&pulumi.CustomTimeouts{Create: "20m", Delete: "20m"}),
	}, amiOptions...)...)
	if err != nil {
		return nil, err
	}
	// Tags of a spot request do not reach its instance; name the instance for the console.
	if _, err := ec2.NewTag(ctx, "api-name", &ec2.TagArgs{
		ResourceId: spot.SpotInstanceId,
		Key:        pulumi.String("Name"),
		Value:      pulumi.String(args.NamePrefix + "-api"),
	}, parent); err != nil {
		return nil, err
	}

	eip, err := ec2.NewEip(ctx, "api", &ec2.EipArgs{
		Domain: pulumi.String("vpc"),
		Tags:   pulumi.StringMap{"Name": pulumi.String(args.NamePrefix + "-api")},
	}, parent)
	if err != nil {
		return nil, err
	}
	association, err := ec2.NewEipAssociation(ctx, "api", &ec2.EipAssociationArgs{
		AllocationId: eip.AllocationId,
		InstanceId:   spot.SpotInstanceId,
	}, parent)
	if err != nil {
		return nil, err
	}

	host.SpotRequestID = spot.ID()
	host.InstanceID = spot.SpotInstanceId
	host.PublicIP = eip.PublicIp
	host.SecurityGroupID = securityGroup.ID()
	host.SSHPrivateKey = pulumi.ToSecret(key.PrivateKeyOpenssh).(pulumi.StringOutput)
	host.EIPAssociation = association
	if err := ctx.RegisterResourceOutputs(host, pulumi.Map{
		"spotRequestId": host.SpotRequestID,
		"instanceId":    host.InstanceID,
		"publicIp":      host.PublicIP,
	}); err != nil {
		return nil, err
	}
	return host, nil
}

// ingressRules open 80 and 443 to everyone (nginx is the only listener) and 22 only to the
// configured CIDRs.
func ingressRules(sshCIDRs []string) ec2.SecurityGroupIngressArray {
	rules := ec2.SecurityGroupIngressArray{}
	for _, port := range []int{80, 443} {
		rules = append(rules, &ec2.SecurityGroupIngressArgs{
			Description:    pulumi.Sprintf("nginx on %d", port),
			Protocol:       pulumi.String("tcp"),
			FromPort:       pulumi.Int(port),
			ToPort:         pulumi.Int(port),
			CidrBlocks:     pulumi.ToStringArray([]string{"0.0.0.0/0"}),
			Ipv6CidrBlocks: pulumi.ToStringArray([]string{"::/0"}),
		})
	}
	v4, v6 := splitCIDRs(sshCIDRs)
	if len(v4)+len(v6) > 0 {
		ssh := &ec2.SecurityGroupIngressArgs{
			Description: pulumi.String("SSH for deploys and break-glass access"),
			Protocol:    pulumi.String("tcp"),
			FromPort:    pulumi.Int(22),
			ToPort:      pulumi.Int(22),
		}
		if len(v4) > 0 {
			ssh.CidrBlocks = pulumi.ToStringArray(v4)
		}
		if len(v6) > 0 {
			ssh.Ipv6CidrBlocks = pulumi.ToStringArray(v6)
		}
		rules = append(rules, ssh)
	}
	return rules
}

// splitCIDRs separates IPv4 and IPv6 CIDRs, keeping their order (config validated them).
func splitCIDRs(cidrs []string) (v4, v6 []string) {
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is6() {
			v6 = append(v6, c)
		} else {
			v4 = append(v4, c)
		}
	}
	return v4, v6
}

// newInstanceProfile gives the host SSM's core policy, for Session Manager break-glass access,
// and the right to publish metrics in the stack's own CloudWatch namespace (the certificate's
// remaining days), nothing more.
func newInstanceProfile(ctx *pulumi.Context, parent pulumi.ResourceOption) (*iam.InstanceProfile, error) {
	role, err := iam.NewRole(ctx, "api-host", &iam.RoleArgs{
		Description:      pulumi.String("Melody Flow API host"),
		AssumeRolePolicy: pulumi.String(iampolicy.AssumeRole("ec2.amazonaws.com", nil)),
	}, parent)
	if err != nil {
		return nil, err
	}
	if _, err := iam.NewRolePolicyAttachment(ctx, "api-host-ssm", &iam.RolePolicyAttachmentArgs{
		Role:      role.Name,
		PolicyArn: pulumi.String("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"),
	}, parent); err != nil {
		return nil, err
	}
	metrics := iampolicy.Document(iampolicy.Statement{
		"Effect":    "Allow",
		"Action":    "cloudwatch:PutMetricData",
		"Resource":  "*", // PutMetricData has no resource ARNs; the namespace condition scopes it
		"Condition": map[string]any{"StringEquals": map[string]any{"cloudwatch:namespace": MetricNamespace}},
	})
	if _, err := iam.NewRolePolicy(ctx, "api-host-metrics", &iam.RolePolicyArgs{
		Role:   role.Name,
		Policy: pulumi.String(metrics),
	}, parent); err != nil {
		return nil, err
	}
	return iam.NewInstanceProfile(ctx, "api-host", &iam.InstanceProfileArgs{Role: role.Name}, parent)
}
