#!/usr/bin/env bash
# Install Debian packages the project needs on this machine: with apt-get as root, or
# else stop and say what to install. Callers check first that the tool is missing.
# Everything goes to stderr: ci-docker.sh's stdout carries only its export lines.
#
#   scripts/apt-install.sh PACKAGE...
set -euo pipefail

die() { echo "apt-install.sh: $*" >&2; exit 1; }
[ $# -gt 0 ] || { echo "usage: $0 PACKAGE..." >&2; exit 2; }

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "$* missing; install it (apt-get install $*)"
fi
echo "apt-install.sh: installing $*" >&2
apt-get update -qq >&2 || die "apt-get update failed"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 ||
    die "apt-get install $* failed"
