// Package stack is the Melody Flow program: it reads and validates the config, renders the
// files for the API host, wires the components together and exports the outputs.
package stack

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/melody-flow/infra/backend"
	"github.com/melody-flow/infra/dns"
	"github.com/melody-flow/infra/frontend"
	"github.com/melody-flow/infra/nginx"
	"github.com/melody-flow/infra/ops"
	"github.com/melody-flow/infra/userdata"
)

// AppDir is where the compose project lives on the API host.
const AppDir = "/opt/melody-flow"

// Program is the Pulumi program: main.go runs it, and so do the tests and the offline plan.
func Program(ctx *pulumi.Context) error {
	cfg, err := LoadConfig(ctx)
	if err != nil {
		return err
	}
	outputs, err := Deploy(ctx, cfg)
	if err != nil {
		return err
	}
	for name, value := range outputs.Exports() {
		ctx.Export(name, value)
	}
	return nil
}

// LoadConfig reads every key of the project namespace and validates it.
func LoadConfig(ctx *pulumi.Context) (Config, error) {
	raw := map[string]string{}
	for _, key := range ConfigKeys {
		if v, ok := ctx.GetConfig(ConfigNamespace + ":" + key); ok {
			raw[key] = v
		}
	}
	return ParseConfig(raw, time.Now())
}

// Outputs are what the stack exports for people and for other stacks (StackReference).
type Outputs struct {
	SiteURL                pulumi.StringOutput
	APIURL                 pulumi.StringOutput
	BucketName             pulumi.StringOutput
	DistributionID         pulumi.StringOutput
	DistributionDomainName pulumi.StringOutput
	CertificateARN         pulumi.StringOutput
	APIPublicIP            pulumi.StringOutput
	InstanceID             pulumi.StringOutput
	SpotRequestID          pulumi.StringOutput
	HostedZoneID           pulumi.StringOutput
	SSHUser                pulumi.StringOutput
	SSHPrivateKey          pulumi.StringOutput // secret
	AlertTopicARN          pulumi.StringOutput // empty when alarms are off
}

// Exports names the outputs. The names are a contract with StackReference consumers: flat,
// stable, camelCase.
func (o Outputs) Exports() map[string]pulumi.Output {
	return map[string]pulumi.Output{
		"siteUrl":                o.SiteURL,
		"apiUrl":                 o.APIURL,
		"bucketName":             o.BucketName,
		"distributionId":         o.DistributionID,
		"distributionDomainName": o.DistributionDomainName,
		"certificateArn":         o.CertificateARN,
		"apiPublicIp":            o.APIPublicIP,
		"instanceId":             o.InstanceID,
		"spotRequestId":          o.SpotRequestID,
		"hostedZoneId":           o.HostedZoneID,
		"sshUser":                o.SSHUser,
		"sshPrivateKey":          o.SSHPrivateKey,
		"alertTopicArn":          o.AlertTopicARN,
	}
}

// Deploy registers the whole stack for a validated config. Everything that can fail on bad
// input (files, templates) is checked before the first resource is registered.
func Deploy(ctx *pulumi.Context, cfg Config) (Outputs, error) {
	siteFiles, shadowed, err := SiteFiles(cfg)
	if err != nil {
		return Outputs{}, err
	}
	hostFiles, err := RenderHostFiles(cfg)
	if err != nil {
		return Outputs{}, err
	}
	if cfg.ModelsDir != "" {
		if info, err := os.Stat(cfg.ModelsDir); err != nil || !info.IsDir() {
			return Outputs{}, fmt.Errorf("%s:modelsDir: %q is not a folder", ConfigNamespace, cfg.ModelsDir)
		}
	}
	if cfg.SSHOpenToWorld() {
		if err := ctx.Log.Warn(fmt.Sprintf("%s:sshIngressCidrs opens SSH (port 22) to the whole internet (%s:sshAllowWorld is true); "+
			"the host accepts only its generated key, but narrow the CIDRs where deploys come from known addresses",
			ConfigNamespace, ConfigNamespace), nil); err != nil {
			return Outputs{}, err
		}
	}
	for _, key := range shadowed {
		if err := ctx.Log.Warn(fmt.Sprintf("%s/%s is not uploaded: the stack writes %s itself with this stack's API address",
			cfg.StaticDir, key, key), nil); err != nil {
			return Outputs{}, err
		}
	}
	namePrefix := ctx.Project() + "-" + ctx.Stack()

	zone, err := dns.LookupZone(ctx, cfg.Domain)
	if err != nil {
		return Outputs{}, err
	}
	zoneID := pulumi.String(zone.ZoneId)

	site, err := frontend.NewSite(ctx, "frontend", &frontend.SiteArgs{
		Domains:    cfg.SiteDomains(),
		ZoneID:     zoneID,
		NamePrefix: namePrefix,
		Files:      siteFiles,
		ErrorPage:  cfg.ErrorPage,
		PriceClass: cfg.PriceClass,
	})
	if err != nil {
		return Outputs{}, err
	}

	host, err := backend.NewHost(ctx, "api-host", &backend.HostArgs{
		NamePrefix:               namePrefix,
		InstanceType:             cfg.InstanceType,
		AMIID:                    cfg.AMIID,
		RootVolumeGiB:            cfg.RootVolumeGiB,
		SpotMaxPrice:             cfg.SpotMaxPrice,
		SpotInterruptionBehavior: cfg.SpotInterruptionBehavior,
		SpotValidUntil:           cfg.SpotValidUntil,
		SSHIngressCIDRs:          cfg.SSHIngressCIDRs,
		UserData:                 hostFiles.CloudInit,
	})
	if err != nil {
		return Outputs{}, err
	}

	records, err := dns.NewRecords(ctx, "dns", &dns.RecordsArgs{
		ZoneID:                 zoneID,
		SiteDomains:            cfg.SiteDomains(),
		DistributionDomainName: site.DistributionDomainName,
		DistributionZoneID:     site.DistributionZoneID,
		APIDomain:              cfg.APIDomain(),
		APIAddress:             host.PublicIP,
	})
	if err != nil {
		return Outputs{}, err
	}

	if _, err := backend.NewBootstrap(ctx, "api-bootstrap", &backend.BootstrapArgs{
		Host:      host,
		APIRecord: records.APIRecord,
		HostFiles: hostFiles.Files,
		Params:    BootstrapParams(cfg, zone.NameServers),
		ModelsDir: cfg.ModelsDir,
	}); err != nil {
		return Outputs{}, err
	}

	operations, err := ops.New(ctx, "operations", &ops.Args{
		NamePrefix:         namePrefix,
		AlertEmail:         cfg.AlertEmail,
		BudgetMonthlyUSD:   cfg.BudgetMonthlyUSD,
		AlarmsEnabled:      cfg.AlarmsEnabled,
		APIDomain:          cfg.APIDomain(),
		HealthPath:         cfg.APIHealthPath,
		InstanceID:         host.InstanceID,
		IdleStopEnabled:    cfg.IdleStopEnabled,
		IdleStopMinutes:    cfg.IdleStopMinutes,
		IdleStopCPUPercent: cfg.IdleStopCPUPercent,
		ScheduleStopCron:   cfg.ScheduleStopCron,
		ScheduleStartCron:  cfg.ScheduleStartCron,
		ScheduleTimezone:   cfg.ScheduleTimezone,
	})
	if err != nil {
		return Outputs{}, err
	}

	return Outputs{
		AlertTopicARN:          operations.AlertTopicARN,
		SiteURL:                site.URL,
		APIURL:                 pulumi.String("https://" + cfg.APIDomain()).ToStringOutput(),
		BucketName:             site.BucketName,
		DistributionID:         site.DistributionID,
		DistributionDomainName: site.DistributionDomainName,
		CertificateARN:         site.CertificateARN,
		APIPublicIP:            host.PublicIP,
		InstanceID:             host.InstanceID,
		SpotRequestID:          host.SpotRequestID.ToStringOutput(),
		HostedZoneID:           zoneID.ToStringOutput(),
		SSHUser:                pulumi.String(backend.SSHUser).ToStringOutput(),
		SSHPrivateKey:          host.SSHPrivateKey,
	}, nil
}

// SiteFiles lists the objects of the site: the files of staticDir and the generated config.js.
// shadowed are the files of staticDir that the generated ones replace.
func SiteFiles(cfg Config) (files []frontend.File, shadowed []string, err error) {
	if info, err := os.Stat(cfg.StaticDir); err != nil || !info.IsDir() {
		return nil, nil, fmt.Errorf("%s:staticDir: %q is not a folder", ConfigNamespace, cfg.StaticDir)
	}
	files, shadowed, err = frontend.ScanStatic(cfg.StaticDir)
	if err != nil {
		return nil, nil, fmt.Errorf("%s:staticDir: %w", ConfigNamespace, err)
	}
	if cfg.ErrorPage == frontend.ErrorPageNotFound {
		if _, err := os.Stat(filepath.Join(cfg.StaticDir, "404.html")); err != nil {
			return nil, nil, fmt.Errorf("%s:errorPage: \"404\" serves 404.html, but %s has none", ConfigNamespace, cfg.StaticDir)
		}
	}
	return append(files, frontend.ConfigJS(frontend.SiteSettings{
		APIBaseURL: "https://" + cfg.APIDomain(),
		HealthPath: cfg.APIHealthPath,
	})), shadowed, nil
}

// HostFiles are the rendered files of the API host.
type HostFiles struct {
	CloudInit string
	// Files are copied under AppDir (path relative to it -> content).
	Files map[string]string
}

// RenderHostFiles renders cloud-init, the compose project and both nginx configs.
func RenderHostFiles(cfg Config) (HostFiles, error) {
	nginxParams := nginx.Params{
		APIDomain:      cfg.APIDomain(),
		Upstream:       "api:8000",
		Webroot:        "/var/www/certbot",
		LetsEncryptDir: "/etc/letsencrypt",
	}
	httpConf, err := nginx.RenderHTTP(nginxParams)
	if err != nil {
		return HostFiles{}, fmt.Errorf("rendering the HTTP nginx config: %w", err)
	}
	httpsConf, err := nginx.RenderHTTPS(nginxParams)
	if err != nil {
		return HostFiles{}, fmt.Errorf("rendering the HTTPS nginx config: %w", err)
	}
	params := userdata.Params{
		AppDir:         AppDir,
		APIDomain:      cfg.APIDomain(),
		FrontendOrigin: "https://" + cfg.Domain,
		APIImage:       cfg.APIImage,
		HealthPath:     cfg.APIHealthPath,
	}
	// apiGitRef has a default; it only means something with a repository to build.
	if cfg.APIGitURL != "" {
		params.APIGitURL, params.APIGitRef = cfg.APIGitURL, cfg.APIGitRef
	}
	cloudInit, err := userdata.CloudInit(params)
	if err != nil {
		return HostFiles{}, fmt.Errorf("rendering cloud-init: %w", err)
	}
	files, err := userdata.HostFiles(params, httpConf, httpsConf)
	if err != nil {
		return HostFiles{}, fmt.Errorf("rendering the host files: %w", err)
	}
	return HostFiles{CloudInit: cloudInit, Files: files}, nil
}

// BootstrapParams are the remote steps' parameters; the host fills in its address.
func BootstrapParams(cfg Config, nameServers []string) userdata.BootstrapParams {
	return userdata.BootstrapParams{
		AppDir:      AppDir,
		APIDomain:   cfg.APIDomain(),
		NameServers: nameServers,
		ACMEEmail:   cfg.ACMEEmail,
		ACMEStaging: cfg.ACMEStaging,
		HealthPath:  cfg.APIHealthPath,
	}
}
