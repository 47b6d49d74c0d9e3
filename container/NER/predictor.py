"""The Flask app SageMaker talks to: /ping, /invocations and /execution-parameters.

create_app(nlp, settings) builds it around an already loaded pipeline, so the tests,
the host and the image all run this same code. One request path:
decode.decode -> batcher.Batcher.predict (nlp.pipe) -> encode.encode.
"""

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

import decode
import encode
from batcher import Batcher
from protocol import JSON, ApiError, dumps, error_body

log = logging.getLogger("ner.predictor")

# SageMaker passes this header through opaquely; echoing it lets clients correlate.
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
# The same codes nginx.conf uses for the errors it answers itself.
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _json_response(status, body):
    return Response(dumps(body), status=status, mimetype=JSON)


def create_app(nlp, settings):
    """The app around a loaded pipeline, with the one Batcher its requests share."""
    app = Flask(__name__)
    # Same limit as nginx's client_max_body_size, for when the app is reached directly.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    batcher = Batcher(nlp, settings.batch_characters, settings.timeout, settings.stuck_seconds)
    # worker.py reads it (is the model busy?), and so do the tests.
    app.extensions["batcher"] = batcher

    @app.get("/ping")
    def ping():
        # The app exists only once the model is loaded and warmed (wsgi.py), so being able
        # to answer is the health check. The public /ping is answered by nginx (nginx.conf).
        return Response(status=200)

    @app.get("/execution-parameters")
    def execution_parameters():
        # Batch transform asks this once; values set on the transform job win over it.
        return _json_response(200, {
            "MaxConcurrentTransforms": settings.workers,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": settings.max_payload_mb,
        })

    @app.post("/invocations")
    def invocations():
        answer_type = encode.negotiate(request.accept_mimetypes, settings.default_accept)
        texts, shape = decode.decode(request.get_data(cache=False), request.mimetype,
                                     request.mimetype_params.get("charset"), nlp.max_length)
        results = batcher.predict(texts)
        body, content_type = encode.encode(texts, results, shape, answer_type)
        return Response(body, status=200, content_type=content_type)

    @app.after_request
    def echo_custom_attributes(response):
        value = request.headers.get(CUSTOM_ATTRIBUTES)
        if value and len(value) <= 1024 and value.isascii() and value.isprintable():
            response.headers[CUSTOM_ATTRIBUTES] = value
        return response

    @app.errorhandler(ApiError)
    def api_error(e):
        log.info("%s %s: %s", e.status, e.code, e.message)
        return _json_response(e.status, e.body())

    @app.errorhandler(HTTPException)
    def http_error(e):
        # 404, 405, 413 from Flask itself: same JSON shape as ours, never an HTML page.
        code = HTTP_ERROR_CODES.get(e.code) or (e.name or "error").lower().replace(" ", "_")
        response = _json_response(e.code, error_body(code, e.description))
        if e.code == 405:
            response.headers["Allow"] = ", ".join(e.valid_methods or [])
        return response

    @app.errorhandler(Exception)
    def unexpected(e):
        # A bug of ours or the pipeline's, not the client's: log the traceback, answer
        # without it. Requests merged into the same nlp.pipe call are answered (batcher.py).
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _json_response(500, error_body(
            "internal_error", "unexpected server error; see the container log"))

    return app
