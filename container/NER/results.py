"""What one text's answer holds, made from its Doc: the entities and, where the pipeline
writes them, the spans (doc.spans), as plain records.

Records are made inside nlp.memory_zone() (batcher.py), where Docs do not outlive the
call, so everything after the model (pieces.py, encode.py, fanout.py) works on these:

    {"entities": [{"text", "label", "start", "end"}, ...],
     "spans": {key: [{"text", "label", "start", "end", "score"?}, ...], ...}}

start/end are character offsets, end exclusive: text[start:end] is the record's text;
records come in text order.
"spans" is there only for a pipeline that writes spans (or when SPACY_SPAN_KEYS names
keys), so that an entity pipeline's answer is what it always was. A span has a "score"
where its component stores one per span in the group's attrs["scores"], as spancat does.
"""

from collections.abc import Sequence

from spacy.language import Language
from spacy.tokens import Doc, SpanGroup

# One text's records of one kind (entities, or one span key's spans), and its whole answer.
Records = list[dict]
Result = dict
# The components' own names for the key they write spans under: spancat and span_ruler
# have `key`; span_finder keeps it in its cfg.
_KEY_ATTRIBUTES = ("key", "spans_key")


def entity_records(doc: Doc) -> Records:
    return [
        {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
        for e in doc.ents
    ]


def span_records(group: SpanGroup) -> Records:
    """The group's spans in text order (by start, then end; a stable sort), with their
    scores. spancat keeps its own order (by suggested length first), which a text cut
    into pieces could not give back; text order is the same whole or in pieces."""
    records = [
        {"text": s.text, "label": s.label_, "start": s.start_char, "end": s.end_char} for s in group
    ]
    scores = group.attrs.get("scores")
    if scores is not None and len(scores) == len(records):
        for record, score in zip(records, scores, strict=True):
            record["score"] = round(float(score), 6)
    return sorted(records, key=lambda r: (r["start"], r["end"]))


def span_setters(nlp: Language) -> list[str]:
    """The components that declare they write doc.spans (spancat, span_finder,
    span_ruler, and a custom component that says so in its factory's `assigns`)."""
    return [n for n in nlp.pipe_names if "doc.spans" in nlp.get_pipe_meta(n).assigns]


def written_keys(nlp: Language, probe: Doc | None = None) -> list[str]:
    """The span keys the pipeline writes: those its components name, and those a Doc it
    made (probe) holds, for a component that names none."""
    keys: list[str] = []
    for name in span_setters(nlp):
        pipe = nlp.get_pipe(name)
        for attribute in _KEY_ATTRIBUTES:
            key = getattr(pipe, attribute, None) or getattr(pipe, "cfg", {}).get(attribute)
            if isinstance(key, str) and key not in keys:
                keys.append(key)
    if probe is not None:
        keys.extend(k for k in probe.spans if k not in keys)
    return keys


class Reader:
    """Makes a text's Result from its Doc. `span_keys`: the keys answered, every one in
    every answer (an empty list where a Doc has none); none: entities only. `more`: also
    any other key a Doc has (SPACY_SPAN_KEYS unset: every key the pipeline writes, those
    that no component names and the warm-up text did not show included)."""

    def __init__(self, span_keys: Sequence[str] = (), more: bool = False):
        self.span_keys = tuple(span_keys)
        self.more = more

    def __call__(self, doc: Doc) -> Result:
        result: Result = {"entities": entity_records(doc)}
        keys = self.span_keys
        if self.more:
            keys += tuple(k for k in doc.spans if k not in self.span_keys)
        if keys:
            result["spans"] = {
                key: span_records(doc.spans[key]) if key in doc.spans else [] for key in keys
            }
        return result
