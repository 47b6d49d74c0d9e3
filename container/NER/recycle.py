"""Replacing a worker whose memory has grown: MODEL_SERVER_RECYCLE_MB.

Why: memory zones free the strings and lexemes a call adds, but not the cells they took in
spaCy's hash tables (the StringStore's and the Vocab's preshed maps keep growing with every
novel word ever seen), and glibc keeps some of what is freed (bench/README.md, "Memory over
weeks"). No setting of spaCy's stops that; a fresh process does. gunicorn forks the new
worker from the preloaded master at once: model, vocabulary and tokenizer cache as
they were loaded, shared copy-on-write.

What counts is the worker's USS, its private pages (Private_Clean + Private_Dirty of
/proc/self/smaps_rollup): what the machine gives back when the worker exits. RSS would
count the pages it shares with the master and its siblings, and would not see the master's
pages it has copied on write. The worker's start is its USS after its first model call,
once it has copied what any worker copies; it is replaced once its USS has grown
MODEL_SERVER_RECYCLE_MB over that.

What is not growth does not count: before each reading glibc gives back the free memory it
keeps at the top of its heaps (malloc_trim), so the workspace of a large call that has
ended is not counted; and what counts is the least of the last WINDOW readings, so the
workspace of a call running at one reading is not either. A worker holding a long request
(a JSON Lines body of many groups, a request whose parts run on every worker: runner.py
counts them) does not begin to recycle until it holds none: draining would keep its core
idle, and its replacement unforked, for as long as that request runs.

How, without losing a request: a thread in each worker reads its USS every
RECYCLE_CHECK_SECONDS.
Past the limit, it takes the recycle lock, then
1. stops accepting: with worker_connections at 0, gthread's loop unregisters the listening
   socket on its next pass, and the other workers take the new connections;
2. waits until every connection it holds has been answered: those requests finish in the
   merged call they are in, or in the next one, which takes everything queued;
3. sets `alive = False`, as gunicorn's own max_requests does. The worker's loop ends, the
   process exits, and the master forks a new worker in its place.

The lock is a POSIX record lock (lockf) on a file the master opens when gunicorn loads
the worker class, before any fork: every worker inherits the descriptor, the lock belongs
to one process at a time, and the kernel drops it when that process exits. So one worker
recycles at a time; another one that is past its limit waits for the next check after
that exit.
"""

import collections
import ctypes
import ctypes.util
import fcntl
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from procfs import uss_mb
from tuning import RECYCLE_CHECK_SECONDS, RECYCLE_DRAIN_POLL_SECONDS, RECYCLE_WINDOW

log = logging.getLogger("ner.recycle")

# Opened before the fork (this module is imported with the worker class); unlinked at once.
_LOCK = tempfile.TemporaryFile(prefix="ner-recycle-")


def _libc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError):  # no glibc: nothing to trim
        return None


# Looked up once: find_library runs ldconfig.
_MALLOC_TRIM = _libc_trim()


def _trim() -> None:
    """Give glibc's free memory back to the system."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def watch(worker: Any, limit_mb: int | None = None) -> None:
    """Start the thread that recycles this gunicorn worker (worker.MergingThreadWorker;
    call it in the worker process, once its loop is about to run). limit_mb: default
    MODEL_SERVER_RECYCLE_MB; 0 turns recycling off."""
    limit_mb = worker.flask_app.settings.recycle_mb if limit_mb is None else limit_mb
    if limit_mb:
        threading.Thread(
            target=_watch, args=(worker, limit_mb), name="recycle", daemon=True
        ).start()


def _watch(worker: Any, limit_mb: int) -> None:
    runner = worker.flask_app.runner
    while runner.batcher.calls == 0:
        time.sleep(RECYCLE_CHECK_SECONDS)
    _trim()
    start = uss_mb()
    readings: collections.deque[float] = collections.deque(maxlen=RECYCLE_WINDOW)
    while True:
        time.sleep(RECYCLE_CHECK_SECONDS)
        _trim()
        readings.append(uss_mb())
        now = min(readings)
        if now - start >= limit_mb and not runner.long_requests.count and _try_lock():
            _recycle(worker, start, now, limit_mb)
            return


def _try_lock() -> bool:
    try:
        fcntl.lockf(_LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # another worker is recycling; it holds the lock until it exits
        return False


def _recycle(worker: Any, start: float, now: float, limit_mb: int) -> None:
    began = time.monotonic()
    log.info(
        "recycle begins: pid %d, USS %.0f MB, %.0f MB over its start (limit %d MB); "
        "no longer accepting, %d requests held",
        os.getpid(),
        now,
        now - start,
        limit_mb,
        worker.nr_conns,
    )
    worker.worker_connections = 0
    worker.method_queue.defer(lambda: None)  # wake the loop now rather than within 1 s
    # Connections accepted before the loop's next pass are held, and counted, too.
    while worker.nr_conns or worker._accepting:
        time.sleep(RECYCLE_DRAIN_POLL_SECONDS)
    log.info(
        "recycle ends: pid %d answered every request it held in %.2f s; exiting so "
        "that gunicorn forks a fresh worker",
        os.getpid(),
        time.monotonic() - began,
    )
    worker.alive = False
    worker.method_queue.defer(lambda: None)
