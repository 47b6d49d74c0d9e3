#!/usr/bin/env bash
# What `make serve` runs: serve the model on port 8080, as SageMaker would.
# With a Docker engine: build the image (scripts/build-image.sh) and run it with `serve`.
# Without one: run the same program on this host (.venv and nginx).
#
#   [MODEL_DIR=/path/to/pipeline] [PORT=8080] [IMAGE=spacy-ner-sagemaker:local] scripts/serve.sh
#
# MODEL_DIR: a spaCy pipeline folder (or a folder holding one) served instead of the baked
# model; mounted read-only at /opt/ml/model, where SageMaker unpacks ModelDataUrl. On the
# host it becomes SM_MODEL_DIR. The server's settings (docs/settings.md) pass through when set.
set -euo pipefail

die() { echo "serve.sh: $*" >&2; exit 1; }
[ $# -eq 0 ] || die "usage: [MODEL_DIR=DIR] [PORT=8080] [IMAGE=NAME] $0 (no arguments)"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=${IMAGE:-spacy-ner-sagemaker:local}
port=${PORT:-8080}
# The server's settings (docs/settings.md), passed into the container when set here.
settings=(SAGEMAKER_BIND_TO_PORT MODEL_SERVER_WORKERS SAGEMAKER_MODEL_SERVER_WORKERS
    MODEL_SERVER_TIMEOUT SAGEMAKER_MODEL_SERVER_TIMEOUT MODEL_SERVER_THREADS
    MODEL_SERVER_BATCH_CHARACTERS SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
    SAGEMAKER_MAX_PAYLOAD_IN_MB SPACY_MODEL SPACY_DEFAULT_MODEL SPACY_FULL_PIPELINE LOG_LEVEL
    OPENBLAS_NUM_THREADS OMP_NUM_THREADS MALLOC_ARENA_MAX)

model_dir=''
if [ -n "${MODEL_DIR:-}" ]; then
    [ -d "$MODEL_DIR" ] || die "MODEL_DIR=$MODEL_DIR is not a folder"
    model_dir=$(cd "$MODEL_DIR" && pwd)  # docker -v needs an absolute path
fi

if "$root/scripts/docker-ready.sh"; then
    if "$root/scripts/build-image.sh" "$image"; then
        args=(--rm -p "$port:${SAGEMAKER_BIND_TO_PORT:-8080}")
        [ -z "$model_dir" ] || args+=(-v "$model_dir:/opt/ml/model:ro")
        for name in "${settings[@]}"; do
            [ -z "${!name:-}" ] || args+=(-e "$name")  # docker copies the value from here
        done
        echo "serve.sh: serving $image on http://localhost:$port (Ctrl-C stops it)" >&2
        exec docker run "${args[@]}" "$image" serve
    fi
    # The build failed for another reason than the base (build-image.sh makes a local base
    # where the default cannot be pulled): serving still works on the host.
    echo "serve.sh: the image could not be built (see above); serving on this host instead." >&2
else
    echo "serve.sh: no Docker engine answers; serving on this host instead" >&2
fi

# The host needs the pinned packages and nginx (scripts/setup-host.sh, once).
make -C "$root" --no-print-directory .venv/.installed >&2 || die "setting up the host failed (scripts/setup-host.sh)"
python=$root/.venv/bin/python
# The venv first, so `serve` starts gunicorn from it; Debian's nginx lives in /usr/sbin.
export PATH="$root/.venv/bin:$PATH:/usr/sbin"
export SAGEMAKER_BIND_TO_PORT=${SAGEMAKER_BIND_TO_PORT:-$port}
[ -z "$model_dir" ] || export SM_MODEL_DIR=$model_dir
echo "serve.sh: serving on http://localhost:$SAGEMAKER_BIND_TO_PORT (Ctrl-C stops it)" >&2
exec "$python" "$root/container/NER/serve"
