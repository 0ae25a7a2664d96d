#!/usr/bin/env bash
# Builds Ochopod's images on a Docker engine that has no registry: everything starts from a Debian
# root filesystem made here with debootstrap (docker/base/rootfs.sh) and imported with
# `docker import`.
#
#   scripts/docker-build.sh             base, agent and example images (release agent binary)
#   OCHOPOD_BIN=path scripts/docker-build.sh   use this agent binary (the tests pass their own)
#
# Images:
#   ochopod/base:<recipe hash>   Debian bookworm minbase + python3 (also tagged :latest)
#   ochopod/agent:latest         base + the ochopod binary, ENTRYPOINT `ochopod run --spec /etc/ochopod/pod.toml`
#   ochopod/zookeeper:latest     agent + Debian's zookeeper: an ensemble member (or, with
#                                --entrypoint zk-run.sh standalone, the coordination ZooKeeper)
#   ochopod/web:latest           agent + python3 http.server serving the pod's identity
#   ochopod/haproxy:latest       agent + Debian's haproxy balancing the web tier
#
# The base is cached by the sha256 of docker/base/rootfs.sh: no debootstrap when an image
# ochopod/base:<hash> exists or when the tarball $OCHOPOD_DOCKER_CACHE/base-<hash>.tar.gz does
# (default ~/.cache/ochopod-docker; CI keeps that folder between runs).
# Environment: DEBIAN_MIRROR (default: the first Debian mirror of /etc/apt/sources.list*),
# OCHOPOD_DOCKER_IMAGES (default "agent zookeeper web haproxy").
# Prints each stage's time and the image sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${OCHOPOD_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ochopod-docker}
IMAGES=${OCHOPOD_DOCKER_IMAGES:-agent zookeeper web haproxy}
export DOCKER_BUILDKIT=0 # the engine has no buildx; the classic builder caches layers just as well

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'scripts/docker-build.sh: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
took() { python3 -c "import sys; print('%.1f s' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(now)"; }

command -v docker >/dev/null || die "docker is missing; install Docker (docker.io) and start its daemon"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running, may this user use it?)"
mkdir -p "$CACHE"

# One build at a time per machine (the tests and docker/up.sh may run together).
exec 9>"$CACHE/.lock"
flock 9

T0=$(now)

# --- base ---------------------------------------------------------------------------------
HASH=$(sha256sum docker/base/rootfs.sh | cut -c1-16)
BASE=ochopod/base:$HASH
mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(grep -hoE '(https?://[^ ]+/debian)/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
      | grep -v security | head -1 | tr -d ' ' || true)
  if [ -n "$m" ]; then echo "${m%/}"; else echo http://deb.debian.org/debian; fi
}
if docker image inspect "$BASE" >/dev/null 2>&1; then
  say "base: $BASE exists"
else
  tarball=$CACHE/base-$HASH.tar.gz
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root (run as root, or with sudo)"
    M=$(mirror)
    say "base: debootstrap bookworm from $M (recipe $HASH; a few minutes, once)"
    t=$(now)
    work=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    bash docker/base/rootfs.sh "$work/root" "$M" > "$work/debootstrap.log" 2>&1 \
      || { tail -30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    tar -C "$work/root" --numeric-owner -czf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$work"
    trap - EXIT
    say "base: root filesystem ready in $(took "$t") ($(du -h "$tarball" | cut -f1) compressed)"
  fi
  t=$(now)
  docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' \
    -m "debootstrap --variant=minbase bookworm, recipe docker/base/rootfs.sh $HASH" \
    "$tarball" "$BASE" >/dev/null
  say "base: imported $BASE in $(took "$t")"
fi
docker tag "$BASE" ochopod/base:latest
# Older recipes: drop their tags and tarballs (an image still in use by a container stays).
for old in $(docker image ls ochopod/base --format '{{.Tag}}' | grep -vxE "latest|$HASH" || true); do
  docker image rm "ochopod/base:$old" >/dev/null 2>&1 || true
done
find "$CACHE" -maxdepth 1 -name 'base-*.tar.gz' ! -name "base-$HASH.tar.gz" -delete

# --- the agent binary -------------------------------------------------------------------------
if [ -n "${OCHOPOD_BIN:-}" ]; then
  BIN=$OCHOPOD_BIN
  [ -x "$BIN" ] || die "OCHOPOD_BIN=$BIN is not an executable file"
else
  say "agent: cargo build --release -p ochopod-cli"
  t=$(now)
  cargo build -q --release -p ochopod-cli
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/ochopod
  say "agent: built in $(took "$t")"
fi

# --- images -----------------------------------------------------------------------------------
CTX=$CACHE/context
for name in $IMAGES; do
  [ -f "docker/$name/Dockerfile" ] || die "no image named '$name' (docker/$name/Dockerfile is missing)"
  t=$(now)
  rm -rf "${CTX:?}/$name"
  mkdir -p "$CTX/$name"
  cp -r "docker/$name/." "$CTX/$name/"
  # Every image carries the same (stripped) binary; the layer is cached by its checksum.
  cp "$BIN" "$CTX/$name/ochopod"
  strip "$CTX/$name/ochopod" 2>/dev/null || true
  if ! docker build --force-rm --build-arg "BASE=$BASE" -t "ochopod/$name:latest" "$CTX/$name" \
      > "$CTX/$name.log" 2>&1; then
    tail -40 "$CTX/$name.log" >&2
    die "building ochopod/$name failed (the end of $CTX/$name.log above)"
  fi
  say "image: ochopod/$name:latest in $(took "$t")"
done

say "all images ready in $(took "$T0")"
docker image ls --filter 'reference=ochopod/*' --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | sort >&2
