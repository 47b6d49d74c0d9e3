"""The server under test: the image in Docker, or `serve` on this host.

Both start the real server (nginx + gunicorn + the model) on a free loopback port and
time the cold start: from the start command to the first 200 from /ping. Both can list
the server's processes (as PIDs on this host) for the memory and CPU figures.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

import load

ROOT = Path(__file__).resolve().parent.parent
SERVE = ROOT / "container" / "NER" / "serve"
DEFAULT_IMAGE = "spacy-ner-sagemaker:local"


class TargetError(RuntimeError):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker_answers():
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True).returncode == 0


def image_exists(image):
    inspect = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
    return inspect.returncode == 0


def wait_for_ping(port, started, alive, timeout):
    """Seconds from `started` (a perf_counter) to the first 200 from /ping."""
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if load.get_status(port, timeout=0.5) == 200:
            return time.perf_counter() - started
        if not alive():
            raise TargetError("the server exited before /ping answered 200")
        time.sleep(0.01)
    raise TargetError(f"/ping did not answer 200 within {timeout} s")


class Server:
    """A started server; subclasses say how to start, stop and list its processes."""

    kind = ""

    def __init__(self, workers, full_pipeline, model_dir=None):
        """model_dir: a pipeline folder served as SageMaker serves ModelDataUrl (mounted
        at /opt/ml/model in the image; SM_MODEL_DIR on the host)."""
        self.workers, self.full_pipeline, self.model_dir = workers, full_pipeline, model_dir
        self.port = free_port()
        self.cold_start_seconds = None

    def env(self):
        return {"MODEL_SERVER_WORKERS": str(self.workers),
                "SPACY_FULL_PIPELINE": "true" if self.full_pipeline else "false"}

    def processes(self):
        raise NotImplementedError

    def cpu_seconds(self):
        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def memory(self):
        """Summed PSS (shared pages split between their sharers), USS and RSS, in MB."""
        pss = uss = rss = 0
        procs = self.processes()
        for p in procs:
            m = p.memory_full_info()
            pss, uss, rss = pss + m.pss, uss + m.uss, rss + m.rss
        mb = 1e6
        return {"pss_mb": round(pss / mb, 1), "uss_mb": round(uss / mb, 1),
                "rss_mb": round(rss / mb, 1), "processes": len(procs)}


class HostServer(Server):
    kind = "host"

    def start(self, timeout=120):
        env = {**os.environ, **self.env(), "SAGEMAKER_BIND_TO_PORT": str(self.port)}
        if self.model_dir:
            env["SM_MODEL_DIR"] = str(self.model_dir)
        # serve finds gunicorn beside the interpreter; nginx may live in /usr/sbin.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}:/usr/sbin"
        self.log = tempfile.TemporaryFile()
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, str(SERVE)], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.cold_start_seconds = wait_for_ping(
                self.port, started, lambda: self.proc.poll() is None, timeout)
        except TargetError as e:
            self.stop()
            raise TargetError(f"{e}\n--- serve log ---\n{self.logs()}") from None
        self.root = psutil.Process(self.proc.pid)
        return self

    def logs(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def processes(self):
        return [self.root, *self.root.children(recursive=True)]

    def versions(self):
        from importlib.metadata import version

        import spacy

        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        out = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
        return {"python": sys.version.split()[0], "spacy": spacy.__version__,
                "gunicorn": version("gunicorn"), "flask": version("flask"),
                "nginx": out.split("/")[-1]}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class ImageServer(Server):
    kind = "image"

    def __init__(self, workers, full_pipeline, image, publish=False, model_dir=None):
        super().__init__(workers, full_pipeline, model_dir)
        self.image, self.publish = image, publish

    def start(self, timeout=120):
        env = self.env()
        if self.publish:
            # -p on loopback: every byte goes through Docker's userland docker-proxy,
            # which costs CPU on these same cores and is not in SageMaker's request path.
            network = ["-p", f"127.0.0.1:{self.port}:8080"]
        else:
            # The host's network: the client reaches nginx directly, as SageMaker's
            # front end does, and serve listens on the port SAGEMAKER_BIND_TO_PORT names.
            network = ["--network", "host"]
            env["SAGEMAKER_BIND_TO_PORT"] = str(self.port)
        env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        if self.model_dir:
            env_args += ["-v", f"{self.model_dir}:/opt/ml/model:ro"]
        # `serve` as the command, as SageMaker runs it.
        cmd = ["docker", "run", "-d", "--rm", *network, *env_args, self.image, "serve"]
        started = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise TargetError(f"docker run failed: {out.stderr.strip()}")
        self.id = out.stdout.strip()
        try:
            self.cold_start_seconds = wait_for_ping(self.port, started, self.running, timeout)
        except TargetError as e:
            logs = self.logs()
            self.stop()
            raise TargetError(f"{e}\n--- container log ---\n{logs}") from None
        return self

    def running(self):
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", self.id],
                             capture_output=True, text=True)
        return out.stdout.strip() == "true"

    def logs(self):
        out = subprocess.run(["docker", "logs", "--tail", "60", self.id],
                             capture_output=True, text=True)
        return (out.stdout + out.stderr)[-4000:]

    def processes(self):
        # `docker top` lists the container's processes by their PIDs on this host, where
        # psutil can read their memory maps and CPU times.
        out = subprocess.run(["docker", "top", self.id, "-eo", "pid"], capture_output=True,
                             text=True, check=True)
        pids = [int(line) for line in out.stdout.split()[1:] if line.strip().isdigit()]
        return [psutil.Process(pid) for pid in pids]

    def versions(self):
        script = ("import json, spacy, gunicorn, flask, sys; print(json.dumps({'python': "
                  "sys.version.split()[0], 'spacy': spacy.__version__, 'gunicorn': "
                  "gunicorn.__version__, 'flask': flask.__version__}))")
        out = subprocess.run(["docker", "exec", self.id, "python", "-c", script],
                             capture_output=True, text=True)
        found = json.loads(out.stdout) if out.returncode == 0 else {}
        ng = subprocess.run(["docker", "exec", self.id, "nginx", "-v"], capture_output=True,
                            text=True)
        if ng.returncode == 0:
            found["nginx"] = ng.stderr.strip().split("/")[-1]
        return found

    def stop(self):
        subprocess.run(["docker", "stop", "-t", "30", self.id], capture_output=True)


def image_info(image):
    out = subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                         text=True, check=True)
    info = json.loads(out.stdout)[0]
    return {"name": image, "id": info["Id"][7:19], "size_mb": round(info["Size"] / 1e6, 1)}


def choose(target, image):
    """'host' or 'image' for --target; auto picks the image when Docker answers."""
    if target != "auto":
        if target == "image" and not (docker_answers() and image_exists(image)):
            raise TargetError(f"--target image needs a Docker engine and the image {image} "
                              "(make image)")
        return target
    if not docker_answers():
        return "host"
    if image_exists(image):
        return "image"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise TargetError(f"Docker answers but the image {image} is not built; CI must "
                          "benchmark the image (make image)")
    print(f"bench: Docker answers but the image {image} is not built (make image); "
          "benchmarking serve on this host instead", file=sys.stderr)
    return "host"


def server(kind, workers, full_pipeline, image, publish=False, model_dir=None):
    if kind == "image":
        return ImageServer(workers, full_pipeline, image, publish, model_dir)
    return HostServer(workers, full_pipeline, model_dir)
