"""What processes use and hold, read from /proc: memory (smaps_rollup), process state
and session (stat), and the connections open on a Unix socket (net/unix).

recycle.py reads a worker's own private memory; the multi-model manager (manager.py)
adds up a model's process tree and collects orphans; a model's serve (server.py) drains
its socket. The `proc` arguments are for tests.
"""

import os

from cgroups import read_text

PROC = "/proc"


def smaps_kb(path: str, *fields: str) -> int:
    """The sum, in kB, of those fields ("Pss:", "Private_Dirty:", ...) of an smaps_rollup
    file; 0 where it cannot be read (a process that has just exited)."""
    total = 0
    for line in (read_text(path) or "").splitlines():
        if line.startswith(fields):
            total += int(line.split()[1])
    return total


def uss_mb(path: str = "/proc/self/smaps_rollup") -> float:
    """A process's private memory (its USS: what the machine gets back when it exits) in
    MB (10^6 bytes)."""
    return smaps_kb(path, "Private_Clean:", "Private_Dirty:") * 1024 / 1e6


def pss_bytes(pids: list[int], proc: str = PROC) -> int:
    """The proportional set size of those processes together: shared pages counted once."""
    return sum(
        smaps_kb(os.path.join(proc, str(pid), "smaps_rollup"), "Pss:") * 1024 for pid in pids
    )


def stat_fields(pid: int | str, proc: str = PROC) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...]."""
    text = read_text(os.path.join(proc, str(pid), "stat"))
    return text[text.rindex(")") + 2 :].split() if text else None


def session_pids(sid: int, proc: str = PROC) -> list[int]:
    """The live (not zombie) processes of session sid: one model's whole tree."""
    pids = []
    for name in os.listdir(proc):
        if name.isdigit():
            fields = stat_fields(name, proc)
            if fields and fields[3] == str(sid) and fields[0] != "Z":
                pids.append(int(name))
    return pids


def reap_orphans(known: set[int], proc: str = PROC) -> None:
    """Collect our zombie children that are none of `known` (Popen's own): as PID 1 of a
    container, serve inherits the processes of a model tree whose parents were killed."""
    me = str(os.getpid())
    for name in os.listdir(proc):
        if name.isdigit() and int(name) not in known:
            fields = stat_fields(name, proc)
            if fields and fields[0] == "Z" and fields[1] == me:
                try:
                    os.waitpid(int(name), os.WNOHANG)
                except ChildProcessError:
                    pass


def connections_in_flight(sock_path: str, net_unix: str = "/proc/net/unix") -> int:
    """How many connections to the Unix socket at sock_path are open: accepted (state 03)
    or waiting in its backlog (02). nginx opens one per request and none is kept alive, so
    this is the requests a model's gunicorn holds or will be handed (a model's serve
    drains them before it stops)."""
    count = 0
    for line in (read_text(net_unix) or "").splitlines()[1:]:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == sock_path and fields[5] in ("02", "03"):
            count += 1
    return count
