"""The alternative a user would pick: AWS's inference toolkit on Multi Model Server.

bench/toolkit/Dockerfile builds it FROM the serving image (same Python, spaCy and baked
model; Java from Debian's packages; hash-pinned sagemaker-inference and
multi-model-server) with a model_fn / input_fn / predict_fn / output_fn handler that runs
the pipeline NER-only, as AWS's bring-your-own-container examples write one. bench.py
serves it beside the shipped image on the same one-text load, the two alternating at each
client count, and asks both what they answer to a malformed body.
"""

import os
import random
import socket
import subprocess
import time
from pathlib import Path

import numpy as np

import load
import targets

HERE = Path(__file__).resolve().parent
IMAGE = "spacy-ner-sagemaker:toolkit"
# A body cut short: what a client's bug sends. Each server's answer is reported as is.
MALFORMED = b'{"text": "Apple is looking at'


def build(serving_image: str) -> None:
    """The toolkit image on serving_image, with the project's own build script."""
    env = {"CONTEXT": str(HERE / "toolkit"), "BASE_IMAGE": serving_image}
    script = HERE.parent / "scripts" / "build-image.sh"
    proc = subprocess.run([str(script), IMAGE], env={**os.environ, **env}, text=True)
    if proc.returncode:
        raise SystemExit(f"bench: building {IMAGE} failed")


def free_port():
    """A free port below 32768: Multi Model Server refuses its address with a port above
    a 16-bit signed number ("Invalid port number"), which most of the kernel's ephemeral
    ports are."""
    for _ in range(100):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise SystemExit("bench: no free port below 32000 for the toolkit")


def start(workers):
    """The toolkit image serving on this host's network with `workers` Python workers,
    as SageMaker runs an image (`serve`)."""
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": str(workers)}
    server = targets.ImageServer(workers, False, IMAGE, env=env, port=free_port())
    return server.start()


def warm(server, bodies, timeout=120):
    """Requests until every one of a round answers 200: Multi Model Server answers /ping
    before its Python workers have loaded the model."""
    reqs = load.invocations(server.port, bodies[:64])
    for _ in range(timeout):
        try:
            load.run(server.port, reqs, 8)
            return
        except load.ProtocolError:
            time.sleep(1)
    raise SystemExit(f"bench: the server on port {server.port} never answered 200")


def alternate(servers, bodies, clients_list, rounds):
    """{clients: {name: [runs]}}: each client count, each server in turn, `rounds` times.
    A run: docs/s, p50 and p99 in ms, and the load.Run itself (for the entities)."""
    out = {c: {name: [] for name in servers} for c in clients_list}
    reqs = {name: load.invocations(server.port, bodies) for name, server in servers.items()}
    for _ in range(rounds):
        for c in clients_list:
            for name, server in servers.items():
                r = load.run(server.port, reqs[name], c)
                lat = np.array(r.latencies) * 1000
                out[c][name].append(
                    {
                        "docs_per_s": round(len(bodies) / r.seconds, 1),
                        "p50_ms": round(float(np.percentile(lat, 50)), 2),
                        "p99_ms": round(float(np.percentile(lat, 99)), 2),
                        "run": r,
                    }
                )
    return out


def malformed(server):
    """(status, the first 300 characters of the body) for MALFORMED."""
    conn = load.Connection(server.port)
    try:
        status, body = conn.exchange(
            load.http_request(server.port, "POST", "/invocations", MALFORMED)
        )
    finally:
        conn.close()
    return {"status": status, "body": body[:300].decode("utf-8", "replace")}


def summary(runs, memory, malformed):
    """Medians per client count and server, and the per-round ratio of ours to the
    toolkit's docs/s (each round's two runs are adjacent), with memory and the answers
    to the malformed body."""
    by_clients = {}
    for c, by_name in runs.items():
        row = {
            name: {
                key: float(np.median([r[key] for r in name_runs]))
                for key in ("docs_per_s", "p50_ms", "p99_ms")
            }
            for name, name_runs in by_name.items()
        }
        ratios = [
            o["docs_per_s"] / t["docs_per_s"]
            for o, t in zip(by_name["ours"], by_name["toolkit"], strict=True)
        ]
        row["ratio_docs_per_s"] = round(float(np.median(ratios)), 3)
        row["rounds"] = {name: [r["docs_per_s"] for r in rs] for name, rs in by_name.items()}
        by_clients[str(c)] = row
    return {
        "by_clients": by_clients,
        "memory": memory,
        "malformed": malformed,
        "malformed_body": MALFORMED.decode(),
    }
