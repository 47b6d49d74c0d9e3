"""How much memory a multi-model endpoint's model will take, before it is loaded.

The manager (manager.py) answers a load 507 before anything starts when the estimate does
not fit in what the container has free. The first guess (tuning.BASE_BYTES and the two
below it) is corrected by every load: what the load really used over the guess.
"""

import collections
import os

from tuning import BASE_BYTES, DISK_FACTOR, WORKER_BYTES


def folder_bytes(path: str) -> int:
    """The size of the files under path (symbolic links not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


class Estimator:
    """How much memory a model will take, from its size on disk, corrected by loads.

    A load's real use (the highest PSS of its process tree while it loaded, or once it was
    ready) over the first guess is a correction; the largest of the last few applies to
    later guesses, so one model bigger in memory than its files suggest makes the next
    guesses larger too. The growth a
    worker may reach before it is recycled (MODEL_SERVER_RECYCLE_MB) is added on top.
    """

    def __init__(
        self,
        recycle_bytes: int = 0,
        base: int = BASE_BYTES,
        per_worker: int = WORKER_BYTES,
        disk_factor: float = DISK_FACTOR,
        history: int = 8,
    ):
        self.recycle_bytes, self.base = recycle_bytes, base
        self.per_worker, self.disk_factor = per_worker, disk_factor
        self.ratios: collections.deque[float] = collections.deque(maxlen=history)

    def guess(self, disk_bytes: int, workers: int) -> float:
        return self.base + workers * self.per_worker + self.disk_factor * disk_bytes

    def correction(self) -> float:
        return max(self.ratios, default=1.0)

    def estimate(self, disk_bytes: int, workers: int) -> int:
        return int(
            self.guess(disk_bytes, workers) * self.correction() + workers * self.recycle_bytes
        )

    def observe(self, disk_bytes: int, workers: int, used_bytes: int) -> None:
        if used_bytes > 0:
            self.ratios.append(used_bytes / self.guess(disk_bytes, workers))
