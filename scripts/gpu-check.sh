#!/usr/bin/env bash
# The GPU path of the transformers variant, for a machine with an NVIDIA GPU (CI has
# none, so this is not part of `make test`):
#
#   make image VARIANT=transformers && scripts/gpu-check.sh
#
# Needs Docker with the NVIDIA Container Toolkit (`docker run --gpus all` works) and the
# project's .venv (make test sets it up). It trains the tiny transformer pipeline of the
# tests inside the image, starts the image with the GPU and asserts that its start-up
# line says GPU, starts it again without (CUDA_VISIBLE_DEVICES empty: CPU), serves the
# same batch from both, checks that the answers agree, and prints docs/s on GPU and CPU.
#
# Environment: TRANSFORMERS_IMAGE (default spacy-ner-sagemaker:local-transformers).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${TRANSFORMERS_IMAGE:-spacy-ner-sagemaker:local-transformers}
[ -x .venv/bin/python ] || { echo "gpu-check: .venv is missing; run make test or scripts/setup-host.sh" >&2; exit 1; }
docker image inspect "$image" >/dev/null 2>&1 ||
    { echo "gpu-check: $image is not built; run make image VARIANT=transformers" >&2; exit 1; }
docker run --rm --gpus all "$image" true ||
    { echo "gpu-check: docker run --gpus all failed: no GPU, or no NVIDIA Container Toolkit" >&2; exit 1; }

exec .venv/bin/python - "$image" <<'EOF'
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, os.getcwd())
from harness.pipelines import span_sentences, transformer_pipeline_in_image  # noqa: E402
from harness.servers import Container  # noqa: E402

image = sys.argv[1]
out = Path(tempfile.mkdtemp(prefix="gpu-check-"))
trained = transformer_pipeline_in_image(image, out)
model = ("-v", f"{trained}:/opt/ml/model:ro")
texts = [t for t, _ in span_sentences(4000, seed=21)]
batches = [texts[i : i + 100] for i in range(0, len(texts), 100)]


def run(container):
    def post(batch):
        r = requests.post(f"{container.url}/invocations", json={"texts": batch}, timeout=300)
        r.raise_for_status()
        return r.json()["results"]

    post(batches[0])  # warm
    start = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:  # 32 clients, as the benchmark's
        results = [r for rs in pool.map(post, batches) for r in rs]
    return results, len(texts) / (time.perf_counter() - start)


figures = {}
answers = {}
for device, args, env in [
    ("GPU", ("--gpus", "all", *model), {}),
    ("CPU", model, {"CUDA_VISIBLE_DEVICES": ""}),
]:
    container = Container(image, args, env=env)
    try:
        container.wait_ready(timeout=600)
        line = next(x for x in container.logs().splitlines() if "device: " in x)
        assert f"device: {device}" in line, line
        print(f"gpu-check: {device}: {line.split('device: ', 1)[1]}")
        answers[device], figures[device] = run(container)
    finally:
        container.remove()
# Float sums differ between the devices, which can move a rare borderline decision.
same = sum(a == b for a, b in zip(answers["GPU"], answers["CPU"], strict=True))
print(f"gpu-check: {same} of {len(texts)} answers agree between GPU and CPU")
print("gpu-check: docs/s " + json.dumps({k: round(v) for k, v in figures.items()}))
assert same >= 0.99 * len(texts), "GPU and CPU answers differ in more than 1 text in 100"
EOF
