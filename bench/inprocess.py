"""The yardstick: the same model and components, run by spaCy in this process.

The pipeline is loaded by the server's own pipeline.load(settings), so the baseline runs
exactly the components the server runs (for en_core_web_sm: only `ner`) and is warmed the
same way.
"""

import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

# The server's own modules: from this checkout, or (BENCH_PROGRAM_DIR) from the image.
sys.path.insert(
    0,
    os.environ.get("BENCH_PROGRAM_DIR")
    or str(Path(__file__).resolve().parent.parent / "container" / "NER"),
)

import pipeline  # noqa: E402
from settings import Settings  # noqa: E402

_nlp = None  # module-level so that forked worker processes inherit the loaded pipeline


def load():
    """Load the pipeline every in-process figure uses (forked processes inherit it)."""
    global _nlp
    _nlp = load_copy()
    return _nlp


def load_copy():
    """Another copy of the pipeline, loaded as the server loads it (for side-by-side runs)."""
    return pipeline.load(Settings.from_env({**os.environ, "SPACY_FULL_PIPELINE": "false"}))


def entities(doc):
    """[[text, label, start, end], ...]: what a served answer must hold for this doc."""
    return [[e.text, e.label_, e.start_char, e.end_char] for e in doc.ents]


def _cpu():
    t = os.times()
    return t.user + t.system


def pipe_one_process(texts):
    """nlp.pipe over the whole corpus with the model's own batch size."""
    cpu0, t0 = _cpu(), time.perf_counter()
    found = [entities(d) for d in _nlp.pipe(texts)]
    seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    return {
        "processes": 1,
        "docs": len(texts),
        "seconds": seconds,
        "docs_per_s": len(texts) / seconds,
        "cpu_ms_per_doc": 1000 * cpu / len(texts),
    }, found


def _pipe_chunk(chunk):
    return [entities(d) for d in _nlp.pipe(chunk)]


def _zone_chunk(chunk):
    """As the server runs a merged call: nlp.pipe inside nlp.memory_zone(), entities made
    before the zone closes."""
    with _nlp.memory_zone():
        return [entities(d) for d in _nlp.pipe(chunk)]


def _call_chunk(chunk):
    return [entities(_nlp(text)) for text in chunk]


def _warm(_):
    time.sleep(0.05)  # keeps each task on its own worker, so every worker has started
    return os.getpid()


def pipe_processes(texts, processes, one_at_a_time=False, chunk=None, zone=False):
    """nlp.pipe on `processes` forked processes sharing the corpus in chunks.

    This is the ceiling for N cores: the children inherit the loaded model by fork and
    send back only entity lists, so almost nothing but spaCy's own work is timed. (spaCy's
    nlp.pipe(n_process=N) pickles whole Docs back to the parent, which is slower.)
    With one_at_a_time, each child calls nlp(text) per text instead: the same unit of
    work as a single-text request, without the HTTP around it. With zone, each chunk runs
    inside nlp.memory_zone(), as the server runs it.
    """
    chunk = chunk or max(16, min(_nlp.batch_size, math.ceil(len(texts) / (processes * 4))))
    chunks = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        pool.map(_warm, range(processes * 2), chunksize=1)
        t0 = time.perf_counter()
        work = _call_chunk if one_at_a_time else _zone_chunk if zone else _pipe_chunk
        found = [e for part in pool.imap(work, chunks, chunksize=1) for e in part]
        seconds = time.perf_counter() - t0
    return {
        "processes": processes,
        "docs": len(texts),
        "seconds": seconds,
        "docs_per_s": len(texts) / seconds,
        "chunk": chunk,
    }, found


def batch_latencies(texts, size):
    """Seconds of nlp.pipe over each batch of `size` texts, as one batch request runs."""
    out = []
    for i in range(0, len(texts) - size + 1, size):
        t0 = time.perf_counter()
        list(_nlp.pipe(texts[i : i + size]))
        out.append(time.perf_counter() - t0)
    return out


def call_latencies(texts):
    """(seconds of nlp(text) for each text, one call at a time; CPU ms per call)."""
    out = []
    cpu0 = _cpu()
    for text in texts:
        t0 = time.perf_counter()
        _nlp(text)
        out.append(time.perf_counter() - t0)
    return out, 1000 * (_cpu() - cpu0) / len(texts)


def call(text):
    """nlp(text), for a caller that times it; loads the pipeline on first use."""
    if _nlp is None:
        load()
    return _nlp(text)


def versions():
    import spacy

    return {
        "python": sys.version.split()[0],
        "spacy": spacy.__version__,
        "model": f"{_nlp.meta.get('lang')}_{_nlp.meta.get('name')}-{_nlp.meta.get('version')}",
        "components": ",".join(_nlp.pipe_names),
    }
