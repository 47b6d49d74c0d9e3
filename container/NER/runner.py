"""The request runner: the one path every /invocations body takes.

    decode (decode.py, stream.py)  the body -> groups of records: (texts, Shape)
    cut (pieces.py, cutting.py)    each group's texts -> pieces -> units of work
    run (batcher.py, fanout.py)    each unit -> nlp.pipe, merged with other requests,
                                   here or on every worker
    put back (pieces.py)           the units' answers -> an answer per text, per group
    encode (encode.py)             the groups, in order -> the answer's bytes

A JSON or plain-text body is one group (`Whole`), read whole (a real-time endpoint caps
it at 6 MB); a JSON Lines body is checked whole, then read back a group at a time
(stream.py), so that memory holds one group, whatever the body's size. Either way the
deadline, the time check, fan-out, the count of long requests, the timing in the log
line and the encoding are done here, once.

`Runner` is the long-lived state of a worker (its Batcher, Fanout, the measured rate);
`_Run` is one request's way through it, and lives as long as the request.
"""

import collections
import functools
import itertools
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Protocol

from spacy.language import Language

import capacity
import decode
import encode
import pieces
import pipeline
import stream
from batcher import Batcher, Timing
from cutting import Limit, groups
from decode import Shape
from encode import Answered
from fanout import PART_TIMING_HEADER, Fanout
from protocol import HTML, ApiError
from results import Reader, Result
from settings import Settings
from tuning import MIN_PIECE_CHARACTERS, SUGGESTED_MAX_PAYLOAD_MB

log = logging.getLogger("ner.runner")


class Body(Protocol):
    """A request's texts, ready to run: what decode.py or stream.py made of its body."""

    streamed: bool  # answered as it runs, a group at a time
    characters: int  # what cutting.py counts
    work: int  # what capacity.work counts

    def groups(self, limit: Limit) -> Iterator[tuple[list[str], Shape]]: ...

    def close(self) -> None: ...


class Whole:
    """A JSON or plain-text body's texts: one group, answered whole."""

    streamed = False

    def __init__(self, texts: list[str], shape: Shape):
        self.texts, self.shape = texts, shape
        self.characters = sum(len(t) for t in texts)
        self.work = sum(capacity.work(t) for t in texts)

    def groups(self, limit: Limit) -> Iterator[tuple[list[str], Shape]]:
        yield self.texts, self.shape

    def close(self) -> None:
        pass


class Counter:
    """A count shared by a worker's request threads."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.count += n


class Invocation:
    """One /invocations request: what it asked for, and what its log line says of it."""

    def __init__(self, answer_type: str, part: bool):
        self.started = time.monotonic()
        self.answer_type = answer_type
        self.part = part  # a part of another worker's request (fanout.py): runs here
        self.timing = Timing()
        self.texts = self.characters = 0

    def count(self, texts: list[str]) -> None:
        self.texts += len(texts)
        self.characters += sum(len(t) for t in texts)


@dataclass
class Answer:
    """What the view sends: the body, whole or a chunk at a time, and its headers."""

    body: bytes | Iterator[bytes]
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


class Runner:
    """A worker's request path around its loaded pipeline."""

    def __init__(self, nlp: Language, settings: Settings):
        self.settings = settings
        # What one merged call holds (cutting.py), and the pieces a long text is cut into.
        self.call = Limit(settings.call_characters)
        self.chunk = min(settings.chunk_characters, nlp.max_length)
        span_keys = pipeline.answered_span_keys(nlp, settings)
        if span_keys:
            log.info("answers carry doc.spans under %s", ",".join(span_keys))
        self.batcher = Batcher(
            nlp,
            self.call,
            settings.timeout,
            settings.stuck_seconds,
            read=Reader(span_keys, more=settings.span_keys is None),
        )
        self.fanout = Fanout(settings.workers, settings.threads)
        # Requests that run for many merged calls: recycle.py waits for none to be running.
        self.long_requests = Counter()
        # Characters a second one worker runs: measured once, here, in gunicorn's master.
        self.rate = capacity.characters_per_second(nlp)
        self._log_capacity()

    def _log_capacity(self) -> None:
        fits = capacity.payload_within_timeout_mb(self.rate, self.settings)
        log.info(
            "one worker runs about %.0f characters a second: %d MB of JSON Lines in "
            "half of MODEL_SERVER_TIMEOUT; /execution-parameters suggests "
            "MaxPayloadInMB=%d",
            self.rate,
            fits,
            SUGGESTED_MAX_PAYLOAD_MB,
        )
        if fits < SUGGESTED_MAX_PAYLOAD_MB:
            log.warning(
                "one worker cannot run a %d MB mini-batch in half of "
                "MODEL_SERVER_TIMEOUT=%d s; raise it, or such requests may be "
                "refused as too_large_for_timeout",
                SUGGESTED_MAX_PAYLOAD_MB,
                self.settings.timeout,
            )

    def decode(self, data: bytes, mimetype: str) -> Whole:
        """A JSON or plain-text body (decode.check_content_type first)."""
        return Whole(*decode.decode(data, mimetype, self.settings.max_text_characters))

    def read_lines(self, body: IO[bytes]) -> stream.Body:
        """A JSON Lines body, checked whole."""
        return stream.read(body, self.settings.max_text_characters)

    def run(self, body: Body, invocation: Invocation) -> Answer:
        """The answer to a decoded body; ApiError for a request that cannot be answered.
        What fails on the first group (and so on any body of one group) is raised here,
        before the answer begins, so that it gets its JSON error and status."""
        run = _Run(self, body, invocation)
        try:
            capacity.check_time(body.work, self.rate, run.workers, self.settings.timeout)
            answered = run.answers()
            if not body.streamed or invocation.part or invocation.answer_type == HTML:
                whole = b"".join(encode.encode(answered, invocation.answer_type))
                return Answer(
                    whole,
                    encode.content_type(invocation.answer_type),
                    self._part_headers(invocation),
                )
            first = list(itertools.islice(answered, 1))
        except BaseException:
            run.close()
            raise
        chunks = encode.encode(itertools.chain(first, answered), invocation.answer_type)
        return Answer(
            _closing(chunks, run),
            encode.content_type(invocation.answer_type),
            {"X-Accel-Buffering": "no"},
        )

    def run_units(
        self, units: Iterator[list[str]], invocation: Invocation
    ) -> Iterator[list[Result]]:
        """Answers per unit, in order: a part's here, a request's on every worker."""
        local = functools.partial(self.batcher.predict, timing=invocation.timing)
        if invocation.part:
            return map(local, units)
        return self.fanout.run(units, local, self.settings.stuck_seconds, invocation.timing)

    @staticmethod
    def _part_headers(invocation: Invocation) -> dict[str, str]:
        """A part's answer tells its coordinator how long it spent with the model."""
        if not invocation.part:
            return {}
        timing = invocation.timing
        return {PART_TIMING_HEADER: f"{timing.model:.6f} {timing.wait:.6f}"}


def _closing(chunks: Iterator[bytes], run: "_Run") -> Iterator[bytes]:
    """The streamed answer's chunks; the request's resources are freed when it ends,
    whether sent whole or cut short by the client."""
    try:
        yield from chunks
    finally:
        run.close()


@dataclass
class _Group:
    """A group of a body's records, waiting for the records of its units."""

    texts: list[str]
    shape: Shape
    plan: pieces.Plan
    units: int
    records: list[Result] = field(default_factory=list)
    answered: int = 0

    @property
    def done(self) -> bool:
        return self.answered == self.units


class _Run:
    """One request's way through the runner: its groups cut into units, the units run,
    their records put back together a group at a time, in order."""

    def __init__(self, runner: Runner, body: Body, invocation: Invocation):
        self.runner, self.body, self.invocation = runner, body, invocation
        # A part runs here, as one merged call; a request on every worker, in parts.
        self.workers = 1 if invocation.part else runner.fanout.width
        self.limit = (
            runner.call
            if invocation.part
            else runner.fanout.part_limit(body.characters, runner.call)
        )
        # Pieces no longer than the unit they go in (cutting.py), nor than a chunk.
        self.piece = max(MIN_PIECE_CHARACTERS, min(runner.chunk, self.limit.characters))
        self.deadline = invocation.started + runner.settings.timeout
        self.pending: collections.deque[_Group] = collections.deque()
        self.long = False  # counted in long_requests once over one merged call
        self.closed = False

    def units(self) -> Iterator[list[str]]:
        """Every group's pieces, in units; ApiError 504 once the deadline has passed (a
        request whose answer has begun is then cut short: the client sees it end
        without its last chunk)."""
        n = 0
        for texts, shape in self.body.groups(self.limit):
            self.invocation.count(texts)
            parts, plan = pieces.split(texts, self.piece)
            units = self._units(parts)
            self.pending.append(_Group(texts, shape, plan, len(units)))
            for unit in units:
                if time.monotonic() > self.deadline:
                    raise ApiError(
                        504, "model_timeout", "the request ran past MODEL_SERVER_TIMEOUT"
                    )
                n += 1
                if not self.long and (
                    n > 1 or not self.runner.call.fits(sum(len(p) for p in unit), len(unit))
                ):
                    self.long = True  # more than one merged call
                    self.runner.long_requests.add(1)
                yield unit

    def _units(self, parts: list[str]) -> list[list[str]]:
        """A group's pieces as fan-out parts; run here, they are one unit, which the
        batcher cuts into merged calls by the same rule, merging the requests beside it
        into each (cut here too, the last call of each unit would run short)."""
        if self.workers > 1:
            return list(groups(parts, self.limit))
        return [parts] if parts else []

    def answers(self) -> Iterator[Answered]:
        """The groups, answered, in order."""
        try:
            for records in self.runner.run_units(self.units(), self.invocation):
                yield from self._finished()
                group = self.pending[0]  # the first not yet answered: this unit's
                group.records.extend(records)
                group.answered += 1
            yield from self._finished()
        finally:
            self.close()

    def _finished(self) -> Iterable[Answered]:
        while self.pending and self.pending[0].done:
            group = self.pending.popleft()
            yield Answered(group.texts, pieces.put_back(group.records, group.plan), group.shape)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.long:
            self.runner.long_requests.add(-1)
        self.body.close()
