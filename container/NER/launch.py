"""How serve starts its children: nginx's configuration, and gunicorn's command line and
environment. The single-model server and each model of a multi-model endpoint run
gunicorn the same way (server.py), so that both serve requests alike."""

import os
import re
import shutil
import sys

from model_names import NAME_PATTERN, SOCKET_NAME
from settings import HEARTBEAT_DIR_ENV, Settings
from tuning import (
    COMPUTE_THREAD_VARIABLES,
    GRACEFUL_SECONDS,
    HEADER_BUFFER_BYTES,
    LOAD_SECONDS,
    WORKER_ENV_DEFAULTS,
)

PROGRAM_DIR = os.path.dirname(os.path.realpath(__file__))


def keep_mode(conf: str, multi_model: bool) -> str:
    """The template with one mode's blocks (nginx.conf's first lines say how they are
    marked), without the other's."""
    keep, drop = ("MULTI_MODEL", "SINGLE_MODEL") if multi_model else ("SINGLE_MODEL", "MULTI_MODEL")
    conf = re.sub(rf"^[ \t]*# @{drop}\{{\n.*?^[ \t]*# \}}@{drop}\n", "", conf, flags=re.M | re.S)
    return re.sub(rf"^[ \t]*# (@{keep}\{{|\}}@{keep})\n", "", conf, flags=re.M)


def render_nginx_conf(settings: Settings, run_dir: str) -> str:
    """nginx.conf for these settings, written into run_dir; its path."""
    with open(os.path.join(PROGRAM_DIR, "nginx.conf")) as f:
        conf = keep_mode(f.read(), settings.multi_model)
    values = {
        "@RUN_DIR@": run_dir,
        "@PORT@": str(settings.port),
        "@MAX_BODY_BYTES@": str(settings.max_payload_bytes or 0),  # nginx: 0 is no limit
        "@PROXY_TIMEOUT@": str(settings.timeout),
        "@HEALTH_SECONDS@": str(settings.health_seconds),
        "@HEADER_BUFFER@": f"{HEADER_BUFFER_BYTES // 1024}k",
        "@MODEL_NAME@": NAME_PATTERN,
        "@MODEL_SOCKET@": SOCKET_NAME,
        # The manager answers a load within LOAD_SECONDS; nginx waits a little longer.
        "@LOAD_TIMEOUT@": str(LOAD_SECONDS + 30),
    }
    for placeholder, value in values.items():
        conf = conf.replace(placeholder, value)
    path = os.path.join(run_dir, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def find_nginx() -> str:
    # /usr/sbin is not on every user's PATH, and that is where Debian puts nginx.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise FileNotFoundError("nginx is not installed (not on PATH nor in /usr/sbin)")
    return found


def gunicorn_command(settings: Settings, sock_path: str) -> list[str]:
    """gunicorn's command line."""
    s = settings
    return [
        sys.executable,
        "-m",
        "gunicorn",
        # Load the model once, in the master, before fork (wsgi.py), except on a GPU:
        # a CUDA context does not survive a fork, so there each worker loads its own
        # after it (device.py).
        *([] if s.gpus else ["--preload"]),
        # Threads let one worker hold several requests, which batcher.py merges into
        # one nlp.pipe call. A worker accepts no more connections than it has threads,
        # so the rest wait in the socket's backlog for whichever worker frees first;
        # a busy worker lets an idle one accept first (worker.py).
        "--worker-class",
        "worker.MergingThreadWorker",
        "--workers",
        str(s.workers),
        "--threads",
        str(s.threads),
        "--worker-connections",
        str(s.threads),
        # nginx opens one connection per request to the socket; none is kept alive.
        "--keep-alive",
        "0",
        # The heartbeat comes from the worker's main thread, so this only catches a
        # worker whose Python stopped altogether; batcher.py's watchdog catches a
        # stuck model call, after the same time.
        "--timeout",
        # Without --preload a worker loads its model before its first heartbeat, and
        # gunicorn would end one that takes longer than this: give it a load's time.
        str(s.stuck_seconds if not s.gpus else max(s.stuck_seconds, LOAD_SECONDS)),
        "--graceful-timeout",
        str(GRACEFUL_SECONDS),
        # nginx has already bounded the request line and the headers
        # (HEADER_BUFFER_BYTES) and answers a client over them in JSON; gunicorn's
        # smaller defaults would answer what nginx let through with a page of its own.
        # 0 is no limit for the line; the field size has no such value, so twice
        # nginx's: room for what nginx appends (X-Forwarded-For).
        "--limit-request-line",
        "0",
        "--limit-request-field_size",
        str(2 * HEADER_BUFFER_BYTES),
        "--limit-request-fields",
        "32768",  # gunicorn's most
        "--bind",
        f"unix:{sock_path}",
        "--chdir",
        PROGRAM_DIR,
        "--no-control-socket",  # gunicorn 27 would otherwise write under ~/.gunicorn
        "--error-logfile",
        "-",
        "--log-level",
        s.log_level.lower(),
        "wsgi:app",
    ]


def gunicorn_env(environ: dict[str, str], heartbeat_dir: str, threads: int) -> dict[str, str]:
    """gunicorn's environment: serve's (environ), over WORKER_ENV_DEFAULTS and `threads`
    intra-op threads per worker (Settings.compute_threads), with the folder its workers
    beat in."""
    return {
        **WORKER_ENV_DEFAULTS,
        **{name: str(threads) for name in COMPUTE_THREAD_VARIABLES},
        **environ,
        "PYTHONUNBUFFERED": "1",
        HEARTBEAT_DIR_ENV: heartbeat_dir,
    }
