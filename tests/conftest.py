"""Shared fixtures: a tiny real spaCy NER model, the real `serve` on a free port, and the
rule for tests that need Docker (skip on a laptop without it, fail in CI)."""

import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROGRAM_DIR = ROOT / "container" / "NER"
# Misbehaving spaCy components (ner_test_components.py), importable by the tests and, on
# PYTHONPATH, by the real serve.
PLUGINS = ROOT / "tests" / "plugins"
sys.path[:0] = [str(PROGRAM_DIR), str(ROOT), str(PLUGINS)]

# How the tests (and the benchmark) start, wait for and stop the real server.
from harness.servers import (  # noqa: E402,F401 (re-exported for the test modules)
    DEFAULT_IMAGE,
    HostProcess,
    docker_ready,
    free_port,
    host_env,
    in_ci,
    wait_until,
)


def nginx_test(folder):
    """`nginx -t` (check the configuration, start nothing) on folder/nginx.conf, with
    folder as nginx's prefix, as serve starts nginx on the file it renders there."""
    import launch

    return subprocess.run(
        [
            launch.find_nginx(),
            "-t",
            "-e",
            "stderr",
            "-p",
            str(folder),
            "-c",
            str(folder / "nginx.conf"),
        ],
        capture_output=True,
        text=True,
    )


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


def serve_env(tmp_path, **extra):
    """The environment for `serve` on this host (harness.servers.host_env): a free port,
    2 workers, no /opt/ml/model; `extra` overrides any of it."""
    return host_env(
        free_port(),
        **{"MODEL_SERVER_WORKERS": 2, "SM_MODEL_DIR": tmp_path / "no-model-dir", **extra},
    )


def run_serve(env_extra, tmp_path):
    """Run serve to completion (for start-ups that must fail) and return (code, output)."""
    done = subprocess.run(
        [sys.executable, str(PROGRAM_DIR / "serve")],
        env=serve_env(tmp_path, **{"MODEL_SERVER_WORKERS": 1, **env_extra}),
        timeout=60,
        capture_output=True,
        text=True,
    )
    return done.returncode, done.stdout + done.stderr


def start_host_server(env, log_path, wait=True):
    """The real `serve` (nginx + gunicorn) on this host; waits for /ping unless told not to."""
    server = HostProcess(env, log_path)
    return server.wait_ready(timeout=60) if wait else server


def retry_while_504(send, timeout=30):
    """send() (one request) again while nginx answers it 504, for up to timeout seconds;
    its last answer. For a test's short MODEL_SERVER_TIMEOUT: a correct server answers 504
    when the machine stalls it that long, or when its worker is still starting."""
    deadline = time.monotonic() + timeout
    response = send()
    while response.status_code == 504 and time.monotonic() < deadline:
        time.sleep(0.2)
        response = send()
    return response


@pytest.fixture
def start_server(tmp_path):
    """Start `serve` with extra environment; waits for /ping unless wait=False."""
    servers = []

    def start(wait=True, **env):
        server = start_host_server(
            serve_env(tmp_path, **env), tmp_path / f"serve-{len(servers)}.log", wait
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def spancat_model(tmp_path_factory):
    """A real tok2vec + ner + spancat pipeline (harness.pipelines), overlapping spans with
    scores under harness.pipelines.SPANS_KEY."""
    from harness.pipelines import spancat_pipeline

    return spancat_pipeline(tmp_path_factory.mktemp("models") / "spancat")


@pytest.fixture(scope="session")
def misbehaving_model(tiny_model, tmp_path_factory):
    """The tiny NER pipeline plus test_raise, test_stall, test_hold, test_sleep,
    test_exit and test_count (tests/plugins/ner_test_components.py)."""
    import spacy

    import ner_test_components  # noqa: F401 (registers the components)

    nlp = spacy.load(tiny_model)
    for name in ("test_raise", "test_stall", "test_hold", "test_sleep", "test_exit", "test_count"):
        nlp.add_pipe(name)
    path = tmp_path_factory.mktemp("models") / "misbehaving"
    nlp.to_disk(path)
    return path


@pytest.fixture
def serve_with_plugins(start_server, misbehaving_model):
    """Start `serve` with the misbehaving pipeline, its components found as any custom
    component is (an entry point on PYTHONPATH)."""

    def start(**env):
        return start_server(
            SPACY_MODEL=misbehaving_model, SPACY_FULL_PIPELINE="true", PYTHONPATH=PLUGINS, **env
        )

    return start


class Hold:
    """The models of serve's workers held busy by HOLD texts (test_hold) until release():
    `env` is what serve needs for it, `holding()` the pids of the workers holding now."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir()
        self.folder.chmod(0o777)  # a container's user writes here too
        self.env = {"NER_TEST_HOLD_DIR": self.folder}

    def holding(self):
        return {int(p.name.split("-", 1)[1]) for p in self.folder.glob("holding-*")}

    def release(self):
        (self.folder / "release").touch()


@pytest.fixture
def hold(start_server, tmp_path):
    """A Hold; released at the end, before the servers stop (it needs start_server)."""
    held = Hold(tmp_path / "hold")
    yield held
    held.release()


@pytest.fixture(scope="session")
def docker():
    """Gate for tests that need a Docker engine: a skip on a laptop, a failure in CI."""
    if not docker_ready():
        message = "no Docker engine answers `docker info`"
        if in_ci():
            pytest.fail(f"{message}, and CI must run the container tests")
        pytest.skip(message)
    return shutil.which("docker")


@contextlib.contextmanager
def baked(docker, tag, wheel, variant="cpu"):
    """The image built as tag with the pipeline package `wheel` baked in
    (SPACY_MODEL_PACKAGE), running and ready; container and image removed afterwards."""
    from harness.servers import Container

    build = subprocess.run(
        [str(ROOT / "scripts" / "build-image.sh"), tag],
        env={**os.environ, "SPACY_MODEL_PACKAGE": str(wheel), "VARIANT": variant},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    container = Container(tag, docker=docker)
    try:
        yield container.wait_ready(timeout=300)
    finally:
        container.remove()
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)


def built_image(docker, variable, default, make):
    name = os.environ.get(variable, default)
    if subprocess.run([docker, "image", "inspect", name], capture_output=True).returncode:
        pytest.fail(f"image {name} is not built; run `{make}` (make test does)")
    return name


@pytest.fixture(scope="session")
def image(docker):
    """The serving image `make image` built (IMAGE, as in the Makefile)."""
    return built_image(docker, "IMAGE", DEFAULT_IMAGE, "make image")


@pytest.fixture(scope="session")
def transformers_image(docker):
    """The transformers variant `make image VARIANT=transformers` built (TRANSFORMERS_IMAGE)."""
    return built_image(
        docker,
        "TRANSFORMERS_IMAGE",
        f"{DEFAULT_IMAGE}-transformers",
        "make image VARIANT=transformers",
    )
