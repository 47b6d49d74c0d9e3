"""AWS stand-ins for the deployment tests (build_and_push.sh, notebook.ipynb): a moto
server for the AWS APIs and a real Docker registry (Debian's docker-registry) for pushes.
Both listen on 127.0.0.1 only. Imported as fixtures by test_build_and_push.py and
test_notebook.py."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import boto3
import pytest
import requests

from conftest import ROOT, free_port

REGION = "us-east-1"
VENV_BIN = ROOT / ".venv" / "bin"


class MotoServer:
    def __init__(self, url):
        self.url = url

    def client(self, service):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def env(self):
        """Environment for a child process that must reach this server and nothing else:
        dummy credentials, no shared config files, no instance metadata lookups."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_") or k == "AWS_EC2_METADATA_DISABLED"
        }
        env.update(
            AWS_ENDPOINT_URL=self.url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=REGION,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
            # The AWS CLI lives in .venv (requirements-dev.txt).
            PATH=f"{VENV_BIN}:{os.environ['PATH']}",
        )
        return env


@pytest.fixture
def moto_server():
    """A fresh moto server (ECR, STS, S3, SageMaker...) on a free 127.0.0.1 port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # An in-process moto keeps its state in module globals, shared by every server this
    # process starts: reset it so each test starts from an empty account.
    requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
    yield MotoServer(url)
    server.stop()


class Registry:
    def __init__(self, host):
        self.host = host
        self.url = f"http://{host}"

    def tags(self, name):
        response = requests.get(f"{self.url}/v2/{name}/tags/list", timeout=10)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return response.json().get("tags") or []

    def manifest(self, name, reference):
        """(Content-Type, JSON) of a manifest, accepting both Docker and OCI types, so the
        registry answers with whatever type was pushed."""
        accept = ", ".join(
            [
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.index.v1+json",
            ]
        )
        response = requests.get(
            f"{self.url}/v2/{name}/manifests/{reference}", headers={"Accept": accept}, timeout=10
        )
        response.raise_for_status()
        return response.headers["Content-Type"], response.json()

    def blob(self, name, digest):
        response = requests.get(f"{self.url}/v2/{name}/blobs/{digest}", timeout=30)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def local_registry(tmp_path):
    """Debian's docker-registry on a free 127.0.0.1 port: a real registry to push to.
    Docker trusts registries on 127.0.0.0/8 over plain HTTP without configuration."""
    binary = shutil.which("docker-registry")
    if not binary:
        pytest.fail("docker-registry is missing; scripts/setup-notebook.sh installs it")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry-data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = open(tmp_path / "registry.log", "w")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    registry = Registry(f"127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{registry.url}/v2/", timeout=1).status_code == 200:
                break
        except requests.RequestException:  # not listening yet, or a read that timed out
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail(f"docker-registry did not start:\n{Path(log.name).read_text()}")
        time.sleep(0.2)
    yield registry
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def build_env():
    """The build settings `make image` used (scripts/ci-docker.sh exports them in CI), so
    builds in these tests reuse its cache instead of starting over."""
    return {k: os.environ[k] for k in ("BASE_IMAGE", "PIP_CERT", "DOCKER") if os.environ.get(k)}


def private_docker_config(tmp_path):
    """A DOCKER_CONFIG folder of the test's own, so `docker login` writes credentials there
    and not into the user's ~/.docker; the user's CLI plugins (buildx) stay visible."""
    config = tmp_path / "docker-config"
    config.mkdir(exist_ok=True)
    plugins = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins"
    if plugins.is_dir() and not (config / "cli-plugins").exists():
        (config / "cli-plugins").symlink_to(plugins)
    return str(config)
