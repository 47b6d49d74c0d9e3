"""How concurrent requests are merged: one nlp.pipe call for whatever is queued.

Each gunicorn worker runs MODEL_SERVER_THREADS request threads (gunicorn's gthread
worker). Only one of them runs the pipeline at a time. A request thread decodes its body
and queues its texts; if the model is idle, it runs the model itself, at once (no thread
hand-off, no delay window, so a lone request is as fast as a direct nlp.pipe call). If the
model is busy, it waits. The thread running the model takes everything queued at that
moment (in arrival order, up to MODEL_SERVER_BATCH_CHARACTERS) into one nlp.pipe call;
once its own request is answered it hands the model to the oldest waiting request, whose
thread takes everything queued by then. So batches form only from what queued while the
model was busy. spaCy spends about twice the CPU per document on a call of one text as on
a batch, so under load this is where the throughput comes from.

Every merged call runs inside nlp.memory_zone(): the strings and lexemes that new words
add to the Vocab are freed when it ends, so memory stays flat however many novel words
the service sees. Docs do not outlive the zone; the answer is made of plain records.

Each request is answered as soon as its own texts are done (nlp.pipe yields in order),
not when the whole merged call ends. If the pipeline raises, the requests not yet
answered are run again one by one, so only the one that fails gets the error.

A model call that never returns is not something a request thread can notice (gunicorn's
heartbeat comes from the worker's main thread, which stays alive): a watchdog thread ends
the worker when one call has run for `stuck_seconds`, and gunicorn starts a new one.
"""

import collections
import itertools
import logging
import os
import threading
import time

from protocol import ApiError

log = logging.getLogger("ner.batcher")


def entity_records(doc):
    """Plain data for a Doc's entities; start/end are character offsets, end exclusive:
    text[start:end] == the entity's text."""
    return [{"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
            for e in doc.ents]


class _Job:
    """One request's texts, waiting for their entity records."""

    __slots__ = ("texts", "characters", "queued", "records", "error", "done", "wake")

    def __init__(self, texts):
        self.texts = texts
        self.characters = sum(len(t) for t in texts)
        self.queued = time.monotonic()
        self.records = self.error = None
        self.done = False
        self.wake = threading.Event()  # set when done, or when its thread gets the model

    def finish(self, records=None, error=None):
        self.records, self.error, self.done = records, error, True
        self.wake.set()


class Batcher:
    def __init__(self, nlp, max_characters, timeout, stuck_seconds, on_stuck=None):
        """max_characters: the cap on one merged call (a request over it runs alone).
        timeout: a request queued longer than this has had its 504 from nginx already,
        so it is dropped rather than run. stuck_seconds: how long one call may run before
        the watchdog calls on_stuck (default: end this worker process)."""
        self.nlp = nlp
        self.max_characters = max_characters
        self.timeout = timeout
        self.stuck_seconds = stuck_seconds
        self.on_stuck = on_stuck or _end_worker
        self._queue = collections.deque()
        self._lock = threading.Lock()
        self._busy = False  # a request thread holds the model
        self._watched_in = None  # the pid whose watchdog runs; gunicorn forks after load
        self._busy_since = None  # monotonic start of the call running now, or None
        self.calls = 0  # merged nlp.pipe calls so far (logged at DEBUG)

    def predict(self, texts):
        """Entity records per text; raises what the pipeline raised on these texts."""
        if not texts:
            return []
        job = _Job(texts)
        with self._lock:
            self._watch_once()
            self._queue.append(job)
            holding = not self._busy
            self._busy = True
        if not holding:
            job.wake.wait()  # answered by the thread holding the model, or handed it
        if not job.done:  # this thread holds the model: its own job is the oldest queued
            try:
                while not job.done:
                    with self._lock:
                        jobs = self._take()
                    self._run(jobs)
            finally:
                self._hand_on()
        if job.error is not None:
            raise job.error
        return job.records

    def _hand_on(self):
        """Give the model to the oldest waiting request, or mark it idle."""
        with self._lock:
            if self._queue:
                self._queue[0].wake.set()
            else:
                self._busy = False

    @property
    def busy(self):
        """A request thread is running the model (worker.py accepts later then)."""
        return self._busy

    def queued(self):
        """Requests waiting for the model now."""
        with self._lock:
            return len(self._queue)

    def _watch_once(self):
        # Threads do not survive fork: start the watchdog in the process that serves, on
        # its first request (the app is built in gunicorn's master, before the fork).
        if self._watched_in != os.getpid():
            self._watched_in = os.getpid()
            threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def _take(self):
        """The jobs of the next merged call: the oldest, then more while they fit."""
        jobs = [self._queue.popleft()]
        characters = jobs[0].characters
        while self._queue and characters + self._queue[0].characters <= self.max_characters:
            characters += self._queue[0].characters
            jobs.append(self._queue.popleft())
        return jobs

    def _run(self, jobs):
        """Answer jobs: drop those queued past the timeout, merge the rest."""
        late = time.monotonic() - self.timeout
        for job in jobs:
            if job.queued < late:  # nginx has answered 504 already: no one is waiting
                job.finish(error=ApiError(504, "model_timeout", "the request waited longer "
                                          "than MODEL_SERVER_TIMEOUT for the model"))
        jobs = [j for j in jobs if not j.done]
        if jobs:
            self._busy_since = time.monotonic()
            try:
                self._pipe(jobs)
            finally:
                self._busy_since = None

    def _pipe(self, jobs):
        """One nlp.pipe call for all jobs; on an error, the unanswered ones one by one."""
        self.calls += 1
        pending = collections.deque(jobs)
        try:
            with self.nlp.memory_zone():
                docs = self.nlp.pipe(t for job in jobs for t in job.texts)
                while pending:
                    job = pending[0]
                    records = [entity_records(d) for d in itertools.islice(docs, len(job.texts))]
                    pending.popleft().finish(records)
                docs.close()  # nothing of the call outlives the zone, not even the generator
        except Exception as e:
            if len(jobs) == 1:  # the request thread raises it, and the app logs it
                jobs[0].finish(error=e)
                return
            log.warning("the pipeline failed on a merged call (%r); running its %d "
                        "unanswered requests one by one", e, len(pending))
            for job in pending:
                self._pipe([job])
            return
        if log.isEnabledFor(logging.DEBUG):  # what merging does, and that memory is flat
            log.debug("nlp.pipe call %d: %d requests, %d texts, %d characters; vocabulary "
                      "%d strings", self.calls, len(jobs), sum(len(j.texts) for j in jobs),
                      sum(j.characters for j in jobs), len(self.nlp.vocab.strings))

    def _watch(self):
        while True:
            time.sleep(1)
            since = self._busy_since
            if since is not None and time.monotonic() - since > self.stuck_seconds:
                self.on_stuck(time.monotonic() - since)


def _end_worker(seconds):
    log.critical("one nlp.pipe call has run for %.0f s: the model is stuck; ending this "
                 "worker so that gunicorn starts a new one", seconds)
    logging.shutdown()
    # Not 3 or 4: gunicorn's arbiter stops the whole server on those exit codes.
    os._exit(1)
