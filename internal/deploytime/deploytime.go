// Package deploytime estimates how long a first `pulumi up` takes: it weights each recorded
// resource with a typical AWS creation time and finds the longest chain of dependencies,
// which is what the engine cannot run in parallel.
package deploytime

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/melody-flow/infra/internal/mocks"
)

// Typical creation times. They are estimates for planning, not measurements of this stack:
//   - Route 53 records: a change is INSYNC on all authoritative servers "generally within 60
//     seconds" (Route 53 API reference, GetChange).
//   - ACM DNS validation: issued a few minutes after the CNAME resolves; AWS allows up to 30
//     minutes (ACM user guide, "DNS validation").
//   - CloudFront: a new distribution deploys in about 5 minutes since 2020 (AWS What's New,
//     "Amazon CloudFront announces faster configuration changes"); the provider waits for it.
//   - EC2 spot: a request is fulfilled and the instance running in 1-3 minutes when capacity
//     exists (EC2 user guide, "Spot Instance request states").
//   - IAM roles and instance profiles: the provider waits ~10 s for IAM's eventual consistency.
//   - On the host: DLAMI boot plus cloud-init's package and compose-plugin installs (~6 min),
//     building or pulling the API's CUDA image (several GB, ~8 min), Let's Encrypt HTTP-01
//     issuance (~30 s); the end-to-end tests time the certificate steps against a local ACME server.
var byType = map[string]time.Duration{
	"aws:route53/record:Record":                                  45 * time.Second,
	"aws:acm/certificate:Certificate":                            10 * time.Second,
	"aws:acm/certificateValidation:CertificateValidation":        5 * time.Minute,
	"aws:cloudfront/distribution:Distribution":                   5 * time.Minute,
	"aws:cloudfront/originAccessControl:OriginAccessControl":     5 * time.Second,
	"aws:cloudfront/responseHeadersPolicy:ResponseHeadersPolicy": 5 * time.Second,
	"aws:s3/bucketV2:BucketV2":                                   5 * time.Second,
	"aws:s3/bucketObjectv2:BucketObjectv2":                       2 * time.Second,
	"aws:ec2/spotInstanceRequest:SpotInstanceRequest":            2 * time.Minute,
	"aws:iam/role:Role":                                          10 * time.Second,
	"aws:iam/instanceProfile:InstanceProfile":                    10 * time.Second,
	"aws:ec2/securityGroup:SecurityGroup":                        5 * time.Second,
	"command:remote:CopyToRemote":                                2 * time.Second,
	"command:local:Command":                                      15 * time.Second,
}

// byCommand weights the remote steps, which differ by what they do on the host.
var byCommand = map[string]time.Duration{
	"wait-for-host": 6 * time.Minute,
	"start-stack":   8 * time.Minute,
	"wait-dns":      30 * time.Second,
	"obtain-cert":   30 * time.Second,
	"enable-tls":    10 * time.Second,
}

// otherwise is the weight of an API call with nothing to wait for.
const otherwise = 3 * time.Second

// Weight is the estimated creation time of one resource; components take none of their own.
func Weight(r *mocks.Resource) time.Duration {
	if !r.Custom {
		return 0
	}
	if r.Type == "command:remote:Command" {
		if d, ok := byCommand[r.Name]; ok {
			return d
		}
	}
	if d, ok := byType[r.Type]; ok {
		return d
	}
	return otherwise
}

// Step is one resource on a chain, with the time at which it is done.
type Step struct {
	Resource *mocks.Resource
	Weight   time.Duration
	DoneAt   time.Duration
}

// Estimate is the result for a whole graph.
type Estimate struct {
	CriticalPath []Step        // the longest chain, first to last
	Total        time.Duration // its length: the estimated time of a first `pulumi up`
	Serial       time.Duration // every step one after the other, as the manual guide does them
}

// Of computes the estimate over the recorded resources and their dependencies.
func Of(resources []*mocks.Resource) Estimate {
	byURN := map[string]*mocks.Resource{}
	for _, r := range resources {
		byURN[r.URN] = r
	}
	done := map[string]time.Duration{}
	prev := map[string]string{}
	var finish func(r *mocks.Resource) time.Duration
	finish = func(r *mocks.Resource) time.Duration {
		if d, ok := done[r.URN]; ok {
			return d
		}
		var start time.Duration
		deps := append([]string(nil), r.Dependencies...)
		sort.Strings(deps)
		for _, urn := range deps {
			if dep := byURN[urn]; dep != nil {
				if f := finish(dep); f > start {
					start, prev[r.URN] = f, urn
				}
			}
		}
		done[r.URN] = start + Weight(r)
		return done[r.URN]
	}
	var est Estimate
	var last *mocks.Resource
	for _, r := range resources {
		est.Serial += Weight(r)
		if f := finish(r); f > est.Total || (f == est.Total && last != nil && r.URN < last.URN) {
			est.Total, last = f, r
		}
	}
	for r := last; r != nil; r = byURN[prev[r.URN]] {
		est.CriticalPath = append([]Step{{Resource: r, Weight: Weight(r), DoneAt: done[r.URN]}}, est.CriticalPath...)
	}
	return est
}

// Print writes the critical path, its length and the serial sum.
func (e Estimate) Print(w io.Writer) {
	fmt.Fprintln(w, "Critical path of a first `pulumi up` (estimated typical AWS times):")
	for _, s := range e.CriticalPath {
		fmt.Fprintf(w, "  %8s  +%-7s %s %s\n", clock(s.DoneAt), clock(s.Weight), s.Resource.Type, s.Resource.Name)
	}
	fmt.Fprintf(w, "Estimated deploy time: %s (longest chain)\n", clock(e.Total))
	fmt.Fprintf(w, "All steps one after another (the manual guide): %s\n", clock(e.Serial))
}

func clock(d time.Duration) string {
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}
