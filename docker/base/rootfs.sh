#!/usr/bin/env bash
# The recipe of the base root filesystem: Debian bookworm (minbase) plus python3, trimmed.
#
#   docker/base/rootfs.sh DIR MIRROR
#
# scripts/docker-build.sh hashes this file: the image is ochopod/base:<hash of this file>, and the
# tarball is cached under that hash. Change anything here (packages, trimming) and the next build
# runs debootstrap again; nothing else triggers it. The mirror is not part of the hash (every
# Debian mirror serves the same packages).
set -euo pipefail
dir=$1
mirror=$2
SUITE=bookworm
# python3: the examples' web server and hook scripts; procps for `ps` when debugging in a pod.
PACKAGES=python3-minimal,libpython3.11-stdlib,procps

debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$dir" "$mirror"

# Images built on top install with apt: keep the mirror, skip documentation and recommends.
echo "deb $mirror $SUITE main" > "$dir/etc/apt/sources.list"
cat > "$dir/etc/apt/apt.conf.d/90ochopod" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
APT
cat > "$dir/etc/dpkg/dpkg.cfg.d/90ochopod-nodoc" <<'DPKG'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
DPKG

# Trim: package caches and lists, documentation, translations.
chroot "$dir" apt-get clean
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/log/*.log \
  "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
  "$dir"/var/cache/debconf/*-old "$dir"/var/lib/dpkg/*-old
find "$dir/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
# Some maintainer scripts (openjdk's update-alternatives) link man pages and fail without these.
mkdir -p "$dir"/usr/share/man/man1 "$dir"/usr/share/man/man5 "$dir"/usr/share/man/man8
# Docker provides these at run time.
: > "$dir/etc/hostname"
rm -f "$dir/etc/resolv.conf"
