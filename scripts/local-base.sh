#!/usr/bin/env bash
# Make the local Debian bookworm base image the Dockerfile can build from, where no
# container registry can be reached (docker pull fails), and print its name.
#
#   BASE_IMAGE=$(scripts/local-base.sh)      # spacy-ner-base:bookworm
#
# It holds python3, python3-venv and ca-certificates, which is all the Dockerfile needs
# from its base: mmdebstrap builds the file system from Debian's mirror (about 20 s) and
# `docker import` makes it an image. An existing image of that name is reused. Needs root
# (or mmdebstrap installed) and a Docker engine. Progress goes to stderr.
set -euo pipefail

[ $# -eq 0 ] || { echo "usage: [LOCAL_BASE_IMAGE=NAME] $0" >&2; exit 2; }
die() { echo "local-base.sh: $*" >&2; exit 1; }

name=${LOCAL_BASE_IMAGE:-spacy-ner-base:bookworm}
packages=python3,python3-venv,ca-certificates
mirror=http://deb.debian.org/debian
security_mirror=http://deb.debian.org/debian-security

if docker image inspect "$name" >/dev/null 2>&1; then
    echo "local-base.sh: base image $name exists" >&2
    echo "$name"
    exit 0
fi
command -v mmdebstrap >/dev/null ||
    "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" mmdebstrap || die "could not install mmdebstrap"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "local-base.sh: making $name with mmdebstrap (about 20 s)" >&2
# The image's apt sources are these lines, so security updates reach the final stage.
# Slim like Debian's own slim images: no docs, man pages or translations (the exclusion
# stays in the image's dpkg config, so nginx installed later is slim too), and merged /usr
# set up by mmdebstrap's hook instead of the usrmerge package, which would pull in perl.
mmdebstrap --quiet --variant=minbase --include="$packages" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$tmp/base.tar" \
    "deb $mirror bookworm main" \
    "deb $mirror bookworm-updates main" \
    "deb $security_mirror bookworm-security main" >&2 ||
    die "mmdebstrap failed to make the base file system"
docker import --change 'CMD ["/bin/bash"]' "$tmp/base.tar" "$name" >&2 ||
    die "docker import of the base file system failed"
echo "$name"
