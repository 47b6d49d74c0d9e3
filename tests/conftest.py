"""Shared fixtures: a tiny real spaCy NER model, the real `serve` on a free port, and the
rule for tests that need Docker (skip on a laptop without it, fail in CI)."""

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
PROGRAM_DIR = ROOT / "container" / "NER"
sys.path.insert(0, str(PROGRAM_DIR))

# Sentences whose entities the tiny model learns; the tests ask for these back.
TRAIN = [
    ("Alice works at Acme in Paris.", [(0, 5, "PERSON"), (15, 19, "ORG"), (23, 28, "GPE")]),
    ("Bob moved to Berlin.", [(0, 3, "PERSON"), (13, 19, "GPE")]),
    ("Acme hired Carol.", [(0, 4, "ORG"), (11, 16, "PERSON")]),
    ("Dave visited Paris and Berlin.", [(0, 4, "PERSON"), (13, 18, "GPE"), (23, 29, "GPE")]),
    ("Globex bought Acme.", [(0, 6, "ORG"), (14, 18, "ORG")]),
    ("Eve lives in Rome.", [(0, 3, "PERSON"), (13, 17, "GPE")]),
    ("The weather is nice today.", []),
    ("Carol joined Globex in Rome.", [(0, 5, "PERSON"), (13, 19, "ORG"), (23, 27, "GPE")]),
    ("Nothing happened here.", []),
    ("Bob and Alice met at Globex.", [(0, 3, "PERSON"), (8, 13, "PERSON"), (21, 27, "ORG")]),
]


def train_tiny_model(path, iterations=40):
    """Train and save a small but real NER pipeline (about a second on 2 cores)."""
    import spacy
    from spacy.training import Example

    random.seed(0)
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("ner")
    for _, ents in TRAIN:
        for _, _, label in ents:
            ner.add_label(label)
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in TRAIN]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(iterations):
        random.shuffle(examples)
        nlp.update(examples, sgd=optimizer, drop=0.1)
    nlp.meta["name"] = "tiny_test_ner"
    nlp.meta["version"] = "0.0.1"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("models") / "tiny_ner")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_ping(url, running, timeout=60):
    """Poll url/ping until 200; fail early once running() says the server has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if not running():
            raise AssertionError("the server exited before /ping answered 200")
        time.sleep(0.1)
    raise AssertionError(f"{url}/ping did not answer 200 within {timeout} s")


class HostServer:
    """The real `serve` (nginx + gunicorn) running on this host."""

    def __init__(self, env, log_path):
        self.port = int(env["SAGEMAKER_BIND_TO_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(PROGRAM_DIR / "serve")], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def logs(self):
        self.log.flush()
        return Path(self.log_path).read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def serve_env(tmp_path, **extra):
    """The environment for `serve` on this host: the venv's bin first (serve finds
    gunicorn beside the interpreter that runs it), nginx from /usr/sbin, a free port,
    2 workers, no /opt/ml/model; `extra` overrides any of it."""
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}:/usr/sbin"
    return {**os.environ, "PATH": path, "SAGEMAKER_BIND_TO_PORT": str(free_port()),
            "MODEL_SERVER_WORKERS": "2", "SM_MODEL_DIR": str(tmp_path / "no-model-dir"),
            **{k: str(v) for k, v in extra.items()}}


def start_host_server(env, log_path, wait=True):
    server = HostServer(env, log_path)
    if wait:
        try:
            wait_for_ping(server.url, lambda: server.proc.poll() is None)
        except AssertionError as e:
            logs = server.logs()  # before stop(), which closes the log file
            server.stop()
            raise AssertionError(f"{e} (serve's exit status: {server.proc.returncode})"
                                 f"\n--- serve log ---\n{logs}") from None
    return server


@pytest.fixture
def start_server(tmp_path):
    """Start `serve` with extra environment; waits for /ping unless wait=False."""
    servers = []

    def start(wait=True, **env):
        server = start_host_server(serve_env(tmp_path, **env),
                                   tmp_path / f"serve-{len(servers)}.log", wait)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def docker_ready():
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def docker():
    """Gate for tests that need a Docker engine: a skip on a laptop, a failure in CI."""
    if not docker_ready():
        message = "no Docker engine answers `docker info`"
        if in_ci():
            pytest.fail(f"{message}, and CI must run the container tests")
        pytest.skip(message)
    return shutil.which("docker")


@pytest.fixture(scope="session")
def image(docker):
    """The serving image `make image` built (IMAGE, as in the Makefile)."""
    name = os.environ.get("IMAGE", "spacy-ner-sagemaker:local")
    if subprocess.run([docker, "image", "inspect", name], capture_output=True).returncode:
        pytest.fail(f"image {name} is not built; run `make image` (make test does)")
    return name
