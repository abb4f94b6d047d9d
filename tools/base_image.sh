#!/usr/bin/env bash
# A base image from Debian's packages, for machines that cannot pull the official
# python:3.11-slim (no Docker Hub): debootstrap a minimal bookworm (Python 3.11, its
# venv module, CA certificates, and redis-server for the compose file's Redis), then
# `docker import` it. As root; about a minute and ~300 MB.
#   tools/base_image.sh [TAG]            # default resplit-base:bookworm
set -euo pipefail
TAG=${1:-resplit-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$TAG" >/dev/null 2>&1; then
	echo "$TAG exists"
	exit 0
fi
root=$(mktemp -d /tmp/resplit-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,redis-server,redis-tools \
	bookworm "$root" "$MIRROR" >/dev/null
# No apt lists or caches in the image.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'CMD ["/bin/bash"]' - "$TAG" >/dev/null
echo "$TAG imported"
