#!/usr/bin/env bash
# What a fresh Debian machine (as root) needs before `make test` can test the image: a
# Docker engine (Debian's docker.io, started when none answers), and PIP_CERT for the
# image build. .ci/run sources it; `make image` makes the local base image itself when the
# Dockerfile's default base cannot be pulled (scripts/build-image.sh).
#
#   eval "$(scripts/ci-docker.sh)"     # or: source scripts/ci-docker.sh
#
# Both export PIP_CERT: the host's CA bundle (for pip behind a TLS-intercepting proxy)
# plus a throwaway CA that the container tests look for in the image's layers. Progress
# goes to stderr; stdout carries only the export line. Idempotent: a second run only checks.

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

HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
# Kept between runs on one machine (see make_pip_cert).
CI_STATE=${CI_STATE:-/var/tmp/spacy-ner-ci}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd-ci.log}

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

# The bundle handed to pip as the pip_cert build secret: the host's CAs (a TLS-intercepting
# proxy's among them, which pip needs here) plus a throwaway CA made once for this machine,
# which nothing else holds. The container tests search every layer of the image for the
# CAs in this bundle that Debian does not ship: the throwaway one is always there to look
# for, with or without a proxy. It is kept between runs, so that an image whose layers are
# cached from an earlier build was built with the same CA.
make_pip_cert() {
    [ -r "$HOST_CA_BUNDLE" ] || die "CA bundle $HOST_CA_BUNDLE is missing"
    mkdir -p "$CI_STATE"
    if [ ! -s "$CI_STATE/throwaway-ca.pem" ]; then
        command -v openssl >/dev/null || apt_install openssl
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout "$CI_STATE/throwaway-ca.key" \
            -out "$CI_STATE/throwaway-ca.pem" -subj "/CN=spacy-ner-sagemaker throwaway test CA" \
            2>/dev/null || die "openssl could not make the throwaway CA"
    fi
    cat "$HOST_CA_BUNDLE" "$CI_STATE/throwaway-ca.pem" >"$CI_STATE/pip-cert.pem"
    echo "$CI_STATE/pip-cert.pem"
}

engine_answers || start_engine
say "Docker engine answers ($(docker version --format '{{.Server.Version}}'))"

PIP_CERT=${PIP_CERT:-$(make_pip_cert)}
[ -r "$PIP_CERT" ] || die "CA bundle $PIP_CERT is missing"

# (Which docker client can build, buildx or built-in BuildKit, scripts/build-image.sh finds.)
printf 'export PIP_CERT=%q\n' "$PIP_CERT"
