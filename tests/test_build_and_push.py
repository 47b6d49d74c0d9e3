"""build_and_push.sh for real: a moto server stands in for ECR and STS, Debian's
docker-registry is the registry (REGISTRY), and the real image is built and pushed.
The error paths run the script with one piece missing and read its message."""

import os
import shutil
import subprocess
import uuid

import pytest

from aws_local import REGION, build_env, local_registry, moto_server, private_docker_config  # noqa: F401 (fixtures)
from conftest import ROOT, free_port, in_ci

SCRIPT = ROOT / "build_and_push.sh"
NAME = "spacy-ner-sagemaker"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def run(env, *args, timeout=900):
    return subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture
def push_env(docker, moto_server, local_registry, tmp_path):
    env = moto_server.env()
    env.update(build_env())
    env["REGISTRY"] = local_registry.host
    env["DOCKER_CONFIG"] = private_docker_config(tmp_path)
    return env


@pytest.fixture
def tag(docker):
    """A tag of its own per test; its local images are removed afterwards."""
    tag = f"test-{uuid.uuid4().hex[:8]}"
    yield tag
    refs = subprocess.run(
        [docker, "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
    ).stdout.split()
    mine = [r for r in refs if r.endswith(f"/{NAME}:{tag}") or r == f"{NAME}:{tag}"]
    if mine:
        subprocess.run([docker, "rmi", *mine], capture_output=True)


def assert_pushed(result, registry, tag):
    assert result.returncode == 0, result.stderr
    uri = f"{registry.host}/{NAME}:{tag}"
    assert result.stdout.strip().splitlines()[-1] == uri, result.stdout
    assert tag in registry.tags(NAME)
    media_type, manifest = registry.manifest(NAME, tag)
    # CreateModel refuses OCI indexes (what BuildKit's provenance attestations make).
    assert media_type == DOCKER_V2
    config = registry.blob(NAME, manifest["config"]["digest"])
    # SageMaker instances are x86-64.
    assert (config["os"], config["architecture"]) == ("linux", "amd64")


def test_pushes_a_docker_v2_amd64_image_and_creates_the_missing_repository(
    push_env, moto_server, local_registry, tag
):
    ecr = moto_server.client("ecr")
    assert ecr.describe_repositories()["repositories"] == []

    result = run(push_env, NAME, tag)

    assert_pushed(result, local_registry, tag)
    repos = ecr.describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in repos] == [NAME]
    assert "creating ECR repository" in result.stderr


def test_an_existing_repository_is_used_as_it_is(push_env, moto_server, local_registry, tag):
    ecr = moto_server.client("ecr")
    created = ecr.create_repository(
        repositoryName=NAME,
        imageTagMutability="IMMUTABLE",
        tags=[{"Key": "owner", "Value": "someone-else"}],
    )

    result = run(push_env, NAME, tag)

    assert_pushed(result, local_registry, tag)
    assert "creating ECR repository" not in result.stderr
    [repo] = ecr.describe_repositories()["repositories"]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["createdAt"] == created["repository"]["createdAt"]


# --- error paths: each fails fast, names the failing tool, prints nothing on stdout ---


def path_without(tmp_path, missing):
    """A PATH with only the tools the script uses up to its checks, minus `missing`."""
    tools = {
        "bash": shutil.which("bash"),
        "dirname": shutil.which("dirname"),
        "mktemp": shutil.which("mktemp"),
        "rm": shutil.which("rm"),
        "tr": shutil.which("tr"),
        "docker": shutil.which("docker"),
        "aws": shutil.which("aws", path=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"),
    }
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, target in tools.items():
        if name != missing and target:
            (bin_dir / name).symlink_to(target)
    return str(bin_dir)


def assert_fails(result, *words):
    assert result.returncode != 0
    assert result.stdout == ""
    for word in words:
        assert word in result.stderr, result.stderr


def offline_env(tmp_path):
    """No credentials anywhere, and an AWS endpoint where nothing listens: nothing can
    reach AWS even by mistake."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "DOCKER"}
    env.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION=REGION,
        PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
    )
    return env


def test_an_invalid_repository_name_is_refused_before_anything_runs(tmp_path):
    assert_fails(run(offline_env(tmp_path), "Not_Valid"), "IMAGE_NAME 'Not_Valid'", "usage:")


def test_too_many_arguments_print_the_usage(tmp_path):
    assert_fails(run(offline_env(tmp_path), NAME, "latest", "extra"), "usage:")


def test_without_docker_it_says_so(tmp_path):
    env = offline_env(tmp_path)
    env["PATH"] = path_without(tmp_path, "docker")
    assert_fails(run(env, NAME, "x"), "docker", "not found", "install Docker")


@pytest.fixture
def docker_client():
    """These checks need the docker client, not an engine."""
    if not shutil.which("docker"):
        if in_ci():
            pytest.fail("no docker client on PATH, and CI must run these tests")
        pytest.skip("no docker client on PATH")


def test_without_the_aws_cli_it_says_so(docker_client, tmp_path):
    env = offline_env(tmp_path)
    env["PATH"] = path_without(tmp_path, "aws")
    assert_fails(run(env, NAME, "x"), "AWS CLI is not installed")


def test_with_the_engine_down_it_says_so(docker_client, tmp_path):
    env = offline_env(tmp_path)
    env["DOCKER_HOST"] = f"unix://{tmp_path / 'no-engine.sock'}"
    assert_fails(run(env, NAME, "x"), "Docker engine is not answering")


def test_without_a_region_it_says_so(docker, tmp_path):
    env = offline_env(tmp_path)
    del env["AWS_DEFAULT_REGION"]
    assert_fails(run(env, NAME, "x"), "no region", "AWS_REGION")


def test_without_credentials_it_says_so_before_building(docker, tmp_path):
    result = run(offline_env(tmp_path), NAME, "x")
    assert_fails(result, "aws sts get-caller-identity failed", "credentials")
    assert "building" not in result.stderr
