// Package frontend is the FrontendSite component: the static site in a private S3 bucket,
// served by CloudFront over HTTPS with an ACM certificate from us-east-1.
package frontend

import (
	"fmt"
	"strings"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/acm"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/cloudfront"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/route53"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/s3"
	"github.com/pulumi/pulumi-command/sdk/go/command/local"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/melody-flow/infra/internal/iampolicy"
)

// AWS managed policy and the minimum TLS version for viewers.
const (
	cachingOptimizedPolicyID = "658327ea-f89d-4fab-a63d-7e88639e58f6"
	MinimumProtocolVersion   = "TLSv1.2_2021"
)

// Error page modes (config errorPage).
const (
	ErrorPageSPA      = "spa" // unknown paths get index.html with 200: the app routes in the browser
	ErrorPageNotFound = "404" // unknown paths get 404.html with 404
)

// SiteArgs configure a FrontendSite.
type SiteArgs struct {
	// Domains are the names the site answers to; the first is the primary one (the apex).
	Domains []string
	// ZoneID is the public hosted zone in which the certificate's validation records go.
	ZoneID pulumi.StringInput
	// NamePrefix makes account-wide names unique per stack, e.g. "melody-flow-prod".
	NamePrefix string
	// Files are the objects to upload, config.js included.
	Files      []File
	ErrorPage  string
	PriceClass string
}

// Site is the FrontendSite component.
type Site struct {
	pulumi.ResourceState

	BucketName             pulumi.StringOutput
	DistributionID         pulumi.StringOutput
	DistributionARN        pulumi.StringOutput
	DistributionDomainName pulumi.StringOutput
	DistributionZoneID     pulumi.StringOutput
	CertificateARN         pulumi.StringOutput
	URL                    pulumi.StringOutput
}

// NewSite registers the bucket, the certificate, the distribution and the uploads.
func NewSite(ctx *pulumi.Context, name string, args *SiteArgs, opts ...pulumi.ResourceOption) (*Site, error) {
	if len(args.Domains) == 0 {
		return nil, fmt.Errorf("frontend: no domain given")
	}
	site := &Site{}
	if err := ctx.RegisterComponentResource("melody-flow:frontend:FrontendSite", name, site, opts...); err != nil {
		return nil, err
	}
	parent := pulumi.Parent(site)

	// Private bucket: CloudFront reads it through Origin Access Control, nobody else can.
	bucket, err := s3.NewBucketV2(ctx, "site", &s3.BucketV2Args{}, parent)
	if err != nil {
		return nil, err
	}
	publicAccessBlock, err := s3.NewBucketPublicAccessBlock(ctx, "site", &s3.BucketPublicAccessBlockArgs{
		Bucket:                bucket.ID(),
		BlockPublicAcls:       pulumi.Bool(true),
		BlockPublicPolicy:     pulumi.Bool(true),
		IgnorePublicAcls:      pulumi.Bool(true),
		RestrictPublicBuckets: pulumi.Bool(true),
	}, parent)
	if err != nil {
		return nil, err
	}
	// ACLs off: the bucket owner owns every object, and access is decided by policy alone.
	if _, err := s3.NewBucketOwnershipControls(ctx, "site", &s3.BucketOwnershipControlsArgs{
		Bucket: bucket.ID(),
		Rule:   &s3.BucketOwnershipControlsRuleArgs{ObjectOwnership: pulumi.String("BucketOwnerEnforced")},
	}, parent); err != nil {
		return nil, err
	}
	// SSE-S3 rather than KMS: OAC reads SSE-S3 objects without a key policy to maintain.
	if _, err := s3.NewBucketServerSideEncryptionConfigurationV2(ctx, "site", &s3.BucketServerSideEncryptionConfigurationV2Args{
		Bucket: bucket.ID(),
		Rules: s3.BucketServerSideEncryptionConfigurationV2RuleArray{&s3.BucketServerSideEncryptionConfigurationV2RuleArgs{
			ApplyServerSideEncryptionByDefault: &s3.BucketServerSideEncryptionConfigurationV2RuleApplyServerSideEncryptionByDefaultArgs{
				SseAlgorithm: pulumi.String("AES256"),
			},
			BucketKeyEnabled: pulumi.Bool(true),
		}},
	}, parent); err != nil {
		return nil, err
	}

	certificateARN, err := newValidatedCertificate(ctx, args, parent)
	if err != nil {
		return nil, err
	}

	oac, err := cloudfront.NewOriginAccessControl(ctx, "site", &cloudfront.OriginAccessControlArgs{
		Name:                          pulumi.String(args.NamePrefix + "-site"),
		Description:                   pulumi.String("CloudFront reads the Melody Flow site bucket"),
		OriginAccessControlOriginType: pulumi.String("s3"),
		SigningBehavior:               pulumi.String("always"),
		SigningProtocol:               pulumi.String("sigv4"),
	}, parent)
	if err != nil {
		return nil, err
	}
	headers, err := newSecurityHeadersPolicy(ctx, args.NamePrefix, parent)
	if err != nil {
		return nil, err
	}

	const originID = "site-bucket"
	distribution, err := cloudfront.NewDistribution(ctx, "site", &cloudfront.DistributionArgs{
		Enabled:           pulumi.Bool(true),
		Comment:           pulumi.String("Melody Flow " + args.Domains[0]),
		Aliases:           pulumi.ToStringArray(args.Domains),
		DefaultRootObject: pulumi.String("index.html"),
		HttpVersion:       pulumi.String("http2and3"),
		IsIpv6Enabled:     pulumi.Bool(true),
		PriceClass:        pulumi.String(args.PriceClass),
		Origins: cloudfront.DistributionOriginArray{&cloudfront.DistributionOriginArgs{
			OriginId:              pulumi.String(originID),
			DomainName:            bucket.BucketRegionalDomainName,
			OriginAccessControlId: oac.ID(),
		}},
		DefaultCacheBehavior: &cloudfront.DistributionDefaultCacheBehaviorArgs{
			TargetOriginId:          pulumi.String(originID),
			ViewerProtocolPolicy:    pulumi.String("redirect-to-https"),
			AllowedMethods:          pulumi.ToStringArray([]string{"GET", "HEAD", "OPTIONS"}),
			CachedMethods:           pulumi.ToStringArray([]string{"GET", "HEAD"}),
			Compress:                pulumi.Bool(true),
			CachePolicyId:           pulumi.String(cachingOptimizedPolicyID),
			ResponseHeadersPolicyId: headers.ID(),
		},
		CustomErrorResponses: errorResponses(args.ErrorPage),
		Restrictions: &cloudfront.DistributionRestrictionsArgs{
			GeoRestriction: &cloudfront.DistributionRestrictionsGeoRestrictionArgs{RestrictionType: pulumi.String("none")},
		},
		// From the validation, not the certificate: CloudFront refuses a certificate that is not issued yet.
		ViewerCertificate: &cloudfront.DistributionViewerCertificateArgs{
			AcmCertificateArn:      certificateARN,
			SslSupportMethod:       pulumi.String("sni-only"),
			MinimumProtocolVersion: pulumi.String(MinimumProtocolVersion),
		},
	}, parent)
	if err != nil {
		return nil, err
	}

	if _, err := s3.NewBucketPolicy(ctx, "site", &s3.BucketPolicyArgs{
		Bucket: bucket.ID(),
		Policy: pulumi.All(bucket.Arn, distribution.Arn).ApplyT(func(v []any) string {
			return BucketPolicy(v[0].(string), v[1].(string))
		}).(pulumi.StringOutput),
	}, parent, pulumi.DependsOn([]pulumi.Resource{publicAccessBlock})); err != nil {
		return nil, err
	}

	objects, err := uploadFiles(ctx, bucket, args.Files, parent)
	if err != nil {
		return nil, err
	}

	// A new release must not wait for cached copies to expire: invalidate the paths whose
	// names do not change with their content, once per change of the site's content.
	paths := InvalidationPaths(args.Files)
	if _, err := local.NewCommand(ctx, "invalidate-site", &local.CommandArgs{
		Create: pulumi.String(`aws cloudfront create-invalidation --distribution-id "$DISTRIBUTION_ID" --query Invalidation.Id --output text --paths ` +
			shellWords(paths)),
		Environment: pulumi.StringMap{"DISTRIBUTION_ID": distribution.ID().ToStringOutput()},
		Triggers:    pulumi.Array{pulumi.String(ContentHash(args.Files))},
	}, parent, pulumi.DependsOn(objects)); err != nil {
		return nil, err
	}

	site.BucketName = bucket.Bucket
	site.DistributionID = distribution.ID().ToStringOutput()
	site.DistributionARN = distribution.Arn
	site.DistributionDomainName = distribution.DomainName
	site.DistributionZoneID = distribution.HostedZoneId
	site.CertificateARN = certificateARN
	site.URL = pulumi.Sprintf("https://%s", args.Domains[0])
	if err := ctx.RegisterResourceOutputs(site, pulumi.Map{
		"bucketName":             site.BucketName,
		"distributionId":         site.DistributionID,
		"distributionDomainName": site.DistributionDomainName,
		"certificateArn":         site.CertificateARN,
		"url":                    site.URL,
	}); err != nil {
		return nil, err
	}
	return site, nil
}

// newValidatedCertificate requests the certificate in us-east-1 (the only region CloudFront
// takes certificates from), writes its DNS validation records and returns the ARN as the
// validation reports it, that is once the certificate is issued.
func newValidatedCertificate(ctx *pulumi.Context, args *SiteArgs, parent pulumi.ResourceOption) (pulumi.StringOutput, error) {
	usEast1, err := aws.NewProvider(ctx, "us-east-1", &aws.ProviderArgs{Region: pulumi.String("us-east-1")}, parent)
	if err != nil {
		return pulumi.StringOutput{}, err
	}
	inUSEast1 := pulumi.Provider(usEast1)

	certificateArgs := &acm.CertificateArgs{
		DomainName:       pulumi.String(args.Domains[0]),
		ValidationMethod: pulumi.String("DNS"),
		KeyAlgorithm:     pulumi.String("RSA_2048"),
	}
	// The SANs keep the order of Domains: reordering them would replace the certificate.
	if len(args.Domains) > 1 {
		certificateArgs.SubjectAlternativeNames = pulumi.ToStringArray(args.Domains[1:])
	}
	certificate, err := acm.NewCertificate(ctx, "site", certificateArgs, parent, inUSEast1)
	if err != nil {
		return pulumi.StringOutput{}, err
	}

	var fqdns pulumi.StringArray
	for _, domain := range ValidationDomains(args.Domains) {
		option := certificate.DomainValidationOptions.ApplyT(func(options []acm.CertificateDomainValidationOption) (acm.CertificateDomainValidationOption, error) {
			for _, o := range options {
				if o.DomainName != nil && *o.DomainName == domain {
					return o, nil
				}
			}
			return acm.CertificateDomainValidationOption{}, fmt.Errorf("ACM returned no validation record for %s", domain)
		}).(acm.CertificateDomainValidationOptionOutput)
		record, err := route53.NewRecord(ctx, "validation-"+domain, &route53.RecordArgs{
			ZoneId:  args.ZoneID,
			Name:    option.ResourceRecordName().Elem(),
			Type:    option.ResourceRecordType().Elem(),
			Records: pulumi.StringArray{option.ResourceRecordValue().Elem()},
			Ttl:     pulumi.Int(300),
			// The record outlives a replaced certificate of the same names: take it over.
			AllowOverwrite: pulumi.Bool(true),
		}, parent)
		if err != nil {
			return pulumi.StringOutput{}, err
		}
		fqdns = append(fqdns, record.Fqdn)
	}

	validation, err := acm.NewCertificateValidation(ctx, "site", &acm.CertificateValidationArgs{
		CertificateArn:        certificate.Arn,
		ValidationRecordFqdns: fqdns,
	}, parent, inUSEast1)
	if err != nil {
		return pulumi.StringOutput{}, err
	}
	return validation.CertificateArn, nil
}

// shellWords quotes each word for a POSIX shell.
func shellWords(words []string) string {
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(quoted, " ")
}

// ValidationDomains are the names that need a validation record of their own: a wildcard
// shares its base name's record, so the two would collide.
func ValidationDomains(domains []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range domains {
		base := strings.TrimPrefix(d, "*.")
		if !seen[base] {
			seen[base] = true
			out = append(out, base)
		}
	}
	return out
}

func newSecurityHeadersPolicy(ctx *pulumi.Context, namePrefix string, parent pulumi.ResourceOption) (*cloudfront.ResponseHeadersPolicy, error) {
	return cloudfront.NewResponseHeadersPolicy(ctx, "security-headers", &cloudfront.ResponseHeadersPolicyArgs{
		Name:    pulumi.String(namePrefix + "-security-headers"),
		Comment: pulumi.String("HSTS, nosniff, frame and referrer policy for the Melody Flow site"),
		SecurityHeadersConfig: &cloudfront.ResponseHeadersPolicySecurityHeadersConfigArgs{
			StrictTransportSecurity: &cloudfront.ResponseHeadersPolicySecurityHeadersConfigStrictTransportSecurityArgs{
				AccessControlMaxAgeSec: pulumi.Int(63072000), // two years
				IncludeSubdomains:      pulumi.Bool(true),
				Override:               pulumi.Bool(true),
			},
			ContentTypeOptions: &cloudfront.ResponseHeadersPolicySecurityHeadersConfigContentTypeOptionsArgs{
				Override: pulumi.Bool(true),
			},
			FrameOptions: &cloudfront.ResponseHeadersPolicySecurityHeadersConfigFrameOptionsArgs{
				FrameOption: pulumi.String("DENY"),
				Override:    pulumi.Bool(true),
			},
			ReferrerPolicy: &cloudfront.ResponseHeadersPolicySecurityHeadersConfigReferrerPolicyArgs{
				ReferrerPolicy: pulumi.String("strict-origin-when-cross-origin"),
				Override:       pulumi.Bool(true),
			},
		},
	}, parent)
}

// errorResponses map S3's answers for a missing key (403 without s3:ListBucket, 404 with it)
// to the page the error mode asks for.
func errorResponses(mode string) cloudfront.DistributionCustomErrorResponseArray {
	page, code := "/index.html", 200
	if mode == ErrorPageNotFound {
		page, code = "/404.html", 404
	}
	var out cloudfront.DistributionCustomErrorResponseArray
	for _, s3Code := range []int{403, 404} {
		out = append(out, &cloudfront.DistributionCustomErrorResponseArgs{
			ErrorCode:          pulumi.Int(s3Code),
			ResponseCode:       pulumi.Int(code),
			ResponsePagePath:   pulumi.String(page),
			ErrorCachingMinTtl: pulumi.Int(10),
		})
	}
	return out
}

// BucketPolicy lets only the given distribution read the bucket, and refuses plain HTTP.
// s3:ListBucket lets S3 answer 404 rather than 403 for a missing key.
func BucketPolicy(bucketARN, distributionARN string) string {
	return iampolicy.Document(
		iampolicy.Statement{
			"Sid":       "CloudFrontReadsThroughOAC",
			"Effect":    "Allow",
			"Principal": map[string]any{"Service": "cloudfront.amazonaws.com"},
			"Action":    []string{"s3:GetObject", "s3:ListBucket"},
			"Resource":  []string{bucketARN + "/*", bucketARN},
			"Condition": map[string]any{"StringEquals": map[string]any{"AWS:SourceArn": distributionARN}},
		},
		iampolicy.Statement{
			"Sid":       "DenyInsecureTransport",
			"Effect":    "Deny",
			"Principal": "*",
			"Action":    "s3:*",
			"Resource":  []string{bucketARN, bucketARN + "/*"},
			"Condition": map[string]any{"Bool": map[string]any{"aws:SecureTransport": "false"}},
		},
	)
}

// uploadFiles makes one object per file. The content hash is an input, so a changed file
// updates its object and nothing else.
func uploadFiles(ctx *pulumi.Context, bucket *s3.BucketV2, files []File, parent pulumi.ResourceOption) ([]pulumi.Resource, error) {
	var objects []pulumi.Resource
	for _, f := range files {
		objectArgs := &s3.BucketObjectv2Args{
			Bucket:       bucket.ID(),
			Key:          pulumi.String(f.Key),
			ContentType:  pulumi.String(f.ContentType),
			CacheControl: pulumi.String(f.CacheControl),
		}
		if f.Path != "" {
			objectArgs.Source = pulumi.NewFileAsset(f.Path)
			objectArgs.SourceHash = pulumi.String(f.SHA256)
		} else {
			objectArgs.Content = pulumi.String(f.Content)
		}
		object, err := s3.NewBucketObjectv2(ctx, "site/"+f.Key, objectArgs, parent)
		if err != nil {
			return nil, err
		}
		objects = append(objects, object)
	}
	return objects, nil
}
