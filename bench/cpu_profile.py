#!/usr/bin/env python3
"""Where the CPU of a one-text request goes: the image under one-text load, profiled.

usage: cpu_profile.py [--image NAME] [--workers N] [--clients N] [--requests N] [--rate HZ]
                      [--out DIR] [--no-docs]

Starts the image (host network, NER components only), warms it, then sends --requests
one-text requests from --clients closed-loop clients. During that run it reads:
- the container's cgroup CPU (every process of it, counted by the kernel);
- each process's own CPU, grouped by its role (nginx, gunicorn's workers, their
  master, serve);
then the same requests again with py-spy sampling every worker (the thread holding the
GIL, without pausing the worker), whose samples split the workers' CPU into the parts of
the request path (PARTS below) in proportion. CPU a worker spends without the GIL
(system calls; the model's numeric kernels where they release it) is spread the same
way, so the model's share is if anything understated.
First, nlp.pipe's CPU per document over the same texts, in the image. Writes
profile.json and profile.md to --out (bench/results/), and the table into
docs/how-it-works.md (between <!-- bench:profile:start --> and its end marker) unless
--no-docs. py-spy is this host's binary, mounted into the container and run there
(docker exec, SYS_PTRACE), where it can tell a running thread from a waiting one; it
takes CPU from the same cores, so its samples give only shares of the workers' CPU,
and the CPU totals come from the run without it.
"""

import argparse
import collections
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

import bench
import corpus
import load
import report
import targets

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The parts of the request path a worker's sample is put in. The memory zone and the model
# are whole-stack parts (everything spaCy calls is the model's, wherever it is called
# from); for the others the frame nearest the stack's top decides, so the logging or the
# JSON that Flask or the runner calls counts as logging or JSON.
WHOLE_STACK_PARTS = 2
PARTS = [
    ("memory zone (spaCy freeing a call's strings)", [r"memory_zone \(", r"_zone_exit"]),
    ("nlp.pipe (the model)", [r"[(/]spacy/", r"[(/]thinc/", r"[(/]numpy/", r"[(/]blis/"]),
    ("logging", [r"[(/]logging/"]),
    (
        "decode and encode (JSON)",
        [r"[(/]decode\.py", r"[(/]encode\.py", r"[(/]protocol\.py", r"[(/]json/"],
    ),
    (
        "threads waking (events, locks, the GIL)",
        [r"^(Condition\.wait|Event\.wait|Condition\.notify|Event\.set|_worker) \("],
    ),
    ("batcher (merging, hand-off to the model thread)", [r"[(/]batcher\.py", r"[(/]results\.py"]),
    (
        "runner (the request path's steps)",
        [r"[(/]runner\.py", r"[(/]predictor\.py", r"[(/]invocations\.py", r"[(/]http_answers\.py"],
    ),
    ("Flask and Werkzeug (request, response)", [r"[(/]flask/", r"[(/]werkzeug/"]),
    ("gunicorn HTTP parsing and writing", [r"[(/]gunicorn/http/", r"[(/]gunicorn/util\.py"]),
    (
        "gunicorn's threads, accept and poll",
        [
            r"[(/]gunicorn/",
            r"[(/]selectors\.py",
            r"[(/]socket\.py",
            r"[(/]concurrent/",
            r"[(/]threading\.py",
        ],
    ),
]
OTHER = "other Python"
# Where the container sees py-spy (this host's, mounted read-only) and writes its files.
PY_SPY = "/opt/py-spy"
SPY_DIR = "/tmp/py-spy-out"


def log(message):
    print(f"profile: {message}", file=sys.stderr, flush=True)


def part_of(stack):
    """The PARTS name a py-spy raw stack (frames joined by ';', outermost first) is in."""
    for name, patterns in PARTS[:WHOLE_STACK_PARTS]:
        if any(re.search(p, stack) for p in patterns):
            return name
    for frame in reversed(stack.split(";")):
        for name, patterns in PARTS[WHOLE_STACK_PARTS:]:
            if any(re.search(p, frame) for p in patterns):
                return name
    return OTHER


def read_raw(path):
    """{part: samples} from py-spy's raw output (one 'stack count' per line)."""
    parts = collections.Counter()
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            parts[part_of(stack)] += int(count)
    return parts


def roles(server):
    """{role: [psutil.Process]} of the container's processes."""
    found = collections.defaultdict(list)
    for p in server.processes():
        try:
            cmd = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if p.name() == "nginx" or "nginx" in cmd.split(" ")[0]:
            found["nginx"].append(p)
        elif "gunicorn" in cmd:
            parent = p.parent()
            master = parent is None or "gunicorn" not in " ".join(parent.cmdline())
            found["gunicorn master" if master else "workers"].append(p)
        elif "serve" in cmd:
            found["serve"].append(p)
        else:
            found["other processes"].append(p)
    return found


def context_switches(processes):
    """Voluntary and involuntary context switches so far, over every thread of processes:
    how often the request path hands work from one thread to another."""
    total = 0
    for p in processes:
        for status in Path(f"/proc/{p.pid}/task").glob("*/status"):
            try:
                lines = status.read_text().splitlines()
            except OSError:  # a thread or process that ended since
                continue
            total += sum(int(line.split()[1]) for line in lines if "ctxt_switches" in line)
    return total


def container_pid(process):
    """The PID process has inside its container (the last of /proc's NSpid)."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise SystemExit(f"profile: no NSpid for process {process.pid}")


def pyspy(server, process, name, rate):
    """py-spy recording one worker, run inside the container (docker exec): there the
    thread ids Python reports are the kernel's, so py-spy can tell an idle thread from a
    running one (from this host it counts every thread as running)."""
    cmd = ["docker", "exec", "-u", "0", server.id, PY_SPY, "record"]
    # --gil: samples of the thread holding the GIL only. A thread that is runnable but
    # waiting for a core looks active to py-spy, and on a saturated host that is most of
    # them; the GIL's holder is the one running Python.
    cmd += ["--pid", str(container_pid(process)), "--rate", str(rate), "--nonblocking", "--gil"]
    cmd += ["--format", "raw", "--output", f"{SPY_DIR}/{name}"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop_pyspies(server, spies):
    """SIGINT to each py-spy (found as this host's processes): it writes its file then."""
    for p in server.processes():
        try:
            if p.name() == "py-spy":
                p.send_signal(signal.SIGINT)
        except psutil.NoSuchProcess:
            pass
    for proc in spies:
        _, err = proc.communicate(timeout=60)
        if proc.returncode not in (0, 130, -signal.SIGINT):
            raise SystemExit(f"profile: py-spy failed ({proc.returncode}): {err[-1000:]}")


def pipe_cpu_ms(image, texts):
    """nlp.pipe's CPU ms per document over texts, in the image (baseline.py --pipe-cpu,
    run as bench.py runs it)."""
    found = bench.measure_baseline("image", image, texts, 1, {"latency_texts": 1}, pipe_cpu=True)
    return found["pipe_cpu"]["cpu_ms_per_doc"]


def measured_run(server, reqs, clients):
    """One run, nothing attached: (load.Run, {role: CPU seconds}, container CPU seconds,
    context switches)."""
    by_role = roles(server)
    everyone = [p for ps in by_role.values() for p in ps]
    cpu0 = {role: targets.cpu_of(ps) for role, ps in by_role.items()}
    switches0 = context_switches(everyone)
    container0 = server.container_cpu_seconds()
    r = load.run(server.port, reqs, clients)
    container = server.container_cpu_seconds() - container0
    switches = context_switches(everyone) - switches0
    cpu = {role: targets.cpu_of(ps) - cpu0[role] for role, ps in by_role.items()}
    return r, cpu, container, switches


def sampled_run(server, reqs, clients, rate, spy_dir):
    """One run with py-spy on every worker: {part: samples}. py-spy runs in the
    container's cgroup, so this run's CPU figures are not the server's."""
    spies = [pyspy(server, p, f"{p.pid}.txt", rate) for p in roles(server)["workers"]]
    time.sleep(2)  # py-spy attached
    load.run(server.port, reqs, clients)
    stop_pyspies(server, spies)
    samples = collections.Counter()
    for path in Path(spy_dir).glob("*.txt"):
        samples.update(read_raw(path))
    return samples


def table(p):
    """The markdown of a profile: ms of CPU per request, per part."""
    n = p["requests"]
    per = {role: 1000 * s / n for role, s in p["cpu_s"].items()}
    worker_ms = per.get("workers", 0.0)
    total = sum(p["samples"].values()) or 1
    rows = [
        "| where | CPU ms per request | share of the container's |",
        "|---|---:|---:|",
    ]
    container_ms = 1000 * p["container_cpu_s"] / n
    for role in ("nginx", "gunicorn master", "serve", "other processes"):
        if role in per:
            rows.append(f"| {role} | {per[role]:.3f} | {per[role] / container_ms:.0%} |")
    for part, count in sorted(p["samples"].items(), key=lambda kv: -kv[1]):
        ms = worker_ms * count / total
        rows.append(f"| worker: {part} | {ms:.3f} | {ms / container_ms:.0%} |")
    rows.append(f"| **the container (cgroup)** | **{container_ms:.3f}** | 100% |")
    rows.append(f"| nlp.pipe alone, per document | {p['pipe_cpu_ms_per_doc']:.3f} | |")
    head = (
        f"From `{p['command']}` on {p['date']} (`bench/results/profile.json`): image "
        f"{p['image']['id']}, {p['workers']} workers, {p['clients']} clients, {n} one-text "
        f"requests, {p['docs_per_s']:.0f} requests/s, "
        f"{p['context_switches_per_request']:.0f} context switches per request; {total} py-spy "
        "samples of the workers holding the GIL. "
        f"nlp.pipe's CPU per document over the CPU per request: "
        f"**{p['efficiency']:.2f}**."
    )
    return "\n".join([head, "", *rows])


def add_load_arguments(parser, requests):
    """The arguments both make-profile tools take: the image, its load, where to write."""
    parser.add_argument("--image", default=targets.DEFAULT_IMAGE)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=requests)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/how-it-works.md")


def write(args, name, found, text):
    """found as --out/NAME.json, and text between docs/how-it-works.md's NAME markers
    (report.PROFILE_TABLES) unless --no-docs; text on stdout."""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(found, indent=2) + "\n")
    if not args.no_docs:
        report.replace_between(ROOT / report.PROFILE_TABLES[name][0], name, text)
    print(text)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, requests=16384)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    return parser.parse_args()


def main():
    args = parse_args()
    texts = corpus.sentences(args.requests)
    log(f"nlp.pipe's CPU per document in {args.image}")
    pipe_ms = pipe_cpu_ms(args.image, texts[:4096])
    spy_dir = Path(tempfile.mkdtemp(prefix="profile-"))
    mounts = ["-v", f"{Path(sys.executable).with_name('py-spy').resolve()}:{PY_SPY}:ro"]
    mounts += ["-v", f"{spy_dir}:{SPY_DIR}", "--cap-add", "SYS_PTRACE"]
    server = targets.ImageServer(args.workers, False, args.image, run_args=mounts).start()
    try:
        reqs = load.invocations(server.port, load.one_text_bodies(texts))
        load.run(server.port, reqs[:2048], args.clients)  # warm every worker and thread
        log(f"{len(reqs)} one-text requests from {args.clients} clients, measured")
        r, cpu, container, switches = measured_run(server, reqs, args.clients)
        log("the same again, py-spy sampling the workers")
        samples = sampled_run(server, reqs, args.clients, args.rate, spy_dir)
    finally:
        server.stop()
        shutil.rmtree(spy_dir, ignore_errors=True)
    n = len(reqs)
    profile = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make profile",
        "image": targets.image_info(args.image),
        "workers": args.workers,
        "clients": args.clients,
        "requests": n,
        "docs_per_s": round(n / r.seconds, 1),
        "cpu_s": {role: round(s, 3) for role, s in cpu.items()},
        "container_cpu_s": round(container, 3),
        "context_switches_per_request": round(switches / n, 1),
        "samples": dict(samples),
        "pipe_cpu_ms_per_doc": pipe_ms,
        "efficiency": round(pipe_ms / (1000 * container / n), 3),
    }
    write(args, "profile", profile, table(profile))
    (args.out / "profile.md").write_text(table(profile) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
