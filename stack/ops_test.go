package stack

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/melody-flow/infra/internal/mocks"
)

const (
	typeAlarm    = "aws:cloudwatch/metricAlarm:MetricAlarm"
	typeSchedule = "aws:scheduler/schedule:Schedule"
)

func TestBudgetMailsAtForecastAndActual(t *testing.T) {
	d := runStack(t, nil)
	budget := d.must(t, "aws:budgets/budget:Budget", "monthly")
	for k, v := range map[string]any{"budgetType": "COST", "timeUnit": "MONTHLY", "limitAmount": "300.00", "limitUnit": "USD",
		"name": "melody-flow-prod-monthly"} {
		if got := input(budget, k); got != v {
			t.Errorf("budget %s = %v, want %v", k, got, v)
		}
	}
	var got []string
	for _, n := range input(budget, "notifications").([]any) {
		n := n.(map[string]any)
		got = append(got, n["notificationType"].(string)+" "+strings.TrimSuffix(mustJSON(t, n["threshold"]), ".0")+" "+n["thresholdType"].(string)+
			" "+mustJSON(t, n["subscriberEmailAddresses"]))
	}
	want := []string{`FORECASTED 80 PERCENTAGE ["admin@melody-flow.click"]`, `ACTUAL 100 PERCENTAGE ["admin@melody-flow.click"]`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("notifications = %v, want %v", got, want)
	}
}

func TestHealthAndCertificateAlarms(t *testing.T) {
	d := runStack(t, map[string]string{"alertEmail": "oncall@melody-flow.click"})
	topic := d.must(t, "aws:sns/topic:Topic", "alerts")
	sub := d.must(t, "aws:sns/topicSubscription:TopicSubscription", "alerts-email")
	if input(sub, "protocol") != "email" || input(sub, "endpoint") != "oncall@melody-flow.click" || input(sub, "topic") != topic.Outputs["arn"].StringValue() {
		t.Errorf("subscription = %v", sub.Inputs.Mappable())
	}
	health := d.must(t, "aws:route53/healthCheck:HealthCheck", "api")
	for k, v := range map[string]any{"type": "HTTPS", "fqdn": "api.melody-flow.click", "port": float64(443),
		"resourcePath": "/docs", "enableSni": true} {
		if got := input(health, k); got != v {
			t.Errorf("health check %s = %v, want %v", k, got, v)
		}
	}
	cases := map[string]map[string]any{
		"api-down": {"namespace": "AWS/Route53", "metricName": "HealthCheckStatus", "threshold": float64(1),
			"period": float64(60), "comparisonOperator": "LessThanThreshold", "statistic": "Minimum"},
		"certificate-expiry": {"namespace": "MelodyFlow", "metricName": "CertificateDaysLeft", "threshold": float64(14),
			"period": float64(21600), "comparisonOperator": "LessThanThreshold", "statistic": "Minimum"},
	}
	for name, want := range cases {
		alarm := d.must(t, typeAlarm, name)
		for k, v := range want {
			if got := input(alarm, k); got != v {
				t.Errorf("%s: %s = %v, want %v", name, k, got, v)
			}
		}
		if got := input(alarm, "alarmActions"); !reflect.DeepEqual(got, []any{topic.Outputs["arn"].StringValue()}) {
			t.Errorf("%s notifies %v", name, got)
		}
		// Route 53's metrics exist only in us-east-1: so must the alarms.
		provider := d.ByURN(alarm.ProviderURN())
		if provider == nil || input(provider, "region") != "us-east-1" {
			t.Errorf("%s is not in us-east-1", name)
		}
	}
	dims := input(d.must(t, typeAlarm, "api-down"), "dimensions").(map[string]any)
	if dims["HealthCheckId"] != health.ID {
		t.Errorf("api-down watches %v", dims)
	}
	if got := input(d.must(t, typeAlarm, "certificate-expiry"), "dimensions"); !reflect.DeepEqual(got, map[string]any{"Domain": "api.melody-flow.click"}) {
		t.Errorf("certificate alarm dimensions = %v", got)
	}
	if d.outputs["alertTopicArn"].Value != topic.Outputs["arn"].StringValue() {
		t.Errorf("alertTopicArn = %v", d.outputs["alertTopicArn"].Value)
	}
}

func TestIdleStopUsesTheBuiltInStopAction(t *testing.T) {
	d := runStack(t, map[string]string{"idleStopEnabled": "true", "idleStopMinutes": "45", "idleStopCpuPercent": "3"})
	alarm := d.must(t, typeAlarm, "idle-stop")
	instanceID := d.must(t, typeSpot, "api").Outputs["spotInstanceId"].StringValue()
	want := map[string]any{
		"namespace": "AWS/EC2", "metricName": "CPUUtilization", "period": float64(300), "evaluationPeriods": float64(9),
		"threshold": float64(3), "comparisonOperator": "LessThanThreshold", "treatMissingData": "notBreaching",
	}
	for k, v := range want {
		if got := input(alarm, k); got != v {
			t.Errorf("idle-stop %s = %v, want %v", k, got, v)
		}
	}
	if got := input(alarm, "alarmActions"); !reflect.DeepEqual(got, []any{"arn:aws:automate:ap-northeast-1:ec2:stop"}) {
		t.Errorf("idle-stop action = %v", got)
	}
	if got := input(alarm, "dimensions"); !reflect.DeepEqual(got, map[string]any{"InstanceId": instanceID}) {
		t.Errorf("idle-stop watches %v", got)
	}
}

func TestOffHoursSchedules(t *testing.T) {
	d := runStack(t, map[string]string{"scheduleStopCron": "cron(0 1 * * ? *)", "scheduleStartCron": "cron(0 9 ? * MON-FRI *)"})
	instanceID := d.must(t, typeSpot, "api").Outputs["spotInstanceId"].StringValue()
	role := d.must(t, "aws:iam/role:Role", "scheduler")
	for name, want := range map[string][2]string{
		"stop":  {"cron(0 1 * * ? *)", "arn:aws:scheduler:::aws-sdk:ec2:stopInstances"},
		"start": {"cron(0 9 ? * MON-FRI *)", "arn:aws:scheduler:::aws-sdk:ec2:startInstances"},
	} {
		s := d.must(t, typeSchedule, name)
		if input(s, "scheduleExpression") != want[0] || input(s, "scheduleExpressionTimezone") != "Asia/Tokyo" {
			t.Errorf("%s: %v in %v", name, input(s, "scheduleExpression"), input(s, "scheduleExpressionTimezone"))
		}
		target := input(s, "target").(map[string]any)
		if target["arn"] != want[1] || target["roleArn"] != role.Outputs["arn"].StringValue() ||
			target["input"] != `{"InstanceIds":["`+instanceID+`"]}` {
			t.Errorf("%s target = %v", name, target)
		}
	}
	var trust, perms struct {
		Statement []struct {
			Action    any
			Resource  any
			Principal map[string]string
			Condition map[string]map[string]string
		}
	}
	if err := json.Unmarshal([]byte(input(role, "assumeRolePolicy").(string)), &trust); err != nil {
		t.Fatal(err)
	}
	if trust.Statement[0].Principal["Service"] != "scheduler.amazonaws.com" || trust.Statement[0].Condition["StringEquals"]["aws:SourceAccount"] != mocks.AccountID {
		t.Errorf("trust policy = %+v", trust)
	}
	if err := json.Unmarshal([]byte(input(d.must(t, "aws:iam/rolePolicy:RolePolicy", "scheduler-stop-start"), "policy").(string)), &perms); err != nil {
		t.Fatal(err)
	}
	if len(perms.Statement) != 1 || !reflect.DeepEqual(perms.Statement[0].Action, []any{"ec2:StopInstances", "ec2:StartInstances"}) ||
		perms.Statement[0].Resource != "arn:aws:ec2:ap-northeast-1:"+mocks.AccountID+":instance/"+instanceID {
		t.Errorf("scheduler permissions = %+v, want stop/start of this instance only", perms)
	}
}

func TestOperationsAreAbsentWhenSwitchedOff(t *testing.T) {
	d := runStack(t, map[string]string{"budgetMonthlyUsd": "0", "alarmsEnabled": "false"})
	for _, typ := range []string{"aws:budgets/budget:Budget", typeAlarm, typeSchedule, "aws:route53/healthCheck:HealthCheck",
		"aws:sns/topic:Topic", "aws:sns/topicSubscription:TopicSubscription"} {
		if n := len(d.OfType(typ)); n != 0 {
			t.Errorf("%d %s registered with every operations switch off", n, typ)
		}
	}
	if v := d.outputs["alertTopicArn"].Value; v != "" {
		t.Errorf("alertTopicArn = %v", v)
	}
	// By default there is neither an idle stop nor a schedule.
	d = runStack(t, nil)
	if d.Find(typeAlarm, "idle-stop") != nil || len(d.OfType(typeSchedule)) != 0 || d.Find("aws:iam/role:Role", "scheduler") != nil {
		t.Error("idle stop or schedules exist although their config is off")
	}
}
