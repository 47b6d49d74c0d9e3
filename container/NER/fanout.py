"""One large request on every worker: its groups of texts go to all of them at once.

A request is one worker's: gunicorn hands the connection to one process, and that
process runs one model call at a time, on one core. That is right for many small
requests, which spread over the workers by themselves. But a transform job in the
SageMaker SDK's local mode sends one request at a time, an async endpoint may hold one
1 GB request per instance, and one long document is one request: each would leave every
other core idle.

So the worker that holds a request of several groups (stream.py's lines, or a long text's
pieces) becomes its coordinator: it sends each group to gunicorn's own socket as a part
request (PART_HEADER, never fanned out again), one per worker at a time and a few more
waiting (IN_FLIGHT_BEYOND_WORKERS), and puts the answers back in order. gunicorn gives
each part to whichever worker accepts it first, an idle one before a busy one
(worker.py), and there it merges with that worker's other requests like any request
(batcher.py). A part is a short JSON Lines body of texts; its cost beside the model's is
a JSON round trip.

A coordinator holds a thread while its parts hold others. So that parts always find a
thread, a worker with T threads, of W workers, runs at most T / (W + 1 + B) coordinators
(B: IN_FLIGHT_BEYOND_WORKERS): with W + B parts each in flight, they hold at most as many
connections as all the workers have threads, and every other request ends without waiting
on anyone. A request that finds no coordinator's place free runs its groups in its own
worker, as it would with one worker (and as the Flask app does where there is no gunicorn
socket: the tests).
"""

import collections
import http.client
import itertools
import json
import queue
import socket
import threading

from protocol import JSONLINES, ApiError, dumps

# Marks a request one coordinator sent: it runs where it lands.
PART_HEADER = "X-Ner-Part"
# A shared request is cut into at least this many parts per worker. Its last part runs
# while the other workers have nothing left of it, and a transform job's client sends its
# next mini-batch only once this one is answered: small parts keep that tail short.
PARTS_PER_WORKER = 32
# But none smaller than this (unless a merged call is smaller still): each part costs an
# HTTP round trip on gunicorn's socket.
MIN_PART_CHARACTERS = 10_000
# Parts in flight beyond one per worker: waiting in a worker's queue (batcher.py), the
# next part starts as soon as that worker's current one ends, without waiting for the
# round trip through the coordinator's thread, which shares its worker's GIL with a model
# call and so answers late. gunicorn gives a waiting part to either busy worker, so with
# one waiting the other worker often found none when its part ended and sat idle; with
# two, on 2 workers, each usually has one.
IN_FLIGHT_BEYOND_WORKERS = 2
# Answered parts held while an earlier one still runs, per worker (_share): room for the
# parts in flight and as many answered beside them.
PARTS_AHEAD = 4


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Fanout:
    def __init__(self, workers, threads):
        self.workers = workers
        self.socket_path = None  # worker.py sets it in each gunicorn worker
        # Each coordinator's own thread and its parts' (the module's docstring).
        places = threads // (1 + workers + IN_FLIGHT_BEYOND_WORKERS)
        # With too few threads for even one coordinator per worker, no fan-out at all.
        self._places = threading.BoundedSemaphore(places) if places else None

    @property
    def width(self):
        """How many workers one request may run on."""
        return self.workers if self.socket_path and self._places else 1

    def part_characters(self, characters, most):
        """How many characters each group (part) of a request of about `characters` may
        hold: `most` (what one merged call takes), or less, so that every worker gets
        PARTS_PER_WORKER of them, but not under MIN_PART_CHARACTERS. A request that fits
        in one merged call stays one group, as a JSON `texts` request of its size does;
        with no other worker to share with, there is no tail to shorten: `most`."""
        if self.width < 2 or characters <= most:
            return most
        share = -(-characters // (self.width * PARTS_PER_WORKER))
        return min(most, max(MIN_PART_CHARACTERS, share))

    def run(self, groups, local, timeout):
        """Records per group of texts, in order: on every worker where there are several
        and groups to share, else `local` (texts -> records) here. groups: an iterator of
        lists of texts."""
        groups = iter(groups)
        if self.width < 2:
            yield from map(local, groups)
            return
        first = next(groups, None)
        if first is None:
            return
        second = next(groups, None)
        if second is None:
            yield local(first)
            return
        groups = itertools.chain([first, second], groups)
        if not self._places.acquire(blocking=False):
            yield from map(local, groups)
            return
        try:
            yield from self._share(groups, timeout)
        finally:
            self._places.release()

    def _share(self, groups, timeout):
        """Keep one part per worker in flight and IN_FLIGHT_BEYOND_WORKERS more, the next
        sent as soon as any is answered; yield the answers in order."""
        # Sent as any part ends, not only the oldest: a worker whose part ends first would
        # otherwise wait, idle, for a slower one. Answered parts wait here for the ones
        # before them, at most PARTS_AHEAD per worker, so that a stalled part does not
        # let the rest of a large body pile up in memory.
        # A request that ends early leaves its parts to finish alone: daemon threads that
        # end with their connections, whose answers no one reads.
        finished = queue.SimpleQueue()  # each part puts itself here once answered
        pending = collections.deque()  # in order: running or answered, not yet yielded
        running, more = 0, True
        while True:
            while (more and running < self.workers + IN_FLIGHT_BEYOND_WORKERS
                   and len(pending) < self.workers * PARTS_AHEAD):
                texts = next(groups, None)
                if texts is None:
                    more = False
                    break
                pending.append(_Part(self.socket_path, texts, timeout, finished))
                running += 1
            while pending and pending[0].answered:
                yield pending.popleft().result()
            if not pending and not more:
                return
            if running:
                finished.get()
                running -= 1


class _Part(threading.Thread):
    """One group of texts sent to gunicorn's socket, answered on a thread of its own."""

    def __init__(self, socket_path, texts, timeout, finished):
        super().__init__(name="part", daemon=True)
        self.socket_path, self.texts, self.timeout = socket_path, texts, timeout
        self.records = self.error = None
        self.answered = False
        self._finished = finished  # told when this part is answered (or failed)
        self.start()

    def run(self):
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            body = "".join(dumps(t) + "\n" for t in self.texts).encode("utf-8")
            conn.request("POST", "/invocations", body=body, headers={
                "Content-Type": JSONLINES, "Accept": JSONLINES, PART_HEADER: "1"})
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                error = json.loads(answer).get("error", {})
                self.error = ApiError(response.status, error.get("code", "part_failed"),
                                      error.get("message", "a part of the request failed"))
            else:
                self.records = [json.loads(line)["entities"] for line in answer.splitlines()]
        except Exception as e:  # noqa: BLE001 (carried to the coordinator, which raises it)
            self.error = e
        finally:
            conn.close()
            self.answered = True
            self._finished.put(self)

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error
        if len(self.records) != len(self.texts):
            raise RuntimeError(f"a part of {len(self.texts)} texts got {len(self.records)} "
                               "answers")
        return self.records

