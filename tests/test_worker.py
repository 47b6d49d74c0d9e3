"""What worker.py and recycle.py take from gunicorn's gthread worker, pinned.

Both lean on gthread internals, not on a public API: worker.py overrides
ThreadWorker.accept (a busy worker lets an idle one accept first), notify (the heartbeat,
health.py), load_wsgi (gunicorn's socket for fanout.py) and run (recycle.py); recycle.py
sets worker_connections to 0 and waits on nr_conns and _accepting. gunicorn is pinned by
hash in container/requirements.txt, so it changes only when someone upgrades it; then
these tests say whether each of those still holds. They drive the real MergingThreadWorker
loop in this process, on a real unix socket, with a stand-in app: nothing here is timed.
"""

import itertools
import os
import selectors
import socket
import threading
from types import SimpleNamespace

import pytest
from gunicorn import sock
from gunicorn.config import Config
from gunicorn.glogging import Logger

import recycle
import worker as worker_module
from conftest import wait_until
from tuning import ACCEPT_DEFER_SECONDS
from worker import MergingThreadWorker

THREADS = 2


class App:
    """The WSGI app a worker runs: what worker.py reads of the Flask app (predictor.NerApp:
    its runner's batcher and fanout, its settings), and requests held until the test lets
    them go."""

    def __init__(self):
        self.runner = SimpleNamespace(
            batcher=SimpleNamespace(busy=False), fanout=SimpleNamespace(socket_path=None)
        )
        self.settings = SimpleNamespace(heartbeat_dir="")
        self.go = threading.Event()
        self.go.set()
        self.started = threading.Semaphore(0)

    def __call__(self, environ, start_response):
        self.started.release()
        self.go.wait(timeout=30)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    def wsgi(self):  # what gunicorn's Application gives load_wsgi
        return self


class Recording(MergingThreadWorker):
    """The worker, with what its loop calls recorded (the thread each call ran on)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def accept(self, listener):
        self.calls.append(("accept", threading.get_ident(), listener))
        super().accept(listener)

    def notify(self):
        self.calls.append(("notify", threading.get_ident(), None))
        super().notify()

    def wait_for_and_dispatch_events(self, timeout):
        self.calls.append(("wait", threading.get_ident(), timeout))
        super().wait_for_and_dispatch_events(timeout)


@pytest.fixture
def make_worker(tmp_path):
    """A MergingThreadWorker on a unix socket of its own, set up as gunicorn's
    init_process sets it up (minus signals), its loop not yet running."""
    made = []

    def make():
        cfg = Config()
        for name, value in (
            ("bind", f"unix:{tmp_path}/gunicorn-{len(made)}.sock"),
            ("threads", THREADS),
            ("worker_connections", THREADS),
            ("keepalive", 0),
        ):  # as serve starts gunicorn
            cfg.set(name, value)
        log = Logger(cfg)
        app = App()
        w = Recording(0, os.getppid(), sock.create_sockets(cfg, log), app, 30, cfg, log)
        w.tpool = w.get_thread_pool()
        w.poller = selectors.DefaultSelector()
        w.method_queue.init()
        w.load_wsgi()
        made.append(w)
        return w

    yield make
    for w in made:
        w.wsgi.go.set()
        w.tpool.shutdown(wait=True)


class Loop:
    """The worker's own run() on a thread; stopped as recycle.py stops it."""

    def __init__(self, w, monkeypatch):
        self.worker = w
        self.watched = []
        monkeypatch.setattr(recycle, "watch", self.watched.append)
        self.thread = threading.Thread(target=w.run, name="gthread-loop")
        self.thread.start()
        wait_until(lambda: w._accepting, "the loop never began accepting")

    def stop(self):
        self.worker.alive = False
        self.worker.method_queue.defer(lambda: None)
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "alive = False did not end gthread's loop"


def connect(w):
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(10)
    client.connect(w.sockets[0].cfg_addr)
    return client


def get(w):
    """A request sent on a new connection, as nginx sends each one: (client, answer)."""
    client = connect(w)
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    return client


def read_answer(client):
    answer = b""
    while chunk := client.recv(4096):
        answer += chunk
    client.close()
    return answer


def test_load_wsgi_hands_fanout_the_socket_every_worker_accepts_from(make_worker):
    w = make_worker()
    assert w.wsgi.runner.fanout.socket_path == w.sockets[0].cfg_addr
    assert os.path.exists(w.sockets[0].cfg_addr)


def test_the_loop_calls_the_override_of_accept_on_its_own_thread_and_a_busy_one_waits(
    make_worker, monkeypatch
):
    """worker.py's accept runs where gthread's would: on the loop's thread, once per
    readable listener, before the connection is taken. So its short sleep while the model
    is busy is what lets an idle worker, woken for the same connection, take it first."""
    w = make_worker()
    slept = []
    monkeypatch.setattr(
        worker_module,
        "time",
        SimpleNamespace(  # worker.py's time only
            sleep=lambda seconds: slept.append((seconds, w.nr_conns))
        ),
    )
    loop = Loop(w, monkeypatch)
    try:
        assert loop.watched == [w], "run() did not start recycle's watch for this worker"
        assert b"200 OK" in read_answer(get(w))
        assert slept == []  # idle: accepted at once
        w.wsgi.runner.batcher.busy = True
        assert b"200 OK" in read_answer(get(w))
        # The sleep came before the connection was counted, i.e. before it was accepted.
        assert slept == [(ACCEPT_DEFER_SECONDS, 0)]
    finally:
        loop.stop()
    accepts = [c for c in w.calls if c[0] == "accept"]
    assert len(accepts) == 2
    assert {c[1] for c in accepts} == {loop.thread.ident}
    assert all(c[2] is w.sockets[0] for c in accepts)


def test_one_accept_takes_one_connection_and_none_waiting_is_no_error(make_worker):
    """A busy worker sleeps once per accept: were accept to drain the backlog, the
    worker that slept would then take every connection waiting. And when another worker
    took the connection while this one slept, accept finds none (EAGAIN): no error."""
    w = make_worker()
    listener = w.sockets[0]
    listener.setblocking(False)  # as set_accept_enabled leaves it
    clients = [connect(w) for _ in range(2)]
    try:
        w.accept(listener)
        assert w.nr_conns == 1
        w.accept(listener)
        assert w.nr_conns == 2
        w.accept(listener)  # nothing left to accept
        assert w.nr_conns == 2
    finally:
        for client in clients:
            client.close()


def test_the_loop_beats_at_least_once_a_second_busy_or_not(make_worker, monkeypatch):
    """health.py's heartbeat comes from notify(): gthread's loop calls it before every
    wait for events, and waits at most a second."""
    w = make_worker()
    w.wsgi.go.clear()  # the request below is held: the worker is busy throughout
    loop = Loop(w, monkeypatch)
    try:
        client = get(w)
        assert w.wsgi.started.acquire(timeout=10)
        wait_until(lambda: sum(c[0] == "wait" for c in w.calls) >= 3, "the loop stopped")
        w.wsgi.go.set()
        assert b"200 OK" in read_answer(client)
    finally:
        loop.stop()
    turns = [c for c in w.calls if c[0] in ("notify", "wait")]
    waits = [c for c in turns if c[0] == "wait"]
    assert all(0 < c[2] <= 1.0 for c in waits), waits
    for before, after in itertools.pairwise(turns):  # never two waits without a beat between
        assert not (before[0] == after[0] == "wait"), turns
    assert turns[0][0] == "notify"
    assert {c[1] for c in turns} == {loop.thread.ident}


def test_worker_connections_at_zero_stops_accepting_and_the_held_requests_are_answered(
    make_worker, monkeypatch
):
    """recycle.py's drain: worker_connections = 0 and a wake-up make the loop's next pass
    unregister the listener (_accepting False); nr_conns counts the connections still
    held until they are answered; alive = False then ends the loop."""
    w = make_worker()
    w.wsgi.go.clear()
    loop = Loop(w, monkeypatch)
    try:
        client = get(w)
        assert w.wsgi.started.acquire(timeout=10)
        assert w.nr_conns == 1
        w.worker_connections = 0
        w.method_queue.defer(lambda: None)
        wait_until(lambda: not w._accepting, "the loop kept accepting")
        assert w.sockets[0].fileno() not in {key.fd for key in w.poller.get_map().values()}
        late = connect(w)  # waits in the backlog, for another worker
        assert w.nr_conns == 1
        w.wsgi.go.set()
        assert b"200 OK" in read_answer(client)
        wait_until(lambda: w.nr_conns == 0, "the answered connection is still counted")
        assert not w._accepting
    finally:
        w.wsgi.go.set()
        loop.stop()
    late.close()
    assert sum(c[0] == "accept" for c in w.calls) == 1
