"""The model server: nginx in front of gunicorn, supervised (`serve` runs main()).

SageMaker runs `docker run IMAGE serve`. This program
- validates every setting (settings.py) and stops with one log line on a bad one;
- starts nginx first, so the port accepts connections at once (SageMaker wants that within
  250 ms) and answers /ping with 503 while the model loads;
- starts gunicorn with --preload: the model is loaded once, before the workers fork;
- marks the server ready (nginx then answers /ping 200) after one real request has gone
  through a gunicorn worker;
- from then on watches the workers' heartbeats (health.py): /ping answers 503 while no
  worker has been able to answer for MODEL_SERVER_HEALTH_SECONDS, and 200 again as soon
  as one is;
- on SIGTERM (SageMaker's scale-in; SIGKILL follows about 30 s later) stops taking
  requests, lets the ones in flight finish, and exits within tuning.SHUTDOWN_SECONDS;
- exits as soon as nginx or gunicorn dies, so SageMaker replaces the container instead of
  keeping a half-server in service.

On a multi-model endpoint (SAGEMAKER_MULTI_MODEL=true) it loads no model itself: nginx
answers /ping at once and sends /models to the model manager (manager.py), which runs
each model SageMaker loads as `serve model <folder>`: this program again, in its model
role, supervising that model's gunicorn exactly as above, without nginx.

It runs the same way on a host (for development and machines without Docker):
`container/NER/serve` with nginx on PATH and the Python packages installed.
"""

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import health
import launch
from manager import Manager
from manager_http import ManagerServer
from model_names import SOCKET_NAME
from pipeline import report_failure
from procfs import connections_in_flight
from settings import Settings, SettingsError, configure_logging
from tuning import GRACEFUL_SECONDS, MODEL_OOM_SCORE_ADJ, SHUTDOWN_SECONDS
from unixhttp import UnixHTTPConnection

log = logging.getLogger("ner.serve")


def worker_answers(sock_path: str) -> bool:
    """A gunicorn worker answers /ping on its socket."""
    try:
        conn = UnixHTTPConnection(sock_path, timeout=2)
        conn.request("GET", "/ping")
        return conn.getresponse().status == 200
    except OSError:
        return False


class Server:
    """One model: nginx in front of gunicorn (the default, and SageMaker's single-model
    contract)."""

    READY_MESSAGE = "/ping answers 200"

    def __init__(self, settings: Settings, run_dir: str | None = None):
        self.settings = settings
        # The model role runs in the folder its manager made for it, and leaves it there.
        self.owns_run_dir = run_dir is None
        self.run_dir = run_dir or tempfile.mkdtemp(prefix="ner-serve-")
        # When started as root, nginx's workers run as nobody and must reach the socket
        # and the ready file in here. Nothing in this folder is secret.
        os.chmod(self.run_dir, 0o755)
        self.sock_path = os.path.join(self.run_dir, "gunicorn.sock")
        self.ready_path = os.path.join(self.run_dir, "ready")
        # Beside a missing `ready`, tells nginx why /ping says 503: no worker can answer.
        self.no_worker_path = os.path.join(self.run_dir, "no_worker")
        self.heartbeat_dir = os.path.join(self.run_dir, "heartbeats")
        os.mkdir(self.heartbeat_dir)
        self.stopping = False
        self.died_before_ready = False  # a child exited before a worker had answered
        self.nginx: subprocess.Popen | None = None
        self.gunicorn: subprocess.Popen | None = None
        # Watches the heartbeats once a worker has answered; /ping follows `able`.
        self.monitor: health.Monitor | None = None
        self.able = True

    def start(self) -> None:
        self.start_nginx()
        self.start_gunicorn()
        s = self.settings
        limit = f"{s.max_payload_mb} MB" if s.max_payload_mb else "none"
        log.info(
            "nginx on port %d, gunicorn with %d workers x %d threads (timeout %d s), "
            "payload limit %s; loading the model",
            s.port,
            s.workers,
            s.threads,
            s.timeout,
            limit,
        )

    def start_nginx(self) -> None:
        conf = launch.render_nginx_conf(self.settings, self.run_dir)
        # -e: nginx opens its compiled-in error log before reading the config; point it
        # at stderr so a read-only filesystem or a non-root user costs no alert.
        # Each child leads its own process group, so that whatever it leaves behind (nginx's
        # workers when its master is killed, say) can be found and stopped with it.
        self.nginx = subprocess.Popen(
            [launch.find_nginx(), "-e", "stderr", "-p", self.run_dir, "-c", conf], process_group=0
        )

    def start_gunicorn(self) -> None:
        self.gunicorn = subprocess.Popen(
            launch.gunicorn_command(self.settings, self.sock_path),
            env=launch.gunicorn_env(
                dict(os.environ), self.heartbeat_dir, self.settings.compute_threads
            ),
            process_group=0,
        )

    def children(self) -> dict[str, subprocess.Popen]:
        """The children started so far, by name."""
        return {n: p for n, p in (("nginx", self.nginx), ("gunicorn", self.gunicorn)) if p}

    def dead_child(self) -> str | None:
        """The name of a child that has exited (logged), or None."""
        for name, proc in self.children().items():
            if proc.poll() is not None:
                log.error("%s exited with status %s; stopping", name, proc.returncode)
                return name
        return None

    # The supervision loop, the same for every role; each role says what failing is,
    # what to do on each turn, and how often.

    def run(self) -> int:
        """Supervise until a signal or a failure; return the exit status."""
        while not self.stopping:
            if self.failed():
                self.stop()
                return 1
            self.tick()
            time.sleep(self.poll_seconds())
        return self.stop()

    def failed(self) -> bool:
        if self.dead_child():
            self.died_before_ready = self.monitor is None
            return True
        return False

    def tick(self) -> None:
        """Ready once a worker answers; from then on, /ping follows the heartbeats."""
        if self.monitor is None:
            if worker_answers(self.sock_path):
                open(self.ready_path, "w").close()
                self.monitor = health.Monitor(self.heartbeat_dir, self.settings.health_seconds)
                log.info("ready: %s", self.READY_MESSAGE)
        elif self.monitor.able() != self.able:
            self.able = not self.able
            self.mark_able(self.able)

    def poll_seconds(self) -> float:
        return 0.1 if self.monitor is None else 0.5

    def mark_able(self, able: bool) -> None:
        """/ping follows whether a worker can answer; each change is logged once."""
        if able:
            open(self.ready_path, "w").close()
            os.unlink(self.no_worker_path)
            log.warning("a worker answers again: /ping answers 200")
        else:
            open(self.no_worker_path, "w").close()  # first, so no 503 says "loading"
            os.unlink(self.ready_path)
            log.error(
                "no worker has been able to answer for %d s "
                "(MODEL_SERVER_HEALTH_SECONDS): /ping answers 503",
                self.settings.health_seconds,
            )

    def on_signal(self, signum: int, frame: object) -> None:
        log.info(
            "%s received: finishing requests in flight, then exiting", signal.Signals(signum).name
        )
        self.stopping = True

    def stop(self) -> int:
        """Drain, then stop, all within SHUTDOWN_SECONDS. nginx first: it stops accepting
        and waits for every request it has accepted, including those queued behind busy
        workers, while gunicorn keeps serving them. gunicorn is stopped only after nginx
        is done (or near the deadline), so no accepted request is dropped by gunicorn
        closing its socket early."""
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        if os.path.exists(self.ready_path):
            os.unlink(self.ready_path)  # /ping says 503 while we drain
        self.drain(deadline - GRACEFUL_SECONDS - 1)
        self.stop_backends(deadline)
        children = list(self.children().values())
        killed = [_wait(p, deadline) for p in children]
        for proc in children:
            try:  # orphans of a child that died: they would keep the port or the socket
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.owns_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        clean = self.stopping and not any(killed) and all(p.returncode == 0 for p in children)
        return 0 if clean else 1

    def drain(self, until: float) -> None:
        """Let the requests accepted so far finish, until `until` at most."""
        if self.nginx and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)  # graceful: no new connections
            try:
                self.nginx.wait(timeout=max(0.0, until - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass

    def stop_backends(self, deadline: float) -> None:
        if self.gunicorn and self.gunicorn.poll() is None:
            self.gunicorn.send_signal(signal.SIGTERM)  # graceful: workers finish first


def _wait(proc: subprocess.Popen, deadline: float) -> bool:
    """Wait for proc until deadline, then kill it; True if it had to be killed."""
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True


class ModelServer(Server):
    """One model of a multi-model endpoint (`serve model <folder>`, started by the model
    manager, manager.py): gunicorn exactly as the single-model server runs it, without
    nginx, in the folder the manager made; the top-level nginx reaches it there."""

    READY_MESSAGE = "the model answers its invocations"

    def __init__(self, settings: Settings, folder: str):
        super().__init__(settings, run_dir=folder)
        self.sock_path = os.path.join(folder, SOCKET_NAME)  # where nginx looks
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(MODEL_OOM_SCORE_ADJ))
        except OSError as e:
            log.warning("cannot raise the OOM score of this model's processes: %s", e)

    def start(self) -> None:
        self.start_gunicorn()
        s = self.settings
        log.info(
            "model from %s: gunicorn with %d workers x %d threads; loading it",
            s.model_dir,
            s.workers,
            s.threads,
        )

    def stop(self) -> int:
        status = super().stop()
        # Why a load failed, unless wsgi.py has said already (a ModelError, MemoryError).
        failure = self.settings.failure_file
        if self.died_before_ready and failure and not os.path.exists(failure):
            code = self.gunicorn.returncode if self.gunicorn else None
            if code == -signal.SIGKILL:
                report_failure(
                    failure,
                    "insufficient_memory",
                    "gunicorn was killed "
                    "(SIGKILL) while loading the model: most likely out of memory",
                )
            else:
                report_failure(
                    failure, "load_failed", f"gunicorn exited with status {code} while loading"
                )
        return status

    def drain(self, until: float) -> None:
        """No nginx of its own: wait until no connection to the socket is open (the
        manager has removed `ready`, so the top-level nginx sends no new ones)."""
        while (
            connections_in_flight(self.sock_path)
            and time.monotonic() < until
            and self.gunicorn
            and self.gunicorn.poll() is None
        ):
            time.sleep(0.05)


class MultiModelServer(Server):
    """A multi-model endpoint (SAGEMAKER_MULTI_MODEL=true): nginx in front of the model
    manager (manager.py), which starts a ModelServer per model SageMaker loads. No model
    is loaded here; /ping answers 200 as soon as the manager listens, loaded models or
    not."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.manager = Manager(settings, self.run_dir)
        self.httpd: ManagerServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.start_nginx()
        self.httpd = ManagerServer(os.path.join(self.run_dir, "manager.sock"), self.manager)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="manager", daemon=True)
        self.thread.start()
        s = self.settings
        log.info(
            "multi-model endpoint: nginx on port %d; each model loaded on POST /models "
            "runs %d workers x %d threads (MODEL_SERVER_WORKERS_PER_MODEL)",
            s.port,
            s.workers_per_model,
            s.threads,
        )
        open(self.ready_path, "w").close()
        log.info("ready: /ping answers 200; no model is loaded until POST /models")

    def failed(self) -> bool:
        if self.dead_child():
            return True
        if self.thread is None or not self.thread.is_alive():
            log.error("the model manager stopped; stopping")
            return True
        return False

    def tick(self) -> None:
        self.manager.reap(children=[p.pid for p in self.children().values()])

    def poll_seconds(self) -> float:
        return 0.5

    def stop_backends(self, deadline: float) -> None:
        """After nginx has drained: every model, at once."""
        self.manager.stop_all(deadline)
        if self.httpd and self.thread and self.thread.is_alive():
            self.httpd.shutdown()
        if self.httpd:
            self.httpd.server_close()


def main(argv: list[str]) -> int:
    """serve's command line: `serve` (SageMaker passes it as the command), or `serve
    model <folder>`, the model manager starting one model of a multi-model endpoint."""
    model_folder = argv[2] if argv[1:2] == ["model"] and len(argv) == 3 else None
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        configure_logging("INFO")
        log.critical("cannot start: %s", e)
        return 2
    configure_logging(settings.log_level, settings.log_tag)
    server: Server
    if model_folder:
        server = ModelServer(settings, model_folder)
    elif settings.multi_model:
        server = MultiModelServer(settings)
    else:
        server = Server(settings)
    # Before anything starts: a SIGTERM during start-up still stops both children.
    signal.signal(signal.SIGTERM, server.on_signal)
    signal.signal(signal.SIGINT, server.on_signal)
    try:
        server.start()
    except OSError as e:  # nginx missing, or a child could not start
        log.critical("cannot start: %s", e)
        server.stop()
        return 2
    return server.run()
