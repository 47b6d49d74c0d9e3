"""Transformer pipelines: the transformers image variant serving a transformer pipeline
against nlp.pipe in the same image, on the same cores.

The pipeline is the tests' tiny curated-transformers BERT + ner
(harness.pipelines.transformer_pipeline), trained inside the image, since no weights can
be fetched from a model hub. Its model is far cheaper per text than a real transformer's,
so what is measured is whether the HTTP path shows beside it. Each round runs, one after
the other, nlp.pipe on N processes in the image (one intra-op thread each, as the
server's workers have), batch requests and one-text requests from CLIENTS clients; the
goal's ratios are the medians of the rounds'. Every served answer is checked against
nlp.pipe's entities.
"""

import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import load
from harness.pipelines import transformer_pipeline_in_image

HERE = Path(__file__).resolve().parent
CLIENTS = 32  # the clients, for both request forms


def yardstick(image, model, sentences, n):
    """(nlp.pipe on n processes in the image over the corpus: its figures, the entities
    per text), the server's own pipeline.load reading the mounted model."""
    cmd = ["docker", "run", "--rm", "--network", "none", "-v", f"{HERE}:/bench:ro"]
    cmd += ["-v", f"{model}:/model:ro", "-e", "SPACY_MODEL=/model"]
    cmd += ["-e", "BENCH_PROGRAM_DIR=/opt/program", "-e", "PYTHONDONTWRITEBYTECODE=1"]
    # One intra-op thread per process, as launch.py gives a worker per CPU.
    cmd += ["-e", "OMP_NUM_THREADS=1", "-e", "OPENBLAS_NUM_THREADS=1", image]
    cmd += ["python", "/bench/baseline.py", "--sentences", str(sentences), "--workers", str(n)]
    cmd += ["--latency-texts", "1", "--pipe-n", "--expected"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"bench: nlp.pipe in {image} failed: {out.stderr[-2000:]}")
    found = json.loads(out.stdout)
    return found["pipe_n"], found["expected"]


def measure(start, image, texts, n, rounds, forms, check):
    """The figures, or why there are none. start(image, model_dir) -> a started server;
    forms: bench.FORMS; check(form, bodies, expected) -> its mismatch record."""
    with tempfile.TemporaryDirectory(prefix="bench-transformer-") as tmp:
        model = transformer_pipeline_in_image(image, Path(tmp))
        server = start(image, model)
        try:
            return _rounds(server, image, model, texts, n, rounds, forms, check)
        finally:
            server.stop()


def _rounds(server, image, model, texts, n, rounds, forms, check):
    reqs = {
        form: load.invocations(server.port, forms[form][0](texts)) for form in ("batch", "single")
    }
    load.run(server.port, reqs["batch"], CLIENTS)  # warm every worker
    timed = {"pipe": [], "batch": [], "single": []}
    mismatches, first = 0, []
    for _ in range(rounds):
        pipe, expected = yardstick(image, model, len(texts), n)
        timed["pipe"].append(pipe["docs_per_s"])
        for form in ("batch", "single"):
            r = load.run(server.port, reqs[form], CLIENTS)
            timed[form].append(len(texts) / r.seconds)
            found = check(form, r.bodies, expected)
            mismatches += found["mismatches"]
            first = first or found["first"]
    ratios = {
        form: [round(s / p, 3) for s, p in zip(timed[form], timed["pipe"], strict=True)]
        for form in ("batch", "single")
    }
    return {
        "measured": True,
        "pipeline": "tiny curated-transformers BERT (2 layers, width 64) + ner, trained "
        "in the image",
        "workers": n,
        "clients": CLIENTS,
        "rounds": rounds,
        "docs": len(texts),
        "entities_found": sum(len(e) for e in expected),
        "pipe_n_docs_per_s": [round(x, 1) for x in timed["pipe"]],
        "batch_docs_per_s": [round(x, 1) for x in timed["batch"]],
        "single_docs_per_s": [round(x, 1) for x in timed["single"]],
        "batch_over_pipe": ratios["batch"],
        "single_over_pipe": ratios["single"],
        "batch_ratio": statistics.median(ratios["batch"]),
        "single_ratio": statistics.median(ratios["single"]),
        "device_line": _device_line(server),
        "mismatches": mismatches,
        "first": first,
        "runs": 2 * rounds,
    }


def _device_line(server):
    """What the start-up line says the model runs on."""
    logs = server.container.logs() if hasattr(server, "container") else ""
    line = next((x for x in logs.splitlines() if "device: " in x), "")
    return line.split("device: ", 1)[1].split(";")[0] if line else "unknown"


def image_name():
    """The transformers image the Makefile builds (TRANSFORMERS_IMAGE)."""
    return os.environ.get("TRANSFORMERS_IMAGE", "spacy-ner-sagemaker:local-transformers")
