#!/usr/bin/env bash
# Make a Docker engine and a local base image available on a fresh Debian machine (as
# root), for building and testing the serving image where no registry can be pulled from.
#
#   eval "$(scripts/ci-docker.sh)"     # or: source scripts/ci-docker.sh
#
# Both export BASE_IMAGE (a local Debian bookworm image with python3 and python3-venv) and
# PIP_CERT (the host's CA bundle, for pip behind a TLS-intercepting proxy), which
# scripts/build-image.sh reads. Progress goes to stderr;
# stdout carries only the export lines. Idempotent: a second run only checks.

# Sourced: run this file as a child (so its errexit holds and nothing leaks into the
# caller's shell options), then take over its exports.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    _ci_docker_env=$(bash "${BASH_SOURCE[0]}") || {
        echo "ci-docker.sh: failed (see above)" >&2
        unset _ci_docker_env
        return 1
    }
    eval "$_ci_docker_env"
    unset _ci_docker_env
    return 0
fi

set -euo pipefail

[ $# -eq 0 ] || { echo "usage: eval \"\$($0)\"   (or: source $0)" >&2; exit 2; }
die() { echo "ci-docker.sh: $*" >&2; exit 1; }
say() { echo "ci-docker.sh: $*" >&2; }

BASE_IMAGE=${BASE_IMAGE:-spacy-ner-base:bookworm}
PIP_CERT=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd-ci.log}
# Packages the image's Dockerfile needs from its base; nothing else is in the base.
BASE_PACKAGES=python3,python3-venv,ca-certificates
MIRROR=http://deb.debian.org/debian
SECURITY_MIRROR=http://deb.debian.org/debian-security

apt_install() {
    "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" "$@" || die "could not install $*"
}

engine_answers() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

start_engine() {
    if ! command -v dockerd >/dev/null; then
        say "installing Debian's docker.io"
        apt_install docker.io
    fi
    say "starting dockerd (log: $DOCKERD_LOG)"
    nohup dockerd >"$DOCKERD_LOG" 2>&1 &
    local waited=0
    until engine_answers; do
        kill -0 $! 2>/dev/null || die "dockerd exited at start; last lines of $DOCKERD_LOG:
$(tail -n 20 "$DOCKERD_LOG")"
        [ "$waited" -lt 60 ] || die "dockerd did not answer docker info within 60 s; see $DOCKERD_LOG"
        sleep 1
        waited=$((waited + 1))
    done
}

make_base_image() {
    command -v mmdebstrap >/dev/null || apt_install mmdebstrap
    local tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064  # expand now: tmp is local
    trap "rm -rf '$tmp'" EXIT
    say "making $BASE_IMAGE with mmdebstrap (about 20 s)"
    # The image's apt sources are these lines, so security updates reach the final stage.
    # Slim like Debian's own slim images: no docs, man pages or translations (the
    # exclusion stays in the image's dpkg config, so nginx installed later is slim too),
    # and merged /usr set up by mmdebstrap's hook instead of the usrmerge package, which
    # would pull in all of perl.
    mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$tmp/base.tar" \
        "deb $MIRROR bookworm main" \
        "deb $MIRROR bookworm-updates main" \
        "deb $SECURITY_MIRROR bookworm-security main" >&2 ||
        die "mmdebstrap failed to make the base file system"
    docker import --change 'CMD ["/bin/bash"]' "$tmp/base.tar" "$BASE_IMAGE" >&2 ||
        die "docker import of the base file system failed"
}

engine_answers || start_engine
say "Docker engine answers ($(docker version --format '{{.Server.Version}}'))"

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image $BASE_IMAGE exists"
else
    make_base_image
fi

[ -r "$PIP_CERT" ] || die "CA bundle $PIP_CERT is missing"

# (Which docker client can build, buildx or built-in BuildKit, scripts/build-image.sh finds.)
printf 'export BASE_IMAGE=%q\nexport PIP_CERT=%q\n' "$BASE_IMAGE" "$PIP_CERT"
