#!/usr/bin/env bash
# Melody Flow: publish the days left on the API certificate as a CloudWatch
# metric, since Let's Encrypt no longer sends expiry e-mails and a reachable
# endpoint says nothing about them. Run every 6 h by melody-flow-cert-metric.timer;
# the stack alarms when the value falls below 14 (renewals, which start 30 days
# before expiry, have then failed for two weeks).
#
# Environment:
#   API_DOMAIN        e.g. api.melody-flow.click (required; from .env)
#   LE_DIR            certbot's config dir on the host (default /etc/letsencrypt)
#   METRIC_REGION     region of the metric and its alarm (default us-east-1)
#   METRIC_NAMESPACE  CloudWatch namespace (default MelodyFlow; the instance role may write only there)
#   AWS               how to run the AWS CLI (default "aws"); tests set a stub
set -euo pipefail

die() {
	echo "cert-days-left: error: $*" >&2
	exit 1
}
log() { echo "cert-days-left: $*" >&2; }

API_DOMAIN=${API_DOMAIN:?cert-days-left: API_DOMAIN must be set (e.g. api.melody-flow.click)}
LE_DIR=${LE_DIR:-/etc/letsencrypt}
METRIC_REGION=${METRIC_REGION:-us-east-1}
METRIC_NAMESPACE=${METRIC_NAMESPACE:-MelodyFlow}
AWS=${AWS:-aws}

cert=$LE_DIR/live/$API_DOMAIN/fullchain.pem
if [[ ! -s $cert ]]; then
	log "no certificate for $API_DOMAIN yet ($cert): nothing to report"
	exit 0
fi
end=$(openssl x509 -enddate -noout -in "$cert") || die "cannot read the end date of $cert"
end=${end#notAfter=}
end_s=$(date -u -d "$end" +%s) || die "cannot parse the end date '$end' of $cert"
days=$(((end_s - $(date -u +%s)) / 86400))

# shellcheck disable=SC2086 # AWS is a command line: splitting is intended.
$AWS cloudwatch put-metric-data --region "$METRIC_REGION" --namespace "$METRIC_NAMESPACE" \
	--metric-name CertificateDaysLeft --dimensions "Domain=$API_DOMAIN" --unit Count --value "$days" ||
	die "could not publish $METRIC_NAMESPACE/CertificateDaysLeft to $METRIC_REGION"
log "$API_DOMAIN: $days days left (published to $METRIC_REGION)"
