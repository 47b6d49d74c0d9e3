"""The in-process measurements, runnable on their own.

bench.py runs them in its own process when the target is the host, and inside the image
(`docker run ... python /bench/baseline.py`) when the target is the image, so that the
yardstick uses the very interpreter, libraries and model files the server uses: a
Python built differently (the host's pyenv build against the image's Debian one) moves
spaCy's speed by more than the differences being measured.

usage: baseline.py --sentences N --workers N --latency-texts N [--paired-port PORT]
                   [--pipe-n [--expected]] [--pipe-cpu] [--transform-bytes B]
                   [--long-document CHARS --reference whole|paragraphs]
Prints one JSON object on stdout.
"""

import argparse
import json
import sys
import time

import numpy as np

import corpus
import inprocess
import load
import long_docs
import transform

BATCH = 64  # texts per batch request: the size of the batch-request goal (docs/performance.md)


def ms(values):
    """p50/p95/p99 of a list of seconds, in milliseconds."""
    p50, p95, p99 = np.percentile(np.asarray(values) * 1000, [50, 95, 99])
    return {
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "n": len(values),
    }


def _rounded(d):
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


def measure(texts, n, latency_texts):
    """(in-process figures, the entities every served answer must match)."""
    # The first pass over new text adds its words to the vocabulary, which costs more
    # than the model itself; a server that has run for a while has done that. Both sides
    # are measured in that steady state: here one untimed pass (the forked processes
    # inherit it); the server gets one untimed pass too (bench.warm).
    inprocess.pipe_one_process(texts)
    one, expected = inprocess.pipe_one_process(texts)
    many, expected_n = inprocess.pipe_processes(texts, n)
    calls, expected_calls = inprocess.pipe_processes(texts, n, one_at_a_time=True)
    # nlp.pipe over batches of 64, as batch requests bring them: how much of a gap to
    # pipe_n is the batch size rather than the serving.
    pipe_64, expected_64 = inprocess.pipe_processes(texts, n, chunk=BATCH)
    # The same in memory zones, as the server runs them: what flat memory costs.
    zone_64, expected_zone = inprocess.pipe_processes(texts, n, chunk=BATCH, zone=True)
    if not expected == expected_n == expected_calls == expected_64 == expected_zone:
        raise SystemExit(
            "baseline: in-process entities differ between nlp.pipe on 1 "
            f"process, on {n} processes, and nlp(text)"
        )
    call_seconds, call_cpu_ms = inprocess.call_latencies(texts[:latency_texts])
    zone = zone_cost(texts[:latency_texts])
    baseline = {
        "pipe_1": _rounded(one),
        "pipe_n": _rounded(many),
        "calls_n": _rounded(calls),
        "pipe_n_batches_of_64": _rounded(pipe_64),
        "pipe_n_batches_of_64_in_zones": _rounded(zone_64),
        "nlp_call_latency_ms": ms(call_seconds),
        "nlp_call_cpu_ms": round(call_cpu_ms, 3),
        "pipe_batch_latency_ms": ms(inprocess.batch_latencies(texts[:latency_texts], BATCH)),
        "memory_zone": zone,
    }
    return baseline, expected


def zone_cost(texts):
    """What nlp.memory_zone() costs a one-text call, as the server makes them.

    Two copies of the pipeline, loaded and warmed as the server loads them: one runs
    nlp.pipe([text]) plainly, so its tokenizer cache and vocabulary fill with the traffic
    (as the server did before memory zones); the other inside a zone, which never adds to
    them. Alternating text by text puts both under the same background load."""
    plain, zoned = inprocess.load_copy(), inprocess.load_copy()
    for text in texts:  # the plain copy has seen the traffic once, as a running server has
        list(plain.pipe([text]))
    out = {"plain": [], "zone": []}
    for text in texts:
        t0 = time.perf_counter()
        list(plain.pipe([text]))
        t1 = time.perf_counter()
        with zoned.memory_zone():
            list(zoned.pipe([text]))
        out["plain"].append(t1 - t0)
        out["zone"].append(time.perf_counter() - t1)
    result = {"plain_ms": ms(out["plain"]), "zone_ms": ms(out["zone"])}
    result["p50_cost_ms"] = round(result["zone_ms"]["p50"] - result["plain_ms"]["p50"], 3)
    return result


def everything(texts, n, latency_texts):
    """Load the pipeline as the server does, measure; what main() prints."""
    nlp = inprocess.load()
    baseline, expected = measure(texts, n, latency_texts)
    return {
        "baseline": baseline,
        "expected": expected,
        "versions": inprocess.versions(),
        "tokens_per_sentence": round(float(np.mean([len(nlp.make_doc(t)) for t in texts])), 1),
    }


def paired(port, texts):
    """nlp(text) here and one served request for the same text, alternately.

    Interleaving puts both under the same background load at the same moments, so the
    difference is the serving overhead, not a change in what else the machine was doing.
    """
    conn = load.Connection(port)
    reqs = [
        load.http_request(
            port,
            "POST",
            "/invocations",
            json.dumps({"text": t}, ensure_ascii=False).encode("utf-8"),
        )
        for t in texts
    ]
    local, served = [], []
    try:
        for text, req in zip(texts, reqs, strict=True):
            t0 = time.perf_counter()
            inprocess.call(text)
            t1 = time.perf_counter()
            status, _ = conn.exchange(req)
            t2 = time.perf_counter()
            if status != 200:
                raise load.ProtocolError(f"HTTP {status} for a single text")
            local.append(t1 - t0)
            served.append(t2 - t1)
    finally:
        conn.close()
    out = {"in_process_ms": ms(local), "served_ms": ms(served)}
    out["overhead_p50_ms"] = round(out["served_ms"]["p50"] - out["in_process_ms"]["p50"], 3)
    return out


def pipe_n(texts, n, timed=None, with_expected=False):
    """nlp.pipe on n processes over `timed` (default: the corpus), as measure() times
    pipe_n: the pipeline loaded, one untimed pass over the corpus first, then the timed
    run. A yardstick measured again beside what it is held against (bench.py). With
    with_expected, (figures, the entities per text)."""
    inprocess.load()
    inprocess.pipe_one_process(texts)
    figures, expected = inprocess.pipe_processes(texts if timed is None else timed, n)
    return (_rounded(figures), expected) if with_expected else _rounded(figures)


def pipe_cpu(texts):
    """nlp.pipe's CPU per document on one process, after one untimed pass: the model's
    own cost of a document, which a served request's CPU is held to (cpu_profile.py)."""
    inprocess.load()
    inprocess.pipe_one_process(texts)
    figures, _ = inprocess.pipe_one_process(texts)
    return _rounded(figures)


def transform_yardstick(texts, n, file_bytes):
    """pipe_n over the transform job's records (transform.py's layout)."""
    return pipe_n(texts, n, transform.record_texts(texts, file_bytes))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--latency-texts", type=int, required=True)
    parser.add_argument(
        "--paired-port",
        type=int,
        help="measure only the paired latency against the server on this port",
    )
    parser.add_argument(
        "--pipe-n",
        action="store_true",
        help="measure only nlp.pipe on the workers' processes over the corpus",
    )
    parser.add_argument(
        "--pipe-cpu",
        action="store_true",
        help="measure only nlp.pipe's CPU per document on one process over the corpus",
    )
    parser.add_argument(
        "--transform-bytes",
        type=int,
        help="measure only nlp.pipe over a transform job's records, files "
        "of at least this many bytes (transform.py)",
    )
    parser.add_argument(
        "--long-document",
        type=int,
        metavar="CHARS",
        help="measure only the long-document reference (long_docs.py)",
    )
    parser.add_argument("--reference", choices=["whole", "paragraphs"], default="whole")
    parser.add_argument(
        "--expected", action="store_true", help="with --pipe-n: the entities per text too"
    )
    args = parser.parse_args()
    texts = corpus.sentences(args.sentences)
    if args.pipe_n and args.expected:
        figures, expected = pipe_n(texts, args.workers, with_expected=True)
        out = {"pipe_n": figures, "expected": expected}
    elif args.pipe_n:
        out = {"pipe_n": pipe_n(texts, args.workers)}
    elif args.pipe_cpu:
        out = {"pipe_cpu": pipe_cpu(texts)}
    elif args.transform_bytes:
        out = {"transform_pipe_n": transform_yardstick(texts, args.workers, args.transform_bytes)}
    elif args.long_document:
        out = {
            "long_document": long_docs.reference(
                long_docs.document(args.long_document, texts), args.reference
            )
        }
    elif args.paired_port:
        out = {"paired": paired(args.paired_port, texts[: args.latency_texts])}
    else:
        out = everything(texts, args.workers, args.latency_texts)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
