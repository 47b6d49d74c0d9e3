"""The Flask app SageMaker talks to: /ping, /invocations and /execution-parameters.

create_app(nlp, settings) builds it around an already loaded pipeline, so the tests,
the host and the image all run this same code. One request path:
decode -> nlp.pipe -> encode (see protocol.py).
"""

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

import protocol
from protocol import ApiError

log = logging.getLogger("ner.predictor")

# SageMaker passes this header through opaquely; echoing it lets clients correlate.
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
# The same codes nginx.conf uses for the errors it answers itself.
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _json_response(status, body):
    return Response(protocol.dumps(body), status=status, mimetype=protocol.JSON)


def create_app(nlp, settings):
    app = Flask(__name__)
    # Same limit as nginx's client_max_body_size, for when the app is reached directly.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes

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
        answer_type = protocol.negotiate(request.accept_mimetypes)
        batch = protocol.decode(request.get_data(cache=False), request.mimetype,
                                request.mimetype_params.get("charset"), nlp.max_length)
        docs = list(nlp.pipe(batch.texts))
        body, content_type = protocol.encode(docs, batch, answer_type)
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
        response = _json_response(e.code, protocol.error_body(code, e.description))
        if e.code == 405:
            response.headers["Allow"] = ", ".join(e.valid_methods or [])
        return response

    @app.errorhandler(Exception)
    def unexpected(e):
        # A bug of ours, not the client's: log the traceback, answer without it.
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _json_response(500, protocol.error_body(
            "internal_error", "unexpected server error; see the container log"))

    return app
