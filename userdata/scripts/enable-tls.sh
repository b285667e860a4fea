#!/usr/bin/env bash
# Melody Flow, remote step 6: switch nginx to its final TLS configuration,
# validate it, reload, and check that https://$API_DOMAIN$HEALTH_PATH answers.
# If nginx rejects the new configuration, the previous one is restored and
# nginx keeps serving it.
#
# Environment:
#   APP_DIR         app directory (required)
#   API_DOMAIN      e.g. api.melody-flow.click (required)
#   HEALTH_PATH     path checked over HTTPS (default /docs)
#   LE_DIR          certbot's config dir on the host (default /etc/letsencrypt)
#   VERIFY_ADDRESS  address nginx listens on, for curl --resolve (default 127.0.0.1)
#   VERIFY_TIMEOUT  seconds to wait for the health path (default 300: model loading)
#   ACME_STAGING    1 when the certificate comes from Let's Encrypt's staging
#                   server, whose root no trust store has: the check then
#                   proves TLS and the proxy without verifying the chain
#   COMPOSE         how to run compose (default "docker compose")
# curl honours CURL_CA_BUNDLE (tests point it at their ACME server's root).
set -euo pipefail

die() {
	echo "enable-tls: error: $*" >&2
	exit 1
}
log() { echo "enable-tls: $*" >&2; }

APP_DIR=${APP_DIR:?enable-tls: APP_DIR must be set to the app directory}
API_DOMAIN=${API_DOMAIN:?enable-tls: API_DOMAIN must be set}
HEALTH_PATH=${HEALTH_PATH:-/docs}
LE_DIR=${LE_DIR:-/etc/letsencrypt}
VERIFY_ADDRESS=${VERIFY_ADDRESS:-127.0.0.1}
VERIFY_TIMEOUT=${VERIFY_TIMEOUT:-300}
ACME_STAGING=${ACME_STAGING:-0}
COMPOSE=${COMPOSE:-docker compose}

[[ $HEALTH_PATH == /* ]] || die "HEALTH_PATH '$HEALTH_PATH' must start with /"
[[ $VERIFY_TIMEOUT =~ ^[0-9]+$ ]] || die "VERIFY_TIMEOUT '$VERIFY_TIMEOUT' is not a whole number"
cd "$APP_DIR" || die "cannot enter APP_DIR $APP_DIR"
[[ -f nginx/https.conf ]] || die "$APP_DIR/nginx/https.conf is missing: copy the host files first"
for f in fullchain.pem privkey.pem; do
	[[ -s $LE_DIR/live/$API_DOMAIN/$f ]] ||
		die "no certificate for $API_DOMAIN: $LE_DIR/live/$API_DOMAIN/$f is missing; run obtain-cert first"
done

active=nginx/conf.d/melody-flow.conf
backup=nginx/melody-flow.conf.previous # outside conf.d: nginx must not load it
if cmp -s nginx/https.conf "$active"; then
	log "TLS configuration already active"
else
	if [[ -f $active ]]; then cp -p "$active" "$backup"; else rm -f "$backup"; fi
	cp nginx/https.conf "$active.tmp"
	mv -f "$active.tmp" "$active"
	# shellcheck disable=SC2086 # COMPOSE is a command line: splitting is intended.
	if ! $COMPOSE exec -T nginx nginx -t; then
		if [[ -f $backup ]]; then cp -p "$backup" "$active"; else rm -f "$active"; fi
		die "nginx rejected $APP_DIR/nginx/https.conf (see 'nginx -t' above); restored the previous configuration, which nginx keeps serving"
	fi
	log "configuration valid; reloading nginx"
fi
# Reload also when the file was already active: the certificate may be new.
# shellcheck disable=SC2086
$COMPOSE exec -T nginx nginx -s reload || die "could not reload nginx"

# The reload is asynchronous and the API may still be loading its model: poll.
url="https://$API_DOMAIN$HEALTH_PATH"
curl_opts=(-fsS -o /dev/null --max-time 10 --resolve "$API_DOMAIN:443:$VERIFY_ADDRESS")
if [[ $ACME_STAGING == 1 ]]; then
	curl_opts+=(--insecure)
	log "staging certificate: checking $url without verifying its chain"
fi
deadline=$((SECONDS + VERIFY_TIMEOUT))
while :; do
	if err=$(curl "${curl_opts[@]}" "$url" 2>&1); then
		log "$url answers over TLS"
		exit 0
	fi
	if ((SECONDS >= deadline)); then
		die "$url did not answer successfully within ${VERIFY_TIMEOUT}s (via $VERIFY_ADDRESS); last error: $err"
	fi
	sleep 1
done
