"""The wire protocol: request bodies in, answers out; the two ends of the one request path.

decode(body, content type) -> Batch (texts + the form they came in)
encode(docs, form, accept)  -> (bytes, content type)

Every request form is the same path with a different decoder or encoder at the ends.
A client's mistake raises ApiError, which carries its HTTP status and a JSON-ready code.
"""

import json
from dataclasses import dataclass

from spacy import displacy

JSON = "application/json"
JSONLINES = "application/jsonlines"
TEXT = "text/plain"
HTML = "text/html"
# Names the same format goes by in other tools; answered as JSONLINES.
JSONLINES_ALIASES = ("application/jsonlines", "application/x-jsonlines", "application/jsonl")
UTF8_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self):
        return error_body(self.code, self.message)


def error_body(code, message):
    """Every error the app answers has this shape (nginx.conf writes it out by hand)."""
    return {"error": {"code": code, "message": message}}


@dataclass
class Batch:
    texts: list
    # How the texts arrived, which decides the answer's shape:
    # "text" and "plain" -> {"entities": ...}; "input" (the blog post's form) ->
    # {"output": ...}; "texts" and "lines" -> {"results": [...]} or one line per text.
    form: str
    # JSON Lines only: each record's fields other than "text" ({} for a string record),
    # answered unchanged beside its entities so that output can be matched to input.
    extras: list = None

    @property
    def single(self):
        return self.form in ("text", "plain", "input")


def _utf8(body):
    try:
        # utf-8-sig: a byte-order mark some Windows tools prepend is not part of the text.
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ApiError(400, "invalid_utf8", f"body is not valid UTF-8 (byte {e.start})") from None


def _json(text, where="body"):
    try:
        return json.loads(text)
    except RecursionError:
        raise ApiError(400, "json_too_deep", f"{where} nests JSON too deeply") from None
    except ValueError as e:
        raise ApiError(400, "invalid_json", f"{where} is not valid JSON: {e}") from None


def _check_text(value, where):
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"{where} must be a string, not {_kind(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800" in JSON
        raise ApiError(400, "invalid_text", f"{where} holds a lone surrogate, not text") from None
    return value


def _kind(value):
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), "?")


def decode_json(body):
    obj = _json(_utf8(body))
    if not isinstance(obj, dict):
        raise ApiError(400, "invalid_body",
                       f'JSON body must be an object such as {{"text": "..."}}, not {_kind(obj)}')
    present = [k for k in ("text", "texts", "input") if k in obj]
    if len(present) != 1:
        raise ApiError(400, "invalid_body", 'JSON body needs exactly one of "text", "texts" '
                       f'or "input"; found {present or "none"}')
    key = present[0]
    if key == "texts":
        texts = obj["texts"]
        if not isinstance(texts, list):
            raise ApiError(400, "invalid_field", f'"texts" must be an array, not {_kind(texts)}')
        return Batch([_check_text(t, f'"texts"[{i}]') for i, t in enumerate(texts)], "texts")
    return Batch([_check_text(obj[key], f'"{key}"')], key)


def decode_text(body):
    return Batch([_check_text(_utf8(body), "body")], "plain")


def decode_jsonlines(body):
    """One record per line: a JSON string or {"text": ...}. This is what batch transform
    sends with SplitType=Line; a final newline does not start another record."""
    lines = _utf8(body).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    texts, extras = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():  # a blank line is an empty record: one answer line still
            texts.append("")   # stands for it, so the output lines up with the input
            extras.append({})
            continue
        record = _json(line.rstrip("\r"), f"line {n}")
        fields = {}
        if isinstance(record, dict):
            if "text" not in record:
                raise ApiError(400, "invalid_body", f'line {n} is an object without "text"')
            fields = {k: v for k, v in record.items() if k != "text"}
            record = record["text"]
        texts.append(_check_text(record, f"line {n}"))
        extras.append(fields)
    return Batch(texts, "lines", extras)


DECODERS = {JSON: decode_json, TEXT: decode_text}
DECODERS.update({alias: decode_jsonlines for alias in JSONLINES_ALIASES})


def decode(body, mimetype, charset, max_length):
    """The texts in a request body; ApiError for anything a client got wrong."""
    if mimetype not in DECODERS:
        raise ApiError(415, "unsupported_content_type",
                       f"Content-Type {mimetype or '(none)'!r} is not supported; use "
                       f"{JSON}, {TEXT} or {JSONLINES}")
    if charset and charset.lower() not in UTF8_CHARSETS:
        raise ApiError(415, "unsupported_charset", f"charset {charset!r} is not supported; "
                       "send UTF-8")
    batch = DECODERS[mimetype](body)
    for i, text in enumerate(batch.texts):
        if len(text) > max_length:
            where = "text" if batch.single else f"text {i}"
            raise ApiError(413, "text_too_long", f"{where} has {len(text)} characters; the "
                           f"model takes at most {max_length} (nlp.max_length)")
    return batch


def entities(doc):
    # start/end are character offsets, end exclusive: text[start:end] == entity text.
    return [{"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
            for e in doc.ents]


def record(doc, form, extra=None):
    if form == "input":
        return {"output": [[e.text, e.label_] for e in doc.ents]}
    # A JSON Lines record's own fields come first and unchanged; "entities" is ours.
    return {**(extra or {}), "entities": entities(doc)}


def records(docs, batch):
    extras = batch.extras or [None] * len(docs)
    return [record(d, batch.form, x) for d, x in zip(docs, extras)]


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def encode_json(docs, batch):
    if batch.single:
        return dumps(record(docs[0], batch.form))
    return dumps({"results": records(docs, batch)})


def encode_jsonlines(docs, batch):
    return "".join(dumps(r) + "\n" for r in records(docs, batch))


def encode_html(docs, batch):
    # displaCy escapes the text; page=True makes a whole document a browser can open.
    return displacy.render(docs, style="ent", page=True, minify=True)


ENCODERS = {JSON: encode_json, JSONLINES: encode_jsonlines, HTML: encode_html}
OFFERED = [JSON, JSONLINES, *JSONLINES_ALIASES[1:], HTML]


def negotiate(accept):
    """The answer's content type for an Accept header (a werkzeug MIMEAccept, empty when
    the header is absent)."""
    if not accept:  # absent, or empty: JSON, as for */*
        return JSON
    best = accept.best_match(OFFERED)
    if best is None:
        raise ApiError(406, "not_acceptable", f"cannot answer with Accept {accept.to_header()!r}; "
                       f"offered: {JSON}, {JSONLINES}, {HTML}")
    return JSONLINES if best in JSONLINES_ALIASES else best


def encode(docs, batch, mimetype):
    body = ENCODERS[mimetype](docs, batch)
    content_type = f"{mimetype}; charset=utf-8" if mimetype == HTML else mimetype
    return body.encode("utf-8"), content_type
