"""The load generator: closed-loop HTTP/1.1 clients on keep-alive connections, in threads.

The load generator shares the machine's cores with the server it measures, so every
microsecond it spends is taken from the server. It is kept cheap on purpose:
- each request is a pre-built byte string (request line, headers and JSON body encoded
  once, before the clock starts), written with one sendall;
- responses are read with a minimal parser (status line and Content-Length) instead of
  http.client, whose per-response header parsing costs several times more;
- answers are kept as raw bytes and decoded only after the clock stops;
- the garbage collector is off during a run;
- the threads block in recv (no GIL held) while the server works.
Its CPU use is measured (os.times of this process) and reported with every run, so the
reader can see what the client took from the server.
"""

import gc
import itertools
import json
import os
import socket
import threading
import time

HOST = "127.0.0.1"


class ProtocolError(RuntimeError):
    pass


def http_request(port, method, path, body=b""):
    """The bytes of one request; a POST carries a JSON body."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode("ascii") + b"\r\n" + body


def invocations(port, bodies):
    """The bytes of a POST /invocations for each body, built before any clock starts."""
    return [http_request(port, "POST", "/invocations", b) for b in bodies]


def one_text_bodies(texts):
    """A one-text request's JSON body ({"text": ...}) for each text."""
    return [json.dumps({"text": t}, ensure_ascii=False).encode("utf-8") for t in texts]


class Connection:
    """One persistent connection; exchange() sends pre-built bytes, returns (status, body)."""

    def __init__(self, port, timeout=120):
        self.port, self.timeout = port, timeout
        self._connect()

    def _connect(self):
        self.sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def exchange(self, request):
        if self.sock is None:  # the server closed the last one (nginx's keepalive_requests)
            self._connect()
        self.sock.sendall(request)
        buf = self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            buf += self._recv()
        head = buf[:end].lower()
        rest = buf[end + 4 :]
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            raise ProtocolError(f"response without Content-Length: {head[:200]!r}")
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop >= 0 else None])
        while len(rest) < length:
            rest += self._recv()
        self.buf = rest[length:]
        if b"\r\nconnection: close" in head:
            self.close()
        return int(head[9:12]), rest[:length]

    def _recv(self):
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ProtocolError("connection closed by the server")
        return chunk

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class PingSampler(threading.Thread):
    """GET /ping every `interval` seconds on its own connection, timing each answer."""

    def __init__(self, port, interval=0.02):
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.samples = []  # (monotonic time sent, seconds, status)
        self.stopping = threading.Event()
        self.error = None

    def run(self):
        conn = Connection(self.port)
        request = http_request(self.port, "GET", "/ping")
        try:
            while not self.stopping.is_set():
                t0 = time.perf_counter()
                status, _ = conn.exchange(request)
                self.samples.append((t0, time.perf_counter() - t0, status))
                self.stopping.wait(self.interval)
        except Exception as e:  # reported by the caller
            self.error = repr(e)
        finally:
            conn.close()

    def under_load(self, run):
        """(seconds, status) of the pings sent while every client of `run` had work."""
        if self.error:
            raise ProtocolError(f"/ping sampler failed: {self.error}")
        return [
            (s, status) for t0, s, status in self.samples if run.started <= t0 < run.full_load_until
        ]


class Run:
    """What one closed-loop run measured."""

    def __init__(self, n):
        self.latencies = [0.0] * n
        self.statuses = [0] * n
        self.bodies = [b""] * n
        self.seconds = 0.0
        self.client_cpu_seconds = 0.0
        self.started = 0.0  # perf_counter when the clients were let go
        self.full_load_until = 0.0  # perf_counter when the first client ran out of work
        self.errors = []


def run(port, requests, concurrency, ping_sampler=None):
    """Send every request once, `concurrency` at a time, each client on its own connection.

    Closed loop: a client sends its next request as soon as its answer arrived, so the
    server always has `concurrency` requests in hand until the work runs out.
    """
    n = len(requests)
    result = Run(n)
    counter = itertools.count()  # next() on a count is atomic in CPython
    connections = [Connection(port) for _ in range(concurrency)]
    go = threading.Barrier(concurrency + 1)
    first_idle = threading.Lock()

    def client(conn):
        go.wait()
        try:
            while True:
                i = next(counter)
                if i >= n:
                    break
                t0 = time.perf_counter()
                status, body = conn.exchange(requests[i])
                result.latencies[i] = time.perf_counter() - t0
                result.statuses[i], result.bodies[i] = status, body
        except Exception as e:  # reported after the run, not swallowed
            result.errors.append(repr(e))
        finally:
            with first_idle:
                if not result.full_load_until:
                    result.full_load_until = time.perf_counter()

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in connections]
    for t in threads:
        t.start()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        cpu0 = os.times()
        if ping_sampler is not None:
            ping_sampler.start()
        go.wait()
        result.started = time.perf_counter()
        for t in threads:
            t.join()
        result.seconds = time.perf_counter() - result.started
        if ping_sampler is not None:
            ping_sampler.stopping.set()
            ping_sampler.join()
        cpu1 = os.times()
    finally:
        if gc_was_enabled:
            gc.enable()
        for c in connections:
            c.close()
    result.client_cpu_seconds = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    if result.errors:
        raise ProtocolError(f"{len(result.errors)} client(s) failed: {result.errors[:3]}")
    bad = [s for s in result.statuses if s != 200]
    if bad:
        first = result.statuses.index(bad[0])
        raise ProtocolError(
            f"{len(bad)} of {n} requests failed, e.g. HTTP {bad[0]}: {result.bodies[first][:300]!r}"
        )
    return result
