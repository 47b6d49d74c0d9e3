"""pieces.py on its own: where a long text is cut, and how entities come back together.

The "model" here is a regular expression, whose matches, like an entity_ruler's, do not
depend on the text around them: so the entities put back from the pieces must be exactly
those of the whole text, wherever the cuts fall. (test_app.py runs the same through the
app and a real spaCy pipeline.)
"""

import itertools
import random
import re

import pytest

import pieces

ENTITY = re.compile(r"New York|Alice|Acme Corp")


def find(text):
    return [
        {"text": m.group(), "label": "X", "start": m.start(), "end": m.end()}
        for m in ENTITY.finditer(text)
    ]


# Spans, unlike entities, may overlap each other (as spancat's do): each pattern finds its
# own, wherever another's lie.
SPANS = [re.compile(p) for p in (r"New York", r"York", r"Acme Corp", r"Corp", r"met in")]


def answer(text):
    """A text's answer as results.py makes it: entities, and spans under one key."""
    spans = [
        {"text": m.group(), "label": p.pattern, "start": m.start(), "end": m.end(), "score": 0.5}
        for p in SPANS
        for m in p.finditer(text)
    ]
    spans.sort(key=lambda s: (s["start"], s["end"]))
    return {"entities": find(text), "spans": {"sc": spans}}


def through_pieces(texts, size):
    parts, plan = pieces.split(texts, size)
    assert all(len(p) <= size for p in parts)
    return [r["entities"] for r in pieces.put_back([{"entities": find(p)} for p in parts], plan)]


def spans_through_pieces(texts, size):
    parts, plan = pieces.split(texts, size)
    return pieces.put_back([answer(p) for p in parts], plan)


def random_text(rng, n):
    words = ["New York", "Alice", "Acme Corp", "the", "a", "met", "in", "said", "x" * 30]
    separators = [" ", " ", " ", "\n", "\n\n", "  \n \n", "\t"]
    return "".join(rng.choice(words) + rng.choice(separators) for _ in range(n))


@pytest.mark.parametrize("seed", range(40))
def test_entities_through_pieces_are_those_of_the_whole_text(seed):
    rng = random.Random(seed)
    texts = [random_text(rng, rng.randint(1, 800)) for _ in range(3)]
    size = rng.choice([401, 500, 777, 1000, 5000])
    assert through_pieces(texts, size) == [find(t) for t in texts]


@pytest.mark.parametrize("seed", range(40))
def test_overlapping_spans_through_pieces_are_those_of_the_whole_text(seed):
    """Spans that overlap each other and the cuts come back once each, with their
    scores, offsets on the whole text, as if it had run whole."""
    rng = random.Random(seed)
    texts = [random_text(rng, rng.randint(1, 800)) for _ in range(3)]
    size = rng.choice([401, 500, 777, 1000])
    got = spans_through_pieces(texts, size)
    assert got == [answer(t) for t in texts]
    for text, result in zip(texts, got, strict=True):
        assert all(text[s["start"] : s["end"]] == s["text"] for s in result["spans"]["sc"])


def test_a_text_within_the_size_is_one_piece_unchanged():
    parts, plan = pieces.split(["Alice in New York", ""], 1000)
    assert parts == ["Alice in New York", ""] and plan == [None, None]


def test_paragraph_breaks_are_preferred_and_pieces_cover_the_text():
    text = ("Alice said hello. " * 20 + "\n\n") * 10  # 10 paragraphs of 362 characters
    spans = pieces.cuts(text, 1000)
    assert all(text[cut - 2 : cut].strip() == "" for _, _, cut in spans)
    assert spans[0][0] == 0 and spans[-1][2] == len(text)
    assert all(a[2] == b[0] for a, b in itertools.pairwise(spans))  # consecutive


def test_a_run_without_whitespace_is_cut_anywhere_and_still_covered():
    text = "y" * 5000 + " Alice " + "z" * 3000
    assert through_pieces([text], 1000) == [find(text)]
