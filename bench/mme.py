"""Multi-model endpoints: what a model costs to load and to keep, whether unloading gives
its memory back, and what traffic spread over several models serves against the same
traffic to one.

The image in MME mode (harness/servers.py's MultiModelEndpoint) with copies of the
English pipeline under /opt/ml/models/<name>/model, as SageMaker unpacks its archives
there, driven through /models as SageMaker drives it (container/NER/manager.py). Copies of
one pipeline, so every model does the same work per document and the throughput
comparison measures only the spreading. Memory is the container's cgroup anon memory
(container_memory.py): what the models' processes hold, each shared page once.
"""

import functools
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import container_memory
import load
from targets import MultiModelEndpoint

# The image's default: one worker per model, the cores shared by the models.
WORKERS_PER_MODEL = 1


def write_store(folder, pipeline, names):
    """SageMaker's layout, folder/<name>/model, one copy of `pipeline` (a pipeline folder)
    per name, readable by whatever user the image runs as."""
    folder = Path(folder)
    for name in names:
        shutil.copytree(pipeline, folder / name / "model")
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def _timed(call, what):
    """Seconds `call` took to answer 200; RuntimeError naming `what` otherwise."""
    started = time.perf_counter()
    response = call()
    if response.status_code != 200:
        raise RuntimeError(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    return round(time.perf_counter() - started, 2)


def spread(port, bodies, names):
    """The requests of `bodies` (in order), the i-th to names[i % len(names)]."""
    return [
        load.http_request(port, "POST", f"/models/{names[i % len(names)]}/invoke", b)
        for i, b in enumerate(bodies)
    ]


def measure(image, pipeline, pipeline_name, bodies, docs, models, concurrency, rounds, check):
    """The figures of one endpoint with `models` copies of `pipeline` (named
    pipeline_name): each load's time and memory, docs/s of `bodies` (request bodies holding
    `docs` texts in all) sent to one model and spread over all of them, alternating,
    `rounds` times each, and the memory left once every model is unloaded.
    check(answer bodies) -> mismatches, run on every answer."""
    names = [f"en-{i}" for i in range(models)]
    with tempfile.TemporaryDirectory(prefix="bench-mme-") as tmp:
        store = write_store(tmp, pipeline, names)
        # The host's network, as the other servers the benchmark measures.
        endpoint = MultiModelEndpoint(
            image, store, network="host", env={"MODEL_SERVER_WORKERS_PER_MODEL": WORKERS_PER_MODEL}
        )
        try:
            endpoint.wait_ready()
            cgroup = container_memory.cgroup_dir(endpoint.id)

            def anon_mb():  # the median of a quiet second
                return container_memory.idle(cgroup)["anon_mb"]

            idle = anon_mb()
            loads, held = [], []
            for name in names:
                before = anon_mb()
                loads.append(_timed(functools.partial(endpoint.load, name), f"loading {name}"))
                held.append(round(anon_mb() - before, 1))
            loaded = anon_mb()
            # Every model warm before anything is timed; its answers checked too.
            warm = load.run(endpoint.port, spread(endpoint.port, bodies, names), concurrency)
            mismatches = check(warm.bodies)
            timed = {"one": [], "spread": []}
            for _ in range(rounds):
                for how, targets in (("one", names[:1]), ("spread", names)):
                    r = load.run(endpoint.port, spread(endpoint.port, bodies, targets), concurrency)
                    timed[how].append(r.seconds)
                    mismatches += check(r.bodies)
            unloads = [
                _timed(functools.partial(endpoint.unload, name), f"unloading {name}")
                for name in names
            ]
            after = anon_mb()
        finally:
            endpoint.stop()
    one = [docs / s for s in timed["one"]]
    many = [docs / s for s in timed["spread"]]
    return {
        "measured": True,
        "models": models,
        "pipeline": f"{pipeline_name} (copies)",
        "workers_per_model": WORKERS_PER_MODEL,
        "concurrency": concurrency,
        "rounds": rounds,
        "load_seconds": loads,
        "unload_seconds": unloads,
        "anon_mb_per_model": held,
        "idle_anon_mb": round(idle, 1),
        "loaded_anon_above_idle_mb": round(loaded - idle, 1),
        "after_unload_anon_above_idle_mb": round(after - idle, 1),
        "docs": docs,
        "runs": 1 + 2 * rounds,
        "one_docs_per_s": [round(x, 1) for x in one],
        "spread_docs_per_s": [round(x, 1) for x in many],
        "spread_over_one": round(
            statistics.median(m / o for m, o in zip(many, one, strict=True)), 3
        ),
        "mismatches": mismatches,
    }
