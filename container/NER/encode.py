"""Answers out: the content type a client accepts, and the bytes of the answer.

The answer is built from plain entity records ({"text", "label", "start", "end"} per
entity, one list per text; batcher.py makes them inside nlp.memory_zone()), never from
spaCy Docs, which do not outlive the zone. displaCy included: it renders plain dicts
with manual=True.
"""

from spacy import displacy

from protocol import HTML, JSON, JSONLINES, JSONLINES_ALIASES, ApiError, dumps

OFFERED = [JSON, *JSONLINES_ALIASES, HTML]


def negotiate(accept, default=JSON):
    """The answer's content type for an Accept header (a werkzeug MIMEAccept, empty when
    the header is absent). `default` answers a request without Accept, or with */*
    (SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT), as the SageMaker inference toolkit does."""
    if not accept or all(value == "*/*" for value, _ in accept):
        return default
    best = accept.best_match(OFFERED)
    if best is None:
        raise ApiError(406, "not_acceptable", f"cannot answer with Accept {accept.to_header()!r}; "
                       f"offered: {JSON}, {JSONLINES}, {HTML}")
    return JSONLINES if best in JSONLINES_ALIASES else best


def _record(entities, form, extra):
    if form == "input":  # the blog post's answer: [text, label] pairs
        return {"output": [[e["text"], e["label"]] for e in entities]}
    # A JSON Lines record's own fields come first and unchanged; "entities" is ours.
    return {**extra, "entities": entities}


def _records(results, shape):
    extras = shape.extras or [{}] * len(results)
    return [_record(ents, shape.form, x) for ents, x in zip(results, extras)]


def encode_json(texts, results, shape):
    records = _records(results, shape)
    return dumps(records[0] if shape.single else {"results": records})


def encode_jsonlines(texts, results, shape):
    # No newline after the last line: batch transform's AssembleWith=Line adds one after
    # each answer, and a second would put a blank line between two mini-batches' answers.
    return "\n".join(dumps(r) for r in _records(results, shape))


def encode_html(texts, results, shape):
    # displaCy escapes the text; page=True makes a whole document a browser can open.
    docs = [{"text": text, "title": None,
             "ents": [{"start": e["start"], "end": e["end"], "label": e["label"]} for e in ents]}
            for text, ents in zip(texts, results)]
    return displacy.render(docs, style="ent", manual=True, page=True, minify=True)


ENCODERS = {JSON: encode_json, JSONLINES: encode_jsonlines, HTML: encode_html}


def encode_pieces(answers, mimetype):
    """The answer's bytes a piece at a time, for a body answered as it runs (stream.py):
    answers yields (texts, results, shape) in order. JSON Lines and JSON go out as each
    piece is done; an HTML page is one document, so it is rendered once, at the end."""
    if mimetype == JSONLINES:
        separator = ""
        for texts, results, shape in answers:
            if texts:
                yield (separator + encode_jsonlines(texts, results, shape)).encode("utf-8")
                separator = "\n"
    elif mimetype == JSON:
        yield b'{"results":['
        separator = ""
        for _, results, shape in answers:
            records = [dumps(r) for r in _records(results, shape)]
            if records:
                yield (separator + ",".join(records)).encode("utf-8")
                separator = ","
        yield b"]}"
    else:
        texts, results = [], []
        for t, r, _ in answers:
            texts += t
            results += r
        yield encode_html(texts, results, None).encode("utf-8")


def content_type(mimetype):
    return f"{mimetype}; charset=utf-8" if mimetype == HTML else mimetype


def encode(texts, results, shape, mimetype):
    """(body bytes, Content-Type) of the answer: one entity list in `results` per text."""
    return ENCODERS[mimetype](texts, results, shape).encode("utf-8"), content_type(mimetype)
