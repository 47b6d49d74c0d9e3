"""The real `serve` on this host: nginx in front of gunicorn, the real default model.

These drive what SageMaker drives: /ping, /invocations through nginx, SIGTERM, dead
workers, SAGEMAKER_BIND_TO_PORT, and a model unpacked into /opt/ml/model.
"""

import json
import math
import os
import re
import shutil
import signal
import socket
import threading
import time

import psutil
import pytest
import requests

import launch
from bad_requests import (
    LARGE_HEADERS,
    LONG_QUERY,
    check_error,
    check_over_http,
    each_bad_request,
    send_every_bad_request,
)
from capacity import work
from cgroups import available_cpus
from conftest import (
    TRAIN,
    free_port,
    nginx_test,
    retry_while_504,
    run_serve,
    serve_env,
    start_host_server,
    wait_until,
)
from harness.servers import ping_status
from samples import APPLE, APPLE_ENTITIES, batch_of
from settings import Settings
from tuning import MAX_TEXTS_PER_CALL, MIN_PART_CHARACTERS, PARTS_PER_WORKER, TEXT_WORK

TRAIN_TEXT = TRAIN[0][0]  # a sentence the tiny model of the plugin tests knows

# Enough real-model work to keep one worker busy for a few seconds.
LONG_BATCH = batch_of(2500)


def invoke(server, body, timeout=60, **kwargs):
    return requests.post(f"{server.url}/invocations", json=body, timeout=timeout, **kwargs)


def both_workers(server):
    """(master pid, worker pids) once gunicorn runs both default workers: /ping says 200
    once one worker answers, and with --preload the other may still be forking then."""
    wait_until(lambda: len(server.gunicorn_workers()[1]) == 2, "gunicorn started no 2 workers")
    return server.gunicorn_workers()


def batch_lasting(server, seconds):
    """A `texts` request that keeps one worker's model busy for at least about `seconds`
    on any machine: as many characters (as model.work counts them) as the server says,
    in its start-up log, that one worker runs in that time. Paragraphs of batch_of's
    sentences, fewer than one merged call may take (MAX_TEXTS_PER_CALL)."""
    rate = float(re.search(r"one worker runs about (\d+) characters a second", server.logs())[1])
    paragraphs = MAX_TEXTS_PER_CALL // 4
    # A paragraph's work: its sentences' characters but spaces (the first sentence has
    # the fewest), and TEXT_WORK once.
    least = work(batch_of(1)["texts"][0]) - TEXT_WORK
    per_paragraph = math.ceil(rate * seconds / (paragraphs * least))
    sentences = batch_of(paragraphs * per_paragraph)["texts"]
    return {
        "texts": [
            " ".join(sentences[i : i + per_paragraph])
            for i in range(0, len(sentences), per_paragraph)
        ]
    }


def assert_port_free(port):
    """Nothing (no orphaned nginx worker either) listens on port any more."""
    with socket.socket() as s:
        # SO_REUSEADDR looks past closed connections in TIME_WAIT; Linux still refuses
        # the bind while any socket listens on the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server shared by the read-only tests below (starting one costs seconds)."""
    tmp = tmp_path_factory.mktemp("serve")
    s = start_host_server(serve_env(tmp), tmp / "serve.log")
    yield s
    s.stop()


def test_ping_answers_200_with_an_empty_body(server):
    response = requests.get(f"{server.url}/ping", timeout=2)
    assert response.status_code == 200 and response.content == b""


def test_the_real_model_finds_the_known_entities_through_nginx(server):
    response = invoke(server, {"text": APPLE})
    assert response.status_code == 200
    assert response.json() == {"entities": APPLE_ENTITIES}
    assert response.headers["Server"] == "nginx"


def test_the_blog_posts_request_and_answer(server):
    response = invoke(server, {"input": APPLE})
    assert response.json() == {
        "output": [["Apple", "ORG"], ["U.K.", "GPE"], ["$1 billion", "MONEY"]]
    }


def test_a_body_just_under_the_payload_limit_passes_nginx(server):
    # 6 MiB minus a little: nginx and the app must agree on the same limit. Mostly
    # whitespace, so the model's time does not matter, only the bytes.
    limit = 6 * 1024 * 1024
    body = {"texts": [" " * 900_000] * 6 + [APPLE]}
    body["texts"][-1] = " " * (limit - 1000 - len(json.dumps(body))) + APPLE
    assert limit - 1000 <= len(json.dumps(body)) < limit
    response = invoke(server, body)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["results"][-1]["entities"][0]["text"] == "Apple"


@each_bad_request
def test_a_bad_request_gets_a_json_4xx_through_nginx(
    server, name, method, path, headers, body, status, code
):
    check_over_http(server.url, method, path, headers, body, status, code)


def test_after_every_bad_request_the_same_workers_still_answer(server):
    before = server.gunicorn_workers()
    send_every_bad_request(server.url)
    assert invoke(server, {"text": APPLE}).json() == {"entities": APPLE_ENTITIES}
    assert server.gunicorn_workers() == before, "a worker died and was replaced"
    assert "Traceback" not in server.logs()


def test_nginx_answers_its_own_errors_in_json_too(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = s.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 400") and '"code":"bad_request"' in answer, answer
    response = requests.post(f"{server.url}/ping", timeout=2)
    assert response.status_code == 405 and response.headers["Allow"] == "GET"
    response = requests.request("TRACE", f"{server.url}/invocations", timeout=2)  # nginx's own
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_headers_larger_than_sagemaker_sends_reach_the_app(server):
    """Big headers, many headers and a long request line that nginx accepts must not meet
    gunicorn's smaller default limits (and its HTML page) behind it."""
    response = requests.post(
        f"{server.url}/invocations{LONG_QUERY}",
        json={"text": APPLE},
        headers=LARGE_HEADERS,
        timeout=30,
    )
    assert response.status_code == 200, response.text[:300]
    assert response.json() == {"entities": APPLE_ENTITIES}
    attributes = LARGE_HEADERS["X-Amzn-SageMaker-Custom-Attributes"]
    assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == attributes


def test_nginx_waits_for_a_worker_no_longer_than_model_server_timeout_at_any_step(tmp_path):
    """Connecting to gunicorn, sending it the body and reading its answer: each is bounded
    by MODEL_SERVER_TIMEOUT, not by nginx's default of 60 s."""
    settings = Settings.from_env({"MODEL_SERVER_TIMEOUT": "123"}, cpus=lambda: 1)
    conf = open(launch.render_nginx_conf(settings, str(tmp_path))).read()
    for directive in ("proxy_connect_timeout", "proxy_send_timeout", "proxy_read_timeout"):
        assert conf.count(f"{directive} ") == 1 and f"{directive} 123s;" in conf, directive
    checked = nginx_test(tmp_path)
    assert checked.returncode == 0, checked.stderr


def nginx_run_dir(server):
    """serve's run folder, where nginx keeps its temporary files (its -p argument)."""
    nginx = [p for p in psutil.Process(server.proc.pid).children() if p.name() == "nginx"]
    argv = nginx[0].cmdline()
    return argv[argv.index("-p") + 1]


def test_nginx_s_own_500_is_json(server):
    """A body over client_body_buffer_size goes to a temporary file; when nginx cannot
    write it, nginx itself answers 500."""
    body_dir = os.path.join(nginx_run_dir(server), "client_body")
    mode = os.stat(body_dir).st_mode
    os.chmod(body_dir, 0)
    try:
        response = invoke(server, {"texts": [" " * (2 * 1024 * 1024), APPLE]})
    finally:
        os.chmod(body_dir, mode)
    check_error(response.status_code, response.headers, response.content, 500, "internal_error")
    assert response.json()["error"]["message"].startswith("nginx could not")  # not the app
    assert invoke(server, {"text": APPLE}).json() == {"entities": APPLE_ENTITIES}


def test_a_second_server_on_a_taken_port_fails_instead_of_sharing_it(server, tmp_path):
    code, output = run_serve({"SAGEMAKER_BIND_TO_PORT": str(server.port)}, tmp_path)
    assert code == 1 and "Address already in use" in output
    assert requests.get(f"{server.url}/ping", timeout=2).status_code == 200


def test_the_payload_limit_setting_reaches_nginx(start_server):
    small = start_server(SAGEMAKER_MAX_PAYLOAD_IN_MB=1, MODEL_SERVER_WORKERS=1)
    over_one_mib = {"texts": [" " * (1024 * 1024), APPLE]}
    response = invoke(small, over_one_mib)
    check_error(response.status_code, response.headers, response.content, 413, "payload_too_large")
    unlimited = start_server(SAGEMAKER_MAX_PAYLOAD_IN_MB=0, MODEL_SERVER_WORKERS=1)
    seven_mib = {"texts": [" " * (900 * 1024)] * 8 + [APPLE]}
    response = invoke(unlimited, seven_mib)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["results"][-1] == {"entities": APPLE_ENTITIES}


def test_one_large_jsonlines_request_runs_in_parts_on_every_worker(server):
    """fanout.py: the worker that takes a large request sends its groups to gunicorn's
    socket as part requests, small enough that each worker gets several (so the last one
    is a short tail), and gunicorn spreads them over every worker."""
    # "gunicorn with 2 workers x 16 threads"
    workers = int(re.search(r"gunicorn with (\d+) workers", server.logs())[1])
    assert workers > 1
    texts = LONG_BATCH["texts"]
    body = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts))
    parts_before = server.logs().count(" part=True status=200 ")
    response = requests.post(
        f"{server.url}/invocations",
        data=body.encode(),
        timeout=120,
        headers={"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"},
    )
    assert response.status_code == 200, response.text[:300]
    answers = [json.loads(line) for line in response.text.splitlines()]
    assert [a["id"] for a in answers] == list(range(len(texts)))
    for answer in answers:
        text = texts[answer["id"]]
        assert answer["entities"] and all(
            text[e["start"] : e["end"]] == e["text"] for e in answer["entities"]
        ), answer
    # Each part's log line is written once its answer has gone.
    expected = min(workers * PARTS_PER_WORKER, sum(len(t) for t in texts) // MIN_PART_CHARACTERS)

    def part_lines():
        lines = [line for line in server.logs().splitlines() if " part=True status=200 " in line]
        return lines[parts_before:]

    wait_until(lambda: len(part_lines()) >= expected, f"fewer than {expected} parts", timeout=10)
    # "2026-12-02 18:19:23,950 <pid> INFO ner.predictor: invocation ...": more than one
    # worker ran them (a worker may have been recycled meanwhile, so not a fixed set).
    assert len({int(line.split()[2]) for line in part_lines()}) > 1


def test_an_invocation_is_logged_once_and_nginxs_own_answers_by_nginx(server):
    """One line per invocation a worker answers: the worker's, with SageMaker's inference
    id, the status and the times; nginx's access log only for what nginx answers itself
    (here a 405), and /ping in neither."""
    for _ in range(3):
        requests.get(f"{server.url}/ping", timeout=2)
    headers = {"X-Amzn-SageMaker-Inference-Id": "once-1234"}
    r = requests.post(f"{server.url}/invocations", json={"text": APPLE}, headers=headers)
    assert r.status_code == 200
    assert requests.get(f"{server.url}/invocations", timeout=5).status_code == 405
    # nginx writes its line after the answer has gone, the worker once the body is sent.
    wait_until(
        lambda: (
            '"GET /invocations HTTP/1.1" 405' in server.logs() and "id=once-1234" in server.logs()
        ),
        "no log line of the 405, or none of the invocation",
        timeout=10,
    )
    logs = server.logs()
    line = next(line for line in logs.splitlines() if "id=once-1234" in line)
    assert "status=200" in line and "total_ms=" in line, line
    assert logs.count("once-1234") == 1, "the invocation is logged more than once"
    assert '"POST /invocations HTTP/1.1" 200' not in logs
    assert "GET /ping" not in logs


def test_ping_stays_fast_while_every_worker_is_busy(serve_with_plugins, hold):
    """Both workers' models are held busy (on the CPU, test_hold) for as long as /ping is
    asked; /ping must not wait for them."""
    # One thread a worker: the worker holding the first request accepts no second one,
    # so the two HOLD requests reach one worker each.
    server = serve_with_plugins(MODEL_SERVER_THREADS=1, **hold.env)
    _, workers = both_workers(server)
    answers = []

    def request():
        try:
            answers.append(invoke(server, {"text": "HOLD"}))
        except requests.RequestException as e:  # reported below as what it is
            answers.append(e)

    busy = [threading.Thread(target=request) for _ in workers]
    for t in busy:
        t.start()
    try:
        wait_until(lambda: hold.holding() == set(workers), "not every worker holds its model")
        waits = []
        for _ in range(20):
            t0 = time.monotonic()
            assert requests.get(f"{server.url}/ping", timeout=2).status_code == 200
            waits.append(time.monotonic() - t0)
            time.sleep(0.05)
        assert not answers, "a held request was answered: the workers were not busy"
    finally:
        hold.release()
        for t in busy:
            t.join()
    assert [getattr(a, "status_code", a) for a in answers] == [200, 200], server.logs()[-3000:]
    # A ping that queued behind the model would wait until the release; nginx answers in
    # ms. The bound is loose on purpose: the benchmark measures the real figure.
    assert max(waits) < 1.0, waits


# The shortest window MODEL_SERVER_HEALTH_SECONDS allows: the tests below wait for it.
HEALTH_SECONDS = 5
# serve reads the heartbeats every 0.5 s; a worker beats at least once a second.
HEALTH_SLACK = 1.5
# What a test waits beyond that before it calls a change late: a busy CI machine can stall
# a process for a second or more. The tests check that the change comes, and not before the
# window; they are not timers.
STALL_SLACK = 5


def stop_gunicorn(server):
    """SIGSTOP the gunicorn master, then every worker it has: the master first, so that it
    cannot fork a worker after the list is read (with --preload the first worker answers
    before the second is forked, so a server that just said 200 may still be forking)."""
    master, _ = server.gunicorn_workers()
    master = psutil.Process(master)
    master.send_signal(signal.SIGSTOP)
    wait_until(
        lambda: master.status() == psutil.STATUS_STOPPED,
        "the master did not stop",
        timeout=10,
        interval=0.01,
    )
    workers = master.children()
    assert workers, "gunicorn has no worker to stop"
    for p in workers:
        p.send_signal(signal.SIGSTOP)
    return [master, *workers]


def ping_statuses_until(server, deadline, stop=lambda status: False):
    """The status of every /ping until deadline (a monotonic time), or until stop(status)."""
    statuses = []
    while time.monotonic() < deadline:
        statuses.append(requests.get(f"{server.url}/ping", timeout=2).status_code)
        if stop(statuses[-1]):
            break
        time.sleep(0.1)
    return statuses


def test_ping_says_503_while_every_gunicorn_process_is_stopped_and_200_once_resumed(start_server):
    server = start_server(MODEL_SERVER_HEALTH_SECONDS=HEALTH_SECONDS)
    both_workers(server)
    processes = stop_gunicorn(server)
    assert len(processes) == 3, processes
    try:
        stopped = time.monotonic()
        statuses = ping_statuses_until(
            server,
            stopped + HEALTH_SECONDS + HEALTH_SLACK + STALL_SLACK,
            stop=lambda status: status == 503,
        )
        assert statuses[-1] == 503, f"/ping still says {statuses[-1]} with every worker stopped"
        # Not long before the window: a worker's last beat came a second or so before.
        assert time.monotonic() - stopped >= HEALTH_SECONDS - 2
        response = requests.get(f"{server.url}/ping", timeout=2)
        check_error(response.status_code, response.headers, response.content, 503, "no_worker")
    finally:
        for p in processes:
            p.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    statuses = ping_statuses_until(
        server, resumed + HEALTH_SLACK + STALL_SLACK, stop=lambda status: status == 200
    )
    assert statuses[-1] == 200, "/ping did not come back once the workers resumed"
    assert invoke(server, {"text": APPLE}).json() == {"entities": APPLE_ENTITIES}
    logs = server.logs()
    assert logs.count("/ping answers 503") == 1 and logs.count("answers again") == 1, logs


def test_a_worker_busy_for_longer_than_the_health_window_keeps_ping_at_200(start_server):
    """Busy is not dead: both workers run one long nlp.pipe call each, for longer than
    MODEL_SERVER_HEALTH_SECONDS, while /ping is asked ten times a second.

    The real model, not test_hold: test_hold's loop lets go of the GIL at every look (a
    stat) for its release file, and what counts here is that a worker's main thread still
    beats while a real model call runs."""
    # A loaded machine may take minutes; a 504 would end the busy time early. One thread a
    # worker, so that each worker takes one of the two requests; a batch cap over their
    # size, so that each runs whole in one call.
    server = start_server(
        MODEL_SERVER_HEALTH_SECONDS=HEALTH_SECONDS,
        MODEL_SERVER_TIMEOUT=600,
        MODEL_SERVER_THREADS=1,
        MODEL_SERVER_BATCH_CHARACTERS=100_000_000,
    )
    both_workers(server)
    # Twice the window and its slack: room for a rate measured at start-up while the
    # machine was busier than it is now.
    batch = batch_lasting(server, 2 * (HEALTH_SECONDS + HEALTH_SLACK))
    answers = []
    busy = [
        threading.Thread(target=lambda: answers.append(invoke(server, batch, timeout=600)))
        for _ in range(2)
    ]
    started = time.monotonic()
    for t in busy:
        t.start()
    statuses = []
    while any(t.is_alive() for t in busy):
        statuses.append(requests.get(f"{server.url}/ping", timeout=2).status_code)
        time.sleep(0.1)
    busy_for = time.monotonic() - started
    for t in busy:
        t.join()
    assert [r.status_code for r in answers] == [200, 200]
    assert busy_for > HEALTH_SECONDS + HEALTH_SLACK, f"busy for only {busy_for:.1f} s"
    assert set(statuses) == {200}, statuses
    assert "/ping answers 503" not in server.logs()


def test_replacing_the_only_worker_does_not_make_ping_503(start_server):
    # The default window, not the shortest (HEALTH_SECONDS): within the window the new
    # worker must fork and beat for tuning.SETTLE_SECONDS, and in the shortest one a stall
    # of the machine of a few seconds meanwhile would make the 503 real.
    window = 10
    server = start_server(MODEL_SERVER_WORKERS=1, MODEL_SERVER_HEALTH_SECONDS=window)
    _, [worker] = server.gunicorn_workers()
    psutil.Process(worker).send_signal(signal.SIGKILL)
    killed = time.monotonic()
    statuses = ping_statuses_until(
        server, killed + window + HEALTH_SLACK + 1, stop=lambda status: status != 200
    )
    assert set(statuses) == {200}, statuses
    _, workers = server.gunicorn_workers()
    assert len(workers) == 1 and workers != [worker]
    assert invoke(server, {"text": APPLE}).json() == {"entities": APPLE_ENTITIES}


def test_a_crash_looping_worker_makes_ping_503(start_server):
    """Every new worker is killed as soon as it appears, as the OOM killer would under
    traffic: a worker that lives only a moment does not count as able."""
    server = start_server(MODEL_SERVER_WORKERS=1, MODEL_SERVER_HEALTH_SECONDS=HEALTH_SECONDS)
    master = psutil.Process(server.gunicorn_workers()[0])
    looping = threading.Event()
    looping.set()
    killed = []

    def kill_every_worker():
        while looping.is_set():
            for worker in master.children():
                try:
                    worker.send_signal(signal.SIGKILL)
                    killed.append(worker.pid)
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.05)

    killer = threading.Thread(target=kill_every_worker)
    killer.start()
    try:
        started = time.monotonic()
        statuses = ping_statuses_until(
            server,
            started + HEALTH_SECONDS + HEALTH_SLACK + STALL_SLACK,
            stop=lambda status: status == 503,
        )
    finally:
        looping.clear()
        killer.join()
    assert statuses[-1] == 503, f"/ping says {statuses[-1]} while workers crash-loop"
    assert len(set(killed)) > 3, "gunicorn did not restart the killed workers"
    statuses = ping_statuses_until(
        server, time.monotonic() + HEALTH_SLACK + STALL_SLACK, stop=lambda status: status == 200
    )
    assert statuses[-1] == 200, "/ping did not come back once a worker could live"
    assert invoke(server, {"text": APPLE}).json() == {"entities": APPLE_ENTITIES}


def test_a_killed_worker_is_replaced_and_serving_goes_on(server):
    master, workers = server.gunicorn_workers()
    psutil.Process(workers[0]).send_signal(signal.SIGKILL)
    wait_until(
        lambda: (
            len(server.gunicorn_workers()[1]) == 2
            and workers[0] not in server.gunicorn_workers()[1]
        ),
        "gunicorn did not replace the killed worker",
        timeout=30,
        interval=0.1,
    )
    assert server.gunicorn_workers()[0] == master
    # Which worker takes a request is the kernel's choice: this checks that the server
    # answers with the new worker in place, not that the new worker took a request.
    for _ in range(4):
        assert invoke(server, {"text": APPLE}).json() == {"entities": APPLE_ENTITIES}


@pytest.mark.parametrize("content_type", ["application/json", "application/jsonlines"])
def test_a_request_too_large_for_the_timeout_gets_413_at_once_naming_the_setting(
    start_server, content_type
):
    """Seconds of the real model's work against a 2 s timeout: refused before it runs,
    rather than a 504 (or a retried mini-batch) after the timeout."""
    # Not 1 s, which a stall of the machine could exceed even on the 413.
    timeout = 2
    server = start_server(MODEL_SERVER_TIMEOUT=timeout, MODEL_SERVER_WORKERS=1)
    _, before = server.gunicorn_workers()
    # Twice the timeout by the rate the server refuses by, whatever this machine's speed.
    texts = batch_lasting(server, 2 * timeout)["texts"]
    if content_type == "application/json":
        body = json.dumps({"texts": texts})
    else:
        body = "".join(json.dumps(t) + "\n" for t in texts)
    response = requests.post(
        f"{server.url}/invocations", data=body, timeout=60, headers={"Content-Type": content_type}
    )
    check_error(
        response.status_code, response.headers, response.content, 413, "too_large_for_timeout"
    )
    assert "MODEL_SERVER_TIMEOUT" in response.json()["error"]["message"]
    assert retry_while_504(lambda: invoke(server, {"text": APPLE})).json() == {
        "entities": APPLE_ENTITIES
    }
    assert server.gunicorn_workers()[1] == before


def test_sagemaker_bind_to_port_moves_the_server(start_server):
    port = free_port()
    server = start_server(SAGEMAKER_BIND_TO_PORT=port, MODEL_SERVER_WORKERS=1)
    assert server.port == port
    assert requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200
    assert f"nginx on port {port}" in server.logs()


def test_a_model_in_the_model_dir_takes_precedence_over_the_baked_one(
    start_server, tmp_path, tiny_model
):
    model_dir = tmp_path / "opt-ml-model"
    shutil.copytree(tiny_model, model_dir / "model")  # as unpacked from model.tar.gz
    server = start_server(SM_MODEL_DIR=model_dir, MODEL_SERVER_WORKERS=1)
    entities = invoke(server, {"text": "Alice works at Acme in Paris."}).json()["entities"]
    assert [(e["text"], e["label"]) for e in entities] == [
        ("Alice", "PERSON"),
        ("Acme", "ORG"),
        ("Paris", "GPE"),
    ]
    # The tiny model knows no MONEY: the real model is not the one answering.
    assert "MONEY" not in invoke(server, {"text": APPLE}).text
    assert f"tiny_test_ner 0.0.1 from {model_dir / 'model'}" in server.logs()


def test_ping_says_503_until_the_model_is_loaded(start_server):
    server = start_server(wait=False, MODEL_SERVER_WORKERS=1)
    statuses = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and 200 not in statuses:
        try:
            statuses.append(requests.get(f"{server.url}/ping", timeout=2).status_code)
        except requests.ConnectionError:
            pass
        time.sleep(0.02)
    assert statuses[0] == 503 and statuses[-1] == 200, statuses[:5]
    assert set(statuses) == {503, 200}


def test_sigterm_lets_every_accepted_request_finish_then_exits_within_30_s(
    serve_with_plugins, hold
):
    """One worker, three requests: one holding the model (test_hold), two queued behind
    it in the batcher. SIGTERM comes, nginx stops listening; only then is the model
    released. All three are answered, and serve exits 0."""
    server = serve_with_plugins(MODEL_SERVER_WORKERS=1, LOG_LEVEL="DEBUG", **hold.env)
    bodies = [{"texts": [f"HOLD {TRAIN_TEXT}", TRAIN_TEXT]}] + [{"texts": [TRAIN_TEXT] * 3}] * 2
    answers = {}

    def request(i):
        try:
            answers[i] = invoke(server, bodies[i])
        except requests.RequestException as e:  # reported below as what it is
            answers[i] = e

    clients = [threading.Thread(target=request, args=(i,)) for i in range(3)]
    clients[0].start()
    wait_until(hold.holding, "the HOLD request never reached the model")
    for client in clients[1:]:
        client.start()
    wait_until(
        lambda: "waits for the model: 2 queued" in server.logs(),
        "the two other requests did not queue behind the held model",
    )
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    # nginx closes its listening socket once it has begun its graceful stop.
    wait_until(
        lambda: ping_status(server.port, timeout=0.5) is None, "nginx kept listening after SIGTERM"
    )
    assert not answers, "a request was answered before the model was released"
    hold.release()
    server.proc.wait(timeout=30)
    assert time.monotonic() - signalled < 30
    for client in clients:
        client.join()
    assert server.proc.returncode == 0, server.logs()
    statuses = {i: getattr(a, "status_code", a) for i, a in sorted(answers.items())}
    assert statuses == {0: 200, 1: 200, 2: 200}, statuses
    assert [len(answers[i].json()["results"]) for i in range(3)] == [2, 3, 3]
    assert_port_free(server.port)


def test_serve_exits_when_nginx_dies(start_server):
    server = start_server(MODEL_SERVER_WORKERS=1)
    nginx = [p for p in psutil.Process(server.proc.pid).children() if p.name() == "nginx"]
    gunicorn_master, _ = server.gunicorn_workers()
    nginx[0].kill()  # the master only: its workers are orphaned and still listen
    assert server.proc.wait(timeout=30) == 1
    assert (
        not psutil.pid_exists(gunicorn_master)
        or psutil.Process(gunicorn_master).status() == psutil.STATUS_ZOMBIE
    )
    assert "nginx exited" in server.logs()
    assert_port_free(server.port)


def test_a_bad_setting_stops_start_up_with_one_clear_line(tmp_path):
    code, output = run_serve({"MODEL_SERVER_WORKERS": "lots"}, tmp_path)
    assert code == 2
    assert "cannot start: MODEL_SERVER_WORKERS='lots' is not a whole number" in output


def test_a_model_without_ner_or_spans_stops_start_up_with_one_clear_line(tmp_path):
    import spacy

    spacy.blank("en").to_disk(tmp_path / "blank")
    code, output = run_serve({"SPACY_MODEL": str(tmp_path / "blank")}, tmp_path)
    assert code == 1  # serve's status when gunicorn, which could not load the app, exits
    assert (
        f"cannot start: model '{tmp_path / 'blank'}' (from SPACY_MODEL) has no "
        "component that sets doc.ents or writes doc.spans" in output
    )


def test_workers_share_the_cpus_in_intra_op_threads_and_keep_two_malloc_arenas(
    server, start_server
):
    """The workers are the parallelism: numpy's OpenBLAS and torch's OpenMP threads must
    not start one thread per CPU in each of them (workers x threads = the CPUs), nor glibc
    keep one malloc arena per request thread. A value the user sets is passed through
    unchanged."""
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MALLOC_ARENA_MAX")
    _, workers = server.gunicorn_workers()
    share = str(max(1, available_cpus() // 2))  # the fixture's 2 workers
    for pid in workers:
        env = psutil.Process(pid).environ()
        assert tuple(env.get(n) for n in names) == (share, share, "2")
    mine = start_server(MODEL_SERVER_WORKERS=1, OPENBLAS_NUM_THREADS=3, MALLOC_ARENA_MAX=4)
    env = psutil.Process(mine.gunicorn_workers()[1][0]).environ()
    assert tuple(env[n] for n in names) == ("3", str(available_cpus()), "4")
