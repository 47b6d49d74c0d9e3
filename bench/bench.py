#!/usr/bin/env python3
"""What serving costs, measured against spaCy itself.

usage: bench.py [--quick] [--target auto|host|image] [--workers N] [--image NAME] [--publish]
                [--before-image NAME] [--out DIR]

In one run: the in-process baseline (nlp.pipe on 1 and N processes, nlp(text) latency),
the served endpoint (batch and single-text requests at a sweep of concurrency), the blog
post's way (one text per request, full pipeline), the HTTP path alone (a rules-only
pipeline) and so the single-text limit, /ping under full load, cold start, memory with N
workers against 1, a memory soak of novel words, and the image size. With
--before-image, the one-text figures and the soak also run against that image,
interleaved with the image under test. Then large work (image target for the first
two): a local-mode SDK transform job against nlp.pipe, the container memory of 100 and
200 MB JSON Lines bodies, and long documents against spaCy's own entities; a multi-model
endpoint; AWS's inference toolkit on Multi Model Server beside the image (toolkit.py); and
the transformers image serving a tiny transformer pipeline against nlp.pipe in that image
(transformer_serving.py). The single-text limit's rounds also give the CPU efficiency: the
server's CPU per one-text request against nlp.pipe's per document. Every served answer is checked
against nlp.pipe's entities for the same texts. Writes results.json, results.md and
chart.png to bench/results/ (bench/results/quick/ with --quick).
"""

import argparse
import functools
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil

import baseline
import container_memory
import corpus
import large_body
import load
import long_docs
import mme
import report
import targets
import toolkit
import transform
import transformer_serving

HERE = Path(__file__).resolve().parent
BATCH = baseline.BATCH
ms = baseline.ms

# 4096 sentences = 64 batch requests of 64. Batch concurrency goes from one request at a
# time to two per worker; one-text requests from one client to 64, most real-time clients'
# way (merged into one nlp.pipe call per worker when they arrive together). The soak sends
# 2,000 texts of novel words as a warm-up, then 400,000 more, as requests of 50, sampling
# memory 40 times: spaCy's tables grow in steps that double (bench/README.md, "Memory over
# weeks"), so a shorter soak stops before most of them. About 14 minutes on 2 cores, 22
# with --before-image.
FULL = {
    "sentences": 4096,
    "latency_texts": 1000,
    "batch_sweep": lambda n: [1, n, 2 * n],
    "single_sweep": lambda n: [1, 8, 32, 64],
    "blog_sweep": lambda n: [1, n, 2 * n, 4 * n],
    "limit_clients": 32,
    "soak_texts": 400_000,
    "soak_warmup": 2_000,
    "soak_samples": 40,
    "before_after_rounds": 2,
    "limit_rounds": 3,
    "batch_goal_rounds": 5,
    # Large work (issue 13): transform jobs over two files of 8 MB (128,737 records),
    # each payload setting once a round, rounds alternating with the yardstick; JSON
    # Lines bodies of 100 and 200 MB; documents of 900,000 and 2,500,000 characters.
    # About 10 + 6 + 3 minutes on 2 cores.
    "transform_file_bytes": 8 * 1024 * 1024,
    "transform_rounds": 2,
    "large_body_mb": [100, 200],
    "long_document_chars": [900_000, 2_500_000],
    # Multi-model endpoints (issue 15): more models than cores; about 2 minutes.
    "mme_models": 3,
    "mme_rounds": 3,
    # The transformers image (issue 23): rounds of nlp.pipe, batch and one-text requests.
    "transformer_rounds": 3,
    # AWS's inference toolkit on Multi Model Server (issue 24): one-text requests at each
    # client count, alternating with the shipped image; about 5 minutes.
    "toolkit_clients": [1, 8, 32],
    "toolkit_rounds": 3,
}
# CI: every section, a few seconds each; the figures are not for comparison.
QUICK = {
    "sentences": 200,
    "latency_texts": 128,
    "batch_sweep": lambda n: [n, 2 * n],
    "single_sweep": lambda n: [1, 8],
    "blog_sweep": lambda n: [2 * n],
    "limit_clients": 8,
    "soak_texts": 1000,
    "soak_warmup": 200,
    "soak_samples": 4,
    "before_after_rounds": 1,
    "limit_rounds": 1,
    "batch_goal_rounds": 1,
    "transform_file_bytes": 300_000,
    "transform_rounds": 1,
    "large_body_mb": [3, 6],
    "long_document_chars": [150_000, 150_000],
    "mme_models": 2,
    "mme_rounds": 1,
    "transformer_rounds": 1,
    "toolkit_clients": [1, 8],
    "toolkit_rounds": 1,
}
# The two transform jobs: /execution-parameters decides (what the notebook does: the
# goal's job), and the real-time limit most examples set (beside it: the time local mode
# spends making mini-batches grows with their size).
TRANSFORM_JOBS = {"execution_parameters": {}, "max_payload_6": {"MaxPayloadInMB": 6}}
# A large body's server: no payload cap, an async endpoint's hour.
LARGE_BODY_ENV = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0", "MODEL_SERVER_TIMEOUT": "3600"}
SOAK_REQUEST_TEXTS = 50  # texts per soak request, as the issue that found the growth sent
# A soak sample is the least of the readings over this long at idle: twice the recycle
# thread's trim interval (settled_pss_mb).
SETTLE_SECONDS = 2.5


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def encode(obj):
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


# How each request form's answer turns into [[text, label, start, end], ...] per text.
def _ents(answer_entities):
    return [[e["text"], e["label"], e["start"], e["end"]] for e in answer_entities]


FORMS = {
    "single": (
        load.one_text_bodies,
        lambda body: [_ents(json.loads(body)["entities"])],
    ),
    "batch": (
        lambda texts: [
            encode({"texts": texts[i : i + BATCH]}) for i in range(0, len(texts), BATCH)
        ],
        lambda body: [_ents(r["entities"]) for r in json.loads(body)["results"]],
    ),
    # The blog post's format answers [text, label] pairs only.
    "blog": (
        lambda texts: [encode({"input": t}) for t in texts],
        lambda body: [json.loads(body)["output"]],
    ),
}


def check_entities(form, bodies, expected):
    """Mismatches between the served answers and nlp.pipe's entities for the same texts."""
    served = [ents for body in bodies for ents in FORMS[form][1](body)]
    if form == "blog":
        expected = [[[t, label] for t, label, _, _ in doc] for doc in expected]
    mismatches = [i for i, (a, b) in enumerate(zip(served, expected, strict=True)) if a != b]
    mismatches += list(range(min(len(served), len(expected)), max(len(served), len(expected))))
    return {"docs": len(expected), "mismatches": len(mismatches), "first": mismatches[:5]}, served


def warm(server, texts, n):
    """One untimed pass over the corpus, in batches, so every worker has seen its words."""
    load.run(server.port, load.invocations(server.port, FORMS["batch"][0](texts)), 2 * n)


def sweep(server, form, texts, concurrencies, expected, yardsticks, ping_at=()):
    """One closed-loop run over the whole corpus per concurrency level.

    yardsticks: {name: in-process docs/s}; each row gets the ratio to each of them.
    """
    bodies = FORMS[form][0](texts)
    reqs = load.invocations(server.port, bodies)
    docs_per_request = len(texts) / len(reqs)
    load.run(server.port, reqs[: 2 * max(concurrencies)], max(concurrencies))  # warm every worker
    rows, pings, checks, served = [], [], [], None
    for c in concurrencies:
        sampler = load.PingSampler(server.port) if c in ping_at else None
        cpu0 = server.cpu_seconds()
        r = load.run(server.port, reqs, c, sampler)
        server_cpu = server.cpu_seconds() - cpu0
        docs = len(texts)
        row = {
            "concurrency": c,
            "requests": len(reqs),
            "docs": docs,
            "seconds": round(r.seconds, 3),
            "docs_per_s": round(docs / r.seconds, 1),
            **{f"ratio_{k}": round(docs / r.seconds / v, 3) for k, v in yardsticks.items()},
            "latency_ms": ms(r.latencies),
            "server_cpu_ms_per_doc": round(1000 * server_cpu / docs, 3),
            "client_cpu_share": round(r.client_cpu_seconds / (r.seconds * os.cpu_count()), 3),
        }
        if sampler is not None:
            under = sampler.under_load(r)
            pings.extend(under)
            row["ping_samples"] = len(under)
        check, served = check_entities(form, r.bodies, expected)
        checks.append(check)
        rows.append(row)
        lat = row["latency_ms"]
        log(
            f"{form:6} c={c:<3} {row['docs_per_s']:7.1f} docs/s ({row['ratio_pipe']:.2f} of "
            f"in-process nlp.pipe), p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
            f"{check['mismatches']} entity mismatches, {docs_per_request:.0f} docs/request"
        )
    return rows, pings, combined(checks), served


def combined(checks):
    """check_entities' figures of several runs over the same texts, as one."""
    return {
        "docs": checks[0]["docs"],
        "runs": len(checks),
        "mismatches": sum(c["mismatches"] for c in checks),
        "first": next((c["first"] for c in checks if c["first"]), []),
    }


def machine():
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small corpus and short sweeps (CI); writes bench/results/quick/",
    )
    parser.add_argument(
        "--target",
        choices=["auto", "host", "image"],
        default="auto",
        help="the image when a Docker engine answers (auto), or serve here",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="server workers, and in-process baseline processes (default 2)",
    )
    parser.add_argument("--image", default=os.environ.get("IMAGE", targets.DEFAULT_IMAGE))
    parser.add_argument(
        "--publish",
        action="store_true",
        help="image: reach the container through -p 127.0.0.1:PORT:8080 "
        "(Docker's userland proxy) instead of the host's network",
    )
    parser.add_argument(
        "--before-image",
        help="an image of an earlier version: its one-text "
        "figures and memory soak run alternately with the image under test",
    )
    parser.add_argument("--out", type=Path, help="results folder (default bench/results[/quick])")
    return parser.parse_args()


def measure_baseline(
    kind,
    image,
    texts,
    n,
    plan,
    paired_port=None,
    transform_bytes=None,
    long_document=None,
    pipe_n=False,
    pipe_cpu=False,
):
    """baseline.py's JSON: here for the host target, inside the image for the image.
    pipe_n, pipe_cpu, transform_bytes and long_document ((chars, "whole"|"paragraphs"))
    run only that yardstick."""
    cli = [
        "--sentences",
        str(len(texts)),
        "--workers",
        str(n),
        "--latency-texts",
        str(plan["latency_texts"]),
    ]
    if paired_port:
        cli += ["--paired-port", str(paired_port)]
    if pipe_n:
        cli += ["--pipe-n"]
    if pipe_cpu:
        cli += ["--pipe-cpu"]
    if transform_bytes:
        cli += ["--transform-bytes", str(transform_bytes)]
    if long_document:
        cli += ["--long-document", str(long_document[0]), "--reference", long_document[1]]
    if kind == "host":
        if paired_port:
            return {"paired": baseline.paired(paired_port, texts[: plan["latency_texts"]])}
        if pipe_n:
            return {"pipe_n": baseline.pipe_n(texts, n)}
        if pipe_cpu:
            return {"pipe_cpu": baseline.pipe_cpu(texts)}
        return baseline.everything(texts, n, plan["latency_texts"])
    # The image's own Python, spaCy and baked model; this folder mounted read-only. The
    # host's network only for the paired latency, which talks to the server.
    cmd = [
        "docker",
        "run",
        "--rm",
        "--network",
        "host" if paired_port else "none",
        "-v",
        f"{HERE}:/bench:ro",
        "-e",
        "BENCH_PROGRAM_DIR=/opt/program",
        "-e",
        "PYTHONDONTWRITEBYTECODE=1",
        image,
        "python",
        "/bench/baseline.py",
        *cli,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"bench: the baseline in the image failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def measure_served(start, texts, n, plan, expected, results, paired, pipe_n):
    """The server as shipped (N workers, NER components only): sweeps, the batch-request
    goal, /ping, overhead, memory. Returns the entities of the last one-text run, per
    text. pipe_n(): nlp.pipe on n processes, measured anew."""
    # Batch requests are held to nlp.pipe; one-text requests to nlp.pipe (the issue's
    # yardstick) and to nlp(text) one text at a time (the same unit of work, no HTTP).
    base = results["baseline"]
    pipe_only = {"pipe": base["pipe_n"]["docs_per_s"]}
    both = {**pipe_only, "calls": base["calls_n"]["docs_per_s"]}
    # At least twice as many requests in hand as workers: every worker busy.
    ping_at = {2 * n, min(c for c in plan["single_sweep"](n) if c >= 2 * n)}
    server = start(n, False)
    results["cold_start_s"] = {"workers_n": round(server.cold_start_seconds, 3)}
    try:
        results["meta"]["versions"]["server"] = server.versions()
        warm(server, texts, n)
        batch, pings_b, check_b, _ = sweep(
            server, "batch", texts, plan["batch_sweep"](n), expected, pipe_only, ping_at
        )
        batch_goal, check_goal = measure_batch_goal(server, texts, n, plan, expected, pipe_n)
        single, pings_s, check_s, served = sweep(
            server, "single", texts, plan["single_sweep"](n), expected, both, ping_at
        )
        overhead = paired(server.port)
        log(
            f"one short text at a time: served p50 {overhead['served_ms']['p50']} ms, "
            f"nlp(text) p50 {overhead['in_process_ms']['p50']} ms"
        )
        results["memory"] = {f"workers_{n}": server.memory()}
    finally:
        server.stop()
    results["served_batch"], results["served_single"] = batch, single
    results["batch_goal"] = batch_goal
    results["single_text_overhead"] = overhead
    pings = pings_b + pings_s
    results["ping_under_load_ms"] = {
        **ms([seconds for seconds, _ in pings]),
        "non_200": sum(1 for _, status in pings if status != 200),
        "during": f"batch and single runs at concurrency {2 * n} ({n} workers)",
    }
    results["correctness"] = {"batch": check_b, "batch_goal": check_goal, "single": check_s}
    return served


def measure_batch_goal(server, texts, n, plan, expected, pipe_n):
    """The batch-request goal's ratio: batch requests over the corpus at two per worker,
    and nlp.pipe on n processes in the image, alternately, repeated; the median of the
    rounds' ratios. The sweep's ratios hold every run against the one yardstick measured
    first, minutes earlier, and both take seconds: on a shared machine that compares
    different moments."""
    reqs = load.invocations(server.port, FORMS["batch"][0](texts))
    concurrency = 2 * n
    rounds, checks = [], []
    for _ in range(plan["batch_goal_rounds"]):
        pipe = pipe_n()["docs_per_s"]
        r = load.run(server.port, reqs, concurrency)
        checks.append(check_entities("batch", r.bodies, expected)[0])
        rate = len(texts) / r.seconds
        rounds.append(
            {
                "pipe_n_docs_per_s": round(pipe, 1),
                "served_docs_per_s": round(rate, 1),
                "ratio_pipe": round(rate / pipe, 3),
            }
        )
    goal = {
        "concurrency": concurrency,
        "rounds": rounds,
        "ratio_pipe": float(np.median([r["ratio_pipe"] for r in rounds])),
    }
    log(
        f"batch requests at concurrency {concurrency}, alternating with nlp.pipe on {n} "
        f"processes: ratios {[r['ratio_pipe'] for r in rounds]}, median "
        f"{goal['ratio_pipe']:.3f}"
    )
    return goal, combined(checks)


def rules_only_pipeline(folder):
    """A blank English pipeline whose only component is an entity_ruler: served, it
    costs almost nothing, so one-text requests against it measure the HTTP path alone
    (nginx, gunicorn, Flask, decode and encode)."""
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [{"label": "ORG", "pattern": c} for c in corpus.COMPANIES]
        + [{"label": "GPE", "pattern": p} for p in corpus.PLACES]
    )
    nlp.meta["name"] = "rules_only"
    nlp.to_disk(folder)
    return folder


def measure_http_path(start, texts, n, plan, results, pipe_cpu):
    """The single-text limit, 1 / (1 / nlp.pipe on N processes + 1 / the HTTP path): the
    docs/s the cores could give one-text requests if serving added nothing but its HTTP
    work to the model's. The HTTP path alone is one-text requests against a rules-only
    pipeline. It and the shipped server, both up at once, are measured alternately at the
    same client count, repeated, so that the ratio the goal holds compares like moments.
    Each round also holds the shipped server's CPU per request (counted_cpu_seconds) to
    nlp.pipe's CPU per document, measured just before it (pipe_cpu()): the CPU
    efficiency, which the server's own HTTP path does not flatter."""
    clients = plan["limit_clients"]
    with tempfile.TemporaryDirectory() as tmp:
        servers = {"served": start(n, False)}
        try:
            servers["http_path"] = start(
                n, False, model_dir=rules_only_pipeline(Path(tmp) / "rules_only")
            )
            rates = {name: [] for name in servers}
            efficiency, latencies = [], {}
            for server in servers.values():
                warm(server, texts, n)
            for _ in range(plan["limit_rounds"]):
                pipe_ms = pipe_cpu()["cpu_ms_per_doc"]
                for name, server in servers.items():
                    reqs = load.invocations(server.port, FORMS["single"][0](texts))
                    cpu0 = server.counted_cpu_seconds()
                    r = load.run(server.port, reqs, clients)
                    cpu = server.counted_cpu_seconds() - cpu0
                    rates[name].append(round(len(texts) / r.seconds, 1))
                    latencies[name] = r.latencies
                    if name == "served":
                        request_ms = 1000 * cpu / len(texts)
                        efficiency.append(
                            {
                                "pipe_cpu_ms_per_doc": pipe_ms,
                                "cpu_ms_per_request": round(request_ms, 3),
                                "ratio": round(pipe_ms / request_ms, 3),
                            }
                        )
        finally:
            for server in servers.values():
                server.stop()
    http, served = float(np.median(rates["http_path"])), float(np.median(rates["served"]))
    pipe = results["baseline"]["pipe_n"]["docs_per_s"]
    limit = 1 / (1 / pipe + 1 / http)
    results["single_text_limit"] = {
        "http_path_docs_per_s": round(http, 1),
        "pipe_n_docs_per_s": round(pipe, 1),
        "limit_docs_per_s": round(limit, 1),
        "clients": clients,
        "served_docs_per_s": round(served, 1),
        "rounds": rates,
        "http_path_latency_ms": ms(latencies["http_path"]),
    }
    results["cpu_efficiency"] = {
        "clients": clients,
        "counted_by": servers["served"].cpu_counted_by,
        "rounds": efficiency,
        "ratio": float(np.median([e["ratio"] for e in efficiency])),
    }
    log(
        f"{clients} clients, alternating: HTTP path alone (rules-only pipeline) "
        f"{rates['http_path']} requests/s, served {rates['served']} docs/s; single-text "
        f"limit {limit:.0f} docs/s; CPU efficiency (nlp.pipe's CPU per document / the "
        f"server's per request) {[e['ratio'] for e in efficiency]}"
    )


def soak(servers, texts, samples, warmup):
    """Send the novel texts to every server in slices, alternating between servers slice
    by slice, and sample each server's memory after each slice. The first `warmup` texts
    are a slice of their own: memory grows once while the allocator reaches the working
    set of requests like these, then stays; growth is counted from after it. Returns, per
    server, [[texts sent, summed PSS MB], ...] from 0 texts."""
    step = -(-(len(texts) - warmup) // samples)
    step += -step % SOAK_REQUEST_TEXTS
    bounds = [0, warmup, *range(warmup + step, len(texts), step), len(texts)]
    curves = {name: [[0, settled_pss_mb(s)]] for name, s in servers.items()}
    for lo, hi in itertools.pairwise(bounds):
        for name, server in servers.items():
            bodies = [
                encode({"texts": texts[j : min(j + SOAK_REQUEST_TEXTS, hi)]})
                for j in range(lo, hi, SOAK_REQUEST_TEXTS)
            ]
            load.run(server.port, load.invocations(server.port, bodies), server.workers)
            curves[name].append([hi, settled_pss_mb(server)])
    return curves


def settled_pss_mb(server):
    """The least summed PSS over SETTLE_SECONDS at idle: what the server keeps. Right after
    a slice, a worker's heap still holds what its last calls freed, until the recycle
    thread's next malloc_trim (recycle.py, once a second); a reading then is the phase of
    that second, not growth. The same least-of-readings rule recycle.py judges by."""
    readings = []
    deadline = time.monotonic() + SETTLE_SECONDS
    while not readings or time.monotonic() < deadline:
        m = server.memory()
        readings.append((m["processes"], m["pss_mb"]))
        time.sleep(SETTLE_SECONDS / 5)
    # A reading taken while a recycled worker's replacement is not forked yet misses a
    # process: only readings of the whole server count.
    whole = max(n for n, _ in readings)
    return min(mb for n, mb in readings if n == whole)


def second_half_growth(curve):
    """How far the top of a soak curve still rose in its second half: the highest sample
    of the second half against the highest of the first (after the warm-up). A server that
    recycles its workers draws a sawtooth; its top is what must stop rising, while the
    difference of two single samples is mostly where each fell on the teeth. Growth shows
    in full: a curve that climbs has its highest samples late."""
    middle = (curve[1][0] + curve[-1][0]) / 2
    first = max(mb for texts, mb in curve[1:] if texts <= middle)
    second = max(mb for texts, mb in curve[1:] if texts > middle)
    return second - first


def measure_soak_and_before_after(start, texts, n, plan, results, before_image):
    """Memory over many novel words, and (with before_image) the one-text figures of the
    image under test against the image before, both servers up at once and measured
    alternately, so that both see the same background load."""
    servers = {"after": start(n, False)}
    try:
        if before_image:
            servers["before"] = start(n, False, image=before_image)
        for server in servers.values():
            warm(server, texts, n)  # the corpus's words: what a running server has seen
        warmup = plan["soak_warmup"]
        novel = corpus.novel_texts(warmup + plan["soak_texts"])
        log(
            f"soak: {warmup} + {plan['soak_texts']} texts of novel words in requests of "
            f"{SOAK_REQUEST_TEXTS}{', alternating with ' + before_image if before_image else ''}"
        )
        curves = soak(servers, novel, plan["soak_samples"], warmup)
        results["soak"] = {
            name: {
                "pss_mb": curve,
                "growth_mb": round(curve[-1][1] - curve[1][1], 1),
                "second_half_growth_mb": round(second_half_growth(curve), 1),
                "warmup_growth_mb": round(curve[1][1] - curve[0][1], 1),
            }
            for name, curve in curves.items()
        }
        results["soak"].update(texts=plan["soak_texts"], warmup_texts=warmup)
        for name, curve in curves.items():
            log(
                f"soak {name}: {curve[0][1]:.0f} MB at start, {curve[1][1]:.0f} after the "
                f"warm-up, {curve[-1][1]:.0f} at the end"
            )
        if before_image:
            results["before_after"] = before_after(servers, texts, plan)
    finally:
        for server in servers.values():
            server.stop()
    if before_image:
        results["before_after"]["before_image"] = before_image


def before_after(servers, texts, plan):
    """One-text requests at the limit's client count, and one at a time (p50), against
    each server in turn, repeated: {figure: {server: [one value per round]}}."""
    clients = plan["limit_clients"]
    lone = texts[: plan["latency_texts"]]
    out = {
        "single_docs_per_s": {k: [] for k in servers},
        "single_p50_ms_at_1": {k: [] for k in servers},
        "clients": clients,
    }
    for _ in range(plan["before_after_rounds"]):
        for name, server in servers.items():
            reqs = load.invocations(server.port, FORMS["single"][0](texts))
            r = load.run(server.port, reqs, clients)
            out["single_docs_per_s"][name].append(round(len(texts) / r.seconds, 1))
            r = load.run(server.port, reqs[: len(lone)], 1)
            out["single_p50_ms_at_1"][name].append(ms(r.latencies)["p50"])
    log(
        f"before/after, one-text requests: {out['single_docs_per_s']} docs/s at {clients} "
        f"clients; p50 at 1 client {out['single_p50_ms_at_1']} ms"
    )
    return out


def measure_one_worker(start, texts, memory_n):
    """Memory of a 1-worker server after the same kind of traffic, against memory_n (the
    N-worker server's, from measure_served). Returns (memory figures, its cold start)."""
    server = start(1, False)
    try:
        warm(server, texts, 1)
        memory_1 = server.memory()
    finally:
        server.stop()
    return {
        "workers_1": memory_1,
        "ratio_pss": round(memory_n["pss_mb"] / memory_1["pss_mb"], 3),
        "measure": "sum of PSS over the server's processes, after traffic",
    }, round(server.cold_start_seconds, 3)


def measure_blog(start, texts, n, plan, expected, results):
    """The blog post's way: one text per request ({"input": ...}), the whole pipeline."""
    base = results["baseline"]
    both = {"pipe": base["pipe_n"]["docs_per_s"], "calls": base["calls_n"]["docs_per_s"]}
    server = start(n, True)
    results["cold_start_s"]["full_pipeline"] = round(server.cold_start_seconds, 3)
    try:
        warm(server, texts, n)
        results["blog_baseline"], _, results["correctness"]["blog"], _ = sweep(
            server, "blog", texts, plan["blog_sweep"](n), expected, both
        )
    finally:
        server.stop()


def measure_transform(kind, image, texts, n, plan, expected, results):
    """Records/s of a local-mode SDK transform job over two JSON Lines files, against
    nlp.pipe on n processes over the same records inside the image (the batch-request
    goal's yardstick), alternating: yardstick, each job, repeated. Every output line is
    checked against expected."""
    if kind != "image":
        results["transform"] = {"measured": False, "why": "the transform job runs the image"}
        return
    file_bytes = plan["transform_file_bytes"]
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-transform-") as tmp:
        inputs = Path(tmp) / "input"
        inputs.mkdir()
        files = transform.write_inputs(inputs, texts, file_bytes)
        records = sum(len(f) for f in files)
        for r in range(plan["transform_rounds"]):
            pipe = measure_baseline(kind, image, texts, n, plan, transform_bytes=file_bytes)[
                "transform_pipe_n"
            ]
            row = {"pipe_n_docs_per_s": pipe["docs_per_s"], "jobs": {}}
            for name, job in TRANSFORM_JOBS.items():
                output = Path(tmp) / f"output-{r}-{name}"
                output.mkdir()
                ran = transform.run_job(image, inputs, output, job)
                check = transform.check_outputs(output, files, texts, expected)
                # The goal's rate: from the job's first request to its last answer (the
                # SDK's TransformStartTime -> TransformEndTime), what an instance does
                # per second of the job. The container's start and stop, once a job
                # (on AWS inside the instance's provisioning), are in the whole job's.
                rate = records / ran["inference_seconds"]
                job_rate = records / ran["seconds"]
                # Inside that span, the client's own share: local mode makes each
                # mini-batch whole, in a time that grows with its square, while the
                # container waits (transform_job.py times it).
                serving_rate = records / (ran["inference_seconds"] - ran["batching_seconds"])
                row["jobs"][name] = {
                    "job": job,
                    "status": ran["status"],
                    "max_payload_mb": ran["max_payload_mb"],
                    "seconds": round(ran["seconds"], 2),
                    "inference_seconds": round(ran["inference_seconds"], 2),
                    "batching_seconds": round(ran["batching_seconds"], 2),
                    "serving_ratio_pipe": round(serving_rate / pipe["docs_per_s"], 3),
                    "records_per_s": round(rate, 1),
                    "ratio_pipe": round(rate / pipe["docs_per_s"], 3),
                    "job_records_per_s": round(job_rate, 1),
                    "job_ratio_pipe": round(job_rate / pipe["docs_per_s"], 3),
                    "check": check,
                }
                log(
                    f"transform job {job}: {records} records in {ran['inference_seconds']:.1f}"
                    f" s of inference ({ran['seconds']:.1f} s with the container's start and "
                    f"stop), {rate:.0f} records/s = {rate / pipe['docs_per_s']:.2f} of nlp.pipe "
                    f"on {n} processes ({pipe['docs_per_s']:.0f} docs/s); mini-batches of "
                    f"{ran['max_payload_mb']} MB, made by local mode in "
                    f"{ran['batching_seconds']:.1f} s; "
                    f"{check['error_lines']} error lines, {check['wrong_ids']} wrong ids, "
                    f"{check['mismatches']} entity mismatches"
                )
            rounds.append(row)
        sizes = transform.file_sizes_mb(inputs)
    results["transform"] = {
        "measured": True,
        "records": records,
        "file_mb": sizes,
        "rounds": rounds,
        **{
            name: {
                key: float(np.median([r["jobs"][name][key] for r in rounds]))
                for key in (
                    "ratio_pipe",
                    "records_per_s",
                    "job_ratio_pipe",
                    "job_records_per_s",
                    "batching_seconds",
                    "serving_ratio_pipe",
                )
            }
            for name in TRANSFORM_JOBS
        },
    }
    results["correctness"]["transform"] = {
        "docs": records,
        "runs": len(rounds) * len(TRANSFORM_JOBS),
        "mismatches": sum(
            j["check"]["error_lines"] + j["check"]["wrong_ids"] + j["check"]["mismatches"]
            for r in rounds
            for j in r["jobs"].values()
        ),
        "first": next(
            (
                j["check"]["first"]
                for r in rounds
                for j in r["jobs"].values()
                if j["check"]["first"]
            ),
            [],
        ),
    }


def rules_only_entities(folder, texts):
    """The rules-only pipeline's entities per text, as a served answer holds them."""
    import spacy

    nlp = spacy.load(folder)
    return [[[e.text, e.label_, e.start_char, e.end_char] for e in d.ents] for d in nlp.pipe(texts)]


def measure_large_bodies(start, kind, texts, n, plan, results):
    """Peak container memory above idle while one JSON Lines body of each size is sent,
    run and answered, a fresh server for each, serving the rules-only pipeline: what the
    request path holds does not depend on the model's speed, and a rules-only server
    answers 100 MB in minutes. Sampled from the container's cgroup (container_memory.py:
    anon is the goal's figure, the total with page cache is reported beside it)."""
    if kind != "image":
        results["large_body"] = {
            "measured": False,
            "why": "container memory is read from the image's cgroup",
        }
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        model_dir = rules_only_pipeline(Path(tmp) / "rules_only")
        expected = rules_only_entities(model_dir, texts)
        for mb in plan["large_body_mb"]:
            path = Path(tmp) / f"body-{mb}.jsonl"
            records = large_body.write_body(path, mb * 1e6, texts)
            server = start(n, False, model_dir=model_dir, env=LARGE_BODY_ENV)
            try:
                warm(server, texts, n)
                answer, memory = container_memory.above_idle(
                    container_memory.cgroup_dir(server.id),
                    functools.partial(large_body.send, server.port, path, records, texts, expected),
                )
            finally:
                server.stop()
            path.unlink()
            row = {
                **answer,
                **memory,
                "anon_over_body": round(memory["peak_anon_above_idle_mb"] / answer["body_mb"], 3),
            }
            rows.append(row)
            log(
                f"large body {answer['body_mb']} MB ({records} records): "
                f"{answer['seconds']} s; peak above idle: anon "
                f"{memory['peak_anon_above_idle_mb']} MB, total "
                f"{memory['peak_total_above_idle_mb']} MB; {answer['wrong_lines']} wrong, "
                f"{answer['error_lines']} error, {answer['missing_lines']} missing lines"
            )
    results["large_body"] = {
        "measured": True,
        "model": "rules-only pipeline (entity_ruler)",
        "env": LARGE_BODY_ENV,
        "bodies": rows,
    }
    results["correctness"]["large_body"] = {
        "docs": sum(r["records"] for r in rows),
        "runs": len(rows),
        "mismatches": sum(
            r["wrong_lines"] + r["error_lines"] + abs(r["missing_lines"]) for r in rows
        ),
        "first": next((r["first_wrong"] for r in rows if r["first_wrong"]), []),
    }


def measure_long_documents(start, kind, image, texts, n, plan, results):
    """Two long text/plain documents served with the real model against spaCy's own
    entities: the first (under nlp.max_length) against one nlp() call on the whole
    document, the second against each paragraph run alone. The references run first,
    in-process (inside the image for the image target), with their time and memory; then
    one server answers both, its container memory sampled during each."""
    cases = [
        ("whole", plan["long_document_chars"][0]),
        ("paragraphs", plan["long_document_chars"][1]),
    ]
    references = []
    for how, chars in cases:
        if kind == "image":
            references.append(
                measure_baseline(kind, image, texts, n, plan, long_document=(chars, how))[
                    "long_document"
                ]
            )
        else:
            references.append(long_docs.reference(long_docs.document(chars, texts), how))
    rows = []
    server = start(n, False, env={"MODEL_SERVER_TIMEOUT": "3600"})
    try:
        warm(server, texts, n)
        for (how, chars), ref in zip(cases, references, strict=True):
            doc = long_docs.document(chars, texts)
            if kind == "image":
                folder = container_memory.cgroup_dir(server.id)
                (seconds, served), memory = container_memory.above_idle(
                    folder, functools.partial(long_docs.post, server.port, doc)
                )
            else:
                (seconds, served), memory = long_docs.post(server.port, doc), None
            row = {
                "reference": how,
                "requested_chars": chars,
                "chars": len(doc),
                "paragraphs": len(long_docs.paragraphs(doc)),
                **long_docs.compare(doc, served, ref["entities"]),
                "served_seconds": round(seconds, 2),
                "served_memory": memory,
                "reference_seconds": ref["seconds"],
                "reference_peak_anon_above_start_mb": ref["peak_anon_above_start_mb"],
                "reference_max_rss_mb": ref["max_rss_mb"],
            }
            rows.append(row)
            log(
                f"long document, {len(doc):,} characters against {how}: F1 {row['f1']}, "
                f"{row['wrong_offsets']} wrong offsets; served {seconds:.1f} s"
                + (
                    f", peak anon above idle {memory['peak_anon_above_idle_mb']} MB"
                    if memory
                    else ""
                )
                + f"; in-process {ref['seconds']} s, +{ref['peak_anon_above_start_mb']} MB anon"
            )
    finally:
        server.stop()
    results["long_documents"] = {
        "documents": rows,
        "reference_where": "inside the image" if kind == "image" else "in the benchmark's process",
    }


def measure_mme(kind, image, texts, n, plan, expected, results):
    """A multi-model endpoint with copies of the English pipeline (mme.py): each load's
    time and memory, the memory left after unloading them all, and batch requests spread
    over every model against the same requests to one, alternating. Every answer is
    checked against expected."""
    if kind != "image":
        results["mme"] = {"measured": False, "why": "a multi-model endpoint runs the image"}
        return
    import spacy

    from settings import Settings  # the server's own (inprocess.py puts it on the path)

    bodies = FORMS["batch"][0](texts)
    with tempfile.TemporaryDirectory(prefix="bench-mme-pipeline-") as tmp:
        pipeline = Path(tmp) / "en"  # the image's default model, as an archive holds it
        name = Settings.from_env({}).default_model
        spacy.load(name).to_disk(pipeline)
        found = mme.measure(
            image,
            pipeline,
            name,
            bodies,
            len(texts),
            plan["mme_models"],
            2 * n,
            plan["mme_rounds"],
            lambda answers: check_entities("batch", answers, expected)[0]["mismatches"],
        )
    results["mme"] = found
    results["correctness"]["mme"] = {
        "docs": len(texts),
        "runs": found["runs"],
        "mismatches": found["mismatches"],
        "first": [],
    }
    log(
        f"multi-model endpoint, {found['models']} models: loads {found['load_seconds']} s, "
        f"anon {found['anon_mb_per_model']} MB each, "
        f"{found['after_unload_anon_above_idle_mb']} MB above idle after unloading them all; "
        f"docs/s to one model {found['one_docs_per_s']}, spread {found['spread_docs_per_s']}"
        f" ({found['spread_over_one']}x); {found['mismatches']} entity mismatches"
    )


def measure_toolkit(kind, image, start, texts, n, plan, expected, results):
    """The shipped image against AWS's inference toolkit on Multi Model Server
    (toolkit.py), both up at once: one-text requests at each client count, alternating,
    every answer checked against nlp.pipe's entities; memory after the load, and what
    each answers to a malformed body. The image target only: the toolkit is an image."""
    if kind != "image":
        log("the toolkit comparison needs the image target: not measured")
        results["toolkit"] = None
        return
    toolkit.build(image)
    bodies = FORMS["single"][0](texts)
    servers = {"ours": start(n, False)}
    try:
        log(f"starting the toolkit {toolkit.IMAGE}: {n} workers")
        servers["toolkit"] = toolkit.start(n)
        for server in servers.values():
            toolkit.warm(server, bodies)
        runs = toolkit.alternate(servers, bodies, plan["toolkit_clients"], plan["toolkit_rounds"])
        memory = {name: server.memory() for name, server in servers.items()}
        malformed = {name: toolkit.malformed(server) for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    checks = [
        check_entities("single", run.pop("run").bodies, expected)[0]
        for by_name in runs.values()
        for name_runs in by_name.values()
        for run in name_runs
    ]
    results["correctness"]["toolkit"] = combined(checks)
    results["toolkit"] = toolkit.summary(runs, memory, malformed)
    results["toolkit"]["image"] = targets.image_info(toolkit.IMAGE)
    for c, row in results["toolkit"]["by_clients"].items():
        log(
            f"against the toolkit, {c} clients: {row['ours']['docs_per_s']} / "
            f"{row['toolkit']['docs_per_s']} docs/s (ratio {row['ratio_docs_per_s']}), p50 "
            f"{row['ours']['p50_ms']} / {row['toolkit']['p50_ms']} ms"
        )


def measure_transformers(kind, start, texts, n, plan, results):
    """The transformers image serving a tiny transformer pipeline against nlp.pipe in the
    same image (transformer_serving.py), and the image's size."""
    image = transformer_serving.image_name()
    if kind != "image" or not targets.image_exists(image):
        why = (
            "the target is the host"
            if kind != "image"
            else f"{image} is not built (make image VARIANT=transformers)"
        )
        if kind == "image" and targets.in_ci():
            raise SystemExit(f"bench: {why}; CI must benchmark it")
        results["transformers"] = {"measured": False, "why": why}
        return
    found = transformer_serving.measure(
        lambda img, model: start(n, False, model_dir=model, image=img),
        image,
        texts,
        n,
        plan["transformer_rounds"],
        FORMS,
        lambda form, bodies, expected: check_entities(form, bodies, expected)[0],
    )
    found["image"] = targets.image_info(image)
    results["transformers"] = found
    results["correctness"]["transformers"] = {
        k: found[k] for k in ("docs", "runs", "mismatches", "first")
    }
    log(
        f"transformer pipeline on {found['device_line']}: batch {found['batch_over_pipe']}, "
        f"one-text {found['single_over_pipe']} of nlp.pipe; image "
        f"{found['image']['size_mb']} MB; {found['mismatches']} entity mismatches"
    )


def main():
    args = parse_args()
    plan = QUICK if args.quick else FULL
    out = args.out or (HERE / "results" / "quick" if args.quick else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    n = args.workers
    started = time.perf_counter()
    try:
        kind = targets.choose(args.target, args.image)
    except targets.TargetError as e:
        log(str(e))
        return 2
    if args.before_image and not (kind == "image" and targets.image_exists(args.before_image)):
        log(f"--before-image {args.before_image} needs the image target and that image built")
        return 2
    log(
        f"target {kind}{' ' + args.image if kind == 'image' else ''}, {n} workers, "
        f"{'quick' if args.quick else 'full'} run"
    )

    def start(workers, full_pipeline, model_dir=None, image=None, env=None):
        log(
            f"starting the server{' ' + image if image else ''}: {workers} worker(s), "
            f"{'full pipeline' if full_pipeline else 'NER components only'}"
            f"{', model ' + str(model_dir) if model_dir else ''}{', ' + str(env) if env else ''}"
        )
        return targets.server(
            kind, workers, full_pipeline, image or args.image, args.publish, model_dir, env
        ).start()

    texts = corpus.sentences(plan["sentences"])
    results = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": args.quick,
            "target": kind,
            "workers": n,
            "network": ("published port (docker-proxy)" if args.publish else "host network")
            if kind == "image"
            else "loopback",
            "machine": machine(),
            "corpus": {"sentences": len(texts), "seed": corpus.SEED, "batch_size": BATCH},
        }
    }

    # In-process first, before any server runs, so that it has the cores to itself.
    log(f"in-process baseline ({'in the image' if kind == 'image' else 'in this process'})")
    found = measure_baseline(kind, args.image, texts, n, plan)
    results["meta"]["corpus"]["tokens_per_sentence"] = found["tokens_per_sentence"]
    results["meta"]["versions"] = {"in_process": found["versions"]}
    results["baseline"], expected = found["baseline"], found["expected"]
    base = results["baseline"]
    log(
        f"nlp.pipe: {base['pipe_1']['docs_per_s']:.0f} docs/s on 1 process, "
        f"{base['pipe_n']['docs_per_s']:.0f} on {n}; nlp(text) one at a time: "
        f"{base['calls_n']['docs_per_s']:.0f} docs/s on {n}, p50 "
        f"{base['nlp_call_latency_ms']['p50']} ms"
    )

    def paired(port):
        return measure_baseline(kind, args.image, texts, n, plan, paired_port=port)["paired"]

    def pipe_n():
        return measure_baseline(kind, args.image, texts, n, plan, pipe_n=True)["pipe_n"]

    def pipe_cpu():
        return measure_baseline(kind, args.image, texts, n, plan, pipe_cpu=True)["pipe_cpu"]

    served = measure_served(start, texts, n, plan, expected, results, paired, pipe_n)
    memory_1, cold_1 = measure_one_worker(start, texts, results["memory"][f"workers_{n}"])
    results["memory"].update(memory_1)
    results["cold_start_s"]["workers_1"] = cold_1
    measure_blog(start, texts, n, plan, expected, results)
    measure_http_path(start, texts, n, plan, results, pipe_cpu)
    measure_soak_and_before_after(start, texts, n, plan, results, args.before_image)
    measure_transform(kind, args.image, texts, n, plan, expected, results)
    measure_large_bodies(start, kind, texts, n, plan, results)
    measure_long_documents(start, kind, args.image, texts, n, plan, results)
    measure_mme(kind, args.image, texts, n, plan, expected, results)
    measure_toolkit(kind, args.image, start, texts, n, plan, expected, results)
    measure_transformers(kind, start, texts, n, plan, results)
    results["image"] = targets.image_info(args.image) if kind == "image" else None

    results["meta"]["machine"]["load_average_at_end"] = os.getloadavg()
    results["meta"]["duration_s"] = round(time.perf_counter() - started, 1)
    results["goals"] = report.goals(results)
    # A full run to the default folder is the project's record: its figures go into the
    # READMEs too. A quick run, or one written elsewhere, leaves them alone.
    record = not args.quick and args.out is None
    report.write(results, out, readmes_root=HERE.parent if record else None)
    if args.quick:
        # The served entities per text, for tests/test_bench.py to check independently.
        with open(out / "served-entities.jsonl", "w") as f:
            for text, ents in zip(texts, served, strict=True):
                f.write(json.dumps({"text": text, "entities": ents}, ensure_ascii=False) + "\n")
    log(
        f"done in {results['meta']['duration_s']} s; wrote {out}/results.json, results.md, "
        "chart.png"
    )
    bad = {k: v["mismatches"] for k, v in results["correctness"].items() if v["mismatches"]}
    if bad:
        log(f"served entities differ from nlp.pipe's: {bad}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
