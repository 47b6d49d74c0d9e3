#!/usr/bin/env bash
# Exit 0 when a Docker engine answers, so callers can choose the image or the host.
set -euo pipefail
command -v docker >/dev/null && docker info >/dev/null 2>&1
