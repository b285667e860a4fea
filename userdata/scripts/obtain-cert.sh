#!/usr/bin/env bash
# Melody Flow, remote step 5: get the certificate of $API_DOMAIN with certbot's
# webroot method, through the certbot service of the compose project. nginx is
# not touched: if this fails, nginx keeps serving its current configuration.
# A re-run keeps a valid certificate (--keep-until-expiring) instead of
# issuing a duplicate (Let's Encrypt allows 5 per week).
#
# Environment:
#   APP_DIR          app directory (required)
#   API_DOMAIN       name on the certificate (required)
#   ACME_EMAIL       account e-mail (required)
#   ACME_STAGING     1 to use Let's Encrypt's staging server (default 0)
#   ACME_SERVER      ACME directory URL; empty means certbot's default
#   CERTBOT_WEBROOT  webroot as the certbot container sees it (default /var/www/certbot)
#   VERIFY_ADDRESS   address of this host's nginx for the pre-flight check (default 127.0.0.1)
#   COMPOSE          how to run compose (default "docker compose")
set -euo pipefail

die() {
	echo "obtain-cert: error: $*" >&2
	exit 1
}
log() { echo "obtain-cert: $*" >&2; }

APP_DIR=${APP_DIR:?obtain-cert: APP_DIR must be set to the app directory}
API_DOMAIN=${API_DOMAIN:?obtain-cert: API_DOMAIN must be set}
ACME_EMAIL=${ACME_EMAIL:?obtain-cert: ACME_EMAIL must be set}
ACME_STAGING=${ACME_STAGING:-0}
ACME_SERVER=${ACME_SERVER:-}
CERTBOT_WEBROOT=${CERTBOT_WEBROOT:-/var/www/certbot}
VERIFY_ADDRESS=${VERIFY_ADDRESS:-127.0.0.1}
COMPOSE=${COMPOSE:-docker compose}

cd "$APP_DIR" || die "cannot enter APP_DIR $APP_DIR"
[[ $ACME_STAGING == 0 || $ACME_STAGING == 1 ]] || die "ACME_STAGING must be 0 or 1, not '$ACME_STAGING'"

# Pre-flight: nginx must serve the webroot at the challenge path. A failed
# validation counts against Let's Encrypt's failed-validation limit; a missing
# file here costs nothing.
probe_dir=acme-webroot/.well-known/acme-challenge
probe="melody-flow-preflight-$$-$RANDOM"
mkdir -p "$probe_dir"
printf '%s' "$probe" >"$probe_dir/$probe"
trap 'rm -f "$APP_DIR/$probe_dir/$probe"' EXIT
url="http://$API_DOMAIN/.well-known/acme-challenge/$probe"
got=$(curl -fsS --max-time 10 --resolve "$API_DOMAIN:80:$VERIFY_ADDRESS" "$url" 2>&1) ||
	die "nginx does not serve the ACME webroot: $url (via $VERIFY_ADDRESS) failed: $got; is nginx up with nginx/http.conf or nginx/https.conf?"
[[ $got == "$probe" ]] ||
	die "nginx does not serve $APP_DIR/acme-webroot at /.well-known/acme-challenge/: $url answered something else"

args=(certonly --webroot -w "$CERTBOT_WEBROOT" -d "$API_DOMAIN"
	--email "$ACME_EMAIL" --agree-tos --no-eff-email --non-interactive
	--keep-until-expiring)
if [[ $ACME_STAGING == 1 ]]; then args+=(--staging); fi
if [[ -n $ACME_SERVER ]]; then args+=(--server "$ACME_SERVER"); fi

server=${ACME_SERVER:-Let\'s Encrypt $([[ $ACME_STAGING == 1 ]] && echo staging || echo production)}
log "requesting a certificate for $API_DOMAIN from $server"
# shellcheck disable=SC2086 # COMPOSE is a command line: splitting is intended.
if ! $COMPOSE run --rm certbot "${args[@]}"; then
	die "certbot could not obtain a certificate for $API_DOMAIN from $server (see certbot's output above and its log in /var/log/letsencrypt inside the container); nginx was not changed and keeps serving its current configuration"
fi
log "certificate for $API_DOMAIN is in place"
