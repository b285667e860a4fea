package stack

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/melody-flow/infra/frontend"
	"github.com/melody-flow/infra/internal/mocks"
)

func TestCertificateIsInUSEast1AndReachesCloudFrontThroughItsValidation(t *testing.T) {
	d := runStack(t, map[string]string{})
	cert := d.must(t, "aws:acm/certificate:Certificate", "site")
	validation := d.must(t, "aws:acm/certificateValidation:CertificateValidation", "site")
	for _, r := range []*mocks.Resource{cert, validation} {
		provider := d.ByURN(r.ProviderURN())
		if provider == nil || input(provider, "region") != "us-east-1" {
			t.Errorf("%s %s does not use an explicit us-east-1 provider (provider %q)", r.Type, r.Name, r.Provider)
		}
	}
	if input(cert, "domainName") != "melody-flow.click" || input(cert, "validationMethod") != "DNS" {
		t.Errorf("certificate: domain %v, validation %v", input(cert, "domainName"), input(cert, "validationMethod"))
	}
	record := d.must(t, typeRecord, "validation-melody-flow.click")
	if input(record, "allowOverwrite") != true || input(record, "type") != "CNAME" ||
		!strings.HasSuffix(input(record, "records").([]any)[0].(string), ".acm-validations.aws.") {
		t.Errorf("validation record: %v", record.Inputs.Mappable())
	}
	if !contains(validation.PropertyDeps["validationRecordFqdns"], record.URN) {
		t.Error("the validation does not wait for its DNS record")
	}

	distribution := d.must(t, typeDistribution, "site")
	deps := distribution.PropertyDeps["viewerCertificate"]
	if !contains(deps, validation.URN) || contains(deps, cert.URN) {
		t.Errorf("the distribution's certificate must come from the validation only, depends on %v", deps)
	}
	vc := input(distribution, "viewerCertificate").(map[string]any)
	if vc["acmCertificateArn"] != validation.Outputs["certificateArn"].StringValue() ||
		vc["sslSupportMethod"] != "sni-only" || vc["minimumProtocolVersion"] != "TLSv1.2_2021" {
		t.Errorf("viewer certificate = %v", vc)
	}
}

func TestBucketIsPrivateAndReadableOnlyByTheDistribution(t *testing.T) {
	d := runStack(t, nil)
	bucket := d.must(t, "aws:s3/bucketV2:BucketV2", "site")
	pab := d.must(t, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "site")
	for _, flag := range []string{"blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"} {
		if input(pab, flag) != true {
			t.Errorf("public access block %s = %v", flag, input(pab, flag))
		}
	}
	ownership := d.must(t, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", "site")
	if rule := input(ownership, "rule").(map[string]any); rule["objectOwnership"] != "BucketOwnerEnforced" {
		t.Errorf("ownership = %v", rule)
	}
	sse := d.must(t, "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2", "site")
	if !strings.Contains(mustJSON(t, input(sse, "rules")), `"sseAlgorithm":"AES256"`) {
		t.Errorf("encryption = %v", input(sse, "rules"))
	}
	if _, hasWebsite := bucket.Inputs["website"]; hasWebsite {
		t.Error("the bucket must not host a website")
	}
	for _, r := range d.OfType(typeObject) {
		if input(r, "acl") != nil {
			t.Errorf("object %s sets an ACL", r.Name)
		}
	}

	policy := d.must(t, "aws:s3/bucketPolicy:BucketPolicy", "site")
	if !contains(policy.Dependencies, pab.URN) {
		t.Error("the bucket policy is not applied after the public access block")
	}
	var doc struct {
		Statement []struct {
			Sid       string
			Effect    string
			Principal any
			Action    any
			Resource  []string
			Condition map[string]map[string]string
		}
	}
	if err := json.Unmarshal([]byte(input(policy, "policy").(string)), &doc); err != nil {
		t.Fatal(err)
	}
	distributionARN := d.must(t, typeDistribution, "site").Outputs["arn"].StringValue()
	allow, deny := doc.Statement[0], doc.Statement[1]
	if allow.Effect != "Allow" || !reflect.DeepEqual(allow.Principal, map[string]any{"Service": "cloudfront.amazonaws.com"}) ||
		allow.Condition["StringEquals"]["AWS:SourceArn"] != distributionARN {
		t.Errorf("read statement = %+v, want CloudFront limited to %s", allow, distributionARN)
	}
	if deny.Effect != "Deny" || deny.Condition["Bool"]["aws:SecureTransport"] != "false" {
		t.Errorf("TLS statement = %+v", deny)
	}
}

func TestDistribution(t *testing.T) {
	d := runStack(t, nil)
	dist := d.must(t, typeDistribution, "site")
	oac := d.must(t, "aws:cloudfront/originAccessControl:OriginAccessControl", "site")
	headers := d.must(t, "aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy", "security-headers")
	bucket := d.must(t, "aws:s3/bucketV2:BucketV2", "site")

	top := map[string]any{
		"aliases": []any{"melody-flow.click"}, "defaultRootObject": "index.html", "enabled": true,
		"httpVersion": "http2and3", "isIpv6Enabled": true, "priceClass": "PriceClass_200",
	}
	for k, v := range top {
		if got := input(dist, k); !reflect.DeepEqual(got, v) {
			t.Errorf("distribution %s = %v, want %v", k, got, v)
		}
	}
	origin := input(dist, "origins").([]any)[0].(map[string]any)
	if origin["domainName"] != bucket.Outputs["bucketRegionalDomainName"].StringValue() || origin["originAccessControlId"] != oac.ID {
		t.Errorf("origin = %v, want the bucket's regional domain through OAC %s", origin, oac.ID)
	}
	if input(oac, "signingBehavior") != "always" || input(oac, "signingProtocol") != "sigv4" || input(oac, "originAccessControlOriginType") != "s3" {
		t.Errorf("OAC = %v", oac.Inputs.Mappable())
	}
	behavior := input(dist, "defaultCacheBehavior").(map[string]any)
	wantBehavior := map[string]any{
		"viewerProtocolPolicy": "redirect-to-https", "compress": true,
		"cachePolicyId": "658327ea-f89d-4fab-a63d-7e88639e58f6", "responseHeadersPolicyId": headers.ID,
	}
	for k, v := range wantBehavior {
		if behavior[k] != v {
			t.Errorf("default behavior %s = %v, want %v", k, behavior[k], v)
		}
	}
	security := mustJSON(t, input(headers, "securityHeadersConfig"))
	for _, want := range []string{`"accessControlMaxAgeSec":63072000`, `"contentTypeOptions":{"override":true}`,
		`"frameOption":"DENY"`, `"referrerPolicy":"strict-origin-when-cross-origin"`} {
		if !strings.Contains(security, want) {
			t.Errorf("security headers %s lack %s", security, want)
		}
	}
	if name := input(headers, "name"); name != "melody-flow-prod-security-headers" {
		t.Errorf("headers policy name %v is not derived from the stack", name)
	}
}

func TestErrorResponsesFollowTheErrorPageMode(t *testing.T) {
	for mode, want := range map[string][2]any{"spa": {"/index.html", float64(200)}, "404": {"/404.html", float64(404)}} {
		d := runStack(t, map[string]string{"errorPage": mode})
		responses := input(d.must(t, typeDistribution, "site"), "customErrorResponses").([]any)
		var codes []any
		for _, r := range responses {
			r := r.(map[string]any)
			codes = append(codes, r["errorCode"])
			if r["responsePagePath"] != want[0] || r["responseCode"] != want[1] {
				t.Errorf("mode %s: %v, want %v with %v", mode, r, want[0], want[1])
			}
		}
		if !reflect.DeepEqual(codes, []any{float64(403), float64(404)}) {
			t.Errorf("mode %s maps %v, want S3's 403 and 404", mode, codes)
		}
	}
}

func TestEveryStaticFileIsUploadedWithTypeAndCaching(t *testing.T) {
	d := runStack(t, nil)
	want := map[string][2]string{
		"index.html":  {"text/html; charset=utf-8", frontend.CacheRevalidate},
		"404.html":    {"text/html; charset=utf-8", frontend.CacheRevalidate},
		"main.js":     {"text/javascript; charset=utf-8", frontend.CacheShort},
		"style.css":   {"text/css; charset=utf-8", frontend.CacheShort},
		"favicon.svg": {"image/svg+xml", frontend.CacheShort},
		"config.js":   {"text/javascript; charset=utf-8", frontend.CacheRevalidate},
	}
	objects := d.OfType(typeObject)
	if len(objects) != len(want) {
		t.Errorf("%d objects, want %d", len(objects), len(want))
	}
	for _, o := range objects {
		key := input(o, "key").(string)
		w, ok := want[key]
		if !ok {
			t.Errorf("unexpected object %s", key)
			continue
		}
		if input(o, "contentType") != w[0] || input(o, "cacheControl") != w[1] {
			t.Errorf("%s: %v / %v, want %v / %v", key, input(o, "contentType"), input(o, "cacheControl"), w[0], w[1])
		}
		if key != "config.js" && input(o, "source") != filepath.Join("static", key) {
			t.Errorf("%s uploads %v", key, input(o, "source"))
		}
	}
	configJS := input(d.must(t, typeObject, "site/config.js"), "content").(string)
	if !strings.Contains(configJS, `"apiBaseUrl":"https://api.melody-flow.click"`) {
		t.Errorf("config.js does not point at the API: %s", configJS)
	}
	index, err := os.ReadFile(filepath.Join(projectRoot(t), "static", "index.html"))
	if err != nil || !strings.Contains(string(index), `src="/config.js"`) {
		t.Error("static/index.html does not load config.js")
	}
}

// A second run over the same files changes nothing; changing one file changes that object and
// the invalidation's trigger, and nothing else.
func TestChangingOneFileChangesOnlyItsObjectAndTheInvalidation(t *testing.T) {
	site := t.TempDir()
	copyDir(t, filepath.Join(projectRoot(t), "static"), site)
	before := snapshot(t, runStack(t, map[string]string{"staticDir": site}))
	again := snapshot(t, runStack(t, map[string]string{"staticDir": site}))
	if !reflect.DeepEqual(before, again) {
		t.Fatal("two runs over the same site differ")
	}

	if err := os.WriteFile(filepath.Join(site, "main.js"), []byte("console.log('v2');\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, runStack(t, map[string]string{"staticDir": site}))
	var changed []string
	for urn, inputs := range after {
		if before[urn] != inputs {
			changed = append(changed, urn[strings.LastIndex(urn, "::")+2:])
		}
	}
	slices.Sort(changed)
	if !reflect.DeepEqual(changed, []string{"invalidate-site", "site/main.js"}) {
		t.Errorf("changing main.js changed %v, want only site/main.js and invalidate-site", changed)
	}
}

func TestInvalidationRunsAfterTheUploadsForTheUnfingerprintedPaths(t *testing.T) {
	d := runStack(t, nil)
	cmd := d.must(t, "command:local:Command", "invalidate-site")
	for _, o := range d.OfType(typeObject) {
		if !contains(cmd.Dependencies, o.URN) {
			t.Errorf("invalidation does not wait for %s", o.Name)
		}
	}
	create := input(cmd, "create").(string)
	for _, path := range []string{"'/'", "'/index.html'", "'/config.js'", "'/main.js'"} {
		if !strings.Contains(create, path) {
			t.Errorf("invalidation %q lacks %s", create, path)
		}
	}
	env := input(cmd, "environment").(map[string]any)
	if env["DISTRIBUTION_ID"] != d.must(t, typeDistribution, "site").ID {
		t.Errorf("invalidation targets %v", env["DISTRIBUTION_ID"])
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
