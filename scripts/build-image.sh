#!/usr/bin/env bash
# Build the serving image from container/ (container/Dockerfile).
#
# Environment (all optional):
#   BASE_IMAGE           base for both stages (Dockerfile default: an official slim Python
#                        3.11 bookworm image on Amazon ECR Public). Unset, and the default
#                        cannot be pulled (no registry reachable): a local Debian base made
#                        by scripts/local-base.sh
#   PIP_CERT             the CA bundle pip trusts in the build (default: this machine's,
#                        /etc/ssl/certs/ca-certificates.crt, so a TLS-intercepting proxy's
#                        CA is trusted as here); handed to pip as the BuildKit secret
#                        pip_cert, so it never lands in a layer
#   SPACY_MODEL_PACKAGE  the spaCy pipeline to bake in instead of the hash-pinned
#                        container/model-requirements.txt: a package name, a wheel URL or a
#                        local wheel file
#   VARIANT              cpu (default: spaCy's own CNN pipelines) or transformers (adds
#                        torch, spacy-curated-transformers and cupy, for transformer
#                        pipelines on a GPU or on CPU; linux/amd64 only)
#   DEBIAN_UPDATES       a new value reruns the image's apt layer instead of taking it
#                        from the build cache, so that the Debian updates published since
#                        go in (default: today's date, UTC: the first build of a day takes
#                        them; a fixed value keeps the cached layer; make audit checks)
#   PLATFORM             target platform (default linux/amd64: SageMaker runs x86-64)
#   DOCKER               the docker client to use (default: the first one with BuildKit)
#   CONTEXT              the build context, with its Dockerfile (default container/; the
#                        benchmark builds its toolkit yardstick from bench/toolkit/)
set -euo pipefail

usage() {
    echo "usage: [BASE_IMAGE=...] [PIP_CERT=FILE] [DEBIAN_UPDATES=...] [SPACY_MODEL_PACKAGE=...] [VARIANT=cpu|transformers] [PLATFORM=...] $0 IMAGE_REF" >&2
    exit 2
}
die() { echo "build-image.sh: $*" >&2; exit 1; }

{ [ $# -eq 1 ] && [ -n "$1" ]; } || usage
image_ref=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
context=${CONTEXT:-$root/container}
platform=${PLATFORM:-linux/amd64}
variant=${VARIANT:-cpu}
case $variant in
    cpu) ;;
    transformers)
        # The aarch64 torch wheel on the package index is CPU-only and the CUDA libraries
        # it pins are x86-64 only.
        [ "$platform" = linux/amd64 ] || die "VARIANT=transformers is built for linux/amd64 only, not $platform" ;;
    *) die "VARIANT=$variant: cpu or transformers" ;;
esac
host_ca_bundle=/etc/ssl/certs/ca-certificates.crt
if [[ -z ${PIP_CERT:-} && -r $host_ca_bundle ]]; then
    PIP_CERT=$host_ca_bundle
fi
if [[ -n ${PIP_CERT:-} && ! (-f $PIP_CERT && -r $PIP_CERT) ]]; then
    die "PIP_CERT=$PIP_CERT is not a readable file"
fi
if [[ -n ${SPACY_MODEL_PACKAGE:-} && $SPACY_MODEL_PACKAGE == *.whl && ! -f $SPACY_MODEL_PACKAGE
      && $SPACY_MODEL_PACKAGE != *://* ]]; then
    die "SPACY_MODEL_PACKAGE=$SPACY_MODEL_PACKAGE: no such wheel file"
fi

# BuildKit is required (secret mounts in the Dockerfile). A client either has the buildx
# plugin, or is a classic client (18.09-22.x) with BuildKit built in behind
# DOCKER_BUILDKIT=1. Newer clients without buildx fall back to the legacy builder, which
# cannot do secrets, so they are skipped.
builder_mode() {
    local client=$1 version
    if [[ $("$client" buildx version 2>/dev/null || true) == *buildx* ]]; then
        echo buildx
        return
    fi
    version=$("$client" version --format '{{.Client.Version}}' 2>/dev/null) || return 1
    case $version in
        18.09* | 19.* | 20.* | 21.* | 22.*) echo classic ;;
        *) return 1 ;;
    esac
}

if [ -n "${DOCKER:-}" ]; then
    command -v "$DOCKER" >/dev/null || die "DOCKER=$DOCKER is not an executable"
    docker=$DOCKER
    mode=$(builder_mode "$docker") ||
        die "DOCKER=$DOCKER has neither buildx nor built-in BuildKit (a classic client before 23.0)"
else
    docker='' mode=''
    for candidate in "$(command -v docker || true)" /usr/bin/docker; do
        [[ -n $candidate && -x $candidate ]] || continue
        if mode=$(builder_mode "$candidate"); then
            docker=$candidate
            break
        fi
    done
    [ -n "$docker" ] || die "no docker client with BuildKit found (tried docker on PATH and" \
        "/usr/bin/docker): install the buildx plugin or set DOCKER to a client that has it"
fi
"$docker" info >/dev/null 2>&1 || die "docker ($docker) cannot reach a Docker engine (docker info failed)"

# The Dockerfile's default base, unless it is here or can be pulled: where no registry can
# be reached, a local Debian base instead, made once (scripts/local-base.sh).
if [ -z "${BASE_IMAGE:-}" ]; then
    default_base=$(sed -n 's/^ARG BASE_IMAGE=//p' "$context/Dockerfile")
    [ -n "$default_base" ] || die "no ARG BASE_IMAGE=... default in $context/Dockerfile"
    if ! "$docker" image inspect "$default_base" >/dev/null 2>&1 &&
        ! timeout 120 "$docker" pull --quiet --platform "$platform" "$default_base" >/dev/null 2>&1; then
        echo "build-image.sh: cannot pull $default_base; building from a local Debian base" \
            "instead (scripts/local-base.sh)" >&2
        BASE_IMAGE=$("$root/scripts/local-base.sh") || die "could not make the local base image"
    fi
fi

args=(--platform "$platform" --tag "$image_ref" --file "$context/Dockerfile" --build-arg "VARIANT=$variant")
[ -z "${BASE_IMAGE:-}" ] || args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
args+=(--build-arg "DEBIAN_UPDATES=${DEBIAN_UPDATES:-$(date -u +%F)}")
[ -z "${PIP_CERT:-}" ] || args+=(--secret "id=pip_cert,src=$PIP_CERT")

# A local wheel file is outside the build context: build from a copy of container/ with
# the wheel in local-model/, where the Dockerfile picks it up.
staging=''
cleanup() { [ -z "$staging" ] || rm -rf "$staging"; }
trap cleanup EXIT
if [ -n "${SPACY_MODEL_PACKAGE:-}" ]; then
    model=$SPACY_MODEL_PACKAGE
    if [ -f "$model" ]; then
        staging=$(mktemp -d)
        cp -a "$context/." "$staging/"
        mkdir -p "$staging/local-model"
        cp "$model" "$staging/local-model/"
        context=$staging
        model=/build/local-model/$(basename "$model")
    fi
    args+=(--build-arg "SPACY_MODEL_PACKAGE=$model")
fi

echo "build-image.sh: building $image_ref ($variant) for $platform with $docker ($mode)" \
    "from ${BASE_IMAGE:-the default base of the Dockerfile}" >&2
if [ "$mode" = buildx ]; then
    # Provenance attestations turn the pushed manifest into an OCI index, which SageMaker
    # refuses; older buildx versions have no flag and make none.
    if "$docker" buildx build --help 2>/dev/null | grep -q -- --provenance; then
        args+=(--provenance=false)
    fi
    "$docker" buildx build --load "${args[@]}" "$context" ||
        die "docker buildx build of $image_ref failed"
else
    DOCKER_BUILDKIT=1 "$docker" build "${args[@]}" "$context" ||
        die "docker build (BuildKit) of $image_ref failed"
fi
size=$("$docker" image inspect -f '{{.Size}}' "$image_ref" 2>/dev/null || true)
[ -n "$size" ] || die "docker image inspect $image_ref failed: the built image is not in the engine"
echo "build-image.sh: built $image_ref ($size bytes)" >&2
