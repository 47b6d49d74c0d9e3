"""Documents past the chunk size: the served entities of one long text/plain document
against spaCy's own on the same document.

The document is news paragraphs: corpus sentences, a few to a paragraph, paragraphs
joined with blank lines, so the server (pieces.py) has paragraph breaks to cut at. Two
references, run in-process (inside the image for the image target, by baseline.py):
- "whole": the whole document in one nlp() call, which spaCy allows up to nlp.max_length
  (1,000,000 characters): what the served pieces must equal;
- "paragraphs": each paragraph run alone (nlp.pipe over the paragraphs), for a document
  longer than nlp.max_length, where no whole-document call exists.
Entities are compared as (start, end, label) on the original text; F1 counts an entity
right only when all three match.
"""

import http.client
import json
import random
import threading
import time

import corpus

SEPARATOR = "\n\n"


def document(chars, texts, seed=corpus.SEED):
    """At most `chars` characters of paragraphs of 3 to 8 corpus sentences (whole
    sentences, whole paragraphs but the last); the same arguments give the same text."""
    rng = random.Random(seed + chars)
    out, size = [], 0
    while True:
        paragraph = " ".join(rng.choice(texts) for _ in range(rng.randint(3, 8)))
        room = chars - size - (len(SEPARATOR) if out else 0)
        if len(paragraph) > room:
            words = []  # the last paragraph: as many whole sentences as fit
            for sentence in paragraph.split(". "):
                candidate = ". ".join(words + [sentence])
                if len(candidate) + 1 > room:
                    break
                words.append(sentence)
            if words:
                last = ". ".join(words)
                out.append(last if last.endswith(".") else last + ".")
            return SEPARATOR.join(out)
        out.append(paragraph)
        size += len(paragraph) + (len(SEPARATOR) if len(out) > 1 else 0)


def paragraphs(doc):
    """[(start offset, paragraph)] of a document."""
    out, start = [], 0
    for paragraph in doc.split(SEPARATOR):
        out.append((start, paragraph))
        start += len(paragraph) + len(SEPARATOR)
    return out


def _rss_anon_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024 / 1e6
    return 0.0


def reference(doc, how):
    """spaCy's entities for doc, [[start, end, label, text], ...], loaded as the server
    loads the pipeline; with the call's time and the peak anonymous memory of this process
    above what it held just before the call (sampled every 20 ms, as the cgroup's anon
    is for the served side)."""
    import resource

    import inprocess

    nlp = inprocess.load()
    nlp.max_length = max(nlp.max_length, len(doc) + 1)
    list(nlp.pipe(corpus.sentences(4096)))  # the corpus's words seen once, as for the server
    before = _rss_anon_mb()
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _rss_anon_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    if how == "whole":
        found = [[e.start_char, e.end_char, e.label_, e.text] for e in nlp(doc).ents]
    else:
        found = []
        parts = paragraphs(doc)
        for (start, _), d in zip(parts, nlp.pipe(text for _, text in parts), strict=True):
            found += [[start + e.start_char, start + e.end_char, e.label_, e.text] for e in d.ents]
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_anon_mb())
    return {
        "reference": how,
        "chars": len(doc),
        "entities": found,
        "seconds": round(seconds, 2),
        "peak_anon_above_start_mb": round(peak[0] - before, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000, 1),
    }


def post(port, doc, timeout=3600):
    """(seconds, [[start, end, label, text], ...]) of one text/plain request for doc."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        t0 = time.perf_counter()
        conn.request(
            "POST",
            "/invocations",
            body=doc.encode("utf-8"),
            headers={"Content-Type": "text/plain", "Accept": "application/json"},
        )
        response = conn.getresponse()
        body = response.read()
        seconds = time.perf_counter() - t0
    finally:
        conn.close()
    if response.status != 200:
        raise SystemExit(
            f"bench: a document of {len(doc):,} characters got HTTP "
            f"{response.status}: {body[:300]!r}"
        )
    return seconds, [
        [e["start"], e["end"], e["label"], e["text"]] for e in json.loads(body)["entities"]
    ]


def compare(doc, served, expected):
    """F1 of served against expected on (start, end, label), and the served entities whose
    offsets do not give back their text."""
    a = {tuple(e[:3]) for e in served}
    b = {tuple(e[:3]) for e in expected}
    right = len(a & b)
    precision = right / len(a) if a else float(not b)
    recall = right / len(b) if b else float(not a)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    wrong = [e for e in served if doc[e[0] : e[1]] != e[3]]
    return {
        "f1": round(f1, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "served_entities": len(served),
        "reference_entities": len(expected),
        "wrong_offsets": len(wrong),
        "first_wrong": wrong[:3],
    }
