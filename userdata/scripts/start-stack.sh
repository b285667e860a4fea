#!/usr/bin/env bash
# Melody Flow, remote step 3 (and what melody-flow.service runs at boot):
# activate the nginx config that fits the certificate on disk, then bring the
# compose project up. Idempotent: once TLS is live, a re-run keeps TLS.
#
# Environment:
#   APP_DIR     app directory holding compose.yaml, nginx/, scripts/ (required)
#   API_DOMAIN  e.g. api.melody-flow.click (required)
#   LE_DIR      certbot's config dir on the host (default /etc/letsencrypt)
#   COMPOSE     how to run compose (default "docker compose"); tests set a shim
set -euo pipefail

die() {
	echo "start-stack: error: $*" >&2
	exit 1
}
log() { echo "start-stack: $*" >&2; }

APP_DIR=${APP_DIR:?start-stack: APP_DIR must be set to the app directory}
API_DOMAIN=${API_DOMAIN:?start-stack: API_DOMAIN must be set (e.g. api.melody-flow.click)}
LE_DIR=${LE_DIR:-/etc/letsencrypt}
COMPOSE=${COMPOSE:-docker compose}

cd "$APP_DIR" || die "cannot enter APP_DIR $APP_DIR"
for f in compose.yaml .env nginx/http.conf nginx/https.conf; do
	[[ -f $f ]] || die "$APP_DIR/$f is missing: copy the host files first"
done
mkdir -p nginx/conf.d acme-webroot models

# live/ is 0700 root: this runs as root, like certbot's container.
if [[ -s $LE_DIR/live/$API_DOMAIN/fullchain.pem && -s $LE_DIR/live/$API_DOMAIN/privkey.pem ]]; then
	src=nginx/https.conf
	log "certificate for $API_DOMAIN found in $LE_DIR: using the TLS configuration"
else
	src=nginx/http.conf
	log "no certificate for $API_DOMAIN in $LE_DIR yet: using the HTTP-only bootstrap configuration"
fi

active=nginx/conf.d/melody-flow.conf
backup=nginx/melody-flow.conf.previous
changed=0
if ! cmp -s "$src" "$active"; then
	if [[ -f $active ]]; then cp -p "$active" "$backup"; fi
	cp "$src" "$active.tmp"
	mv -f "$active.tmp" "$active"
	changed=1
fi

# shellcheck disable=SC2086 # COMPOSE is a command line: splitting is intended.
$COMPOSE up -d --remove-orphans || die "'$COMPOSE up -d --remove-orphans' failed in $APP_DIR"

# Reload nginx after every "up": it does not notice a changed bind-mounted
# file, and it resolves "api" only when it loads its configuration, so an API
# container recreated by "up" (new image, new address) would otherwise get
# 502s until the next periodic reload. A just-started nginx may need a moment.
# shellcheck disable=SC2086
if ! $COMPOSE exec -T nginx nginx -t; then
	if ((changed)) && [[ -f $backup ]]; then
		cp -p "$backup" "$active"
		die "nginx rejected $APP_DIR/$src; restored the previous configuration, nginx keeps serving it"
	fi
	die "nginx rejected $APP_DIR/$src"
fi
for attempt in 1 2 3 4 5 6 7 8 9 10; do
	# shellcheck disable=SC2086
	if $COMPOSE exec -T nginx nginx -s reload; then
		break
	fi
	((attempt < 10)) || die "could not reload nginx"
	sleep 1
done
log "stack is up ($src active)"
