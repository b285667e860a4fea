package backend

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"path"
	"slices"

	"github.com/pulumi/pulumi-command/sdk/go/command/remote"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/melody-flow/infra/userdata"
)

// BootstrapArgs configure an ApiBootstrap.
type BootstrapArgs struct {
	Host *Host
	// APIRecord is the api A record: the certificate is only requested once it exists.
	APIRecord pulumi.Resource
	// HostFiles are the files to copy under Params.AppDir (path relative to it -> content).
	HostFiles map[string]string
	// Params are the bootstrap's parameters; ExpectedIP is filled in from the host.
	Params userdata.BootstrapParams
	// ModelsDir, when set, is a local folder copied to <AppDir>/models.
	ModelsDir string
}

// Bootstrap is the ApiBootstrap component.
type Bootstrap struct {
	pulumi.ResourceState

	// Done finishes when nginx serves the API over HTTPS with the Let's Encrypt certificate.
	Done *remote.Command
}

// How long the first SSH connection may take: spot fulfilment is done, but the host boots
// and runs cloud-init (which installs packages) before sshd and the compose plugin are ready.
const (
	bootDialAttempts    = 90
	bootDialTimeoutSecs = 10
)

// NewBootstrap registers the remote commands, in the order the deploy guide runs them by hand:
// wait for the host, copy the files, start compose with HTTP-only nginx, wait for the api record
// at the zone's name servers, obtain the certificate, switch nginx to TLS.
func NewBootstrap(ctx *pulumi.Context, name string, args *BootstrapArgs, opts ...pulumi.ResourceOption) (*Bootstrap, error) {
	bootstrap := &Bootstrap{}
	if err := ctx.RegisterComponentResource("melody-flow:backend:ApiBootstrap", name, bootstrap, opts...); err != nil {
		return nil, err
	}
	parent := pulumi.Parent(bootstrap)
	host := args.Host
	connection := remote.ConnectionArgs{
		Host:       host.PublicIP,
		User:       pulumi.String(SSHUser),
		PrivateKey: host.SSHPrivateKey,
	}
	bootConnection := connection
	bootConnection.DialErrorLimit = pulumi.Int(bootDialAttempts)
	bootConnection.PerDialTimeout = pulumi.Int(bootDialTimeoutSecs)
	// A replaced instance is a new host: every step runs again on it.
	instance := host.InstanceID

	waitForHost, err := remote.NewCommand(ctx, "wait-for-host", &remote.CommandArgs{
		Connection: bootConnection,
		Create:     pulumi.String(WaitForHostCommand),
		Triggers:   pulumi.Array{instance},
	}, parent, pulumi.DependsOn([]pulumi.Resource{host.EIPAssociation}),
		pulumi.Timeouts(&pulumi.CustomTimeouts{Create: "30m", Update: "30m"}))
	if err != nil {
		return nil, err
	}

	copies, err := copyHostFiles(ctx, connection, instance, args, waitForHost, parent)
	if err != nil {
		return nil, err
	}

	startStack, err := remote.NewCommand(ctx, "start-stack", &remote.CommandArgs{
		Connection: connection,
		Create:     pulumi.String(userdata.RemoteCommand(userdata.StepStartStack, userdata.StepEnv(userdata.StepStartStack, args.Params))),
		// Any change of a host file brings compose up again; start-stack keeps TLS once it is live.
		Triggers: pulumi.Array{instance, pulumi.String(FilesHash(args.HostFiles))},
	}, parent, pulumi.DependsOn(copies), pulumi.Timeouts(&pulumi.CustomTimeouts{Create: "30m", Update: "30m"}))
	if err != nil {
		return nil, err
	}

	// Never before the record exists: a resolver that saw NXDOMAIN caches it for the SOA's TTL.
	waitDNS, err := remote.NewCommand(ctx, "wait-dns", &remote.CommandArgs{
		Connection: connection,
		Create: host.PublicIP.ApplyT(func(ip string) string {
			params := args.Params
			params.ExpectedIP = ip
			return userdata.RemoteCommand(userdata.StepWaitDNS, userdata.StepEnv(userdata.StepWaitDNS, params))
		}).(pulumi.StringOutput),
		Triggers: pulumi.Array{instance},
	}, parent, pulumi.DependsOn([]pulumi.Resource{startStack, args.APIRecord, host.EIPAssociation}),
		pulumi.Timeouts(&pulumi.CustomTimeouts{Create: "15m", Update: "15m"}))
	if err != nil {
		return nil, err
	}

	// --keep-until-expiring inside: a re-run keeps the certificate it has (Let's Encrypt allows
	// only five duplicate certificates a week).
	obtainCert, err := remote.NewCommand(ctx, "obtain-cert", &remote.CommandArgs{
		Connection: connection,
		Create:     pulumi.String(userdata.RemoteCommand(userdata.StepObtainCert, userdata.StepEnv(userdata.StepObtainCert, args.Params))),
		Triggers:   pulumi.Array{instance},
	}, parent, pulumi.DependsOn([]pulumi.Resource{waitDNS}))
	if err != nil {
		return nil, err
	}

	enableTLS, err := remote.NewCommand(ctx, "enable-tls", &remote.CommandArgs{
		Connection: connection,
		Create:     pulumi.String(userdata.RemoteCommand(userdata.StepEnableTLS, userdata.StepEnv(userdata.StepEnableTLS, args.Params))),
		Triggers: pulumi.Array{instance, pulumi.String(FilesHash(map[string]string{
			"nginx/https.conf":      args.HostFiles["nginx/https.conf"],
			"scripts/enable-tls.sh": args.HostFiles["scripts/enable-tls.sh"],
		}))},
	}, parent, pulumi.DependsOn([]pulumi.Resource{obtainCert}))
	if err != nil {
		return nil, err
	}

	bootstrap.Done = enableTLS
	if err := ctx.RegisterResourceOutputs(bootstrap, pulumi.Map{}); err != nil {
		return nil, err
	}
	return bootstrap, nil
}

// WaitForHostCommand returns once cloud-init has finished, and fails with the tail of its log
// when cloud-init failed.
const WaitForHostCommand = `cloud-init status --wait >/dev/null || { sudo tail -n 40 /var/log/cloud-init-output.log >&2; echo "cloud-init failed on the API host" >&2; exit 1; }`

// copyHostFiles copies each host file (and the models, if any). A changed file updates its
// copy only; the steps that read it are re-run by their triggers.
func copyHostFiles(ctx *pulumi.Context, connection remote.ConnectionArgs, instance pulumi.StringOutput, args *BootstrapArgs,
	after pulumi.Resource, parent pulumi.ResourceOption) ([]pulumi.Resource, error) {
	var copies []pulumi.Resource
	for _, rel := range slices.Sorted(maps.Keys(args.HostFiles)) {
		c, err := remote.NewCopyToRemote(ctx, "copy-"+rel, &remote.CopyToRemoteArgs{
			Connection: connection,
			Source:     pulumi.NewStringAsset(args.HostFiles[rel]),
			RemotePath: pulumi.String(path.Join(args.Params.AppDir, rel)),
			Triggers:   pulumi.Array{instance},
		}, parent, pulumi.DependsOn([]pulumi.Resource{after}))
		if err != nil {
			return nil, err
		}
		copies = append(copies, c)
	}
	if args.ModelsDir != "" {
		// The trailing slash copies the folder's contents into models/, not a folder inside it.
		c, err := remote.NewCopyToRemote(ctx, "copy-models", &remote.CopyToRemoteArgs{
			Connection: connection,
			Source:     pulumi.NewFileArchive(args.ModelsDir + "/"),
			RemotePath: pulumi.String(path.Join(args.Params.AppDir, "models")),
			Triggers:   pulumi.Array{instance},
		}, parent, pulumi.DependsOn([]pulumi.Resource{after}))
		if err != nil {
			return nil, err
		}
		copies = append(copies, c)
	}
	return copies, nil
}

// FilesHash identifies a set of host files by their paths and contents.
func FilesHash(files map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "%s\x00%d\x00%s", k, len(files[k]), files[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}
