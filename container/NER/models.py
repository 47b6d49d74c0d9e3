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
nginx proxies the first four here (a ThreadingHTTPServer on a Unix socket in serve's run
folder, so that a load waits in its own thread and never holds up another). It answers the
fifth itself: from the model's `ready` file to its own gunicorn (nginx.conf).

Each loaded model is a process tree of its own: `serve model <folder>` (serve's model
role), which runs gunicorn exactly as the single-model server does (the same command line,
preloaded model, workers, heartbeats, recycling, watchdog) on <folder>/sock, with
SM_MODEL_DIR set to the model's url and MODEL_SERVER_WORKERS to
MODEL_SERVER_WORKERS_PER_MODEL. So an invocation takes the single-model request path, the
model's weights are in memory once (shared by its workers), and unloading it is ending its
processes, which gives all of their memory back to the machine.

A load that would not fit is answered 507 before anything starts: the estimate
(Estimator) against what the container's memory cgroup has free (available_bytes). While
a model loads, the manager keeps watching that figure and stops the load (507) when it
runs low, before the kernel's OOM killer would pick a process. Should the OOM killer act
anyway, model processes ask to be its first choice (serve sets their oom_score_adj), never
nginx or the manager: a model may be lost (and is dropped from the table), the container
is not.
"""

import collections
import http.server
import json
import logging
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import model as pipelines
from protocol import ApiError, dumps, error_body
from settings import LOG_TAG_ENV

log = logging.getLogger("ner.models")

PROGRAM_DIR = os.path.dirname(os.path.realpath(__file__))
MIB = 1024 * 1024

# A model name becomes a folder name and part of nginx's location regex (nginx.conf is
# rendered with this very pattern): letters, digits, dot, dash and underscore, not
# starting with a dot, so no name is "." or ".." or holds a slash.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_NAME = re.compile(NAME_PATTERN + r"\Z")
# The longest path a Unix socket may have (sun_path is 108 bytes with the final NUL). A
# model's gunicorn socket is <run folder>/models/<name>/sock (nginx.conf names it from the
# request's path, so it cannot be shorter than the name), which leaves a name 71
# characters under the default TMPDIR (/tmp): room for a hexadecimal SHA-256, and
# SageMaker's names are opaque hashes. A longer name is refused with a 400 saying so.
# TODO: log the names a real endpoint sends and confirm they fit.
SOCKET_PATH_MAX = 107
SOCKET_NAME = "sock"

# The longest a load may take, from the request to the model's first answered /ping;
# nginx waits a little longer for the manager's answer (serve renders it).
LOAD_SECONDS = 300
# A model's serve stops within its own shutdown budget (serve's SHUTDOWN_SECONDS); after
# this its processes are killed.
UNLOAD_SECONDS = 30
# How often a waiting load looks at the model's files and at the free memory, and every
# how many of those it also adds up its processes' memory (a walk over /proc).
POLL_SECONDS = 0.05
PEAK_EVERY = 5

# The estimate of a model's memory before it is loaded: a first guess at a model's
# process tree (its serve, a gunicorn master holding Python, spaCy and the pipeline, and
# each worker's private memory) plus the pipeline's size on disk times a factor, which
# loads then correct with what they actually used (Estimator.observe). TODO: calibrate
# the three on the image (bench), and keep them conservative.
BASE_BYTES = 160 * MIB
WORKER_BYTES = 40 * MIB
DISK_FACTOR = 2.0
# Memory a load must leave free, for the requests of the models already loaded (their
# batches' working memory) and for nginx's buffers.
RESERVE_BYTES = 128 * MIB
# A load is stopped (507) once the container has less than this free while it runs.
GUARD_BYTES = 64 * MIB
# cgroup v1 says "no limit" with a huge number rather than a word.
_NO_LIMIT = 1 << 60

# The failure codes a model's load reports (model.report_failure, serve) and the status
# each is answered with. A pipeline that cannot be served is the request's fault: 400.
FAILURE_STATUS = {"model_invalid": 400, "insufficient_memory": 507}


# --- names --------------------------------------------------------------------------

def socket_path(models_dir, name):
    return os.path.join(models_dir, name, SOCKET_NAME)


def check_name(name, models_dir):
    """ApiError 400 unless name can be a model's name here."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ApiError(400, "invalid_model_name",
                       f"model_name must match {NAME_PATTERN}, got {name!r}")
    path = len(socket_path(models_dir, name).encode())
    if path > SOCKET_PATH_MAX:
        longest = SOCKET_PATH_MAX - (path - len(name))
        raise ApiError(400, "model_name_too_long",
                       f"model_name is over {longest} characters, the most whose socket "
                       f"path fits (TMPDIR={os.path.dirname(os.path.dirname(models_dir))})")


# --- memory -------------------------------------------------------------------------

def _read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _stat_value(text, key):
    """The value of `key` in a memory.stat file's text, or 0."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def cgroup_memory(root="/sys/fs/cgroup"):
    """(limit, in use) in bytes of the memory cgroup at root, v2 then v1; None for the
    limit when there is none. In use is the working set: what is charged to the cgroup
    minus the page cache the kernel can drop without a fight (inactive_file), as
    `docker stats` counts it; a model's files read at load time are mostly that cache."""
    limit = _read_text(os.path.join(root, "memory.max"))
    if limit is not None:
        current = _read_text(os.path.join(root, "memory.current"))
        stat = _read_text(os.path.join(root, "memory.stat"))
        key = "inactive_file"
    else:
        v1 = os.path.join(root, "memory")
        limit = _read_text(os.path.join(v1, "memory.limit_in_bytes"))
        current = _read_text(os.path.join(v1, "memory.usage_in_bytes"))
        stat = _read_text(os.path.join(v1, "memory.stat"))
        key = "total_inactive_file"
    try:
        used = int(current) - _stat_value(stat, key)
        limit = None if limit.strip() == "max" else int(limit)
    except (TypeError, ValueError, AttributeError):
        return None, None
    return (None if limit is None or limit >= _NO_LIMIT else limit), max(0, used)


def mem_available(meminfo="/proc/meminfo"):
    """The machine's MemAvailable in bytes, or None."""
    for line in (_read_text(meminfo) or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def available_bytes(cgroup_root="/sys/fs/cgroup", meminfo="/proc/meminfo"):
    """What this container may still take: its cgroup's limit less its working set, and
    never more than the machine has available; without a limit, the machine's."""
    limit, used = cgroup_memory(cgroup_root)
    host = mem_available(meminfo)
    if limit is None:
        return host if host is not None else _NO_LIMIT
    return min(limit - used, host) if host is not None else limit - used


def folder_bytes(path):
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
    ready) over the first guess is a correction; the largest of the last few applies to later guesses, so one model
    bigger in memory than its files suggest makes the next guesses larger too. The growth a
    worker may reach before it is recycled (MODEL_SERVER_RECYCLE_MB) is added on top.
    """

    def __init__(self, recycle_bytes=0, base=BASE_BYTES, per_worker=WORKER_BYTES,
                 disk_factor=DISK_FACTOR, history=8):
        self.recycle_bytes, self.base = recycle_bytes, base
        self.per_worker, self.disk_factor = per_worker, disk_factor
        self.ratios = collections.deque(maxlen=history)

    def guess(self, disk_bytes, workers):
        return self.base + workers * self.per_worker + self.disk_factor * disk_bytes

    def correction(self):
        return max(self.ratios, default=1.0)

    def estimate(self, disk_bytes, workers):
        return int(self.guess(disk_bytes, workers) * self.correction()
                   + workers * self.recycle_bytes)

    def observe(self, disk_bytes, workers, used_bytes):
        if used_bytes > 0:
            self.ratios.append(used_bytes / self.guess(disk_bytes, workers))


# --- processes ----------------------------------------------------------------------

def _stat_fields(pid, proc="/proc"):
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...]."""
    text = _read_text(os.path.join(proc, str(pid), "stat"))
    return text[text.rindex(")") + 2:].split() if text else None


def session_pids(sid, proc="/proc"):
    """The live (not zombie) processes of session sid: one model's whole tree."""
    pids = []
    for name in os.listdir(proc):
        if name.isdigit():
            fields = _stat_fields(name, proc)
            if fields and fields[3] == str(sid) and fields[0] != "Z":
                pids.append(int(name))
    return pids


def pss_bytes(pids, proc="/proc"):
    """The proportional set size of those processes together: shared pages counted once."""
    total = 0
    for pid in pids:
        for line in (_read_text(os.path.join(proc, str(pid), "smaps_rollup")) or "").splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def reap_orphans(known, proc="/proc"):
    """Collect our zombie children that are none of `known` (Popen's own): as PID 1 of a
    container, serve inherits the processes of a model tree whose parents were killed."""
    me = str(os.getpid())
    for name in os.listdir(proc):
        if name.isdigit() and int(name) not in known:
            fields = _stat_fields(name, proc)
            if fields and fields[0] == "Z" and fields[1] == me:
                try:
                    os.waitpid(int(name), os.WNOHANG)
                except ChildProcessError:
                    pass


def model_env(environ, name, url, pipeline, workers, failure_file):
    """A model's serve's environment: the container's, with the one model to load."""
    env = {k: v for k, v in environ.items()
           # Aliases would disagree with the workers set here (settings.py refuses that).
           if k not in ("SAGEMAKER_MULTI_MODEL", "SAGEMAKER_MODEL_SERVER_WORKERS")}
    env.update({"SM_MODEL_DIR": url,
                # The pipeline the manager found in url: first in model.resolve's order,
                # so neither a SPACY_MODEL of the container's nor the baked default can
                # stand in for it.
                "SPACY_MODEL": pipeline,
                "MODEL_SERVER_WORKERS": str(workers),
                pipelines.FAILURE_FILE_ENV: failure_file,
                LOG_TAG_ENV: f"model={name}"})
    return env


def paginate(names, token, max_results):
    """(this page of sorted names, the next page's token or None). The token is the last
    name of the page, so a page follows on from it whatever loads or unloads between."""
    rest = [n for n in sorted(names) if n > token]
    page = rest[:max_results]
    return page, (page[-1] if len(rest) > max_results else None)


# --- the manager --------------------------------------------------------------------

@dataclass
class Model:
    name: str
    url: str
    folder: str
    disk_bytes: int
    estimate: int
    state: str = "loading"  # then "ready", then "unloading"
    proc: subprocess.Popen = None
    started: float = field(default_factory=time.monotonic)

    @property
    def ready_path(self):
        return os.path.join(self.folder, "ready")

    @property
    def failure_path(self):
        return os.path.join(self.folder, "failure.json")

    def info(self):
        return {"modelName": self.name, "modelUrl": self.url}


class Manager:
    """The table of models and what changes it; every method is safe from any thread."""

    def __init__(self, settings, run_dir, command=None, cgroup_root="/sys/fs/cgroup",
                 meminfo="/proc/meminfo"):
        self.workers = settings.workers_per_model
        self.models_dir = os.path.join(run_dir, "models")
        os.makedirs(self.models_dir, exist_ok=True)
        os.chmod(self.models_dir, 0o755)  # nginx's workers (nobody) look for ready files
        # The program a model runs as; the tests put a stand-in here.
        self.command = command or [sys.executable, os.path.join(PROGRAM_DIR, "serve"), "model"]
        self.cgroup_root, self.meminfo = cgroup_root, meminfo
        self.estimator = Estimator(recycle_bytes=settings.recycle_mb * MIB)
        self.table = {}
        self.lock = threading.Lock()

    def free_bytes(self):
        return available_bytes(self.cgroup_root, self.meminfo)

    # The five requests, each (status, JSON body) or ApiError.

    def handle(self, method, target, body):
        path, _, query = target.partition("?")
        if path == "/models":
            if method == "GET":
                return self.list(query)
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
        raise ApiError(404, "not_found", "a multi-model endpoint answers /ping, /models, "
                       "/models/<name> and /models/<name>/invoke")

    def list(self, query):
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
        body = {"models": [ready[n].info() for n in page]}
        if next_token is not None:
            body["nextPageToken"] = next_token
        return 200, body

    def get(self, name):
        with self.lock:
            entry = self.table.get(name)
        if entry is None or entry.state != "ready":
            raise ApiError(404, "model_not_found", f"no model {name!r} is loaded")
        return 200, entry.info()

    def load(self, body):
        try:
            request = json.loads(body)
            name, url = request["model_name"], request["url"]
        except (ValueError, TypeError, KeyError):
            raise ApiError(400, "bad_request",
                           'the body must be JSON {"model_name": ..., "url": ...}') from None
        check_name(name, self.models_dir)
        if not isinstance(url, str) or not os.path.isabs(url):
            raise ApiError(400, "bad_request", f"url must be an absolute path, got {url!r}")
        self._wait_unloaded(name)
        with self.lock:
            self._check_free_name(name)
        pipeline = self._find_pipeline(url)
        disk = folder_bytes(pipeline)
        entry = Model(name, url, os.path.join(self.models_dir, name), disk,
                      self.estimator.estimate(disk, self.workers))
        with self.lock:
            self._check_free_name(name)  # again: another load may have begun since
            loading = sum(m.estimate for m in self.table.values() if m.state == "loading")
            free = self.free_bytes() - loading - RESERVE_BYTES
            if entry.estimate > free:
                log.warning("not loading model %s: it needs about %d MB, %d MB is free",
                            name, entry.estimate // MIB, max(0, free) // MIB)
                raise ApiError(507, "insufficient_memory", (
                    f"model {name} needs about {entry.estimate // MIB} MB and "
                    f"{max(0, free) // MIB} MB is free (after {RESERVE_BYTES // MIB} MB kept "
                    "for requests); unload a model"))
            self.table[name] = entry
        try:
            self._start(entry, pipeline)
            self._wait_loaded(entry)
        except BaseException:
            self._end(entry)
            raise
        return 200, entry.info()

    def unload(self, name):
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

    def reap(self, children=()):
        """Drop the models whose processes have ended on their own; collect orphans, none
        of `children` (the caller's own, which it waits for itself)."""
        with self.lock:
            entries = list(self.table.values())
        for entry in entries:
            if entry.state == "ready" and entry.proc.poll() is not None:
                log.error("model %s exited on its own (status %s); dropped: its invocations "
                          "answer 404 until it is loaded again", entry.name,
                          entry.proc.returncode)
                self._end(entry)
        if os.getpid() == 1:  # elsewhere, orphans go to init (or a subreaper), not here
            reap_orphans({e.proc.pid for e in entries if e.proc} | set(children))

    def stop_all(self, deadline):
        with self.lock:
            entries = list(self.table.values())
            for entry in entries:
                entry.state = "unloading"
        self._stop(entries, deadline)

    # The steps.

    def _wait_unloaded(self, name):
        """A model of that name being unloaded (SageMaker may load it again at once, say
        with new files): wait until it is gone, so that the load is not refused."""
        deadline = time.monotonic() + UNLOAD_SECONDS
        while time.monotonic() < deadline:
            with self.lock:
                entry = self.table.get(name)
                if entry is None or entry.state != "unloading":
                    return
            time.sleep(POLL_SECONDS)

    def _check_free_name(self, name):
        """ApiError 409 when the name is taken, by a model loaded, loading or unloading;
        the caller holds the lock."""
        if name in self.table:
            state = self.table[name].state
            raise ApiError(409, "model_already_loaded",
                           f"model {name!r} is {'loaded' if state == 'ready' else state}")

    @staticmethod
    def _find_pipeline(url):
        try:
            found = pipelines.find_in_model_dir(url)
        except pipelines.ModelError as e:
            raise ApiError(400, "model_invalid", str(e)) from None
        if found is None:
            raise ApiError(400, "model_invalid", f"{url} is not a folder holding files")
        return found

    def _start(self, entry, pipeline):
        shutil.rmtree(entry.folder, ignore_errors=True)  # a leftover of an earlier one
        os.mkdir(entry.folder)
        os.chmod(entry.folder, 0o755)
        env = model_env(os.environ, entry.name, entry.url, pipeline, self.workers,
                        entry.failure_path)
        # A session of its own: every process of the model is found (and ended) by it.
        entry.proc = subprocess.Popen([*self.command, entry.folder], env=env,
                                      start_new_session=True)
        log.info("loading model %s from %s (%d MB on disk, estimated %d MB in memory)",
                 entry.name, pipeline, entry.disk_bytes // MIB, entry.estimate // MIB)

    def _wait_loaded(self, entry):
        """Until the model's serve says ready; ApiError for a load that fails."""
        deadline = entry.started + LOAD_SECONDS
        peak, polls = 0, 0
        while not os.path.exists(entry.ready_path):
            polls += 1
            if polls % PEAK_EVERY == 0:  # what the estimate is for: the load's highest use
                peak = max(peak, pss_bytes(session_pids(entry.proc.pid)))
            if entry.proc.poll() is not None:
                raise self._failure(entry)
            if time.monotonic() > deadline:
                raise ApiError(500, "load_timeout",
                               f"model {entry.name} did not load within {LOAD_SECONDS} s")
            free = self.free_bytes()
            if free < GUARD_BYTES:
                log.error("stopping the load of model %s: %d MB of memory left",
                          entry.name, free // MIB)
                raise ApiError(507, "insufficient_memory", (
                    f"memory ran out while model {entry.name} loaded; it was stopped "
                    "before the kernel's OOM killer had to act; unload a model"))
            time.sleep(POLL_SECONDS)
        used = pss_bytes(session_pids(entry.proc.pid))
        self.estimator.observe(entry.disk_bytes, self.workers, max(peak, used))
        with self.lock:
            entry.state = "ready"
        log.info("model %s loaded in %.1f s, using %d MB (at most %d MB while loading; "
                 "estimated %d MB)", entry.name, time.monotonic() - entry.started,
                 used // MIB, max(peak, used) // MIB, entry.estimate // MIB)

    def _failure(self, entry):
        """The ApiError for a model's serve that exited before it was ready."""
        try:
            with open(entry.failure_path) as f:
                failure = json.load(f)
            code, message = failure["code"], failure["message"]
        except (OSError, ValueError, KeyError, TypeError):
            status = entry.proc.returncode
            if status == -signal.SIGKILL:
                code, message = "insufficient_memory", "killed while loading (out of memory?)"
            else:
                code, message = "load_failed", f"exited with status {status} while loading"
        log.error("model %s did not load: %s: %s", entry.name, code, message)
        return ApiError(FAILURE_STATUS.get(code, 500), code,
                        f"model {entry.name}: {message}; see the container log")

    def _stop(self, entries, deadline):
        """Stop these models' serves (requests in flight finish first), at most until
        deadline; then whatever is left of them is killed."""
        entries = [e for e in entries if e.proc is not None]  # else its load ends it
        for entry in entries:
            try:
                os.unlink(entry.ready_path)  # new invocations: 404 from nginx at once
            except FileNotFoundError:
                pass
            entry.proc.send_signal(signal.SIGTERM)
        for entry in entries:
            try:
                entry.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("model %s did not stop in time; killed", entry.name)
            self._end(entry)

    def _end(self, entry):
        """Kill what is left of the model's processes, wait until none is left (its memory
        is free then), and forget it."""
        if entry.proc is not None:
            for _ in range(100):
                pids = session_pids(entry.proc.pid)
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                if entry.proc.poll() is None:
                    entry.proc.wait()
                time.sleep(0.05)
            entry.proc.poll()
        shutil.rmtree(entry.folder, ignore_errors=True)
        with self.lock:
            if self.table.get(entry.name) is entry:
                del self.table[entry.name]


# --- HTTP on a Unix socket ----------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "ner-models"
    sys_version = ""

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, answer = self.server.manager.handle(self.command, self.path, body)
        except ApiError as e:
            status, answer = e.status, e.body()
        except Exception:  # a bug of ours: logged, answered, the manager goes on
            log.exception("unexpected error in %s %s", self.command, self.path)
            status, answer = 500, error_body("internal_error", "see the container log")
        data = dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _answer

    def address_string(self):
        return "nginx"  # a Unix socket's peer has no address

    def log_message(self, format, *args):
        log.debug("%s", format % args)


class ManagerServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """The manager's HTTP server on a Unix socket; a thread per request."""

    address_family = socket.AF_UNIX
    daemon_threads = True

    def __init__(self, path, manager):
        self.manager = manager
        super().__init__(path, Handler)

    def server_bind(self):
        # HTTPServer's own would look up a host name in a Unix path.
        socketserver.TCPServer.server_bind(self)
        os.chmod(self.server_address, 0o666)  # nginx's workers run as nobody
        self.server_name, self.server_port = "localhost", 0


def connections_in_flight(sock_path, net_unix="/proc/net/unix"):
    """How many connections to the Unix socket at sock_path are open: accepted (state 03)
    or waiting in its backlog (02). nginx opens one per request and none is kept alive, so
    this is the requests a model's gunicorn holds or will be handed (serve's model role
    drains them before it stops)."""
    count = 0
    for line in (_read_text(net_unix) or "").splitlines()[1:]:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == sock_path and fields[5] in ("02", "03"):
            count += 1
    return count
