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
waiting (tuning.IN_FLIGHT_BEYOND_WORKERS), and puts the answers back in order. gunicorn gives
each part to whichever worker accepts it first, an idle one before a busy one
(worker.py), and there it merges with that worker's other requests like any request
(batcher.py). A part is a short JSON Lines body of texts (cut by cutting.py's rule, to
part_limit); its cost beside the model's is a JSON round trip. Its answer says how long
it spent waiting for and in the model (PART_TIMING_HEADER), which the coordinator's own
log line adds up.

A coordinator holds a thread while its parts hold others. So that parts always find a
thread, a worker with T threads, of W workers, runs at most T / (W + 1 + B) coordinators
(B: IN_FLIGHT_BEYOND_WORKERS): with W + B parts each in flight, they hold at most as many
connections as all the workers have threads, and every other request ends without waiting
on anyone. A request that finds no coordinator's place free runs its groups in its own
worker, as it would with one worker (and as the Flask app does where there is no gunicorn
socket: the tests).
"""

import collections
import itertools
import json
import queue
import threading
from collections.abc import Callable, Iterable, Iterator

from batcher import Timing
from cutting import Limit
from protocol import JSONLINES, ApiError, dumps
from results import Result
from tuning import IN_FLIGHT_BEYOND_WORKERS, MIN_PART_CHARACTERS, PARTS_AHEAD, PARTS_PER_WORKER
from unixhttp import UnixHTTPConnection

# Marks a request one coordinator sent: it runs where it lands.
PART_HEADER = "X-Ner-Part"
# A part's answer carries "<seconds in the model> <seconds waiting for it>" here.
PART_TIMING_HEADER = "X-Ner-Part-Timing"

# Texts -> their records, run in this worker.
Local = Callable[[list[str]], list[Result]]


class Fanout:
    def __init__(self, workers: int, threads: int):
        self.workers = workers
        self.socket_path: str | None = None  # worker.py sets it in each gunicorn worker
        # Each coordinator's own thread and its parts' (the module's docstring).
        places = threads // (1 + workers + IN_FLIGHT_BEYOND_WORKERS)
        # With too few threads for even one coordinator per worker, no fan-out at all.
        self._places = threading.BoundedSemaphore(places) if places else None

    @property
    def width(self) -> int:
        """How many workers one request may run on."""
        return self.workers if self.socket_path and self._places else 1

    def part_limit(self, characters: int, call: Limit) -> Limit:
        """What each part of a request of about `characters` may hold: what one merged
        call takes (`call`), or less, so that every worker gets PARTS_PER_WORKER of them,
        but not under MIN_PART_CHARACTERS. A request that fits in one merged call stays
        one part; with no other worker to share with, there is no tail to shorten."""
        if self.width < 2 or characters <= call.characters:
            return call
        share = -(-characters // (self.width * PARTS_PER_WORKER))
        return Limit(min(call.characters, max(MIN_PART_CHARACTERS, share)), call.texts)

    def run(
        self, groups: Iterable[list[str]], local: Local, timeout: float, timing: Timing
    ) -> Iterator[list[Result]]:
        """Answers per group of texts, in order: on every worker where there are several
        and groups to share, else `local` here. The parts' time in and waiting for the
        model goes to `timing`."""
        groups = iter(groups)
        if self.width < 2 or self._places is None:
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
            for part in self._share(groups, timeout):
                timing.ran(part.model_seconds, waited=part.wait_seconds)
                yield part.result()
        finally:
            self._places.release()

    def _share(self, groups: Iterator[list[str]], timeout: float) -> Iterator["_Part"]:
        """Keep one part per worker in flight and IN_FLIGHT_BEYOND_WORKERS more, the next
        sent as soon as any is answered; yield the parts in order once answered."""
        # Sent as any part ends, not only the oldest: a worker whose part ends first would
        # otherwise wait, idle, for a slower one. Answered parts wait here for the ones
        # before them, at most PARTS_AHEAD per worker.
        # A request that ends early leaves its parts to finish alone: daemon threads that
        # end with their connections, whose answers no one reads.
        assert self.socket_path is not None  # width > 1
        finished: queue.SimpleQueue[_Part] = queue.SimpleQueue()  # parts put themselves here
        pending: collections.deque[_Part] = collections.deque()  # in order, not yet yielded
        running, more = 0, True
        while True:
            while (
                more
                and running < self.workers + IN_FLIGHT_BEYOND_WORKERS
                and len(pending) < self.workers * PARTS_AHEAD
            ):
                texts = next(groups, None)
                if texts is None:
                    more = False
                    break
                pending.append(_Part(self.socket_path, texts, timeout, finished))
                running += 1
            while pending and pending[0].answered:
                yield pending.popleft()
            if not pending and not more:
                return
            if running:
                finished.get()
                running -= 1


class _Part(threading.Thread):
    """One group of texts sent to gunicorn's socket, answered on a thread of its own."""

    def __init__(
        self,
        socket_path: str,
        texts: list[str],
        timeout: float,
        finished: "queue.SimpleQueue[_Part]",
    ):
        super().__init__(name="part", daemon=True)
        self.socket_path, self.texts, self.timeout = socket_path, texts, timeout
        self.records: list[Result] = []
        self.error: BaseException | None = None
        self.model_seconds = self.wait_seconds = 0.0
        self.answered = False
        self._finished = finished  # told when this part is answered (or failed)
        self.start()

    def run(self) -> None:
        conn = UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            body = "".join(dumps(t) + "\n" for t in self.texts).encode("utf-8")
            conn.request(
                "POST",
                "/invocations",
                body=body,
                headers={"Content-Type": JSONLINES, "Accept": JSONLINES, PART_HEADER: "1"},
            )
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200:
                error = json.loads(answer).get("error", {})
                self.error = ApiError(
                    response.status,
                    error.get("code", "part_failed"),
                    error.get("message", "a part of the request failed"),
                )
            else:
                self.records = [json.loads(line) for line in answer.splitlines()]
                model, wait = (response.getheader(PART_TIMING_HEADER) or "0 0").split()
                self.model_seconds, self.wait_seconds = float(model), float(wait)
        except Exception as e:  # noqa: BLE001 (carried to the coordinator, which raises it)
            self.error = e
        finally:
            conn.close()
            self.answered = True
            self._finished.put(self)

    def result(self) -> list[Result]:
        self.join()
        if self.error is not None:
            raise self.error
        if len(self.records) != len(self.texts):
            raise RuntimeError(f"a part of {len(self.texts)} texts got {len(self.records)} answers")
        return self.records
