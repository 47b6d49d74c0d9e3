#!/usr/bin/env bash
# Copy the CycloneDX bill of materials out of built images: the file the image build wrote
# at /opt/sbom/bom.cdx.json (container/sbom.py), to OUT_DIR/NAME_TAG.cdx.json beside them.
#
#   scripts/sbom.sh OUT_DIR IMAGE...       # make sbom: dist/sbom, both images
#
# An image that is not built is named and skipped; none built at all is an error.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 OUT_DIR IMAGE..." >&2; exit 2; }
out=$1
shift
mkdir -p "$out"
copied=0
for image in "$@"; do
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        echo "sbom.sh: $image is not built (make image); skipped" >&2
        continue
    fi
    file=$out/$(echo "$image" | tr '/:' '__').cdx.json
    container=$(docker create "$image")
    if ! docker cp "$container:/opt/sbom/bom.cdx.json" "$file" >/dev/null; then
        docker rm "$container" >/dev/null
        echo "sbom.sh: $image has no /opt/sbom/bom.cdx.json (built before the SBOM was added?)" >&2
        exit 1
    fi
    docker rm "$container" >/dev/null
    echo "sbom.sh: $image -> $file"
    copied=$((copied + 1))
done
[ "$copied" -gt 0 ] || { echo "sbom.sh: no image built to take an SBOM from" >&2; exit 1; }
