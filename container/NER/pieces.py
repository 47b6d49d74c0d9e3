"""Long texts in pieces: split a document past the chunk size, put its entities and spans back.

spaCy refuses a text longer than nlp.max_length, and the memory it needs for one Doc grows
with its length. A text longer than MODEL_SERVER_CHUNK_CHARACTERS is therefore cut into
pieces no longer than that (nor than the unit they go in, cutting.py: a fan-out part's
where the request runs on every worker), and each piece is one more text in the same
merged nlp.pipe call as everything else (batcher.py). Entity offsets are shifted back onto
the original text, so text[start:end] is the entity's text, as for a text run whole.

Where to cut, best first:
- a paragraph break (a blank line): spaCy's NER looks only a few tokens around each word,
  so a paragraph cut changes nothing it would have found;
- a line break, then any whitespace, for a paragraph longer than a piece;
- anywhere, for a run of that many characters without whitespace.
A cut of the last two kinds may fall inside an entity ("New | York"). Those pieces overlap
by OVERLAP characters, and each entity is kept from the piece in which it starts before
the cut, where it lies whole; the other piece's copy, and anything of it that would
overlap a kept entity, is dropped.
"""

import re

from results import Records, Result
from tuning import OVERLAP

# Where a piece may end, best first (the module's docstring).
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_LINE = re.compile(r"\n\s*")
_SPACE = re.compile(r"\s+")
# The (start, end, cut) of a text's pieces; per text, those or None for a text run whole.
Cuts = list[tuple[int, int, int]]
Plan = list[Cuts | None]


def _last_break(text: str, start: int, end: int, pattern: re.Pattern[str]) -> int | None:
    """The end of the last match of pattern that ends within (start, end], or None."""
    best = None
    for m in pattern.finditer(text, start, end):
        if m.end() > start:
            best = m.end()
    return best


def cuts(text: str, size: int) -> list[tuple[int, int, int]]:
    """The (start, end) of each piece of text: consecutive and within size, or the whole
    text when it fits. Pieces after a cut inside a paragraph start OVERLAP characters
    early; see put_back."""
    if size <= 2 * OVERLAP:
        raise ValueError(f"piece size {size} must be over {2 * OVERLAP}")
    spans, start = [], 0
    while len(text) - start > size:
        end = start + size
        cut = _last_break(text, start, end, _PARAGRAPH)
        if cut is not None:
            spans.append((start, cut, cut))
            start = cut
            continue
        # Inside a paragraph: leave room for the overlap, so the next piece still moves on.
        end -= OVERLAP
        cut = (
            _last_break(text, start + OVERLAP, end, _LINE)
            or _last_break(text, start + OVERLAP, end, _SPACE)
            or end
        )
        # This piece runs OVERLAP past the cut; the next starts at the cut.
        spans.append((start, cut + OVERLAP, cut))
        start = cut
    spans.append((start, len(text), len(text)))
    return spans


def split(texts: list[str], size: int) -> tuple[list[str], Plan]:
    """(pieces, plan): every text as one or more pieces to run, and how to put their
    entities back (put_back)."""
    pieces: list[str] = []
    plan: Plan = []
    for text in texts:
        if len(text) <= size:
            pieces.append(text)
            plan.append(None)
            continue
        spans = cuts(text, size)
        pieces.extend(text[s:e] for s, e, _ in spans)
        plan.append(spans)
    return pieces, plan


def put_back(results: list[Result], plan: Plan) -> list[Result]:
    """The answer per original text (results.py), from the answers per piece, offsets on
    the original text."""
    out: list[Result] = []
    i = 0
    for spans in plan:
        if spans is None:
            out.append(results[i])
        else:
            out.append(_joined(results[i : i + len(spans)], spans))
        i += 1 if spans is None else len(spans)
    return out


def _joined(results: list[Result], spans: Cuts) -> Result:
    """One text's answer from its pieces' answers: entities by the module's rule; spans
    (which may overlap each other) each from the piece in which they start before the
    cut."""
    whole: Result = {"entities": _shifted([r["entities"] for r in results], spans, True)}
    # A key some pieces have and others not (a component that names none) is the
    # whole text's key all the same.
    keys = dict.fromkeys(k for r in results for k in r.get("spans", {}))
    if keys:
        whole["spans"] = {
            key: _shifted([r.get("spans", {}).get(key, []) for r in results], spans, False)
            for key in keys
        }
    return whole


def _shifted(per_piece: list[Records], spans: Cuts, exclusive: bool) -> Records:
    """The pieces' records on the whole text. `exclusive`: a record that would overlap
    one kept from the previous piece is dropped too (entities never overlap)."""
    kept: Records = []
    previous_cut = previous_end = 0
    for records, (start, _, cut) in zip(per_piece, spans, strict=True):
        for r in records:
            begin = r["start"] + start
            # Before previous_cut: the previous piece had it whole. Under previous_end:
            # it would overlap an entity kept from the previous piece.
            if begin < previous_cut or (exclusive and begin < previous_end) or begin >= cut:
                continue
            kept.append({**r, "start": begin, "end": r["end"] + start})
        previous_cut = cut
        previous_end = kept[-1]["end"] if kept else 0
    return kept
