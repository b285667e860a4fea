#!/usr/bin/env bash
# Test stand-in for "docker compose": the host scripts run every container
# action through $COMPOSE, and the e2e test points COMPOSE at this file. It maps
# the only verbs the scripts use to native programs, as the containers would
# run them; anything else fails, which also proves the scripts use nothing more.
#
#   up -d --remove-orphans          -> start nginx (daemon) unless it runs
#   exec -T nginx nginx -t          -> nginx -t
#   exec -T nginx nginx -s reload   -> nginx -s reload
#   run --rm certbot ARGS...        -> certbot ARGS with the test's directories;
#                                      the container path /var/www/certbot maps
#                                      to $SHIM_WEBROOT (the volume mount)
set -euo pipefail

: "${SHIM_NGINX_CONF:?}" "${SHIM_NGINX_PID:?}" "${SHIM_LE_DIR:?}" "${SHIM_CERTBOT_STATE:?}" "${SHIM_WEBROOT:?}" "${SHIM_LOG:?}"

die() {
	echo "compose-shim: $*" >&2
	exit 2
}
echo "$*" >>"$SHIM_LOG"

run_nginx() { nginx -e stderr -c "$SHIM_NGINX_CONF" "$@"; }
nginx_running() { [[ -s $SHIM_NGINX_PID ]] && kill -0 "$(cat "$SHIM_NGINX_PID")" 2>/dev/null; }

case "${1:-}" in
up)
	[[ $* == "up -d --remove-orphans" ]] || die "unsupported: $*"
	nginx_running || run_nginx
	;;
exec)
	[[ ${2:-} == -T && ${3:-} == nginx && ${4:-} == nginx ]] || die "unsupported: $*"
	shift 4
	case "$*" in
	-t) run_nginx -t ;;
	"-s reload") run_nginx -s reload ;;
	*) die "unsupported nginx command: $*" ;;
	esac
	;;
run)
	[[ ${2:-} == --rm && ${3:-} == certbot ]] || die "unsupported: $*"
	shift 3
	args=()
	for a in "$@"; do
		if [[ $a == /var/www/certbot ]]; then a=$SHIM_WEBROOT; fi
		args+=("$a")
	done
	# Never let a test reach a real ACME server.
	[[ " ${args[*]} " == *" --server https://127.0.0.1:"* ]] ||
		die "refusing to run certbot without --server https://127.0.0.1:...: $*"
	exec certbot "${args[@]}" --config-dir "$SHIM_LE_DIR" \
		--work-dir "$SHIM_CERTBOT_STATE/work" --logs-dir "$SHIM_CERTBOT_STATE/logs"
	;;
*) die "unsupported: $*" ;;
esac
