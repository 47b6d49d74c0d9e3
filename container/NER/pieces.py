"""Long texts in pieces: split a document past the chunk size, put its entities back.

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

from tuning import OVERLAP

# Where a piece may end, best first (the module's docstring).
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_LINE = re.compile(r"\n\s*")
_SPACE = re.compile(r"\s+")
# Entity records per text (batcher.py), and per text the (start, end, cut) of its pieces
# or None for a text run whole.
Records = list[dict]
Plan = list[list[tuple[int, int, int]] | None]


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


def put_back(records: list[Records], plan: Plan) -> list[Records]:
    """Entity records per original text, from the records per piece (batcher.py's
    {"text", "label", "start", "end"}), offsets on the original text."""
    out: list[Records] = []
    i = 0
    for spans in plan:
        if spans is None:
            out.append(records[i])
            i += 1
            continue
        entities: Records = []
        previous_cut = previous_end = 0
        for start, _, cut in spans:
            for e in records[i]:
                begin = e["start"] + start
                # Before previous_cut: the previous piece had it whole. Under previous_end:
                # it would overlap an entity kept from the previous piece.
                if begin < previous_cut or begin < previous_end or begin >= cut:
                    continue
                entities.append({**e, "start": begin, "end": e["end"] + start})
            previous_cut = cut
            previous_end = entities[-1]["end"] if entities else 0
            i += 1
        out.append(entities)
    return out
