// Package ops is the Operations component: the cost guardrails of the GPU host (a budget, an
// idle stop, an off-hours schedule) and the alarms that tell the team when the API is down or
// its certificate is about to expire. Every part can be switched off by config.
package ops

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/budgets"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/cloudwatch"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/iam"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/route53"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/scheduler"
	"github.com/pulumi/pulumi-aws/sdk/v6/go/aws/sns"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/melody-flow/infra/backend"
	"github.com/melody-flow/infra/internal/iampolicy"
)

// The certificate metric the host publishes (userdata/scripts/cert-days-left.sh) to us-east-1,
// next to Route 53's health check metrics, so that one topic serves both alarms.
const (
	CertMetricNamespace = backend.MetricNamespace
	CertMetricName      = "CertificateDaysLeft"
	CertAlarmDays       = 14
	alarmRegion         = "us-east-1"
)

// Args configure Operations.
type Args struct {
	NamePrefix string
	AlertEmail string
	// BudgetMonthlyUSD is the monthly cost budget; 0 means none.
	BudgetMonthlyUSD float64
	// AlarmsEnabled adds the API health check and the certificate expiry alarm.
	AlarmsEnabled bool
	APIDomain     string
	HealthPath    string

	InstanceID pulumi.StringOutput
	// Idle stop: stop the instance after IdleStopMinutes below IdleStopCPUPercent.
	IdleStopEnabled    bool
	IdleStopMinutes    int
	IdleStopCPUPercent float64
	// Off-hours schedule: cron expressions (empty: none) in ScheduleTimezone.
	ScheduleStopCron  string
	ScheduleStartCron string
	ScheduleTimezone  string
}

// Operations is the component.
type Operations struct {
	pulumi.ResourceState

	// AlertTopicARN is the SNS topic of the alarms (empty output when alarms are off).
	AlertTopicARN pulumi.StringOutput
}

// New registers what the config switches on.
func New(ctx *pulumi.Context, name string, args *Args, opts ...pulumi.ResourceOption) (*Operations, error) {
	o := &Operations{AlertTopicARN: pulumi.String("").ToStringOutput()}
	if err := ctx.RegisterComponentResource("melody-flow:ops:Operations", name, o, opts...); err != nil {
		return nil, err
	}
	parent := pulumi.Parent(o)

	if args.BudgetMonthlyUSD > 0 {
		if err := newBudget(ctx, args, parent); err != nil {
			return nil, err
		}
	}
	if args.AlarmsEnabled {
		topic, err := newAlarms(ctx, args, parent)
		if err != nil {
			return nil, err
		}
		o.AlertTopicARN = topic
	}
	if args.IdleStopEnabled || args.ScheduleStopCron != "" || args.ScheduleStartCron != "" {
		region, err := aws.GetRegion(ctx, &aws.GetRegionArgs{})
		if err != nil {
			return nil, err
		}
		if args.IdleStopEnabled {
			if err := newIdleStop(ctx, args, region.Name, parent); err != nil {
				return nil, err
			}
		}
		if args.ScheduleStopCron != "" || args.ScheduleStartCron != "" {
			if err := newSchedules(ctx, args, region.Name, parent); err != nil {
				return nil, err
			}
		}
	}
	if err := ctx.RegisterResourceOutputs(o, pulumi.Map{"alertTopicArn": o.AlertTopicARN}); err != nil {
		return nil, err
	}
	return o, nil
}

// newBudget e-mails when the month is forecast to pass 80 % of the budget and when it has
// passed 100 %. It covers the account's whole cost: a per-stack filter would need a cost
// allocation tag activated by hand in Billing.
func newBudget(ctx *pulumi.Context, args *Args, parent pulumi.ResourceOption) error {
	notify := func(kind string, percent float64) *budgets.BudgetNotificationArgs {
		return &budgets.BudgetNotificationArgs{
			NotificationType:         pulumi.String(kind),
			ComparisonOperator:       pulumi.String("GREATER_THAN"),
			Threshold:                pulumi.Float64(percent),
			ThresholdType:            pulumi.String("PERCENTAGE"),
			SubscriberEmailAddresses: pulumi.ToStringArray([]string{args.AlertEmail}),
		}
	}
	_, err := budgets.NewBudget(ctx, "monthly", &budgets.BudgetArgs{
		Name:        pulumi.String(args.NamePrefix + "-monthly"),
		BudgetType:  pulumi.String("COST"),
		TimeUnit:    pulumi.String("MONTHLY"),
		LimitAmount: pulumi.String(strconv.FormatFloat(args.BudgetMonthlyUSD, 'f', 2, 64)),
		LimitUnit:   pulumi.String("USD"),
		Notifications: budgets.BudgetNotificationArray{
			notify("FORECASTED", 80),
			notify("ACTUAL", 100),
		},
	}, parent)
	return err
}

// newAlarms watches the API from outside (a Route 53 health check on its HTTPS health path)
// and the certificate's remaining days (a metric the host publishes, since Let's Encrypt no
// longer sends expiry e-mails). Route 53 publishes its metrics in us-east-1 only, so the
// alarms and their topic live there.
func newAlarms(ctx *pulumi.Context, args *Args, parent pulumi.ResourceOption) (pulumi.StringOutput, error) {
	usEast1, err := aws.NewProvider(ctx, alarmRegion, &aws.ProviderArgs{Region: pulumi.String(alarmRegion)}, parent)
	if err != nil {
		return pulumi.StringOutput{}, err
	}
	inUSEast1 := pulumi.Provider(usEast1)

	topic, err := sns.NewTopic(ctx, "alerts", &sns.TopicArgs{}, parent, inUSEast1)
	if err != nil {
		return pulumi.StringOutput{}, err
	}
	// AWS sends a confirmation e-mail: alerts arrive once the link in it is followed.
	if _, err := sns.NewTopicSubscription(ctx, "alerts-email", &sns.TopicSubscriptionArgs{
		Topic:    topic.Arn,
		Protocol: pulumi.String("email"),
		Endpoint: pulumi.String(args.AlertEmail),
	}, parent, inUSEast1); err != nil {
		return pulumi.StringOutput{}, err
	}

	health, err := route53.NewHealthCheck(ctx, "api", &route53.HealthCheckArgs{
		Type:             pulumi.String("HTTPS"),
		Fqdn:             pulumi.String(args.APIDomain),
		Port:             pulumi.Int(443),
		ResourcePath:     pulumi.String(args.HealthPath),
		EnableSni:        pulumi.Bool(true),
		RequestInterval:  pulumi.Int(30),
		FailureThreshold: pulumi.Int(3),
		Tags:             pulumi.StringMap{"Name": pulumi.String(args.NamePrefix + "-api")},
	}, parent)
	if err != nil {
		return pulumi.StringOutput{}, err
	}
	actions := pulumi.Array{topic.Arn}
	if _, err := cloudwatch.NewMetricAlarm(ctx, "api-down", &cloudwatch.MetricAlarmArgs{
		Name:               pulumi.String(args.NamePrefix + "-api-down"),
		AlarmDescription:   pulumi.String(fmt.Sprintf("https://%s%s does not answer (Route 53 health check)", args.APIDomain, args.HealthPath)),
		Namespace:          pulumi.String("AWS/Route53"),
		MetricName:         pulumi.String("HealthCheckStatus"),
		Dimensions:         pulumi.StringMap{"HealthCheckId": health.ID().ToStringOutput()},
		Statistic:          pulumi.String("Minimum"),
		Period:             pulumi.Int(60),
		EvaluationPeriods:  pulumi.Int(3),
		Threshold:          pulumi.Float64(1),
		ComparisonOperator: pulumi.String("LessThanThreshold"),
		TreatMissingData:   pulumi.String("breaching"),
		AlarmActions:       actions,
		OkActions:          actions,
	}, parent, inUSEast1); err != nil {
		return pulumi.StringOutput{}, err
	}
	// Missing data (a stopped host publishes nothing) is not an alarm: certbot renews as soon
	// as the host runs again, and the api-down alarm already reports a host that is away.
	if _, err := cloudwatch.NewMetricAlarm(ctx, "certificate-expiry", &cloudwatch.MetricAlarmArgs{
		Name:               pulumi.String(args.NamePrefix + "-api-certificate-expiry"),
		AlarmDescription:   pulumi.String(fmt.Sprintf("The certificate of %s expires in less than %d days: renewal is failing", args.APIDomain, CertAlarmDays)),
		Namespace:          pulumi.String(CertMetricNamespace),
		MetricName:         pulumi.String(CertMetricName),
		Dimensions:         pulumi.StringMap{"Domain": pulumi.String(args.APIDomain)},
		Statistic:          pulumi.String("Minimum"),
		Period:             pulumi.Int(6 * 3600),
		EvaluationPeriods:  pulumi.Int(1),
		Threshold:          pulumi.Float64(CertAlarmDays),
		ComparisonOperator: pulumi.String("LessThanThreshold"),
		TreatMissingData:   pulumi.String("missing"),
		AlarmActions:       actions,
		OkActions:          actions,
	}, parent, inUSEast1); err != nil {
		return pulumi.StringOutput{}, err
	}
	return topic.Arn, nil
}

// newIdleStop stops the instance with EC2's built-in alarm action (no Lambda) when its CPU
// stays low. A persistent spot request with stop behaviour lets its owner stop and start it.
func newIdleStop(ctx *pulumi.Context, args *Args, region string, parent pulumi.ResourceOption) error {
	const period = 300 // basic EC2 monitoring
	_, err := cloudwatch.NewMetricAlarm(ctx, "idle-stop", &cloudwatch.MetricAlarmArgs{
		Name:               pulumi.String(args.NamePrefix + "-api-idle-stop"),
		AlarmDescription:   pulumi.String(fmt.Sprintf("Stops the GPU host after %d minutes below %g %% CPU", args.IdleStopMinutes, args.IdleStopCPUPercent)),
		Namespace:          pulumi.String("AWS/EC2"),
		MetricName:         pulumi.String("CPUUtilization"),
		Dimensions:         pulumi.StringMap{"InstanceId": args.InstanceID},
		Statistic:          pulumi.String("Maximum"),
		Period:             pulumi.Int(period),
		EvaluationPeriods:  pulumi.Int(args.IdleStopMinutes * 60 / period),
		Threshold:          pulumi.Float64(args.IdleStopCPUPercent),
		ComparisonOperator: pulumi.String("LessThanThreshold"),
		// A stopped instance reports nothing: that must not keep the alarm firing.
		TreatMissingData: pulumi.String("notBreaching"),
		AlarmActions:     pulumi.Array{pulumi.String("arn:aws:automate:" + region + ":ec2:stop")},
	}, parent)
	return err
}

// newSchedules stop and start the instance at fixed times through EventBridge Scheduler's
// universal EC2 targets, with a role that may do only that, only to this instance.
func newSchedules(ctx *pulumi.Context, args *Args, region string, parent pulumi.ResourceOption) error {
	identity, err := aws.GetCallerIdentity(ctx, &aws.GetCallerIdentityArgs{})
	if err != nil {
		return err
	}
	instanceARN := args.InstanceID.ApplyT(func(id string) string {
		return fmt.Sprintf("arn:aws:ec2:%s:%s:instance/%s", region, identity.AccountId, id)
	}).(pulumi.StringOutput)

	role, err := iam.NewRole(ctx, "scheduler", &iam.RoleArgs{
		Description: pulumi.String("EventBridge Scheduler stops and starts the Melody Flow GPU host"),
		AssumeRolePolicy: pulumi.String(iampolicy.AssumeRole("scheduler.amazonaws.com",
			map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": identity.AccountId}})),
	}, parent)
	if err != nil {
		return err
	}
	if _, err := iam.NewRolePolicy(ctx, "scheduler-stop-start", &iam.RolePolicyArgs{
		Role: role.Name,
		Policy: instanceARN.ApplyT(func(arn string) string {
			return iampolicy.Document(iampolicy.Statement{
				"Effect":   "Allow",
				"Action":   []string{"ec2:StopInstances", "ec2:StartInstances"},
				"Resource": arn,
			})
		}).(pulumi.StringOutput),
	}, parent); err != nil {
		return err
	}
	input := args.InstanceID.ApplyT(func(id string) (string, error) {
		b, err := json.Marshal(map[string][]string{"InstanceIds": {id}})
		return string(b), err
	}).(pulumi.StringOutput)

	for _, s := range []struct{ name, cron, action string }{
		{"stop", args.ScheduleStopCron, "stopInstances"},
		{"start", args.ScheduleStartCron, "startInstances"},
	} {
		if s.cron == "" {
			continue
		}
		if _, err := scheduler.NewSchedule(ctx, s.name, &scheduler.ScheduleArgs{
			Name:                       pulumi.String(args.NamePrefix + "-api-" + s.name),
			Description:                pulumi.String("Off-hours " + s.name + " of the Melody Flow GPU host"),
			ScheduleExpression:         pulumi.String(s.cron),
			ScheduleExpressionTimezone: pulumi.String(args.ScheduleTimezone),
			FlexibleTimeWindow:         &scheduler.ScheduleFlexibleTimeWindowArgs{Mode: pulumi.String("OFF")},
			Target: &scheduler.ScheduleTargetArgs{
				Arn:     pulumi.String("arn:aws:scheduler:::aws-sdk:ec2:" + s.action),
				RoleArn: role.Arn,
				Input:   input,
			},
		}, parent); err != nil {
			return err
		}
	}
	return nil
}
