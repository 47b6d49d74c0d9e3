"""The Flask app SageMaker talks to: /ping, /invocations and /execution-parameters.

create_app(nlp, settings) builds it around an already loaded pipeline, so the tests,
the host and the image all run this same code. One request path:
decode -> pieces.split -> batcher.Batcher.predict (nlp.pipe) -> pieces.put_back -> encode.
A JSON Lines body takes the same path a group of lines at a time (stream.py); a JSON or
plain-text body is read whole (a real-time endpoint caps it at 6 MB). A request of several
groups runs them on every worker at once (fanout.py).
"""

import collections
import itertools
import logging
import math
import threading
import time

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

import decode
import encode
import pieces
import stream
from batcher import MAX_TEXTS_PER_CALL, Batcher, Timing, groups
from fanout import PART_HEADER, Fanout
from model import characters_per_second, work
from protocol import HTML, JSON, JSONLINES_ALIASES, ApiError, dumps, error_body

log = logging.getLogger("ner.predictor")

# SageMaker passes this header through opaquely; echoing it lets clients correlate.
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
# The id SageMaker gives each invocation; the request's log line carries it.
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
# A multi-model endpoint's invocation names its TargetModel here, for the log line.
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
# The most MaxPayloadInMB one worker runs in this share of MODEL_SERVER_TIMEOUT: the
# ceiling of what /execution-parameters suggests, and what the start-up log warns about.
# Room for texts slower than the calibration's, and for a worker that shares its core
# with the requests merged beside the mini-batch.
PAYLOAD_SHARE_OF_TIMEOUT = 0.5
# SageMaker's limits on a transform job: MaxPayloadInMB at most 100, and
# MaxPayloadInMB x MaxConcurrentTransforms at most 100 MB.
TRANSFORM_MAX_PAYLOAD_MB = 100
# /execution-parameters suggests no more than this, the least a job can ask for, however
# fast the workers: a mini-batch is made before it is sent, and the SageMaker Python
# SDK's local mode makes it by adding one record at a time to a string, so its time grows
# with the square of the payload while the server waits with nothing to do. Small
# mini-batches also mean little to retry when one fails. A 1 MB request still holds
# thousands of records, seconds of a worker's time beside which one HTTP round trip is
# nothing, and fans out to every worker.
SUGGESTED_MAX_PAYLOAD_MB = 1
# The same codes nginx.conf uses for the errors it answers itself.
HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _json_response(status, body):
    return Response(dumps(body), status=status, mimetype=JSON)


def payload_within_timeout_mb(rate, settings):
    """The most MB of JSON Lines that one worker runs in PAYLOAD_SHARE_OF_TIMEOUT of the
    timeout at `rate` characters a second (a JSON Lines byte carries at most one
    character, so that many MB hold at most that many characters), within what this
    server accepts and what SageMaker allows for the workers' concurrent requests."""
    mb = math.floor(rate * settings.timeout * PAYLOAD_SHARE_OF_TIMEOUT / (1024 * 1024))
    cap = TRANSFORM_MAX_PAYLOAD_MB // settings.workers
    if settings.max_payload_mb:
        cap = min(cap, settings.max_payload_mb)
    return min(mb, cap)


def suggested_payload_mb(rate, settings):
    """The MaxPayloadInMB /execution-parameters suggests: SUGGESTED_MAX_PAYLOAD_MB, or
    less where less is what fits in the timeout, but never under 1 MB, the least a job
    can ask for (create_app warns when even that does not fit)."""
    return max(1, min(SUGGESTED_MAX_PAYLOAD_MB, payload_within_timeout_mb(rate, settings)))


def _before(deadline, groups):
    """The groups, until the deadline passes: then ApiError 504 (which a request whose
    answer has not begun gets as its JSON error; once an answer streams, raising ends the
    connection without the last chunk, and the client sees a cut answer)."""
    for group in groups:
        if time.monotonic() > deadline:
            raise ApiError(504, "model_timeout", "the request ran past MODEL_SERVER_TIMEOUT")
        yield group


class _Counter:
    """A count shared by a worker's request threads; `with counter:` counts one while in."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def add(self, n):
        with self._lock:
            self.count += n

    def __enter__(self):
        self.add(1)

    def __exit__(self, *exc):
        self.add(-1)


class _Invocation:
    """What one /invocations request's log line says of it."""

    def __init__(self):
        self.started = time.monotonic()
        self.timing = Timing()
        self.texts = self.characters = 0

    def count(self, texts):
        self.texts += len(texts)
        self.characters += sum(len(t) for t in texts)


def create_app(nlp, settings):
    """The app around a loaded pipeline, with the one Batcher its requests share."""
    app = Flask(__name__)
    # Same limit as nginx's client_max_body_size, for when the app is reached directly.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    batcher = Batcher(nlp, settings.batch_characters, settings.timeout, settings.stuck_seconds)
    # worker.py reads it (is the model busy?), and so do the tests.
    app.extensions["batcher"] = batcher
    fanout = Fanout(settings.workers, settings.threads)
    app.extensions["fanout"] = fanout  # worker.py hands it gunicorn's socket
    # Requests that run for many merged calls: recycle.py waits for none to be running.
    long_requests = app.extensions["long_requests"] = _Counter()
    # Characters a second one worker runs: measured once, here, in gunicorn's master.
    rate = characters_per_second(nlp)
    app.extensions["characters_per_second"] = rate
    chunk = min(settings.chunk_characters, nlp.max_length)
    fits = payload_within_timeout_mb(rate, settings)
    log.info("one worker runs about %.0f characters a second: %d MB of JSON Lines in half "
             "of MODEL_SERVER_TIMEOUT; /execution-parameters suggests MaxPayloadInMB=%d",
             rate, fits, suggested_payload_mb(rate, settings))
    if fits < 1:
        log.warning("one worker cannot run a 1 MB mini-batch (the least a transform job "
                    "sends) in half of MODEL_SERVER_TIMEOUT=%d s; raise it, or such "
                    "requests may be refused as too_large_for_timeout", settings.timeout)

    def entities(texts, invocation, share=True):
        """Entity records per text, a long text cut into pieces and put back together;
        pieces of more than one merged call go to every worker (share)."""
        parts, plan = pieces.split(texts, chunk)
        characters = sum(len(p) for p in parts)
        if characters <= settings.batch_characters and len(parts) <= MAX_TEXTS_PER_CALL:
            return pieces.put_back(batcher.predict(parts, invocation.timing), plan)
        with long_requests:
            if share:
                deadline = invocation.started + settings.timeout
                size = fanout.part_characters(characters, settings.batch_characters)
                answers = fanout.run(_before(deadline, groups(parts, size)),
                                     batcher.predict, settings.stuck_seconds)
                return pieces.put_back([r for records in answers for r in records], plan)
            return pieces.put_back(batcher.predict(parts, invocation.timing), plan)

    def check_time(characters, share):
        """ApiError (413) for a request of that much work (model.work) that the workers it
        may run on (fanout.py) cannot finish within the timeout: better at once than a
        504, or a retried mini-batch, after MODEL_SERVER_TIMEOUT."""
        workers = fanout.width if share else 1
        seconds = characters / (rate * workers)
        if seconds > settings.timeout:
            raise ApiError(413, "too_large_for_timeout", (
                f"{characters} characters take {workers} worker(s) about {seconds:.0f} s, "
                f"over MODEL_SERVER_TIMEOUT={settings.timeout}; send less per request (a "
                "transform job's MaxPayloadInMB) or raise MODEL_SERVER_TIMEOUT (and the "
                "job's InvocationsTimeoutInSeconds)"))

    @app.get("/ping")
    def ping():
        # The app exists only once the model is loaded and warmed (wsgi.py), so being able
        # to answer is the health check. The public /ping is answered by nginx (nginx.conf).
        return Response(status=200)

    @app.get("/execution-parameters")
    def execution_parameters():
        # Batch transform asks this once; values set on the transform job win over it.
        # One request per worker keeps every core busy.
        return _json_response(200, {
            "MaxConcurrentTransforms": settings.workers,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": suggested_payload_mb(rate, settings),
        })

    @app.post("/invocations")
    def invocations():
        invocation = g.invocation = _Invocation()
        answer_type = encode.negotiate(request.accept_mimetypes, settings.default_accept)
        mimetype = request.mimetype
        decode.check_content_type(mimetype, request.mimetype_params.get("charset"))
        # A part of another worker's request runs here, in this worker (fanout.py).
        share = PART_HEADER not in request.headers
        if mimetype in JSONLINES_ALIASES:
            return _stream(request.stream, answer_type, invocation, share)
        texts, shape = decode.decode(request.get_data(cache=False), mimetype,
                                     settings.max_text_characters)
        invocation.count(texts)
        check_time(sum(work(t) for t in texts), share)
        body, content_type = encode.encode(texts, entities(texts, invocation, share), shape,
                                           answer_type)
        return Response(body, status=200, content_type=content_type)

    def _stream(body_stream, answer_type, invocation, share):
        """A JSON Lines body, answered a group of lines at a time (stream.py), the groups
        on every worker (fanout.py). The first group is answered before the answer
        begins, so that what fails on it (and so on any body of one group) still gets
        its JSON error and status."""
        body = stream.read(body_stream, settings.max_text_characters)
        deadline = invocation.started + settings.timeout
        # A part runs here as one group; a shared request in parts for every worker.
        size = (fanout.part_characters(body.characters, settings.batch_characters) if share
                else settings.batch_characters)
        shapes = collections.deque()

        long = False  # counted in long_requests from its second group on

        def texts_of_groups():
            nonlocal long
            for n, (texts, shape) in enumerate(
                    _before(deadline, body.groups(size))):
                if n == 1:
                    long = True
                    long_requests.add(1)
                shapes.append((texts, shape))
                invocation.count(texts)
                yield texts

        def answers():
            try:
                local = lambda texts: entities(texts, invocation, share=False)  # noqa: E731
                ran = (fanout.run(texts_of_groups(), local, settings.stuck_seconds)
                       if share else map(local, texts_of_groups()))
                for records in ran:
                    texts, shape = shapes.popleft()
                    yield texts, records, shape
            finally:
                if long:
                    long_requests.add(-1)
                body.close()

        try:
            check_time(body.work, share)
            answered = answers()
            if answer_type == HTML:
                # One page: made here, whole, so that what fails on any group still gets
                # its JSON error and status.
                page = b"".join(encode.encode_pieces(answered, answer_type))
                return Response(page, status=200, content_type=encode.content_type(HTML))
            first = list(itertools.islice(answered, 1))
        except BaseException:
            body.close()
            raise
        return Response(encode.encode_pieces(itertools.chain(first, answered), answer_type),
                        status=200,
                        content_type=encode.content_type(answer_type),
                        headers={"X-Accel-Buffering": "no"})

    @app.after_request
    def echo_custom_attributes(response):
        value = request.headers.get(CUSTOM_ATTRIBUTES)
        if value and len(value) <= 1024 and value.isascii() and value.isprintable():
            response.headers[CUSTOM_ATTRIBUTES] = value
        return response

    @app.after_request
    def log_invocation(response):
        # One line per invocation, written once its answer is sent (a streamed one runs
        # until then), in key=value words that CloudWatch Logs Insights can parse.
        if "invocation" not in g:
            return response
        words = {"id": request.headers.get(INFERENCE_ID, "-"),
                 "part": PART_HEADER in request.headers, "status": response.status_code}
        if TARGET_MODEL in request.headers:  # a multi-model endpoint's (models.py)
            words["target"] = request.headers[TARGET_MODEL].replace(" ", "%20")
        invocation = g.invocation

        def write():
            log.info("invocation %s texts=%d characters=%d wait_ms=%.1f model_ms=%.1f "
                     "total_ms=%.1f", " ".join(f"{k}={v}" for k, v in words.items()),
                     invocation.texts, invocation.characters, invocation.timing.wait * 1000,
                     invocation.timing.model * 1000,
                     (time.monotonic() - invocation.started) * 1000)

        response.call_on_close(write)
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
