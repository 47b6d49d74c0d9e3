"""Answers out: the content type a client accepts, and the bytes of the answer.

The answer is built from plain records (results.py: a text's entities, and its spans
where the pipeline writes them; batcher.py makes them inside nlp.memory_zone()), never
from spaCy Docs, which do not outlive the zone. displaCy included: it renders plain dicts
with manual=True, in its `ent` style, or its `span` style once there are spans (which may
overlap, as entities may not).

Every body form is answered by one function, `encode`, from the request's groups of
answered texts (runner.py), in order: JSON Lines and JSON go out a group at a time (a
streamed answer sends each as soon as it is made), an HTML page is one document, so it
is rendered once, at the end.
"""

import itertools
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from spacy import displacy
from werkzeug.datastructures import MIMEAccept

from decode import Shape
from protocol import HTML, JSON, JSONLINES, JSONLINES_ALIASES, ApiError, dumps
from results import Result

OFFERED = [JSON, *JSONLINES_ALIASES, HTML]


class Answered(NamedTuple):
    """One group of a request's texts, with its answer per text (results.py)."""

    texts: list[str]
    results: list[Result]
    shape: Shape


def negotiate(accept: MIMEAccept, default: str = JSON) -> str:
    """The answer's content type for an Accept header (empty when the header is absent).
    `default` answers a request without Accept, or with */*
    (SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT), as the SageMaker inference toolkit does."""
    if not accept or all(value == "*/*" for value, _ in accept):
        return default
    best = accept.best_match(OFFERED)
    if best is None:
        raise ApiError(
            406,
            "not_acceptable",
            f"cannot answer with Accept {accept.to_header()!r}; "
            f"offered: {JSON}, {JSONLINES}, {HTML}",
        )
    return JSONLINES if best in JSONLINES_ALIASES else best


def content_type(mimetype: str) -> str:
    return f"{mimetype}; charset=utf-8" if mimetype == HTML else mimetype


def _record(result: Result, form: str, extra: dict) -> dict:
    if form == "input":  # the blog post's answer: [text, label] pairs, spans beside them
        output: dict = {"output": [[e["text"], e["label"]] for e in result["entities"]]}
        if "spans" in result:
            output["spans"] = result["spans"]
        return output
    # A JSON Lines record's own fields come first and unchanged; "entities" (and "spans")
    # are ours.
    return {**extra, **result}


def _records(group: Answered) -> list[dict]:
    extras: tuple[dict, ...] = group.shape.extras or ({},) * len(group.results)
    return [
        _record(ents, group.shape.form, x) for ents, x in zip(group.results, extras, strict=True)
    ]


def _jsonlines(groups: Iterable[Answered]) -> Iterator[bytes]:
    # No newline after the last line: batch transform's AssembleWith=Line adds one after
    # each answer, and a second would put a blank line between two mini-batches' answers.
    separator = ""
    for group in groups:
        if group.texts:
            lines = "\n".join(dumps(r) for r in _records(group))
            yield (separator + lines).encode("utf-8")
            separator = "\n"


def _json(groups: Iterable[Answered]) -> Iterator[bytes]:
    groups = iter(groups)
    first = next(groups, None)
    if first is not None and first.shape.single:  # one text: its record is the answer
        yield dumps(_records(first)[0]).encode("utf-8")
        return
    yield b'{"results":['
    separator = ""
    for group in _chain(first, groups):
        records = [dumps(r) for r in _records(group)]
        if records:
            yield (separator + ",".join(records)).encode("utf-8")
            separator = ","
    yield b"]}"


def _chain(first: Answered | None, rest: Iterator[Answered]) -> Iterator[Answered]:
    if first is not None:
        yield first
        yield from rest


def _html(groups: Iterable[Answered]) -> Iterator[bytes]:
    # displaCy escapes the text; page=True makes a whole document a browser can open.
    pairs = [(t, r) for g in groups for t, r in zip(g.texts, g.results, strict=True)]
    if any("spans" in r for _, r in pairs):
        docs = [_span_doc(text, result) for text, result in pairs]
        style = "span"
    else:
        docs = [_ent_doc(text, result) for text, result in pairs]
        style = "ent"
    yield displacy.render(docs, style=style, manual=True, page=True, minify=True).encode("utf-8")


def _ent_doc(text: str, result: Result) -> dict:
    ents = [{"start": e["start"], "end": e["end"], "label": e["label"]} for e in result["entities"]]
    return {"text": text, "title": None, "ents": ents}


def _span_doc(text: str, result: Result) -> dict:
    """displaCy's span style wants tokens, which the records do not carry: the text is cut
    at whitespace and at every record's start and end, so each record covers whole
    "tokens". Entities and spans are drawn together; a span's label names its key when
    there are several."""
    keys = result.get("spans", {})
    marked = [(e, e["label"]) for e in result["entities"]] + [
        (s, f"{key}: {s['label']}" if len(keys) > 1 else s["label"])
        for key, spans in keys.items()
        for s in spans
    ]
    cuts = sorted({0, len(text), *(r["start"] for r, _ in marked), *(r["end"] for r, _ in marked)})
    tokens: list[str] = []
    first_token = {}
    for begin, end in itertools.pairwise(cuts):
        first_token[begin] = len(tokens)
        tokens.extend(text[begin:end].split())
    first_token[len(text)] = len(tokens)
    spans = [
        {"start_token": first_token[r["start"]], "end_token": first_token[r["end"]], "label": label}
        for r, label in marked
    ]
    return {"text": text, "title": None, "tokens": tokens, "spans": spans}


ENCODERS = {JSON: _json, JSONLINES: _jsonlines, HTML: _html}


def encode(groups: Iterable[Answered], mimetype: str) -> Iterator[bytes]:
    """The answer's bytes, a group at a time, in the content type negotiate chose."""
    return ENCODERS[mimetype](groups)
