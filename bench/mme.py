"""Multi-model endpoints: what a model costs to load and to keep, whether unloading gives
its memory back, and what traffic spread over several models serves against the same
traffic to one.

The image in MME mode (SAGEMAKER_MULTI_MODEL=true) with copies of the English pipeline
under /opt/ml/models/<name>/model, as SageMaker unpacks its archives there, driven through
/models as SageMaker drives it (container/NER/models.py). Copies of one pipeline, so every
model does the same work per document and the throughput comparison measures only the
spreading. Memory is the container's cgroup anon memory (container_memory.py): what the
models' processes hold, each shared page once.
"""

import shutil
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import container_memory
import load
from targets import Container

# The image's default: a model's worker per model, the cores shared by the models.
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


def _call(port, method, path, body=None, timeout=600):
    """(status, seconds) of one /models call."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=body, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, time.perf_counter() - started


class Endpoint:
    """The image as a multi-model endpoint on the host's network (as the other servers
    the benchmark measures), the store mounted read-only."""

    def __init__(self, image, store):
        self.container = Container(image, ("-v", f"{store}:/opt/ml/models:ro"),
                                   env={"SAGEMAKER_MULTI_MODEL": "true",
                                        "MODEL_SERVER_WORKERS_PER_MODEL": WORKERS_PER_MODEL},
                                   network="host")
        self.port = self.container.port
        self.container.wait_ready()
        self.cgroup = container_memory.cgroup_dir(self.container.id)

    def load(self, name):
        body = f'{{"model_name": "{name}", "url": "/opt/ml/models/{name}/model"}}'
        status, seconds = _call(self.port, "POST", "/models", body.encode())
        if status != 200:
            raise RuntimeError(f"loading {name}: HTTP {status}\n{self.container.logs()[-3000:]}")
        return seconds

    def unload(self, name):
        status, seconds = _call(self.port, "DELETE", f"/models/{name}")
        if status != 200:
            raise RuntimeError(f"unloading {name}: HTTP {status}")
        return seconds

    def anon_mb(self):
        """The container's anon memory over a quiet second (its median)."""
        return container_memory.idle(self.cgroup)["anon_mb"]

    def stop(self):
        self.container.stop()


def spread(port, bodies, names):
    """The requests of `bodies` (in order), the i-th to names[i % len(names)]."""
    return [load.http_request(port, "POST", f"/models/{names[i % len(names)]}/invoke", b)
            for i, b in enumerate(bodies)]


def measure(image, pipeline, bodies, docs, models, concurrency, rounds, check):
    """The figures of one endpoint with `models` copies of `pipeline`: each load's time and
    memory, docs/s of `bodies` (request bodies holding `docs` texts in all) sent to one
    model and spread over all of them, alternating, `rounds` times each, and the memory
    left once every model is unloaded. check(answer bodies) -> mismatches, run on every
    answer."""
    names = [f"en-{i}" for i in range(models)]
    with tempfile.TemporaryDirectory(prefix="bench-mme-") as tmp:
        store = write_store(tmp, pipeline, names)
        endpoint = Endpoint(image, store)
        try:
            idle = endpoint.anon_mb()
            loads, held = [], []
            for name in names:
                before = endpoint.anon_mb()
                loads.append(round(endpoint.load(name), 2))
                held.append(round(endpoint.anon_mb() - before, 1))
            loaded = endpoint.anon_mb()
            # Every model warm before anything is timed.
            load.run(endpoint.port, spread(endpoint.port, bodies, names), concurrency)
            timed, mismatches = {"one": [], "spread": []}, 0
            for _ in range(rounds):
                for how, targets in (("one", names[:1]), ("spread", names)):
                    r = load.run(endpoint.port, spread(endpoint.port, bodies, targets),
                                 concurrency)
                    timed[how].append(r.seconds)
                    mismatches += check(r.bodies)
            unloads = [round(endpoint.unload(name), 2) for name in names]
            after = endpoint.anon_mb()
        finally:
            endpoint.stop()
    one = [docs / s for s in timed["one"]]
    many = [docs / s for s in timed["spread"]]
    return {"measured": True, "models": models, "pipeline": "en_core_web_sm (copies)",
            "workers_per_model": WORKERS_PER_MODEL, "concurrency": concurrency, "rounds": rounds,
            "load_seconds": loads, "unload_seconds": unloads,
            "anon_mb_per_model": held, "idle_anon_mb": round(idle, 1),
            "loaded_anon_above_idle_mb": round(loaded - idle, 1),
            "after_unload_anon_above_idle_mb": round(after - idle, 1),
            "docs": docs, "one_docs_per_s": [round(x, 1) for x in one],
            "spread_docs_per_s": [round(x, 1) for x in many],
            "spread_over_one": round(statistics.median(m / o for m, o in zip(many, one)), 3),
            "mismatches": mismatches}
