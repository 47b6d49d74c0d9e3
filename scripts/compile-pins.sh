#!/usr/bin/env bash
# Recompile the pinned requirement files, with hashes, from their *.in files.
# PIP_CONFIG_FILE=/dev/null and no PIP_FIND_LINKS: only PyPI's files count, never a
# machine's local wheel folder, so the hashes match what a Docker build downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/pip" install --quiet pip-tools==7.5.2
compile() {
    env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$tools/bin/pip-compile" --quiet --generate-hashes \
        --allow-unsafe --strip-extras --no-emit-index-url -o "$2" "$1"
}
compile container/requirements.in container/requirements.txt
# After requirements.txt: its pins constrain the transformers variant's (-c).
(cd container && compile requirements-transformers.in requirements-transformers.txt)
compile requirements-dev.in requirements-dev.txt
# The benchmark's toolkit yardstick image (bench/toolkit/Dockerfile), on the serving pins.
(cd bench/toolkit && compile requirements.in requirements.txt && compile setuptools.in setuptools.txt)
if [ -f requirements-notebook.in ]; then
    compile requirements-notebook.in requirements-notebook.txt
fi
