"""/invocations, the route nearly every request takes, answered as a plain WSGI call.

A one-text request's own work is small, so what Flask does around a view (its contexts,
URL matching, signals, the request and response objects) is a share of its CPU that
`make profile` shows (docs/how-it-works.md). The app (predictor.NerApp) hands this one
route here, where Werkzeug's parsers read the headers and the body and the answer goes to
the server as it is; Flask keeps the other routes. What a request gets does not change:
the same Runner, answers, errors (http_answers.py) and log line.
"""

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.datastructures import MIMEAccept
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.http import parse_accept_header, parse_options_header
from werkzeug.wrappers import Response
from werkzeug.wsgi import ClosingIterator, get_input_stream

import decode
import encode
import http_answers
from fanout import PART_HEADER
from protocol import JSONLINES_ALIASES, ApiError
from runner import Answer, Body, Invocation, Runner
from settings import Settings

# The name the app's log lines have always had, which CloudWatch queries filter on.
log = logging.getLogger("ner.predictor")

PATH = "/invocations"


def _environ_key(header: str) -> str:
    """Where WSGI puts a request header in the environ."""
    return "HTTP_" + header.upper().replace("-", "_")


# The id SageMaker gives each invocation; the request's log line carries it.
INFERENCE_ID = _environ_key("X-Amzn-SageMaker-Inference-Id")
# A multi-model endpoint's invocation names its TargetModel here, for the log line.
TARGET_MODEL = _environ_key("X-Amzn-SageMaker-Target-Model")
CUSTOM_ATTRIBUTES = _environ_key(http_answers.CUSTOM_ATTRIBUTES)
PART = _environ_key(PART_HEADER)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class LogLine:
    """One line per invocation, written once its answer is sent (a streamed one runs
    until then), in key=value words that CloudWatch Logs Insights can parse."""

    def __init__(self, environ: Environ, invocation: Invocation, status: int):
        self.invocation = invocation
        self.words = {
            "id": environ.get(INFERENCE_ID, "-"),
            "part": invocation.part,
            "status": status,
        }
        if TARGET_MODEL in environ:  # a multi-model endpoint's (manager.py)
            self.words["target"] = environ[TARGET_MODEL].replace(" ", "%20")

    def write(self) -> None:
        i = self.invocation
        log.info(
            "invocation %s texts=%d characters=%d wait_ms=%.1f model_ms=%.1f total_ms=%.1f",
            " ".join(f"{k}={v}" for k, v in self.words.items()),
            i.texts,
            i.characters,
            i.timing.wait * 1000,
            i.timing.model * 1000,
            (time.monotonic() - i.started) * 1000,
        )


def run(runner: Runner, settings: Settings, environ: Environ, invocation: Invocation) -> Answer:
    """The request's answer, after its Content-Type (415) and its body (413, 400, ...)
    are checked; ApiError or HTTPException for a request that cannot be answered."""
    mimetype, params = parse_options_header(environ.get("CONTENT_TYPE", ""))
    mimetype = mimetype.lower()
    decode.check_content_type(mimetype, params.get("charset"))
    stream = get_input_stream(environ, max_content_length=settings.max_payload_bytes)
    body: Body
    if mimetype in JSONLINES_ALIASES:
        body = runner.read_lines(stream)
    else:
        body = runner.decode(stream.read(), mimetype)
    return runner.run(body, invocation)


def respond(
    runner: Runner, settings: Settings, environ: Environ, start_response: StartResponse
) -> Iterable[bytes]:
    """The WSGI call for /invocations: its answer or its JSON error, the client's custom
    attributes echoed, and the log line written once the answer is sent."""
    invocation = None  # until its Accept header is checked (406 has no log line)
    try:
        if environ["REQUEST_METHOD"] != "POST":
            raise MethodNotAllowed(valid_methods=["POST"])
        accept = parse_accept_header(environ.get("HTTP_ACCEPT"), MIMEAccept)
        invocation = Invocation(
            encode.negotiate(accept, settings.default_accept), part=PART in environ
        )
        result = run(runner, settings, environ, invocation)
    except ApiError as e:
        return _send(environ, start_response, http_answers.api_error(e), invocation)
    except HTTPException as e:
        return _send(environ, start_response, http_answers.http_error(e), invocation)
    except Exception:
        error = http_answers.internal_error(environ["REQUEST_METHOD"], PATH)
        return _send(environ, start_response, error, invocation)
    headers = [("Content-Type", result.content_type), *result.headers.items()]
    body: Iterable[bytes]
    if isinstance(result.body, bytes):
        headers.append(("Content-Length", str(len(result.body))))
        body = [result.body]
    else:
        body = result.body  # streamed: the server sends it chunked
    start_response("200 OK", headers + _echoed(environ))
    return ClosingIterator(body, LogLine(environ, invocation, 200).write)


def _echoed(environ: Environ) -> list[tuple[str, str]]:
    """The client's custom attributes, as the header that sends them back (none when
    there are none, or they are not fit to go back)."""
    value = http_answers.echoed_custom_attributes(environ.get(CUSTOM_ATTRIBUTES))
    return [(http_answers.CUSTOM_ATTRIBUTES, value)] if value else []


def _send(
    environ: Environ,
    start_response: StartResponse,
    response: Response,
    invocation: Invocation | None,
) -> Iterable[bytes]:
    for name, value in _echoed(environ):
        response.headers[name] = value
    if invocation is not None:  # one that got past its Accept header
        response.call_on_close(LogLine(environ, invocation, response.status_code).write)
    return response(environ, start_response)
