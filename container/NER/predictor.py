"""The app SageMaker talks to: /ping, /invocations and /execution-parameters.

create_app(nlp, settings) builds it around an already loaded pipeline, so the tests,
the host and the image all run this same code. /invocations, the route nearly every
request takes, is answered by invocations.py without Flask's dispatch; Flask answers the
others. Either way the request goes to the app's Runner (runner.py), which holds the one
request path every body form takes, and errors of any kind get the same JSON shape
(http_answers.py).
"""

from collections.abc import Iterable
from typing import Any, cast

from flask import Blueprint, Flask, Response, current_app, request
from spacy.language import Language
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as WsgiResponse

import http_answers
import invocations
from protocol import ApiError
from runner import Runner
from settings import Settings
from tuning import SUGGESTED_MAX_PAYLOAD_MB


class NerApp(Flask):
    """The Flask app, with its worker's long-lived state as typed attributes (worker.py
    and recycle.py read them)."""

    runner: Runner
    settings: Settings

    def __call__(self, environ: dict, start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == invocations.PATH:
            return invocations.respond(self.runner, self.settings, environ, start_response)
        return super().__call__(environ, start_response)


def app_of(app: Flask) -> NerApp:
    return cast(NerApp, app)


views = Blueprint("ner", __name__)


@views.get("/ping")
def ping() -> Response:
    # The app exists only once the model is loaded and warmed (wsgi.py), so being able
    # to answer is the health check. The public /ping is answered by nginx (nginx.conf).
    return Response(status=200)


@views.get("/execution-parameters")
def execution_parameters() -> WsgiResponse:
    # Batch transform asks this once; values set on the transform job win over it.
    # One request per worker keeps every core busy.
    return http_answers.json_response(
        200,
        {
            "MaxConcurrentTransforms": app_of(current_app).settings.workers,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": SUGGESTED_MAX_PAYLOAD_MB,
        },
    )


@views.after_app_request
def echo_custom_attributes(response: Response) -> Response:
    value = request.headers.get(http_answers.CUSTOM_ATTRIBUTES)
    echoed = http_answers.echoed_custom_attributes(value)
    if echoed:
        response.headers[http_answers.CUSTOM_ATTRIBUTES] = echoed
    return response


# Flask answers its errors (an unknown path's 404 too) as invocations.py does.
views.app_errorhandler(ApiError)(http_answers.api_error)
views.app_errorhandler(HTTPException)(http_answers.http_error)


@views.app_errorhandler(Exception)
def unexpected(e: Exception) -> WsgiResponse:
    return http_answers.internal_error(request.method, request.path)


def create_app(nlp: Language, settings: Settings) -> NerApp:
    """The app around a loaded pipeline, with the one Runner its requests share."""
    app = NerApp(__name__)
    app.settings = settings
    app.runner = Runner(nlp, settings)
    app.register_blueprint(views)
    return app
