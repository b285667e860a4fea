#!/usr/bin/env bash
# Proxy benchmark (not a test): wrk on loopback, in a private network
# namespace, against the stand-in API directly, through the project's final
# nginx config over HTTPS, and through a naive config without upstream
# keepalive. Prints req/s, p50/p99 and the ratios. Needs root, nginx and wrk
# (.ci/install-host-tools). Bounded: about 3 x (1 s warm-up + DURATION).
#
#   bench/proxy.sh [-d 10s] [-c 32] [-t 1]
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in nginx wrk unshare ip; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "bench: $tool is not installed (see .ci/install-host-tools)" >&2
		exit 1
	}
done
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/bench" ./bench
timeout 10m "$bin/bench" "$@"
