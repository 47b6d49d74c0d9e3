"""Request bodies in: the texts to run, and the Shape their answer must take.

One decoder per Content-Type. Every request form (text, texts, the blog post's input,
text/plain, JSON Lines) ends as a plain list of texts, so that requests of any form can be
merged into one nlp.pipe call (batcher.py). A client's mistake raises ApiError (4xx).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol import JSON, JSONLINES_ALIASES, TEXT, ApiError

UTF8_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")


@dataclass(frozen=True)
class Shape:
    """How the answer is shaped; everything encode.py needs besides the entities.

    form: how the texts arrived. "text" and "plain" answer {"entities": ...}; "input" (the
    blog post's form) answers {"output": [[text, label], ...]}; "texts" and "lines" answer
    {"results": [...]} or, with Accept JSON Lines, one line per text.
    extras: JSON Lines only, each record's fields other than "text" ({} for a string
    record or a blank line), answered unchanged beside its entities so that output can be
    matched to input by id rather than by line order alone.
    """

    form: str
    extras: tuple[dict, ...] = field(default=())

    @property
    def single(self) -> bool:
        return self.form in ("text", "plain", "input")


def _utf8(body: bytes) -> str:
    try:
        # utf-8-sig: a byte-order mark some Windows tools prepend is not part of the text.
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ApiError(400, "invalid_utf8", f"body is not valid UTF-8 (byte {e.start})") from None


def _json(text: str, where: str = "body") -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ApiError(400, "json_too_deep", f"{where} nests JSON too deeply") from None
    except ValueError as e:
        raise ApiError(400, "invalid_json", f"{where} is not valid JSON: {e}") from None


def _kind(value: object) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), "?")


def _check_text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"{where} must be a string, not {_kind(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800" in JSON
        raise ApiError(400, "invalid_text", f"{where} holds a lone surrogate, not text") from None
    return value


def decode_json(body: bytes) -> tuple[list[str], Shape]:
    obj = _json(_utf8(body))
    if not isinstance(obj, dict):
        raise ApiError(
            400,
            "invalid_body",
            f'JSON body must be an object such as {{"text": "..."}}, not {_kind(obj)}',
        )
    present = [k for k in ("text", "texts", "input") if k in obj]
    if len(present) != 1:
        raise ApiError(
            400,
            "invalid_body",
            f'JSON body needs exactly one of "text", "texts" or "input"; found {present or "none"}',
        )
    key = present[0]
    if key == "texts":
        texts = obj["texts"]
        if not isinstance(texts, list):
            raise ApiError(400, "invalid_field", f'"texts" must be an array, not {_kind(texts)}')
        return [_check_text(t, f'"texts"[{i}]') for i, t in enumerate(texts)], Shape("texts")
    return [_check_text(obj[key], f'"{key}"')], Shape(key)


def decode_text(body: bytes) -> tuple[list[str], Shape]:
    return [_check_text(_utf8(body), "body")], Shape("plain")


def decode_line(line: bytes, n: int) -> tuple[str, dict]:
    """(text, other fields) of JSON Lines record n (1-based), from its bytes without the
    newline: a JSON string or {"text": ..., any other fields}. This is what batch
    transform sends with SplitType=Line; a blank line is an empty record, so the answer
    keeps one line per line. stream.py reads bodies of this form a line at a time."""
    try:
        text = line.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as e:
        raise ApiError(
            400, "invalid_utf8", f"line {n} is not valid UTF-8 (byte {e.start} of the line)"
        ) from None
    if not text.strip():
        return "", {}
    record, fields = _json(text, f"line {n}"), {}
    if isinstance(record, dict):
        if "text" not in record:
            raise ApiError(400, "invalid_body", f'line {n} is an object without "text"')
        fields = {k: v for k, v in record.items() if k != "text"}
        record = record["text"]
    return _check_text(record, f"line {n}"), fields


DECODERS: dict[str, Callable[[bytes], tuple[list[str], Shape]]] = {
    JSON: decode_json,
    TEXT: decode_text,
}


def check_content_type(mimetype: str, charset: str | None) -> None:
    """ApiError (415) unless the body is a form this server reads, in UTF-8."""
    if mimetype not in DECODERS and mimetype not in JSONLINES_ALIASES:
        raise ApiError(
            415,
            "unsupported_content_type",
            f"Content-Type {mimetype or '(none)'!r} is not supported; use "
            f"{JSON}, {TEXT} or {JSONLINES_ALIASES[0]}",
        )
    if charset and charset.lower() not in UTF8_CHARSETS:
        raise ApiError(
            415, "unsupported_charset", f"charset {charset!r} is not supported; send UTF-8"
        )


def check_length(text: str, where: str, max_length: int) -> None:
    if len(text) > max_length:
        raise ApiError(
            413,
            "text_too_long",
            f"{where} has {len(text)} characters; at most "
            f"{max_length} are taken (MODEL_SERVER_MAX_TEXT_CHARACTERS)",
        )


def decode(body: bytes, mimetype: str, max_length: int) -> tuple[list[str], Shape]:
    """(texts, Shape) for a JSON or plain-text body (check_content_type first; JSON Lines
    bodies go to stream.py); ApiError for anything a client got wrong."""
    texts, shape = DECODERS[mimetype](body)
    for i, text in enumerate(texts):
        check_length(text, "text" if shape.single else f"text {i}", max_length)
    return texts, shape
