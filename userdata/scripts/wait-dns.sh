#!/usr/bin/env bash
# Melody Flow, remote step 4: wait until the A record of $API_DOMAIN shows
# $EXPECTED_IP at every authoritative name server of the zone, so that the ACME
# server's validators find this host. Only authoritative servers are asked
# (+norecurse): a recursive resolver asked too early would cache NXDOMAIN for
# the zone's negative TTL, for us and possibly for the validators.
#
# Environment:
#   API_DOMAIN    record to check (required)
#   EXPECTED_IP   the address it must have, the Elastic IP (required)
#   NAMESERVERS   the zone's name servers, separated by spaces or commas (required)
#   DNS_PORT      port to query (default 53)
#   DNS_TIMEOUT   give up after this many seconds (default 600)
#   DNS_INTERVAL  seconds between rounds (default 10)
set -euo pipefail

die() {
	echo "wait-dns: error: $*" >&2
	exit 1
}

API_DOMAIN=${API_DOMAIN:?wait-dns: API_DOMAIN must be set}
EXPECTED_IP=${EXPECTED_IP:?wait-dns: EXPECTED_IP must be set to the Elastic IP}
NAMESERVERS=${NAMESERVERS:?wait-dns: NAMESERVERS must list the zone\'s authoritative name servers}
DNS_PORT=${DNS_PORT:-53}
DNS_TIMEOUT=${DNS_TIMEOUT:-600}
DNS_INTERVAL=${DNS_INTERVAL:-10}

[[ $EXPECTED_IP =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "EXPECTED_IP '$EXPECTED_IP' is not an IPv4 address"
for v in DNS_PORT DNS_TIMEOUT DNS_INTERVAL; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v '${!v}' is not a whole number"
done
command -v dig >/dev/null 2>&1 || die "dig is not installed (package bind-utils or dnsutils)"

read -r -a servers <<<"${NAMESERVERS//,/ }"
((${#servers[@]} > 0)) || die "NAMESERVERS is empty"

deadline=$((SECONDS + DNS_TIMEOUT))
while :; do
	ok=1
	seen=()
	for ns in "${servers[@]}"; do
		if answer=$(dig +short +norecurse +time=3 +tries=1 -p "$DNS_PORT" "@$ns" A "$API_DOMAIN" 2>&1); then
			# Several lines when there are several records (or a CNAME): join them.
			answer=$(printf '%s' "$answer" | sort | paste -sd, -)
			[[ -n $answer ]] || answer="no A record"
		else
			answer="query failed: $(printf '%s' "$answer" | tr '\n' ' ')"
		fi
		[[ $answer == "$EXPECTED_IP" ]] || ok=0
		seen+=("$ns answered $answer")
	done
	if ((ok)); then
		echo "wait-dns: $API_DOMAIN is $EXPECTED_IP at all ${#servers[@]} name servers" >&2
		exit 0
	fi
	if ((SECONDS + DNS_INTERVAL > deadline)); then
		summary=$(printf '%s; ' "${seen[@]}")
		die "timed out after ${DNS_TIMEOUT}s waiting for the A record of $API_DOMAIN to be $EXPECTED_IP at every authoritative name server; last answers: ${summary%; }"
	fi
	sleep "$DNS_INTERVAL"
done
