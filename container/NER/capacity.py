"""How much work the workers get through: what a text costs, how fast one worker runs,
and what therefore fits in MODEL_SERVER_TIMEOUT.

The rate is measured once, in gunicorn's master at start, on this machine with this
pipeline (characters_per_second). From it come the start-up log's MaxPayloadInMB line,
and the 413 too_large_for_timeout a request gets at once when the workers it may run on
cannot finish it in time: better than a 504, or a retried mini-batch, after the timeout.
"""

import math
import time

from spacy.language import Language

from protocol import ApiError
from settings import Settings
from tuning import PAYLOAD_SHARE_OF_TIMEOUT, TEXT_WORK

# SageMaker's limits on a transform job: MaxPayloadInMB at most 100, and
# MaxPayloadInMB x MaxConcurrentTransforms at most 100 MB.
TRANSFORM_MAX_PAYLOAD_MB = 100

# News-like sentences of the length batch jobs carry, for characters_per_second. Varied, so
# the figure is not that of one sentence the tokenizer has cached.
_CALIBRATION = [
    f"{who} said on {day} that {org} would open {n} new offices in {place} next year, "
    f"after sales rose {n + 3} percent."
    for n, (who, org, place, day) in enumerate(
        [
            ("Maria Lopez", "Siemens", "Madrid", "Monday"),
            ("John Smith", "Apple", "Berlin", "Friday"),
            ("Aiko Tanaka", "Toyota", "Ohio", "Tuesday"),
            ("Pierre Martin", "Renault", "Lyon", "May 3"),
            ("Li Wei", "Alibaba", "Singapore", "Sunday"),
            ("Anna Novak", "Skoda", "Prague", "June 12"),
            ("Omar Haddad", "Aramco", "Houston", "Thursday"),
            ("Emma Brown", "Tesco", "Leeds", "March 9"),
        ]
    )
] * 8


def work(text: str) -> int:
    """What running text costs the model, in characters: all but its spaces and line
    breaks, of which a body padded with whitespace may have millions at almost no cost,
    plus TEXT_WORK."""
    return len(text) - text.count(" ") - text.count("\n") + TEXT_WORK


def characters_per_second(nlp: Language, rounds: int = 5) -> float:
    """How many characters (counted by `work`) of ordinary text one process runs through
    nlp.pipe a second, measured here (the best of a few rounds, in a memory zone as
    requests run)."""
    characters = sum(work(t) for t in _CALIBRATION)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        with nlp.memory_zone():
            for _ in nlp.pipe(_CALIBRATION):
                pass
        best = min(best, time.perf_counter() - started)
    return characters / best


def payload_within_timeout_mb(rate: float, settings: Settings) -> int:
    """The most MB of JSON Lines that one worker runs in PAYLOAD_SHARE_OF_TIMEOUT of the
    timeout at `rate` characters a second (a JSON Lines byte carries at most one
    character, so that many MB hold at most that many characters), within what this
    server accepts and what SageMaker allows for the workers' concurrent requests."""
    mb = math.floor(rate * settings.timeout * PAYLOAD_SHARE_OF_TIMEOUT / (1024 * 1024))
    cap = TRANSFORM_MAX_PAYLOAD_MB // settings.workers
    if settings.max_payload_mb:
        cap = min(cap, settings.max_payload_mb)
    return min(mb, cap)


def check_time(characters: int, rate: float, workers: int, timeout: int) -> None:
    """ApiError (413) for a request of that much work that `workers` workers at `rate`
    cannot finish within the timeout."""
    seconds = characters / (rate * workers)
    if seconds > timeout:
        raise ApiError(
            413,
            "too_large_for_timeout",
            (
                f"{characters} characters take {workers} worker(s) about {seconds:.0f} s, "
                f"over MODEL_SERVER_TIMEOUT={timeout}; send less per request (a "
                "transform job's MaxPayloadInMB) or raise MODEL_SERVER_TIMEOUT (and the "
                "job's InvocationsTimeoutInSeconds)"
            ),
        )
