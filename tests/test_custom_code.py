"""A pipeline whose component is a factory of the user's own, in code/ beside it (the
inference toolkits' model.tar.gz layout), with a requirement of its own that
code/requirements.txt installs: served by the real `serve` on this host. A broken code/
stops start-up with one line. The image and a multi-model endpoint: test_container.py,
test_mme.py."""

import os
import shutil
import tarfile
import tempfile

import pytest
import requests

from conftest import baked, run_serve
from harness.pipelines import (
    PRODUCT_ENTITIES,
    PRODUCT_TEXT,
    custom_code_model,
    custom_code_package,
)
from harness.servers import Container, MultiModelEndpoint, shared_with_containers


@pytest.fixture(scope="module")
def model_tar_contents(tmp_path_factory):
    return custom_code_model(tmp_path_factory.mktemp("custom") / "model")


@pytest.fixture
def model_dir(model_tar_contents, tmp_path):
    """A copy to break: what SageMaker unpacks into /opt/ml/model."""
    return shutil.copytree(model_tar_contents, tmp_path / "opt_ml_model")


def entities(server, text=PRODUCT_TEXT):
    response = requests.post(f"{server.url}/invocations", json={"text": text}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["entities"]


@pytest.mark.parametrize("nested", [False, True], ids=["pipeline-at-root", "pipeline-in-folder"])
def test_the_factory_in_code_is_served_with_its_requirement_installed(
    start_server, tmp_path, nested
):
    folder = custom_code_model(tmp_path / "model", nested=nested)
    server = start_server(SM_MODEL_DIR=folder)
    assert entities(server) == PRODUCT_ENTITIES
    log = server.logs()
    assert "pip: Successfully installed ner_test_terms-0.1.0" in log
    assert f"imported ner_patterns from {folder / 'code'}" in log


def test_a_second_start_reuses_the_install(start_server, model_dir):
    start_server(SM_MODEL_DIR=model_dir).stop()
    again = start_server(SM_MODEL_DIR=model_dir)
    assert "is installed in" in again.logs() and "Successfully installed" not in again.logs()
    assert entities(again) == PRODUCT_ENTITIES


def test_code_modules_names_what_is_imported(start_server, model_dir):
    (model_dir / "code" / "unrelated.py").write_text("raise RuntimeError('not imported')\n")
    server = start_server(SM_MODEL_DIR=model_dir, SPACY_CODE_MODULES="ner_patterns")
    assert entities(server) == PRODUCT_ENTITIES


BROKEN = {
    "syntax error": (
        lambda code: (code / "ner_patterns.py").write_text("def broken(:\n"),
        "cannot import 'ner_patterns' from {code}: SyntaxError",
    ),
    "import error": (
        lambda code: (code / "ner_patterns.py").write_text("import no_such_module_here\n"),
        "cannot import 'ner_patterns' from {code}: ModuleNotFoundError: "
        "No module named 'no_such_module_here'",
    ),
    "factory missing": (
        lambda code: shutil.rmtree(code),
        "Can't find factory for 'pattern_entities'",
    ),
    "a server module's name": (
        lambda code: (code / "settings.py").write_text("X = 1\n"),
        "code/settings has the name of a module the server already uses",
    ),
    "requirement that would replace the image's numpy": (
        lambda code: (code / "requirements.txt").write_text("numpy==1.26.4\n"),
        "cannot install {code}/requirements.txt: pip failed: ERROR: ResolutionImpossible",
    ),
    "requirement that does not exist": (
        lambda code: (code / "requirements.txt").write_text("ner-test-no-such-package==1.0\n"),
        "cannot install {code}/requirements.txt: pip failed: ERROR: No matching distribution",
    ),
}


@pytest.mark.parametrize("breakage", BROKEN)
def test_a_broken_code_folder_stops_start_up_with_one_clear_line(model_dir, tmp_path, breakage):
    breaks, message = BROKEN[breakage]
    code = model_dir / "code"
    breaks(code)
    status, output = run_serve({"SM_MODEL_DIR": model_dir}, tmp_path)
    assert status != 0
    line = next(line for line in output.splitlines() if "cannot start:" in line)
    assert message.format(code=code) in line, output
    assert "Traceback" not in output


def test_no_reachable_index_says_so_and_how_to_bake_the_packages(model_dir, tmp_path):
    shutil.rmtree(model_dir / "code" / "wheels")
    env = {
        "SM_MODEL_DIR": model_dir,
        # Nothing listens on port 9: what pip sees in a VPC without internet, at once.
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_FIND_LINKS": "",
    }
    status, output = run_serve(env, tmp_path)
    assert status != 0
    line = next(line for line in output.splitlines() if "cannot start:" in line)
    assert "no package index is reachable from the container" in line
    assert "code/wheels/" in line and "docs/pipelines.md#custom-code" in line
    assert "pip: " in output  # pip's own words are in the log above it


# --- in the image, and in a multi-model endpoint -------------------------------------


def unpacked_model_tar_gz(folder, into):
    """folder packed as a model.tar.gz is, then unpacked as SageMaker unpacks it."""
    with tempfile.TemporaryDirectory() as scratch:
        archive = os.path.join(scratch, "model.tar.gz")
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=path.name)
        into.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    return shared_with_containers(into)


# No index can be reached: the requirement must come from code/wheels/, as in a VPC.
OFFLINE = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple"}


def test_the_image_serves_a_model_tar_gz_with_code(docker, image, model_tar_contents, tmp_path):
    model = unpacked_model_tar_gz(model_tar_contents, tmp_path / "opt_ml_model")
    container = Container(
        image,
        ("-v", f"{model}:/opt/ml/model:ro", "--read-only", "--tmpfs", "/tmp"),
        env=OFFLINE,
        docker=docker,
    )
    try:
        container.wait_ready()
        assert entities(container) == PRODUCT_ENTITIES
        assert "pip: Successfully installed ner_test_terms-0.1.0" in container.logs()
    finally:
        container.remove()


def test_a_multi_model_endpoint_loads_each_models_code(docker, image, model_tar_contents, tmp_path):
    store = tmp_path / "opt_ml_models"
    unpacked_model_tar_gz(model_tar_contents, store / "custom" / "model")
    broken = unpacked_model_tar_gz(model_tar_contents, store / "broken" / "model")
    (broken / "code" / "ner_patterns.py").write_text("def broken(:\n")
    endpoint = MultiModelEndpoint(image, store, env=OFFLINE, docker=docker)
    try:
        endpoint.wait_ready()
        assert endpoint.load("custom").status_code == 200
        answer = endpoint.invoke("custom", {"text": PRODUCT_TEXT})
        assert answer.json() == {"entities": PRODUCT_ENTITIES}, answer.text
        response = endpoint.load("broken")
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "model_invalid" and "SyntaxError" in error["message"], error
        assert "Traceback" not in error["message"]
        # Loaded again, the model reuses its install.
        assert endpoint.unload("custom").status_code == 200
        assert endpoint.load("custom").status_code == 200
        assert "is installed in" in endpoint.logs()
        assert endpoint.invoke("custom", {"text": PRODUCT_TEXT}).json()["entities"]
    finally:
        endpoint.remove()


def test_a_baked_package_with_code_is_served(docker, image, tmp_path):
    """A package made by `spacy package --code`, baked with SPACY_MODEL_PACKAGE."""
    wheel = custom_code_package(tmp_path / "package")
    with baked(docker, f"{image}-custom-code-test", wheel) as container:
        assert entities(container) == PRODUCT_ENTITIES
        assert "imported ner_patterns from /opt/ml-default-model/code" in container.logs()
