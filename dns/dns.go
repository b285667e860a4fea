// Package dns owns the Route 53 records that point the stack's names at its endpoints.
package dns

import (
	"fmt"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/route53"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// LookupZone finds the public hosted zone of domain. The zone is created outside the stack
// (it holds the registrar's delegation), so it is looked up once and its ID handed to every
// component that writes records: FrontendSite for the certificate validation records,
// DnsRecords for the rest. Looking it up in one place keeps the graph free of cycles.
func LookupZone(ctx *pulumi.Context, domain string) (*route53.LookupZoneResult, error) {
	zone, err := route53.LookupZone(ctx, &route53.LookupZoneArgs{
		Name:        pulumi.StringRef(domain),
		PrivateZone: pulumi.BoolRef(false),
	})
	if err != nil {
		return nil, fmt.Errorf("looking up the public Route 53 hosted zone of %s (it must exist before the first deploy): %w", domain, err)
	}
	return zone, nil
}

// RecordsArgs are the names and the targets they point at.
type RecordsArgs struct {
	ZoneID pulumi.StringInput
	// SiteDomains are the apex and, when enabled, www: each gets A and AAAA aliases to CloudFront.
	SiteDomains []string
	// DistributionDomainName and DistributionZoneID are the CloudFront distribution's outputs.
	DistributionDomainName pulumi.StringInput
	DistributionZoneID     pulumi.StringInput
	// APIDomain (api.<domain>) gets an A record to APIAddress, the host's Elastic IP.
	APIDomain  string
	APIAddress pulumi.StringInput
}

// Records is the DnsRecords component.
type Records struct {
	pulumi.ResourceState

	// APIRecord is the api A record; the TLS bootstrap waits for it before asking for a certificate.
	APIRecord *route53.Record
	// APIFQDN is the API's name as Route 53 reports it.
	APIFQDN pulumi.StringOutput
}

// apiRecordTTL is short so that a replaced Elastic IP reaches resolvers within a minute.
const apiRecordTTL = 60

// NewRecords registers the site aliases and the API record.
func NewRecords(ctx *pulumi.Context, name string, args *RecordsArgs, opts ...pulumi.ResourceOption) (*Records, error) {
	records := &Records{}
	if err := ctx.RegisterComponentResource("melody-flow:dns:DnsRecords", name, records, opts...); err != nil {
		return nil, err
	}
	parent := pulumi.Parent(records)

	// The apex cannot be a CNAME: alias records resolve straight to CloudFront's addresses.
	// AWS requires EvaluateTargetHealth false for CloudFront targets.
	for _, domain := range args.SiteDomains {
		for _, recordType := range []string{"A", "AAAA"} {
			_, err := route53.NewRecord(ctx, fmt.Sprintf("%s-%s", domain, recordType), &route53.RecordArgs{
				ZoneId: args.ZoneID,
				Name:   pulumi.String(domain),
				Type:   pulumi.String(recordType),
				Aliases: route53.RecordAliasArray{&route53.RecordAliasArgs{
					Name:                 args.DistributionDomainName,
					ZoneId:               args.DistributionZoneID,
					EvaluateTargetHealth: pulumi.Bool(false),
				}},
			}, parent)
			if err != nil {
				return nil, err
			}
		}
	}

	apiRecord, err := route53.NewRecord(ctx, args.APIDomain+"-A", &route53.RecordArgs{
		ZoneId:  args.ZoneID,
		Name:    pulumi.String(args.APIDomain),
		Type:    pulumi.String("A"),
		Ttl:     pulumi.Int(apiRecordTTL),
		Records: pulumi.StringArray{args.APIAddress},
	}, parent)
	if err != nil {
		return nil, err
	}
	records.APIRecord = apiRecord
	records.APIFQDN = apiRecord.Fqdn

	if err := ctx.RegisterResourceOutputs(records, pulumi.Map{"apiFqdn": apiRecord.Fqdn}); err != nil {
		return nil, err
	}
	return records, nil
}
