"""How concurrent requests are merged: one nlp.pipe call for whatever is queued.

Each gunicorn worker runs MODEL_SERVER_THREADS request threads (gunicorn's gthread
worker). Only one of them runs the pipeline at a time. A request thread decodes its body
and queues its texts; if the model is idle, it runs the model itself, at once (no thread
hand-off, no delay window, so a lone request is as fast as a direct nlp.pipe call). If the
model is busy, it waits. The thread running the model takes the texts queued at that
moment (in arrival order, as much as cutting.Limit admits: MODEL_SERVER_BATCH_CHARACTERS
and MAX_TEXTS_PER_CALL) into one nlp.pipe call;
once its own request is answered it hands the model to the oldest waiting request, whose
thread takes everything queued by then. So batches form only from what queued while the
model was busy. spaCy spends much more CPU per document on a call of one text than on
a batch, so under load this is where the throughput comes from.

A request larger than MODEL_SERVER_BATCH_CHARACTERS does not hold the model for all of its
texts: each call takes a slice of it, up to the cap, and requests that queue meanwhile
join the next call. So a 6 MB batch shares the worker with the one-text requests beside
it, and no single call runs long enough to look stuck to the watchdog.

Every merged call runs inside nlp.memory_zone(): the strings and lexemes that new words
add to the Vocab are freed when it ends, so the Vocab does not keep what each request
brought. Docs do not outlive the zone; the answer is made of plain records.

A request is answered once the nlp.pipe minibatch (nlp.batch_size texts) that holds its
last text is done: nlp.pipe yields in order, but a minibatch's docs all come out together,
so a one-text request merged behind many others waits for that minibatch, not for the whole
call. If the pipeline raises (anything, BaseException included), the requests not yet
answered are run again one by one, so only the one that fails gets the error; every
request taken is answered, and an answer once given is never replaced.

A model call that never returns is not something a request thread can notice (gunicorn's
heartbeat comes from the worker's main thread, which stays alive): a watchdog thread ends
the worker when one call has run for `stuck_seconds`, and gunicorn starts a new one. No
request thread waits longer than that for its answer.
"""

import collections
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Generator
from typing import cast

from spacy.language import Language
from spacy.tokens import Doc

from cutting import Limit
from protocol import ApiError
from results import Reader, Result

# What a text's answer holds when the caller does not say: its entities.
ENTITIES_ONLY = Reader()

log = logging.getLogger("ner.batcher")


class PipelineError(Exception):
    """What the pipeline raised that is not an Exception (SystemExit, KeyboardInterrupt,
    GeneratorExit from a component): carried to the request as an ordinary error, so that
    it gets a JSON 500 and the worker's thread lives on."""


class Timing:
    """Where one request's time went: seconds waiting for the model, and seconds in the
    nlp.pipe calls that carried its texts (a merged call counts whole for each request in
    it: that is how long each waited for its answer)."""

    __slots__ = ("wait", "model")

    def __init__(self) -> None:
        self.wait = self.model = 0.0

    def ran(self, seconds: float, waited: float) -> None:
        self.model += seconds
        self.wait += waited


def _timed_out(message: str) -> ApiError:
    return ApiError(504, "model_timeout", message)


class _Job:
    """One request's texts, waiting for their answers (taken a slice at a time)."""

    __slots__ = (
        "texts",
        "lengths",
        "taken",
        "queued",
        "records",
        "error",
        "done",
        "wake",
        "timing",
    )

    def __init__(self, texts: list[str], timing: Timing | None):
        self.texts = texts
        self.timing = timing  # the caller's Timing, or None
        self.lengths = [len(t) for t in texts]
        self.taken = 0  # texts handed to a call so far
        self.queued = time.monotonic()
        self.records: list[Result] = []
        self.error: BaseException | None = None
        self.done = False
        self.wake = threading.Event()  # set when done, or when its thread gets the model

    def add(self, records: list[Result]) -> None:
        """The answers of its next texts, in order; done once all have them."""
        if not self.done:
            self.records.extend(records)
            if len(self.records) == len(self.texts):
                self.finish()

    def finish(self, error: BaseException | None = None) -> None:
        if self.done:  # an answer given is never replaced
            return
        self.error, self.done = error, True
        self.wake.set()


# A merged call's share of one job: (job, its first text in the call, how many texts).
_Slice = tuple[_Job, int, int]


class Batcher:
    def __init__(
        self,
        nlp: Language,
        limit: Limit,
        timeout: float,
        stuck_seconds: float,
        on_stuck: Callable[[float], None] | None = None,
        read: Callable[[Doc], Result] = ENTITIES_ONLY,
    ):
        """limit: what one merged call may hold (cutting.py; a text over it runs alone).
        timeout: a request queued longer than this has had its 504 from nginx already,
        so what is left of it is dropped rather than run. stuck_seconds: how long one
        call may run before the watchdog calls on_stuck (default: end this worker).
        read: what a text's answer holds, made from its Doc (results.py)."""
        self.nlp = nlp
        self.read = read
        self.limit = limit
        self.timeout = timeout
        self.stuck_seconds = stuck_seconds
        self.on_stuck = on_stuck or _end_worker
        self._queue: collections.deque[_Job] = collections.deque()
        self._lock = threading.Lock()
        self._busy = False  # a request thread holds the model
        self._watched_in: int | None = None  # whose watchdog runs; gunicorn forks after load
        self._watchdog: threading.Thread | None = None
        self._closed = threading.Event()  # close(): the watchdog ends
        self._busy_since: float | None = None  # start of the call running now, or None
        self.calls = 0  # merged nlp.pipe calls so far (logged at DEBUG)

    def predict(self, texts: list[str], timing: Timing | None = None) -> list[Result]:
        """Entity records per text; raises what the pipeline raised on these texts. A
        Timing, if given, gets the seconds these texts waited for the model and ran."""
        if not texts:
            return []
        job = _Job(texts, timing)
        with self._lock:
            self._watch_once()
            self._queue.append(job)
            holding = not self._busy
            self._busy = True
            waiting = len(self._queue)
        if not holding:
            # What merging will take, and for the tests a sign that a request is queued.
            log.debug("a request of %d texts waits for the model: %d queued", len(texts), waiting)
            self._wait(job)  # answered by the thread holding the model, or handed it
        if not job.done:  # this thread holds the model: its own job is the oldest queued
            try:
                while not job.done:
                    with self._lock:
                        slices = self._take()
                    self._run(slices)
            finally:
                self._hand_on()
        if job.error is not None:
            raise job.error
        return job.records

    def _wait(self, job: _Job) -> None:
        # Every call ahead of this one ends within stuck_seconds or the watchdog ends the
        # worker; a wait past that means something lost the hand-off, so say so.
        bound = self.timeout + self.stuck_seconds
        if job.wake.wait(bound):
            return
        with self._lock:
            if job.wake.is_set():  # handed the model, or answered, just now
                return
            if job in self._queue:
                self._queue.remove(job)
            job.finish(_timed_out(f"no answer from the model within {bound} s"))
        log.error("a request waited %d s without getting the model or an answer", bound)

    def _hand_on(self) -> None:
        """Give the model to the oldest waiting request, or mark it idle. A request that
        the cap put back and that was answered since (an error, a timeout) has no thread
        waiting for the model any more: it leaves the queue, or no one would run it."""
        with self._lock:
            while self._queue and self._queue[0].done:
                self._queue.popleft()
            if self._queue:
                self._queue[0].wake.set()
            else:
                self._busy = False

    @property
    def busy(self) -> bool:
        """A request thread is running the model (worker.py accepts later then)."""
        return self._busy

    def queued(self) -> int:
        """Requests waiting for the model now."""
        with self._lock:
            return len(self._queue)

    def _watch_once(self) -> None:
        # Threads do not survive fork: start the watchdog in the process that serves, on
        # its first request (the app is built in gunicorn's master, before the fork).
        if self._watched_in != os.getpid():
            self._watched_in = os.getpid()
            self._watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)
            self._watchdog.start()

    def _take(self) -> list[_Slice]:
        """The next merged call: [(job, first text, number of texts)], the first job's
        next texts first, then more while they fit under the cap. A job whose texts are
        all taken, or that is answered already (an error, a timeout), leaves the queue; one
        that the cap cuts goes to its back, so the jobs behind it join the next call
        instead of waiting for all of it."""
        slices: list[_Slice] = []
        characters = texts = 0
        while self._queue:
            job = self._queue[0]
            if job.done:
                self._queue.popleft()
                continue
            n = 0
            for length in itertools.islice(job.lengths, job.taken, None):
                if not self.limit.admits(characters, texts + n, length):
                    break
                characters += length
                n += 1
            if not n:  # its next text does not fit: it leads the next call
                break
            slices.append((job, job.taken, n))
            job.taken += n
            texts += n
            self._queue.popleft()
            if job.taken < len(job.texts):  # the cap is reached inside this job
                self._queue.append(job)
                break
        return slices

    def _run(self, slices: list[_Slice]) -> None:
        """Answer the slices: drop jobs queued past the timeout, merge the rest."""
        late = time.monotonic() - self.timeout
        for job, _, _ in slices:
            if job.queued < late:  # nginx has answered 504 already: no one is waiting
                job.finish(
                    _timed_out("the request waited longer than MODEL_SERVER_TIMEOUT for the model")
                )
        slices = [s for s in slices if not s[0].done]
        if slices:
            self._busy_since = started = time.monotonic()
            try:
                self._pipe(slices)
            finally:
                self._busy_since = None
                ran = time.monotonic() - started
                for job, first, _ in slices:
                    if job.timing is not None:
                        job.timing.ran(ran, waited=started - job.queued if not first else 0)

    def _pipe(self, slices: list[_Slice]) -> None:
        """One nlp.pipe call for all slices; on an error, the unanswered ones one by one."""
        self.calls += 1
        pending = collections.deque(slices)
        try:
            with self.nlp.memory_zone():
                texts = [t for job, first, n in slices for t in job.texts[first : first + n]]
                # A generator (spaCy types it as an Iterator): closed below.
                docs = cast(Generator[Doc, None, None], self.nlp.pipe(texts))
                try:
                    while pending:
                        job, _, n = pending[0]
                        job.add([self.read(d) for d in itertools.islice(docs, n)])
                        pending.popleft()
                finally:
                    docs.close()  # nothing of the call outlives the zone, not the generator
        except BaseException as e:  # whatever a component raised: every slice is answered
            error = e if isinstance(e, Exception) else PipelineError(repr(e))
            if len(slices) == 1:  # the request thread raises it, and the app logs it
                slices[0][0].finish(error)
                return
            log.warning(
                "the pipeline failed on a merged call (%r); running its %d "
                "unanswered requests one by one",
                e,
                len(pending),
            )
            for one in pending:
                if not one[0].done:
                    self._pipe([one])
            return
        if log.isEnabledFor(logging.DEBUG):  # what merging does, and that memory is flat
            log.debug(
                "nlp.pipe call %d: %d requests, %d texts, %d characters; vocabulary %d strings",
                self.calls,
                len(slices),
                len(texts),
                sum(len(t) for t in texts),
                len(self.nlp.vocab.strings),
            )

    def close(self) -> None:
        """End the watchdog (a worker never needs to: it dies with the process; tests
        build many batchers in one)."""
        self._closed.set()
        if self._watchdog is not None and self._watched_in == os.getpid():
            self._watchdog.join()

    def _watch(self) -> None:
        while not self._closed.wait(1):
            since = self._busy_since
            if since is not None and time.monotonic() - since > self.stuck_seconds:
                self.on_stuck(time.monotonic() - since)


def _end_worker(seconds: float) -> None:
    log.critical(
        "one nlp.pipe call has run for %.0f s: the model is stuck; ending this "
        "worker so that gunicorn starts a new one",
        seconds,
    )
    logging.shutdown()
    # Not 3 or 4: gunicorn's arbiter stops the whole server on those exit codes.
    os._exit(1)
