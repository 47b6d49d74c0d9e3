"""A container's memory from its cgroup, sampled while a request runs.

The figure the large-body and long-document goals hold is **anonymous memory** (cgroup v2
`memory.stat` anon; v1 `memory.stat` total_rss): the heaps of nginx, gunicorn and the
workers, which a request that holds its body or its answer whole makes grow. The cgroup's
total (v2 `memory.current`, v1 `memory.usage_in_bytes`) also counts page cache: nginx
writes a large body to its client_body temporary file and stream.py spools the checked
lines to /tmp, and those pages are charged to the container but the kernel reclaims them
under pressure, so a total that grows with the body does not mean that the server needs
that memory. Both are reported; the goals use anon.
"""

import glob
import threading
import time

MB = 1e6


def cgroup_dir(container_id):
    """The container's memory cgroup folder (v2 unified, or v1's memory controller), for
    Docker's cgroupfs and systemd drivers alike."""
    for pattern in (
        f"/sys/fs/cgroup/memory/docker/{container_id}*",
        f"/sys/fs/cgroup/memory/system.slice/docker-{container_id}*.scope",
        f"/sys/fs/cgroup/system.slice/docker-{container_id}*.scope",
        f"/sys/fs/cgroup/docker/{container_id}*",
    ):
        found = glob.glob(pattern)
        if found:
            return found[0]
    raise FileNotFoundError(f"no memory cgroup found for container {container_id[:12]}")


def read(folder):
    """{"anon_mb", "total_mb", "file_mb"} of the cgroup now."""
    stat = {}
    with open(f"{folder}/memory.stat") as f:
        for line in f:
            key, value = line.split()
            stat[key] = int(value)
    if "anon" in stat:  # cgroup v2
        with open(f"{folder}/memory.current") as f:
            total = int(f.read())
        anon, file = stat["anon"], stat["file"]
    else:  # v1: total_* include the container's child cgroups, if any
        with open(f"{folder}/memory.usage_in_bytes") as f:
            total = int(f.read())
        anon, file = stat["total_rss"], stat["total_cache"]
    return {"anon_mb": anon / MB, "total_mb": total / MB, "file_mb": file / MB}


def idle(folder, seconds=1.0, interval=0.1):
    """The median of each figure over a short quiet moment."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(read(folder))
        time.sleep(interval)
    return {k: sorted(s[k] for s in samples)[len(samples) // 2] for k in samples[0]}


class Sampler(threading.Thread):
    """Reads the cgroup every `interval` seconds until stop(); peak() is the highest of each
    figure. Memory ramps over the seconds a large request takes, so 50 ms misses little."""

    def __init__(self, folder, interval=0.05):
        super().__init__(daemon=True)
        self.folder, self.interval = folder, interval
        self.samples = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.samples.append(read(self.folder))
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join()
        self.samples.append(read(self.folder))
        return self

    def peak(self):
        return {k: max(s[k] for s in self.samples) for k in self.samples[0]}


def above_idle(folder, run):
    """Call run() while sampling; (its result, {figure: peak above idle MB}, idle, samples)."""
    base = idle(folder)
    sampler = Sampler(folder)
    sampler.start()
    try:
        result = run()
    finally:
        sampler.stop()
    peak = sampler.peak()
    return result, {
        "peak_anon_above_idle_mb": round(peak["anon_mb"] - base["anon_mb"], 1),
        "peak_total_above_idle_mb": round(peak["total_mb"] - base["total_mb"], 1),
        "peak_file_above_idle_mb": round(peak["file_mb"] - base["file_mb"], 1),
        "idle_anon_mb": round(base["anon_mb"], 1),
        "idle_total_mb": round(base["total_mb"], 1),
        "samples": len(sampler.samples),
    }
