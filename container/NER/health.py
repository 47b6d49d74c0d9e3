"""Worker heartbeats, so that /ping can tell a busy worker from one that cannot answer.

nginx answers /ping from the `ready` file in serve's run folder, so busy workers cannot
delay it. That file alone would say 200 while every worker is stopped, wedged or dying
again and again. So each worker's main thread, the one that accepts connections, touches
a file of its own, `<run folder>/heartbeats/<pid>`, from gunicorn's gthread loop (worker.py
calls beat() from notify()). That loop runs at least once a second whatever the request
threads are doing: a worker busy with long model calls keeps beating, while one that is
stopped, wedged in a call that holds the interpreter, or dead stops.

serve's supervisor loop reads the files (Monitor): when no settled worker has beaten for
MODEL_SERVER_HEALTH_SECONDS it removes `ready` (and /ping answers 503), and it puts the
file back as soon as one beats again.

Times are CLOCK_MONOTONIC seconds, written as the files' mtimes (as gunicorn does for its
own heartbeat): one clock for every process on the machine, and no wall-clock jumps.
"""

import os
import time

from tuning import BEAT_SECONDS, SETTLE_SECONDS


class Heartbeat:
    """The beating side, in one worker process."""

    def __init__(self, folder: str):
        self.pid = os.getpid()
        self.path = os.path.join(folder, str(self.pid))
        self.last: float | None = None
        self.born = time.monotonic()
        self._create()

    def _create(self) -> None:
        # The file holds when this worker started beating; written whole, then renamed, so
        # serve never reads half of it (and a pid reused by a new worker starts afresh).
        tmp = f"{self.path}.new"
        with open(tmp, "w") as f:
            f.write(repr(self.born))
        os.utime(tmp, (self.born, self.born))  # never a wall-clock mtime, even briefly
        os.replace(tmp, self.path)

    def beat(self) -> None:
        now = time.monotonic()
        if self.last is not None and now - self.last < BEAT_SECONDS:
            return
        try:
            os.utime(self.path, (now, now))
        except FileNotFoundError:  # removed (serve thought the pid gone): say it again
            self._create()
            os.utime(self.path, (now, now))
        self.last = now


_heartbeat: Heartbeat | None = None


def beat(folder: str) -> None:
    """Called from every turn of a worker's main loop (worker.py), with the folder serve
    named (Settings.heartbeat_dir; empty where gunicorn was started some other way: no
    beat). Never raises: a full disk or a removed run folder must not stop a worker that
    can still answer; it only makes /ping fail, which is the truth about an instance that
    cannot write to /tmp."""
    global _heartbeat
    try:
        if _heartbeat is None or _heartbeat.pid != os.getpid():  # first beat after fork
            if not folder:
                return
            _heartbeat = Heartbeat(folder)
        _heartbeat.beat()
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: a reused pid, not our worker
        return False
    return True


class Monitor:
    """The watching side, in serve: is there a worker able to answer?"""

    def __init__(self, folder: str, window: float):
        self.folder, self.window = folder, window
        # serve starts watching once a request has gone through a worker: that is the
        # last time one was known able, before any heartbeat has settled.
        self.last_able = time.monotonic()

    def newest_settled_beat(self) -> float | None:
        """The latest beat of any worker that has beaten for SETTLE_SECONDS; removes the
        files of workers that are gone."""
        newest = None
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return None
        for name in names:
            if not name.isdigit():
                continue
            path = os.path.join(self.folder, name)
            if not _alive(int(name)):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                continue
            try:
                with open(path) as f:
                    born = float(f.read())
                beat = os.stat(path).st_mtime
            except (OSError, ValueError):
                continue  # replaced between listdir and open: read it next time
            if beat - born >= SETTLE_SECONDS and (newest is None or beat > newest):
                newest = beat
        return newest

    def able(self) -> bool:
        """False once no settled worker has beaten for `window` seconds."""
        newest = self.newest_settled_beat()
        if newest is not None:
            self.last_able = max(self.last_able, newest)
        return time.monotonic() - self.last_able <= self.window
