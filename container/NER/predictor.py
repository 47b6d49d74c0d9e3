"""The Flask app SageMaker talks to: /ping, /invocations and /execution-parameters.

create_app(nlp, settings) builds it around an already loaded pipeline, so the tests,
the host and the image all run this same code. The views are thin: each hands the
request to the app's Runner (runner.py), which holds the one request path every body
form takes, and turns what comes back into a response. Errors of any kind get the same
JSON shape.
"""

import logging
import time
from typing import cast

from flask import Blueprint, Flask, Response, current_app, g, request
from spacy.language import Language
from werkzeug.exceptions import HTTPException

import decode
import encode
from fanout import PART_HEADER
from protocol import JSON, JSONLINES_ALIASES, ApiError, dumps, error_body
from runner import Body, Invocation, Runner
from settings import Settings
from tuning import SUGGESTED_MAX_PAYLOAD_MB

log = logging.getLogger("ner.predictor")

# SageMaker passes this header through opaquely; echoing it lets clients correlate.
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
# The id SageMaker gives each invocation; the request's log line carries it.
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
# A multi-model endpoint's invocation names its TargetModel here, for the log line.
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
# The same codes nginx.conf uses for the errors it answers itself.
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


class NerApp(Flask):
    """The Flask app, with its worker's long-lived state as typed attributes (worker.py
    and recycle.py read them)."""

    runner: Runner
    settings: Settings


def app_of(app: Flask) -> NerApp:
    return cast(NerApp, app)


views = Blueprint("ner", __name__)


def _json_response(status: int, body: dict) -> Response:
    return Response(dumps(body), status=status, mimetype=JSON)


@views.get("/ping")
def ping() -> Response:
    # The app exists only once the model is loaded and warmed (wsgi.py), so being able
    # to answer is the health check. The public /ping is answered by nginx (nginx.conf).
    return Response(status=200)


@views.get("/execution-parameters")
def execution_parameters() -> Response:
    # Batch transform asks this once; values set on the transform job win over it.
    # One request per worker keeps every core busy.
    return _json_response(
        200,
        {
            "MaxConcurrentTransforms": app_of(current_app).settings.workers,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": SUGGESTED_MAX_PAYLOAD_MB,
        },
    )


@views.post("/invocations")
def invocations() -> Response:
    app = app_of(current_app)
    invocation = g.invocation = Invocation(
        encode.negotiate(request.accept_mimetypes, app.settings.default_accept),
        part=PART_HEADER in request.headers,
    )
    decode.check_content_type(request.mimetype, request.mimetype_params.get("charset"))
    body: Body
    if request.mimetype in JSONLINES_ALIASES:
        body = app.runner.read_lines(request.stream)
    else:
        body = app.runner.decode(request.get_data(cache=False), request.mimetype)
    answer = app.runner.run(body, invocation)
    return Response(
        answer.body, status=200, content_type=answer.content_type, headers=answer.headers
    )


@views.after_app_request
def echo_custom_attributes(response: Response) -> Response:
    value = request.headers.get(CUSTOM_ATTRIBUTES)
    if value and len(value) <= 1024 and value.isascii() and value.isprintable():
        response.headers[CUSTOM_ATTRIBUTES] = value
    return response


class _LogLine:
    """One line per invocation, written once its answer is sent (a streamed one runs
    until then), in key=value words that CloudWatch Logs Insights can parse."""

    def __init__(self, invocation: Invocation, status: int):
        self.invocation = invocation
        self.words = {
            "id": request.headers.get(INFERENCE_ID, "-"),
            "part": invocation.part,
            "status": status,
        }
        if TARGET_MODEL in request.headers:  # a multi-model endpoint's (manager.py)
            self.words["target"] = request.headers[TARGET_MODEL].replace(" ", "%20")

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


@views.after_app_request
def log_invocation(response: Response) -> Response:
    if "invocation" in g:
        response.call_on_close(_LogLine(g.invocation, response.status_code).write)
    return response


@views.app_errorhandler(ApiError)
def api_error(e: ApiError) -> Response:
    log.info("%s %s: %s", e.status, e.code, e.message)
    return _json_response(e.status, e.body())


@views.app_errorhandler(HTTPException)
def http_error(e: HTTPException) -> Response:
    # 404, 405, 413 from Flask itself: same JSON shape as ours, never an HTML page.
    status = e.code or 500
    code = HTTP_ERROR_CODES.get(status) or (e.name or "error").lower().replace(" ", "_")
    response = _json_response(status, error_body(code, e.description or ""))
    if status == 405:
        response.headers["Allow"] = ", ".join(getattr(e, "valid_methods", None) or [])
    return response


@views.app_errorhandler(Exception)
def unexpected(e: Exception) -> Response:
    # A bug of ours or the pipeline's, not the client's: log the traceback, answer
    # without it. Requests merged into the same nlp.pipe call are answered (batcher.py).
    log.exception("unexpected error in %s %s", request.method, request.path)
    return _json_response(
        500, error_body("internal_error", "unexpected server error; see the container log")
    )


def create_app(nlp: Language, settings: Settings) -> NerApp:
    """The app around a loaded pipeline, with the one Runner its requests share."""
    app = NerApp(__name__)
    # Same limit as nginx's client_max_body_size, for when the app is reached directly.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    app.settings = settings
    app.runner = Runner(nlp, settings)
    app.register_blueprint(views)
    return app
