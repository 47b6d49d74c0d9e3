"""Multi-model endpoints (SAGEMAKER_MULTI_MODEL=true): the model manager.

SageMaker's "Custom Containers Contract for Multi-Model Endpoints": it unpacks each
model.tar.gz under /opt/ml/models/<model_name>/model itself, then asks the container
    POST   /models                      {"model_name", "url"}: load it (200; 409 when that
                                        name is loaded; 507 when it does not fit, and
                                        SageMaker unloads unused models and retries)
    GET    /models                      the loaded models, paginated
    GET    /models/<name>               one of them, or 404
    DELETE /models/<name>               unload it: its memory is free when this answers
    POST   /models/<name>/invoke        the same request as /invocations, to that model
nginx proxies the first four here (manager_http.py: a server on a Unix socket in serve's
run folder, a thread per request, so that a load waits in its own thread and never holds
up another). It answers the
fifth itself: from the model's `ready` file to its own gunicorn (nginx.conf).

Each loaded model is a process tree of its own: `serve model <folder>` (serve's model
role), which runs gunicorn exactly as the single-model server does (the same command line,
preloaded model, workers, heartbeats, recycling, watchdog) on <folder>/sock, with
SM_MODEL_DIR set to the model's url and MODEL_SERVER_WORKERS to
MODEL_SERVER_WORKERS_PER_MODEL. So an invocation takes the single-model request path, the
model's weights are in memory once (shared by its workers), and unloading it is ending its
processes, which gives all of their memory back to the machine.

A load that would not fit is answered 507 before anything starts: the estimate
(estimate.py) against what the container's memory cgroup has free (cgroups.py). While
a model loads, the manager keeps watching that figure and stops the load (507) when it
runs low, before the kernel's OOM killer would pick a process. Should the OOM killer act
anyway, model processes ask to be its first choice (serve sets their oom_score_adj), never
nginx or the manager: a model may be lost (and is dropped from the table), the container
is not.
"""

import json
import logging
import os
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable

import pipeline
from cgroups import CGROUP_ROOT, MEMINFO, available_bytes
from estimate import Estimator, folder_bytes
from model_names import check_name
from model_process import Model, model_env
from procfs import reap_orphans
from protocol import ApiError
from settings import Settings
from tuning import LOAD_POLL_SECONDS, MIB, RESERVE_BYTES, UNLOAD_SECONDS

log = logging.getLogger("ner.manager")

# Each of the five requests is answered (status, JSON body), or raises ApiError.
Answer = tuple[int, dict]

PROGRAM_DIR = os.path.dirname(os.path.realpath(__file__))


def paginate(names: Iterable[str], token: str, max_results: int) -> tuple[list[str], str | None]:
    """(this page of sorted names, the next page's token or None). The token is the last
    name of the page, so a page follows on from it whatever loads or unloads between."""
    rest = [n for n in sorted(names) if n > token]
    page = rest[:max_results]
    return page, (page[-1] if len(rest) > max_results else None)


class Manager:
    """The table of models and what changes it; every method is safe from any thread."""

    def __init__(
        self,
        settings: Settings,
        run_dir: str,
        command: list[str] | None = None,
        cgroup_root: str = CGROUP_ROOT,
        meminfo: str = MEMINFO,
    ):
        self.workers = settings.workers_per_model
        self.models_dir = os.path.join(run_dir, "models")
        os.makedirs(self.models_dir, exist_ok=True)
        os.chmod(self.models_dir, 0o755)  # nginx's workers (nobody) look for ready files
        # The program a model runs as; the tests put a stand-in here.
        self.command = command or [sys.executable, os.path.join(PROGRAM_DIR, "serve"), "model"]
        self.cgroup_root, self.meminfo = cgroup_root, meminfo
        self.estimator = Estimator(recycle_bytes=settings.recycle_mb * MIB)
        self.table: dict[str, Model] = {}
        self.lock = threading.Lock()

    def free_bytes(self) -> int:
        return available_bytes(self.cgroup_root, self.meminfo)

    # The five requests, each (status, JSON body) or ApiError.

    def handle(self, method: str, target: str, body: bytes) -> Answer:
        path, _, query = target.partition("?")
        if path == "/models":
            if method == "GET":
                return self.list_models(query)
            if method == "POST":
                return self.load(body)
            raise ApiError(405, "method_not_allowed", "use GET or POST for /models")
        match = re.fullmatch(r"/models/([^/]+)", path)
        if match:
            name = urllib.parse.unquote(match[1])
            if method == "GET":
                return self.get(name)
            if method == "DELETE":
                return self.unload(name)
            raise ApiError(405, "method_not_allowed", "use GET or DELETE for /models/<name>")
        raise ApiError(
            404,
            "not_found",
            "a multi-model endpoint answers /ping, /models, "
            "/models/<name> and /models/<name>/invoke",
        )

    def list_models(self, query: str) -> Answer:
        params = urllib.parse.parse_qs(query)
        token = params.get("next_page_token", [""])[0]
        try:
            max_results = int(params.get("max_results", ["100"])[0])
            if not 1 <= max_results <= 1000:
                raise ValueError
        except ValueError:
            raise ApiError(400, "bad_request", "max_results must be 1..1000") from None
        with self.lock:
            ready = {n: m for n, m in self.table.items() if m.state == "ready"}
        page, next_token = paginate(ready, token, max_results)
        body: dict[str, object] = {"models": [ready[n].info() for n in page]}
        if next_token is not None:
            body["nextPageToken"] = next_token
        return 200, body

    def get(self, name: str) -> Answer:
        with self.lock:
            entry = self.table.get(name)
        if entry is None or entry.state != "ready":
            raise ApiError(404, "model_not_found", f"no model {name!r} is loaded")
        return 200, entry.info()

    def load(self, body: bytes) -> Answer:
        try:
            request = json.loads(body)
            name, url = request["model_name"], request["url"]
        except (ValueError, TypeError, KeyError):
            raise ApiError(
                400, "bad_request", 'the body must be JSON {"model_name": ..., "url": ...}'
            ) from None
        check_name(name, self.models_dir)
        if not isinstance(url, str) or not os.path.isabs(url):
            raise ApiError(400, "bad_request", f"url must be an absolute path, got {url!r}")
        self._wait_unloaded(name)
        with self.lock:
            self._check_free_name(name)
        pipeline_dir = self._find_pipeline(url)
        disk = folder_bytes(pipeline_dir)
        entry = Model(
            name,
            url,
            os.path.join(self.models_dir, name),
            disk,
            self.estimator.estimate(disk, self.workers),
        )
        with self.lock:
            self._check_free_name(name)  # again: another load may have begun since
            loading = sum(m.estimate for m in self.table.values() if m.state == "loading")
            free = self.free_bytes() - loading - RESERVE_BYTES
            if entry.estimate > free:
                log.warning(
                    "not loading model %s: it needs about %d MB, %d MB is free",
                    name,
                    entry.estimate // MIB,
                    max(0, free) // MIB,
                )
                raise ApiError(
                    507,
                    "insufficient_memory",
                    (
                        f"model {name} needs about {entry.estimate // MIB} MB and "
                        f"{max(0, free) // MIB} MB is free (after {RESERVE_BYTES // MIB} MB kept "
                        "for requests); unload a model"
                    ),
                )
            self.table[name] = entry
        try:
            self._start(entry, pipeline_dir)
            self._wait_loaded(entry)
        except BaseException:
            self._end(entry)
            raise
        return 200, entry.info()

    def unload(self, name: str) -> Answer:
        with self.lock:
            entry = self.table.get(name)
            if entry is None or entry.state == "unloading":
                raise ApiError(404, "model_not_found", f"no model {name!r} is loaded")
            if entry.state == "loading":
                raise ApiError(409, "model_loading", f"model {name!r} is still loading")
            entry.state = "unloading"
        started = time.monotonic()
        self._stop([entry], started + UNLOAD_SECONDS)
        log.info("model %s unloaded in %.1f s", name, time.monotonic() - started)
        return 200, entry.info()

    # What serve's supervisor calls.

    def reap(self, children: Iterable[int] = ()) -> None:
        """Drop the models whose processes have ended on their own; collect orphans, none
        of `children` (the caller's own, which it waits for itself)."""
        with self.lock:
            entries = list(self.table.values())
        for entry in entries:
            if entry.state == "ready" and entry.proc and entry.proc.poll() is not None:
                log.error(
                    "model %s exited on its own (status %s); dropped: its invocations "
                    "answer 404 until it is loaded again",
                    entry.name,
                    entry.proc.returncode,
                )
                self._end(entry)
        if os.getpid() == 1:  # elsewhere, orphans go to init (or a subreaper), not here
            reap_orphans({e.proc.pid for e in entries if e.proc} | set(children))

    def stop_all(self, deadline: float) -> None:
        with self.lock:
            entries = list(self.table.values())
            for entry in entries:
                entry.state = "unloading"
        self._stop(entries, deadline)

    # The steps.

    def _wait_unloaded(self, name: str) -> None:
        """A model of that name being unloaded (SageMaker may load it again at once, say
        with new files): wait until it is gone, so that the load is not refused."""
        deadline = time.monotonic() + UNLOAD_SECONDS
        while time.monotonic() < deadline:
            with self.lock:
                entry = self.table.get(name)
                if entry is None or entry.state != "unloading":
                    return
            time.sleep(LOAD_POLL_SECONDS)

    def _check_free_name(self, name: str) -> None:
        """ApiError 409 when the name is taken, by a model loaded, loading or unloading;
        the caller holds the lock."""
        if name in self.table:
            state = self.table[name].state
            raise ApiError(
                409,
                "model_already_loaded",
                f"model {name!r} is {'loaded' if state == 'ready' else state}",
            )

    @staticmethod
    def _find_pipeline(url: str) -> str:
        try:
            found = pipeline.find_in_model_dir(url)
        except pipeline.ModelError as e:
            raise ApiError(400, "model_invalid", str(e)) from None
        if found is None:
            raise ApiError(400, "model_invalid", f"{url} is not a folder holding files")
        return found

    def _start(self, entry: Model, pipeline_dir: str) -> None:
        env = model_env(
            os.environ, entry.name, entry.url, pipeline_dir, self.workers, entry.failure_path
        )
        entry.start(self.command, env)
        log.info(
            "loading model %s from %s (%d MB on disk, estimated %d MB in memory)",
            entry.name,
            pipeline_dir,
            entry.disk_bytes // MIB,
            entry.estimate // MIB,
        )

    def _wait_loaded(self, entry: Model) -> None:
        """Until the model's serve says ready; ApiError for a load that fails."""
        peak = entry.wait_ready(self.free_bytes)
        used = entry.pss()
        self.estimator.observe(entry.disk_bytes, self.workers, max(peak, used))
        with self.lock:
            entry.state = "ready"
        log.info(
            "model %s loaded in %.1f s, using %d MB (at most %d MB while loading; estimated %d MB)",
            entry.name,
            time.monotonic() - entry.started,
            used // MIB,
            max(peak, used) // MIB,
            entry.estimate // MIB,
        )

    def _stop(self, entries: list[Model], deadline: float) -> None:
        """Stop these models' serves (requests in flight finish first), at most until
        deadline; then whatever is left of them is killed."""
        entries = [e for e in entries if e.proc is not None]  # else its load ends it
        for entry in entries:
            entry.ask_to_stop()
        for entry in entries:
            entry.wait_stopped(deadline)
            self._end(entry)

    def _end(self, entry: Model) -> None:
        """End what is left of the model, and forget it."""
        entry.end()
        with self.lock:
            if self.table.get(entry.name) is entry:
                del self.table[entry.name]
