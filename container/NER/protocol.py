"""The words both ends of the request path share: content types, the JSON writer, and the
error a client's mistake raises.

The request path itself is runner.py, which takes every body through the same steps:
    decode.py   request body + Content-Type  -> texts, Shape (how the answer is shaped)
    batcher.py  texts                        -> entity records per text (nlp.pipe, merged
                                                across concurrent requests)
    encode.py   Shape, records, Accept       -> the answer's bytes
"""

import json
from typing import Any

JSON = "application/json"
JSONLINES = "application/jsonlines"
TEXT = "text/plain"
HTML = "text/html"
# Names the same format goes by in other tools; answered as JSONLINES.
JSONLINES_ALIASES = ("application/jsonlines", "application/x-jsonlines", "application/jsonl")


class ApiError(Exception):
    """A request the server will not answer with entities; carries its HTTP status and a
    short machine-readable code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict:
    """Every error the app answers has this shape (nginx.conf writes it out by hand)."""
    return {"error": {"code": code, "message": message}}


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
