"""A batch transform job, timed: the SageMaker SDK's local mode (v2, the notebook's SDK)
runs the image over JSON Lines files of corpus sentences with ids, as a job on AWS sends
them (SplitType=Line, MultiRecord, AssembleWith=Line). tests/transform_job.py drives it,
under .venv-notebook's Python, where the SDK lives.

Local mode writes whatever the container answers into `<file>.out`, error bodies
included, and still says Completed, so every output line is checked against its input
line: its id, no error, and its entities equal to nlp.pipe's for that text. A wrong
answer cannot count as fast.

The record layout is a pure function of the corpus and the file size, so that the
in-process yardstick (baseline.py, inside the image) runs exactly the same texts.
"""

import json
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = 2
LOCAL_MODE_PORT = 8080
PORT_WAIT_SECONDS = 900


def layout(n_texts, file_bytes, texts):
    """[[corpus index of each record], ...] per file: records {"id": "partN-I", "text"} up
    to at least file_bytes per file, as tests/test_transform.py lays them out."""
    files = []
    for n in range(FILES):
        indices, size, i = [], 0, 0
        while size < file_bytes:
            k = (i * 7 + n) % n_texts
            size += len(_line(n, i, texts[k]))
            indices.append(k)
            i += 1
        files.append(indices)
    return files


def _line(n, i, text):
    return (json.dumps({"id": f"part{n}-{i}", "text": text}, ensure_ascii=False) + "\n").encode(
        "utf-8"
    )


def record_texts(texts, file_bytes):
    """Every record's text, file after file: what the job runs, for the yardstick."""
    return [texts[k] for indices in layout(len(texts), file_bytes, texts) for k in indices]


def write_inputs(folder, texts, file_bytes):
    """The job's input files in folder; returns the layout (corpus index per record)."""
    files = layout(len(texts), file_bytes, texts)
    for n, indices in enumerate(files):
        with open(Path(folder) / f"part-{n}.jsonl", "wb") as f:
            for i, k in enumerate(indices):
                f.write(_line(n, i, texts[k]))
    return files


def _port_in_use():
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", LOCAL_MODE_PORT)) == 0


def run_job(image, input_dir, output_dir, job):
    """{"status", "seconds"} of one local-mode transform job (tests/transform_job.py)."""
    # Imported here, on the host: baseline.py imports this module inside the image, where
    # only bench/ is mounted.
    if str(ROOT) not in sys.path:  # once, however many jobs run
        sys.path.insert(0, str(ROOT))
    from harness import transform_job

    if not transform_job.NOTEBOOK_PYTHON.exists():
        raise SystemExit(
            f"bench: {transform_job.NOTEBOOK_PYTHON} is missing (scripts/setup-notebook.sh); "
            "the transform job needs the SageMaker SDK"
        )
    # Local mode publishes the container's port 8080 on the host and sends every request
    # there: with something else on it, the job would fail or talk to another server. On
    # a shared machine that is often another local-mode job: wait for it, a while.
    deadline = time.monotonic() + PORT_WAIT_SECONDS
    while _port_in_use():
        if time.monotonic() > deadline:
            raise SystemExit(
                f"bench: port {LOCAL_MODE_PORT} is in use (another local-mode "
                f"job or server?) after {PORT_WAIT_SECONDS} s; the transform "
                "job needs it"
            )
        time.sleep(5)
    out = transform_job.run(image, input_dir, output_dir, job, timeout=3600)
    if out.returncode:
        raise SystemExit(f"bench: the transform job {job} failed: {out.stderr[-6000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def check_outputs(output_dir, files, texts, expected):
    """Every output line against its input record: its id, no error line, its entities
    ([text, label, start, end]) equal to expected[corpus index]."""
    records = errors = wrong_ids = mismatches = blank = 0
    first = []
    for n, indices in enumerate(files):
        path = Path(output_dir) / f"part-{n}.jsonl.out"
        lines = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    # AssembleWith=Line puts a newline after each mini-batch's answer,
                    # which already ends with one: an empty line, not an answer.
                    blank += 1
                    continue
                i = lines
                lines += 1
                answer = json.loads(line)
                k = indices[i] if i < len(indices) else None
                if "error" in answer or "entities" not in answer:
                    errors += 1
                elif answer.get("id") != f"part{n}-{i}":
                    wrong_ids += 1
                elif (
                    k is None
                    or [[e["text"], e["label"], e["start"], e["end"]] for e in answer["entities"]]
                    != expected[k]
                ):
                    mismatches += 1
                else:
                    continue
                if len(first) < 5:
                    first.append(f"{path.name}:{i + 1}: {line[:200]}")
        records += len(indices)
        missing = len(indices) - lines
        if missing and len(first) < 5:
            first.append(f"{path.name}: {lines} lines for {len(indices)} records")
        mismatches += abs(missing)
    return {
        "records": records,
        "error_lines": errors,
        "wrong_ids": wrong_ids,
        "mismatches": mismatches,
        "blank_lines": blank,
        "first": first,
    }


def file_sizes_mb(folder):
    return [round(p.stat().st_size / 1e6, 2) for p in sorted(Path(folder).glob("*.jsonl"))]
