"""The answers both routes send that are not entities: errors of one JSON shape, and the
SageMaker header echoed on every answer.

Flask answers /ping and /execution-parameters (predictor.py) and invocations.py answers
/invocations without it; both build their errors and headers here, so that a client sees
the same answer whichever of the two it reached.
"""

import logging

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from protocol import JSON, ApiError, dumps, error_body

# The name the app's log lines have always had, which CloudWatch queries filter on.
log = logging.getLogger("ner.predictor")

# SageMaker passes this header through opaquely; echoing it lets clients correlate.
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
# The same codes nginx.conf uses for the errors it answers itself.
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def json_response(status: int, body: dict) -> Response:
    return Response(dumps(body), status=status, mimetype=JSON)


def echoed_custom_attributes(value: str | None) -> str | None:
    """The client's custom attributes to send back, or None for none (or any not fit to
    go back into a header)."""
    if value and len(value) <= 1024 and value.isascii() and value.isprintable():
        return value
    return None


def api_error(e: ApiError) -> Response:
    log.info("%s %s: %s", e.status, e.code, e.message)
    return json_response(e.status, e.body())


def http_error(e: HTTPException) -> Response:
    # 404, 405, 413 from Werkzeug: the same JSON shape as ours, never an HTML page.
    status = e.code or 500
    code = HTTP_ERROR_CODES.get(status) or (e.name or "error").lower().replace(" ", "_")
    response = json_response(status, error_body(code, e.description or ""))
    if status == 405:
        response.headers["Allow"] = ", ".join(getattr(e, "valid_methods", None) or [])
    return response


def internal_error(method: str, path: str) -> Response:
    # A bug of ours or the pipeline's, not the client's: log the traceback (the caller is
    # in its `except`), answer without it.
    log.exception("unexpected error in %s %s", method, path)
    return json_response(
        500, error_body("internal_error", "unexpected server error; see the container log")
    )
