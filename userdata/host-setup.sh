#!/usr/bin/env bash
# Melody Flow: first-boot preparation of the GPU host, run once by cloud-init
# (runcmd) on the "Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023)".
# That AMI ships Docker and the NVIDIA container toolkit; this script checks
# them instead of assuming, installs the Docker Compose v2 CLI plugin (Amazon
# Linux 2023 has no package for it) at a pinned version with a checksum check,
# and prepares the app directory and the boot-time unit.
# Idempotent: safe to run again by hand. Parameters come from the environment.
set -euo pipefail

APP_DIR=${APP_DIR:?host-setup: APP_DIR must be set (the app directory, e.g. /opt/melody-flow)}
APP_USER=${APP_USER:-ec2-user}
COMPOSE_VERSION=${COMPOSE_VERSION:-v2.40.3}
# sha256 of docker-compose-linux-x86_64 of the release above.
COMPOSE_SHA256=${COMPOSE_SHA256:-dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372}
PLUGIN_DIR=${PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}
LE_DIR=${LE_DIR:-/etc/letsencrypt}
DOCKER_DAEMON_JSON=${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}

log() { echo "melody-flow host-setup: $*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root"
[[ $(uname -m) == x86_64 ]] || die "the pinned compose plugin is for x86_64, this host is $(uname -m)"

# 1. Docker: preinstalled on the DLAMI; enabled at boot.
command -v docker >/dev/null 2>&1 ||
	die "docker is not installed; this host is expected to run the Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023)"
systemctl enable --now docker.service
id "$APP_USER" >/dev/null 2>&1 || die "user $APP_USER does not exist"
usermod -aG docker "$APP_USER"

# 2. Docker Compose v2 CLI plugin, pinned and checked. /usr/local/lib comes
# before /usr/libexec in the CLI's plugin search path, so this copy wins over
# any other one.
plugin="$PLUGIN_DIR/docker-compose"
if [[ -x $plugin ]] && echo "$COMPOSE_SHA256  $plugin" | sha256sum --check --status; then
	log "docker compose $COMPOSE_VERSION already installed"
else
	url="https://github.com/docker/compose/releases/download/$COMPOSE_VERSION/docker-compose-linux-x86_64"
	tmp=$(mktemp)
	trap 'rm -f "$tmp"' EXIT
	curl -fsSL --retry 5 --retry-connrefused --connect-timeout 10 -o "$tmp" "$url" ||
		die "could not download $url"
	got=$(sha256sum "$tmp" | cut -d' ' -f1)
	[[ $got == "$COMPOSE_SHA256" ]] ||
		die "checksum mismatch for $url: expected $COMPOSE_SHA256, got $got; not installing it"
	install -D -m 0755 "$tmp" "$plugin"
	log "installed docker compose $COMPOSE_VERSION at $plugin"
fi
version=$(docker compose version 2>&1) || die "'docker compose version' failed: $version"
[[ $version == *"${COMPOSE_VERSION#v}"* ]] ||
	die "'docker compose version' does not report $COMPOSE_VERSION: $version"

# 3. NVIDIA container runtime: registered with Docker, and able to see the GPU.
command -v nvidia-ctk >/dev/null 2>&1 ||
	die "nvidia-ctk not found: the NVIDIA container toolkit is missing from this AMI"
daemon_json=$DOCKER_DAEMON_JSON
before=$(sha256sum "$daemon_json" 2>/dev/null || true)
nvidia-ctk runtime configure --runtime=docker >&2 ||
	die "nvidia-ctk runtime configure --runtime=docker failed"
if [[ $(sha256sum "$daemon_json" 2>/dev/null || true) != "$before" ]]; then
	log "registered the nvidia runtime in $daemon_json; restarting docker"
	systemctl restart docker.service
fi
nvidia-container-cli info >&2 ||
	die "nvidia-container-cli info failed: containers cannot use the GPU (driver not loaded, or not a GPU instance?)"
runtimes=$(docker info --format '{{json .Runtimes}}') || die "docker info failed"
[[ $runtimes == *'"nvidia"'* ]] ||
	die "docker does not list the nvidia runtime after configuration: $runtimes"

# 4. App directory, owned by the SSH user that copies the files in. The
# certificates live on the host disk so they survive container and spot restarts.
for d in "$APP_DIR" "$APP_DIR/nginx" "$APP_DIR/nginx/conf.d" "$APP_DIR/scripts" "$APP_DIR/models" "$APP_DIR/acme-webroot"; do
	install -d -m 0755 -o "$APP_USER" -g "$APP_USER" "$d"
done
install -d -m 0755 "$LE_DIR"

# 5. The unit that starts the stack at boot (written by cloud-init; it does
# nothing until compose.yaml has been copied in).
systemctl daemon-reload
systemctl enable melody-flow.service

# 6. The certificate's days-left metric (the alarm 14 days before expiry) needs
# the AWS CLI, which Amazon Linux 2023 ships.
command -v aws >/dev/null 2>&1 ||
	die "the AWS CLI is missing: scripts/cert-days-left.sh cannot publish the certificate metric"
systemctl enable --now melody-flow-cert-metric.timer

log "done"
