package iampolicy

import "testing"

func TestAssumeRole(t *testing.T) {
	got := AssumeRole("ec2.amazonaws.com", nil)
	want := `{"Statement":[{"Action":"sts:AssumeRole","Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"}}],"Version":"2012-10-17"}`
	if got != want {
		t.Errorf("got %s", got)
	}
	got = AssumeRole("scheduler.amazonaws.com", map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": "1"}})
	want = `{"Statement":[{"Action":"sts:AssumeRole","Condition":{"StringEquals":{"aws:SourceAccount":"1"}},"Effect":"Allow","Principal":{"Service":"scheduler.amazonaws.com"}}],"Version":"2012-10-17"}`
	if got != want {
		t.Errorf("got %s", got)
	}
}
