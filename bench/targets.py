"""The server under test: the image in Docker, or `serve` on this host.

Both start the real server (nginx + gunicorn + the model) on a free loopback port and
time the cold start: from the start command to the first 200 from /ping. Both can list
the server's processes (as PIDs on this host) for the memory and CPU figures.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness.servers import (  # noqa: E402,F401 (MultiModelEndpoint: for mme.py)
    DEFAULT_IMAGE,
    Container,
    HostProcess,
    MultiModelEndpoint,
    ServerError,
    docker_ready,
    free_port,
    host_env,
    image_exists,
    in_ci,
    shared_with_containers,
)

TargetError = ServerError


class Server:
    """A started server; subclasses say how to start, stop and list its processes."""

    cpu_counted_by = "the server's processes"  # what counted_cpu_seconds() reads

    def __init__(self, workers, full_pipeline, model_dir=None, env=None):
        """model_dir: a pipeline folder served as SageMaker serves ModelDataUrl (mounted
        at /opt/ml/model in the image; SM_MODEL_DIR on the host). env: more settings
        (e.g. MODEL_SERVER_TIMEOUT) for this server."""
        self.workers, self.full_pipeline, self.model_dir = workers, full_pipeline, model_dir
        self.extra_env = dict(env or {})
        self.cold_start_seconds = None

    def env(self):
        return {
            "MODEL_SERVER_WORKERS": str(self.workers),
            "SPACY_FULL_PIPELINE": "true" if self.full_pipeline else "false",
            **self.extra_env,
        }

    def processes(self):
        raise NotImplementedError

    def cpu_seconds(self):
        return cpu_of(self.processes())

    def counted_cpu_seconds(self):
        """The server's CPU seconds so far, as exactly as the target allows: its
        processes' own here, the container's cgroup for the image."""
        return self.cpu_seconds()

    def memory(self):
        """Summed PSS (shared pages split between their sharers), USS and RSS, in MB."""
        pss = uss = rss = counted = 0
        for p in self.processes():
            try:
                m = p.memory_full_info()
            except psutil.NoSuchProcess:  # a worker that recycled since it was listed
                continue
            pss, uss, rss, counted = pss + m.pss, uss + m.uss, rss + m.rss, counted + 1
        mb = 1e6
        return {
            "pss_mb": round(pss / mb, 1),
            "uss_mb": round(uss / mb, 1),
            "rss_mb": round(rss / mb, 1),
            "processes": counted,
        }


class HostServer(Server):
    def start(self, timeout=120):
        extra = self.env()
        if self.model_dir:
            extra["SM_MODEL_DIR"] = str(self.model_dir)
        self.log_file = tempfile.NamedTemporaryFile(prefix="bench-serve-", suffix=".log")
        started = time.perf_counter()
        self.process = HostProcess(host_env(free_port(), **extra), self.log_file.name)
        self.process.wait_ready(timeout)
        self.cold_start_seconds = time.perf_counter() - started
        self.port = self.process.port
        self.root = psutil.Process(self.process.proc.pid)
        return self

    def processes(self):
        return [self.root, *self.root.children(recursive=True)]

    def versions(self):
        from importlib.metadata import version

        import spacy

        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        out = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
        return {
            "python": sys.version.split()[0],
            "spacy": spacy.__version__,
            "gunicorn": version("gunicorn"),
            "flask": version("flask"),
            "nginx": out.split("/")[-1],
        }

    def stop(self):
        self.process.stop()
        self.log_file.close()


class ImageServer(Server):
    cpu_counted_by = "the container's cgroup"

    def __init__(
        self,
        workers,
        full_pipeline,
        image,
        publish=False,
        model_dir=None,
        env=None,
        run_args=(),
        port=None,
    ):
        """run_args: more `docker run` arguments (cpu_profile.py's py-spy mount). port:
        the host port (default: a free one)."""
        super().__init__(workers, full_pipeline, model_dir, env)
        self.image, self.publish, self.run_args = image, publish, list(run_args)
        self.wanted_port = port
        self.main_pid = None  # read once, by container_cpu_seconds()

    def start(self, timeout=120):
        # The host's network by default: the client reaches nginx directly, as SageMaker's
        # front end does. A published port (-p on loopback) sends every byte through
        # Docker's userland docker-proxy, which costs CPU on these same cores and is not in
        # SageMaker's request path.
        volumes = []
        if self.model_dir:
            shared_with_containers(self.model_dir)
            volumes = ["-v", f"{self.model_dir}:/opt/ml/model:ro"]
        started = time.perf_counter()
        # `serve` as the command, as SageMaker runs it.
        self.container = Container(
            self.image,
            [*volumes, *self.run_args],
            ("serve",),
            env=self.env(),
            network="publish" if self.publish else "host",
            port=self.wanted_port,
        )
        try:
            self.container.wait_ready(timeout)
        except ServerError:
            self.container.remove()
            raise
        self.cold_start_seconds = time.perf_counter() - started
        self.port, self.id = self.container.port, self.container.id
        return self

    def processes(self):
        # `docker top` lists the container's processes by their PIDs on this host, where
        # psutil can read their memory maps and CPU times.
        out = subprocess.run(
            ["docker", "top", self.id, "-eo", "pid"], capture_output=True, text=True, check=True
        )
        pids = [int(line) for line in out.stdout.split()[1:] if line.strip().isdigit()]
        found = []
        for pid in pids:
            try:
                found.append(psutil.Process(pid))
            except psutil.NoSuchProcess:  # exited since `docker top` listed it (a recycle)
                pass
        return found

    def versions(self):
        script = (
            "import json, spacy, gunicorn, flask, sys; print(json.dumps({'python': "
            "sys.version.split()[0], 'spacy': spacy.__version__, 'gunicorn': "
            "gunicorn.__version__, 'flask': flask.__version__}))"
        )
        out = subprocess.run(
            ["docker", "exec", self.id, "python", "-c", script], capture_output=True, text=True
        )
        found = json.loads(out.stdout) if out.returncode == 0 else {}
        ng = subprocess.run(
            ["docker", "exec", self.id, "nginx", "-v"], capture_output=True, text=True
        )
        if ng.returncode == 0:
            found["nginx"] = ng.stderr.strip().split("/")[-1]
        return found

    def counted_cpu_seconds(self):
        return self.container_cpu_seconds()

    def container_cpu_seconds(self):
        """CPU seconds the container's cgroup has used: every process it ever ran (a
        worker since recycled too), counted by the kernel, and nothing of this host's."""
        if self.main_pid is None:  # the container's first process: `serve`, for its life
            out = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Pid}}", self.id],
                capture_output=True,
                text=True,
                check=True,
            )
            self.main_pid = int(out.stdout)
        return cgroup_cpu_seconds(self.main_pid)

    def stop(self):
        self.container.stop()


def cpu_of(processes):
    """The CPU seconds (user and system) of processes so far; one that ended counts 0."""
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def cgroup_cpu_seconds(pid):
    """CPU seconds used so far by the cgroup process pid is in: cgroup v1's cpuacct
    controller where it is mounted, else v2's unified hierarchy."""
    unified = None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(","):
            usage = Path(f"/sys/fs/cgroup/cpuacct{path}/cpuacct.usage").read_text()
            return int(usage) / 1e9
        if hierarchy == "0" and not controllers:
            unified = path
    if unified is None:
        raise TargetError(f"no CPU accounting cgroup for process {pid}")
    stat = Path(f"/sys/fs/cgroup{unified}/cpu.stat").read_text().split()
    return int(stat[stat.index("usage_usec") + 1]) / 1e6


def image_info(image):
    out = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout)[0]
    return {"name": image, "id": info["Id"][7:19], "size_mb": round(info["Size"] / 1e6, 1)}


def choose(target, image):
    """'host' or 'image' for --target; auto picks the image when Docker answers."""
    if target != "auto":
        if target == "image" and not (docker_ready() and image_exists(image)):
            raise TargetError(
                f"--target image needs a Docker engine and the image {image} (make image)"
            )
        return target
    if not docker_ready():
        return "host"
    if image_exists(image):
        return "image"
    if in_ci():
        raise TargetError(
            f"Docker answers but the image {image} is not built; CI must "
            "benchmark the image (make image)"
        )
    print(
        f"bench: Docker answers but the image {image} is not built (make image); "
        "benchmarking serve on this host instead",
        file=sys.stderr,
    )
    return "host"


def server(kind, workers, full_pipeline, image, publish=False, model_dir=None, env=None):
    if kind == "image":
        return ImageServer(workers, full_pipeline, image, publish, model_dir, env)
    return HostServer(workers, full_pipeline, model_dir, env)
