package cost

import (
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 0.005 }

func TestMonthlyAtTheOnDemandCap(t *testing.T) {
	e := Monthly(Inputs{InstanceType: "g4dn.xlarge", RootVolumeGiB: 150, AlarmsEnabled: true})
	// 0.71*730 + 150*0.096 + 0.005*730 + 0.50 + 1.50 + 0
	want := 518.30 + 14.40 + 3.65 + 0.50 + 1.50
	if !e.Known || !near(e.Total, want) || !near(e.OnDemandTotal, want) {
		t.Errorf("total %.2f / on-demand %.2f, want %.2f", e.Total, e.OnDemandTotal, want)
	}
}

func TestSpotMaxPriceLowersOnlyTheInstance(t *testing.T) {
	capped := Monthly(Inputs{InstanceType: "g4dn.xlarge", SpotMaxPrice: "0.30", RootVolumeGiB: 150})
	if !near(capped.Lines[0].USD, 219) || !near(capped.OnDemandTotal-capped.Total, 518.30-219) {
		t.Errorf("instance %.2f, difference %.2f", capped.Lines[0].USD, capped.OnDemandTotal-capped.Total)
	}
	if len(capped.Lines) != 5 {
		t.Errorf("without alarms there are %d lines, want 5", len(capped.Lines))
	}
}

func TestUnknownInstanceTypeIsSaid(t *testing.T) {
	if e := Monthly(Inputs{InstanceType: "p5.48xlarge", RootVolumeGiB: 100}); e.Known {
		t.Error("an instance type without a price was estimated")
	}
}
