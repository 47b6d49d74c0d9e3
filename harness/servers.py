"""Starting, waiting for and stopping the real server, for the tests and the benchmark.

Both drive the same two things: `container/NER/serve` on this host (nginx + gunicorn +
the model, as the image runs it) and the image under a Docker engine. This module is the
one way both start them, wait for /ping, and stop them, so a fix here (a server that dies
at start-up, a stop that must not leave nginx behind) reaches both. It imports nothing
from either: tests/conftest.py and bench/targets.py build on it.
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
SERVE = ROOT / "container" / "NER" / "serve"
DEFAULT_IMAGE = "spacy-ner-sagemaker:local"
# SageMaker sends SIGKILL about 30 s after SIGTERM; serve finishes within 27 s.
STOP_SECONDS = 35


class ServerError(RuntimeError):
    """The server did not come up; the message carries the end of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def docker_ready() -> bool:
    """A docker client is on PATH and its engine answers."""
    docker = shutil.which("docker")
    return (
        docker is not None and subprocess.run([docker, "info"], capture_output=True).returncode == 0
    )


def image_exists(image: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
    )


def shared_with_containers(folder: str | os.PathLike[str]) -> Path:
    """folder and everything in it made readable by any user: the image runs as a user of
    its own (uid 10001), which must read a folder mounted from this host whatever its
    owner, as it must on SageMaker. folder, as a Path."""
    root = Path(folder)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod(0o755 if path.is_dir() else path.stat().st_mode & 0o777 | 0o444)
    return root


def wait_until(
    condition: Callable[[], object], message: str, timeout: float = 30, interval: float = 0.01
) -> None:
    """Poll condition() until it is true; AssertionError(message) after timeout seconds.
    The one way the tests wait for something another thread or process does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (waited {timeout} s)")
        time.sleep(interval)


def ping_status(port: int, timeout: float = 1.0) -> int | None:
    """The status of GET /ping on 127.0.0.1:port, or None while nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/ping")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_for_ping(
    port: int, alive: Callable[[], bool], timeout: float = 120, interval: float = 0.01
) -> None:
    """Poll /ping until 200; ServerError as soon as alive() says the server has exited,
    or after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping_status(port, timeout=0.5) == 200:
            return
        if not alive():
            raise ServerError("the server exited before /ping answered 200")
        time.sleep(interval)
    raise ServerError(f"/ping on port {port} did not answer 200 within {timeout} s")


def host_env(port: int, **extra: object) -> dict[str, str]:
    """The environment for `serve` on this host: this interpreter's bin folder first (serve
    starts gunicorn beside the interpreter that runs it), Debian's nginx from /usr/sbin,
    the port; `extra` overrides any of it."""
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}:/usr/sbin"
    return {
        **os.environ,
        "PATH": path,
        "SAGEMAKER_BIND_TO_PORT": str(port),
        **{k: str(v) for k, v in extra.items()},
    }


class HostProcess:
    """`serve` running on this host, its output in log_path (a file it may share)."""

    def __init__(self, env: Mapping[str, str], log_path: str | os.PathLike[str]) -> None:
        self.port = int(env["SAGEMAKER_BIND_TO_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVE)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def gunicorn_workers(self) -> tuple[int, list[int]]:
        """(master pid, worker pids) of the gunicorn that `serve` started."""
        masters = [
            p
            for p in psutil.Process(self.proc.pid).children()
            if "gunicorn" in " ".join(p.cmdline())
        ]
        assert len(masters) == 1, masters
        return masters[0].pid, sorted(p.pid for p in masters[0].children())

    def logs(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> "HostProcess":
        """Wait for /ping; on failure stop the server and raise with its log."""
        try:
            wait_for_ping(self.port, self.running, timeout)
        except ServerError as e:
            logs = self.logs()  # before stop(), which closes the log file
            self.stop()
            raise ServerError(
                f"{e} (serve's exit status: {self.proc.returncode})"
                f"\n--- serve log ---\n{logs[-6000:]}"
            ) from None
        return self

    def stop(self) -> None:
        """SIGTERM, as SageMaker stops it; SIGKILL to the whole group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Container:
    """A detached `docker run IMAGE ...` reachable on a 127.0.0.1 port.

    network: "publish" maps 127.0.0.1:PORT to the container's inner_port (every byte goes
    through Docker's userland proxy), "host" runs it on the host's network with
    SAGEMAKER_BIND_TO_PORT=PORT (the client reaches nginx directly).
    """

    def __init__(
        self,
        image: str,
        run_args: Iterable[str] = (),
        command: Iterable[str] = ("serve",),
        env: Mapping[str, str] | None = None,
        inner_port: int = 8080,
        network: str = "publish",
        docker: str = "docker",
        port: int | None = None,
    ) -> None:
        """port: the host port (default: a free one)."""
        self.docker, self.image = docker, image
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(env or {})
        if network == "host":
            net = ["--network", "host"]
            env["SAGEMAKER_BIND_TO_PORT"] = str(self.port)
        else:
            net = ["-p", f"127.0.0.1:{self.port}:{inner_port}"]
        env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        self.id = self.docker_cmd(
            "run", "-d", *net, *env_args, *run_args, image, *command
        ).stdout.strip()

    def docker_cmd(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.docker, *args], capture_output=True, text=True, timeout=timeout
        )
        if result.returncode:
            raise ServerError(f"docker {' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result

    def logs(self) -> str:
        result = subprocess.run([self.docker, "logs", self.id], capture_output=True, text=True)
        return result.stdout + result.stderr

    def running(self) -> bool:
        out = subprocess.run(
            [self.docker, "inspect", "-f", "{{.State.Running}}", self.id],
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() == "true"

    def wait_ready(self, timeout: float = 120) -> "Container":
        try:
            wait_for_ping(self.port, self.running, timeout)
        except ServerError as e:
            raise ServerError(f"{e}\n--- container log ---\n{self.logs()[-6000:]}") from None
        return self

    def exec(self, *command: str) -> str:
        return self.docker_cmd("exec", self.id, *command).stdout

    def stop(self) -> None:
        """SIGTERM and up to 30 s to drain, as SageMaker allows; then remove."""
        subprocess.run([self.docker, "stop", "-t", "30", self.id], capture_output=True)
        self.remove()

    def remove(self) -> None:
        subprocess.run([self.docker, "rm", "-f", self.id], capture_output=True)


class MultiModelEndpoint(Container):
    """The image as a multi-model endpoint (SAGEMAKER_MULTI_MODEL=true): `store` mounted
    read-only as /opt/ml/models, where SageMaker unpacks each model.tar.gz
    (/opt/ml/models/<name>/model), and the calls SageMaker makes to load, invoke and unload
    a model (container/NER/manager.py). Each answers the `requests` response."""

    def __init__(
        self,
        image: str,
        store: str | os.PathLike[str],
        run_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        shared_with_containers(store)
        super().__init__(
            image,
            ("-v", f"{store}:/opt/ml/models:ro", *run_args),
            env={"SAGEMAKER_MULTI_MODEL": "true", **(env or {})},
            **kwargs,
        )

    def load(self, name: str, folder: str | None = None, timeout: float = 300) -> requests.Response:
        url = f"/opt/ml/models/{folder or name}/model"
        return requests.post(
            f"{self.url}/models", json={"model_name": name, "url": url}, timeout=timeout
        )

    def invoke(self, name: str, body: Any, timeout: float = 60, **kwargs: Any) -> requests.Response:
        return requests.post(
            f"{self.url}/models/{name}/invoke", json=body, timeout=timeout, **kwargs
        )

    def unload(self, name: str) -> requests.Response:
        return requests.delete(f"{self.url}/models/{name}", timeout=60)

    def listed(self) -> list[str]:
        return [
            m["modelName"] for m in requests.get(f"{self.url}/models", timeout=10).json()["models"]
        ]
