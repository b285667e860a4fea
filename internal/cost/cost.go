// Package cost estimates the monthly cost of the stack's always-on parts from a small table
// of unit prices, so that a config change shows its price before it is deployed.
package cost

import (
	"fmt"
	"io"
	"strconv"
)

// HoursPerMonth is AWS's billing month.
const HoursPerMonth = 730

// PricesAsOf says where the unit prices come from. They are AWS's public on-demand list prices
// for Asia Pacific (Tokyo), as published in 2025; this machine has no network, so they were not
// re-read when the table was written (2026-12-04). Check them before budgeting.
const PricesAsOf = "AWS public list prices, ap-northeast-1 (Tokyo), as published in 2025; not re-checked 2026-12-04"

// Price is one unit price and its source.
type Price struct {
	Item   string
	USD    float64
	Unit   string
	Source string
}

// Prices are the unit prices the estimate uses.
var Prices = map[string]Price{
	"g4dn.xlarge": {"g4dn.xlarge on-demand", 0.71, "per hour", "aws.amazon.com/ec2/pricing/on-demand"},
	"gp3":         {"EBS gp3 storage", 0.096, "per GiB-month", "aws.amazon.com/ebs/pricing"},
	"ipv4":        {"public IPv4 address (Elastic IP in use)", 0.005, "per hour", "aws.amazon.com/vpc/pricing (since 2024-02-01)"},
	"zone":        {"Route 53 hosted zone", 0.50, "per month", "aws.amazon.com/route53/pricing"},
	"healthcheck": {"Route 53 health check, AWS endpoint, HTTPS", 1.50, "per month", "aws.amazon.com/route53/pricing ($0.50 + $1.00 HTTPS)"},
	"alarm":       {"CloudWatch standard alarm (first 10 free)", 0.10, "per alarm-month", "aws.amazon.com/cloudwatch/pricing"},
	"cloudfront":  {"CloudFront data out beyond the free tier", 0.114, "per GB", "aws.amazon.com/cloudfront/pricing (1 TB and 10 M requests a month free)"},
}

// CloudFront's always-free tier, and the stated traffic assumption for the CDN.
const (
	CloudFrontFreeGBPerMonth = 1024
	TrafficGBPerMonth        = 100
)

// Inputs are the config values that drive the cost.
type Inputs struct {
	InstanceType  string
	SpotMaxPrice  string // empty: capped at on-demand
	RootVolumeGiB int
	AlarmsEnabled bool
}

// Line is one row of the estimate.
type Line struct {
	Item string
	USD  float64
	Note string
}

// Estimate is the monthly estimate: the lines with the instance on spot at its cap, and the
// on-demand total for comparison.
type Estimate struct {
	Lines         []Line
	Total         float64
	OnDemandTotal float64
	Known         bool // false when the instance type has no price in the table
}

// Monthly computes the estimate.
func Monthly(in Inputs) Estimate {
	var e Estimate
	add := func(item string, usd float64, note string) {
		e.Lines = append(e.Lines, Line{item, usd, note})
		e.Total += usd
	}
	onDemand, known := Prices[in.InstanceType]
	e.Known = known
	spotHourly := onDemand.USD
	note := "spot, capped at the on-demand price (the most it can cost)"
	if in.SpotMaxPrice != "" {
		if p, err := strconv.ParseFloat(in.SpotMaxPrice, 64); err == nil {
			spotHourly, note = p, "spot at the configured maximum price "+in.SpotMaxPrice+" USD/h (the most it can cost)"
		}
	}
	if !known {
		note = "no price for " + in.InstanceType + " in the table"
	}
	instance := spotHourly * HoursPerMonth
	add(in.InstanceType+" x 730 h", instance, note)
	add(fmt.Sprintf("EBS gp3 %d GiB", in.RootVolumeGiB), float64(in.RootVolumeGiB)*Prices["gp3"].USD, "")
	add("Elastic IP (public IPv4) x 730 h", Prices["ipv4"].USD*HoursPerMonth, "")
	add("Route 53 hosted zone", Prices["zone"].USD, "")
	if in.AlarmsEnabled {
		add("Route 53 HTTPS health check", Prices["healthcheck"].USD, "")
		add("CloudWatch alarms x 2", 0, "within the 10 free alarms")
	}
	cdn := 0.0
	if over := float64(TrafficGBPerMonth - CloudFrontFreeGBPerMonth); over > 0 {
		cdn = over * Prices["cloudfront"].USD
	}
	add(fmt.Sprintf("CloudFront, %d GB out a month", TrafficGBPerMonth), cdn, "within the always-free 1 TB")
	e.OnDemandTotal = e.Total - instance + onDemand.USD*HoursPerMonth
	return e
}

// Print writes the estimate and the price table it used.
func (e Estimate) Print(w io.Writer) {
	fmt.Fprintln(w, "Monthly cost of the always-on parts (estimate):")
	for _, l := range e.Lines {
		line := fmt.Sprintf("  %-40s %9.2f USD", l.Item, l.USD)
		if l.Note != "" {
			line += "  " + l.Note
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "  %-40s %9.2f USD\n", "Total (spot at its cap)", e.Total)
	fmt.Fprintf(w, "  %-40s %9.2f USD\n", "Total with the instance on-demand", e.OnDemandTotal)
	fmt.Fprintln(w, "Not included: data out of the API host, S3 storage of a small site, requests, taxes.")
	fmt.Fprintln(w, "A spot price below the cap, the idle stop and an off-hours schedule all lower the instance line.")
	fmt.Fprintf(w, "\nUnit prices (%s):\n", PricesAsOf)
	for _, k := range []string{"g4dn.xlarge", "gp3", "ipv4", "zone", "healthcheck", "alarm", "cloudfront"} {
		p := Prices[k]
		fmt.Fprintf(w, "  %-48s %8.3f USD %-16s %s\n", p.Item, p.USD, p.Unit, p.Source)
	}
}
