"""What the container may use: its CPU quota and its memory limit and working set.

Read from the cgroup file system (v2, then v1) and /proc/meminfo. settings.py sizes the
workers from the CPUs; the multi-model manager (manager.py) decides from the free memory
whether a model fits. The arguments naming other roots are for tests.
"""

import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"
MEMINFO = "/proc/meminfo"
# cgroup v1 says "no limit" with a huge number rather than a word.
NO_LIMIT = 1 << 60


def read_text(path: str) -> str | None:
    """The file's text, or None where it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cpu_limit(root: str = CGROUP_ROOT) -> float | None:
    """The CPU quota in CPUs, or None where there is none."""
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with (
            open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as q,
            open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as p,
        ):
            v1_quota, v1_period = int(q.read()), int(p.read())
        return None if v1_quota <= 0 else v1_quota / v1_period
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_root: str = CGROUP_ROOT, affinity: set[int] | None = None) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota
    (rounded up: a quota of 1.5 CPUs keeps 2 workers busy), and at least 1.

    `docker run --cpus=2` (and SageMaker's instance sizing) sets a quota, not an
    affinity mask, so os.cpu_count() alone would overcount on a big host.
    """
    cpus = len(os.sched_getaffinity(0) if affinity is None else affinity)
    limit = cpu_limit(cgroup_root)
    return cpus if limit is None else min(cpus, max(1, math.ceil(limit)))


def _stat_value(text: str | None, key: str) -> int:
    """The value of `key` in a memory.stat file's text, or 0."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def cgroup_memory(root: str = CGROUP_ROOT) -> tuple[int | None, int | None]:
    """(limit, in use) in bytes of the memory cgroup at root, v2 then v1; None for the
    limit when there is none. In use is the working set: what is charged to the cgroup
    minus the page cache the kernel can drop without a fight (inactive_file), as
    `docker stats` counts it; a model's files read at load time are mostly that cache."""
    limit = read_text(os.path.join(root, "memory.max"))
    if limit is not None:
        current = read_text(os.path.join(root, "memory.current"))
        stat = read_text(os.path.join(root, "memory.stat"))
        key = "inactive_file"
    else:
        v1 = os.path.join(root, "memory")
        limit = read_text(os.path.join(v1, "memory.limit_in_bytes"))
        current = read_text(os.path.join(v1, "memory.usage_in_bytes"))
        stat = read_text(os.path.join(v1, "memory.stat"))
        key = "total_inactive_file"
    if limit is None or current is None:
        return None, None
    try:
        used = int(current) - _stat_value(stat, key)
        bytes_ = None if limit.strip() == "max" else int(limit)
    except ValueError:
        return None, None
    return (None if bytes_ is None or bytes_ >= NO_LIMIT else bytes_), max(0, used)


def mem_available(meminfo: str = MEMINFO) -> int | None:
    """The machine's MemAvailable in bytes, or None."""
    for line in (read_text(meminfo) or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def available_bytes(cgroup_root: str = CGROUP_ROOT, meminfo: str = MEMINFO) -> int:
    """What this container may still take: its cgroup's limit less its working set, and
    never more than the machine has available; without a limit, the machine's."""
    limit, used = cgroup_memory(cgroup_root)
    host = mem_available(meminfo)
    if limit is None or used is None:
        return host if host is not None else NO_LIMIT
    return min(limit - used, host) if host is not None else limit - used
