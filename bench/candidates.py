#!/usr/bin/env python3
"""Candidate cuts to a one-text request's CPU, each measured alone against the image as it is.

usage: candidates.py [--image NAME] [--workers N] [--clients N] [--requests N]
                     [--rounds N] [--out DIR] [--no-docs]

A candidate is the image with one change: a file of /opt/program rewritten (from this
repository's copy, mounted read-only over the image's) or a setting. Every candidate and
the image as shipped are up at once and take the same one-text load in turn, round after
round (each round starting one further on), so that each is compared with the shipped
server at like moments. Each run counts the container's cgroup CPU per request. Writes
candidates.json to --out (bench/results/) and the table into docs/how-it-works.md
(between its bench:candidates markers) unless --no-docs. A change is kept in the image
only where this shows it helps; the table says what was tried.
"""

import argparse
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import corpus
import cpu_profile
import load
import targets

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROGRAM = ROOT / "container" / "NER"
UPSTREAM = "        server unix:@RUN_DIR@/gunicorn.sock fail_timeout=0;\n"
INVOCATIONS = "        location = /invocations {\n"
INVOCATIONS_LOG_OFF = (
    INVOCATIONS
    + "            access_log off;  # the worker's line (above); an error of nginx's has its own\n"
)
LOAD_WSGI = "    def load_wsgi(self) -> None:\n"
SKIP_WAIT = (
    "    def enqueue_req(self, conn: Any) -> None:\n"
    "        conn.data_ready = True\n"
    "        super().enqueue_req(conn)\n\n"
)
# {name: {"files": {file: [(old, new), ...]}, "before": {file: commit}, "env": {...}}}:
# edits to today's file, or the file as it was at a commit (a change since shipped, put
# back). An old text that is not in the file stops the run, so a candidate never silently
# measures the shipped code.
CANDIDATES = {
    "as shipped": {},
    "nginx keeps its connections to gunicorn open (upstream keepalive)": {
        "files": {
            "nginx.conf": [(UPSTREAM, UPSTREAM + "        keepalive 32;\n")],
            "launch.py": [
                ('        "--keep-alive",\n        "0",', '        "--keep-alive",\n        "75",')
            ],
        }
    },
    # Shipped since its run here: this candidate puts nginx's line back.
    "two log lines per request: nginx's access log for /invocations too": {
        "files": {"nginx.conf": [(INVOCATIONS_LOG_OFF, INVOCATIONS)]}
    },
    # Shipped since its run here: this candidate puts Flask's view for /invocations back.
    "Flask's dispatch for /invocations too (its view, as before invocations.py)": {
        "before": {"predictor.py": "33d872f"}
    },
    # gthread waits on a new selector of its own for each connection's first bytes; nginx
    # connects only once it holds the whole request, so they are there at once.
    "gunicorn reads a new connection at once (no per-connection selector)": {
        "files": {"worker.py": [(LOAD_WSGI, SKIP_WAIT + LOAD_WSGI)]}
    },
    "MODEL_SERVER_THREADS=8 (fewer threads to wake, smaller merged calls)": {
        "env": {"MODEL_SERVER_THREADS": "8"}
    },
    "MODEL_SERVER_THREADS=32": {"env": {"MODEL_SERVER_THREADS": "32"}},
}


def log(message):
    print(f"candidates: {message}", file=sys.stderr, flush=True)


def mounts(candidate, folder):
    """`docker run` arguments mounting the candidate's rewritten files."""
    texts = {name: _rewritten(name, edits) for name, edits in candidate.get("files", {}).items()}
    for name, commit in candidate.get("before", {}).items():
        texts[name] = git_show(commit, f"container/NER/{name}")
    args = []
    for name, text in texts.items():
        path = Path(folder) / name
        path.write_text(text)
        args += ["-v", f"{path}:/opt/program/{name}:ro"]
    targets.shared_with_containers(folder)
    return args


def _rewritten(name, edits):
    text = (PROGRAM / name).read_text()
    for old, new in edits:
        if old not in text:
            raise SystemExit(f"candidates: {name} no longer has {old!r}")
        text = text.replace(old, new)
    return text


def git_show(commit, path):
    """A file of this repository as it was at a commit."""
    return subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def measure(servers, texts, clients, rounds):
    """{name: [{cpu_ms_per_request, requests_per_s, p50_ms}, ...]}, the rounds in turn."""
    runs = {name: [] for name in servers}
    bodies = load.one_text_bodies(texts)
    reqs = {name: load.invocations(s.port, bodies) for name, s in servers.items()}
    for name, s in servers.items():
        load.run(s.port, reqs[name][:2048], clients)  # every worker and thread warm
    names = list(servers)
    for i in range(rounds):
        # Each round starts one candidate further on, so none is always first or last.
        for name in names[i % len(names) :] + names[: i % len(names)]:
            s = servers[name]
            cpu0 = s.container_cpu_seconds()
            r = load.run(s.port, reqs[name], clients)
            cpu = s.container_cpu_seconds() - cpu0
            runs[name].append(
                {
                    "cpu_ms_per_request": round(1000 * cpu / len(texts), 3),
                    "requests_per_s": round(len(texts) / r.seconds, 1),
                    "p50_ms": round(1000 * float(np.median(r.latencies)), 2),
                }
            )
            log(f"round {i + 1}: {name}: {runs[name][-1]}")
    return runs


def summary(runs):
    """Medians per candidate, and each round's CPU over the shipped server's that round."""
    shipped = runs["as shipped"]
    out = {}
    for name, rounds in runs.items():
        ratios = [
            r["cpu_ms_per_request"] / s["cpu_ms_per_request"]
            for r, s in zip(rounds, shipped, strict=True)
        ]
        out[name] = {
            key: float(np.median([r[key] for r in rounds]))
            for key in ("cpu_ms_per_request", "requests_per_s", "p50_ms")
        }
        out[name]["cpu_over_shipped"] = round(float(np.median(ratios)), 3)
        out[name]["cpu_over_shipped_rounds"] = [round(x, 3) for x in ratios]
    return out


def table(c):
    rows = [
        f"From `make profile` on {c['date']} (`bench/results/candidates.json`): image "
        f"{c['image']['id']}, {c['workers']} workers, {c['clients']} clients, "
        f"{c['requests']} one-text requests a run, {c['rounds']} rounds in turn; medians.",
        "",
        "| candidate | CPU ms per request | CPU / as shipped (each round) | requests/s | p50 ms |",
        "|---|---:|---|---:|---:|",
    ]
    for name, s in c["summary"].items():
        rounds = ", ".join(f"{x:.3f}" for x in s["cpu_over_shipped_rounds"])
        rows.append(
            f"| {name} | {s['cpu_ms_per_request']:.3f} | {s['cpu_over_shipped']:.3f} "
            f"({rounds}) | {s['requests_per_s']:.0f} | {s['p50_ms']:.1f} |"
        )
    return "\n".join(rows)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cpu_profile.add_load_arguments(parser, requests=8192)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def main():
    args = parse_args()
    texts = corpus.sentences(args.requests)
    servers = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for i, (name, candidate) in enumerate(CANDIDATES.items()):
                folder = Path(tmp) / str(i)
                folder.mkdir()
                log(f"starting {name}")
                servers[name] = targets.ImageServer(
                    args.workers,
                    False,
                    args.image,
                    env=candidate.get("env"),
                    run_args=mounts(candidate, folder),
                ).start()
            runs = measure(servers, texts, args.clients, args.rounds)
        finally:
            for s in servers.values():
                s.stop()
    found = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "image": targets.image_info(args.image),
        "workers": args.workers,
        "clients": args.clients,
        "requests": args.requests,
        "rounds": args.rounds,
        "runs": runs,
        "summary": summary(runs),
    }
    cpu_profile.write(args, "candidates", found, table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
