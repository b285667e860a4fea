#!/usr/bin/env bash
# Builds the local images the compose end-to-end test runs, without any image registry.
#
#   build-images.sh rootfs   debootstrap a minimal Debian (bookworm) with nginx-light, certbot,
#                            python3 and curl from the Debian mirror configured for apt, and keep
#                            it as a tarball in the cache. Needs the mirror: run it OUTSIDE the
#                            test's network namespace.
#   build-images.sh images   `docker import` that tarball as melody-flow-test/base and build the
#                            nginx, certbot and stand-in API images on top (no network needed).
#                            Needs DOCKER_HOST (the test's private dockerd).
#   build-images.sh all      both.
#
# Every image is tagged with a hash of what it is made from; a step whose tagged image (or
# tarball) already exists is skipped, so only the first run on a machine is slow.
# On success the last lines on stdout are NGINX_IMAGE=…, CERTBOT_IMAGE=…, API_IMAGE=…
# (logs go to stderr).
#
# Environment: MELODY_IMAGE_CACHE (default /var/cache/melody-flow-docker), DEBIAN_MIRROR (default:
# the first bookworm URI in /etc/apt/sources.list(.d)), DOCKER (default docker).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${MELODY_IMAGE_CACHE:-/var/cache/melody-flow-docker}"
docker_cli="${DOCKER:-docker}"
suite=bookworm
packages="nginx-light,certbot,python3-cffi-backend,curl,ca-certificates"
# Bump when the way the rootfs is made changes.
rootfs_recipe=1

log() { printf 'build-images: %s\n' "$*" >&2; }

hash_of() { sha256sum | cut -c1-12; }

base_tag="$(printf '%s\n' "$rootfs_recipe" "$suite" "$packages" | hash_of)"
base_image="melody-flow-test/base:${base_tag}"
rootfs_tar="${cache}/rootfs/base-${base_tag}.tar"

debian_mirror() {
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
    printf '%s\n' "$DEBIAN_MIRROR"
    return
  fi
  local f uri=""
  # deb822 .sources files: the URIs of the stanza whose Suites include bookworm (not -security).
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    uri="$(awk -v s="$suite" '
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { if (u != "" && ok) { print u; exit } u=""; ok=0; next }
      tolower($1) == "uris:" { u=$2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == s) ok=1 }
      END { if (u != "" && ok) print u }' "$f" | head -n1)"
    [[ -n "$uri" ]] && break
  done
  if [[ -z "$uri" ]]; then
    # One-line format: deb [opts] URI bookworm main
    uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk -v s="$suite" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i == s) { print $(i-1); exit } }' |
      head -n1)"
  fi
  if [[ -z "$uri" ]]; then
    log "no Debian ${suite} mirror found in /etc/apt; set DEBIAN_MIRROR"
    exit 1
  fi
  printf '%s\n' "$uri"
}

build_rootfs() {
  if [[ -s "$rootfs_tar" ]]; then
    log "rootfs cached: $rootfs_tar"
    return
  fi
  command -v debootstrap >/dev/null || { log "debootstrap missing (run .ci/install-docker-tools)"; exit 1; }
  local mirror dir start
  mirror="$(debian_mirror)"
  mkdir -p "${cache}/rootfs"
  dir="$(mktemp -d "${cache}/rootfs/build.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$dir' '${rootfs_tar}.tmp'" EXIT
  start=$SECONDS
  log "debootstrap --variant=minbase --include=${packages} ${suite} from ${mirror} (about a minute)"
  debootstrap --variant=minbase --include="$packages" "$suite" "$dir" "$mirror" \
    >"${cache}/rootfs/debootstrap.log" 2>&1 || {
    tail -n 30 "${cache}/rootfs/debootstrap.log" >&2
    log "debootstrap failed (full log: ${cache}/rootfs/debootstrap.log)"
    exit 1
  }
  # Nothing of this is needed in the images.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
    "$dir"/usr/share/doc "$dir"/usr/share/man "$dir"/usr/share/info
  tar --numeric-owner -C "$dir" -cf "${rootfs_tar}.tmp" .
  mv "${rootfs_tar}.tmp" "$rootfs_tar"
  rm -rf "$dir"
  trap - EXIT
  # Tarballs of earlier recipes are of no use any more.
  find "${cache}/rootfs" -maxdepth 1 -name 'base-*.tar' ! -name "base-${base_tag}.tar" -delete
  log "rootfs ready in $((SECONDS - start)) s: $rootfs_tar ($(du -h "$rootfs_tar" | cut -f1))"
}

have_image() { "$docker_cli" image inspect "$1" >/dev/null 2>&1; }

build_images() {
  : "${DOCKER_HOST:?DOCKER_HOST must point at the test dockerd}"
  export DOCKER_BUILDKIT=0 # the classic builder: no buildx, never looks for a registry
  if have_image "$base_image"; then
    log "image cached: $base_image"
  else
    [[ -s "$rootfs_tar" ]] || { log "missing $rootfs_tar: run '$0 rootfs' first (outside the namespace)"; exit 1; }
    log "docker import $rootfs_tar -> $base_image"
    "$docker_cli" import --change 'CMD ["/bin/bash"]' "$rootfs_tar" "$base_image" >/dev/null
  fi
  local name tag image keep=("$base_image")
  for name in nginx certbot api; do
    tag="$( {
      printf '%s\n' "$base_image"
      cd "$here/images/$name" && find . -type f -print0 | sort -z | xargs -0 sha256sum
    } | hash_of)"
    image="melody-flow-test/${name}:${tag}"
    if have_image "$image"; then
      log "image cached: $image"
    else
      log "docker build $image"
      "$docker_cli" build -q --network none --build-arg "BASE=${base_image}" -t "$image" "$here/images/$name" >/dev/null
    fi
    keep+=("$image")
    printf '%s_IMAGE=%s\n' "$(tr '[:lower:]' '[:upper:]' <<<"$name")" "$image"
  done
  # Images of earlier contents would pile up in the cached data root: drop them.
  local ref
  while read -r ref; do
    if [[ $ref == melody-flow-test/* && " ${keep[*]} " != *" $ref "* ]]; then
      log "removing outdated $ref"
      "$docker_cli" rmi "$ref" >/dev/null || true
    fi
  done < <("$docker_cli" images --format '{{.Repository}}:{{.Tag}}')
}

case "${1:-all}" in
  rootfs) build_rootfs ;;
  images) build_images ;;
  all) build_rootfs && build_images ;;
  *) echo "usage: $0 [rootfs|images|all]" >&2; exit 2 ;;
esac
