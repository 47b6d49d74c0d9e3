"""The model manager of a multi-model endpoint (manager.py and the modules it uses:
model_names, cgroups, procfs, estimate, manager_http), without a server: names, the
memory it judges a load against (cgroup files as fixtures), the estimate, pagination, the
environment a model runs in, the rendered nginx.conf of both modes, and the manager's
load / list / get / unload around a stand-in for a model's serve (a few lines of Python
that behave as the model role does: write `ready`, or a failure, or die).

The real thing, models loaded into the image, is tests/test_mme.py."""

import http.client
import json
import os
import re
import signal
import socket
import sys
import textwrap
import threading

import pytest

import cgroups
import estimate
import launch
import manager_http
import model_names
import procfs
from conftest import nginx_test, wait_until
from manager import Manager, paginate
from model_process import model_env
from protocol import ApiError
from settings import Settings

MIB = 1024 * 1024


# --- names --------------------------------------------------------------------------

# serve's run folder under the default TMPDIR.
MODELS_DIR = "/tmp/ner-serve-abcdefgh/models"


@pytest.mark.parametrize(
    "name", ["a", "model-1", "7d6ad14cd5078e53147bfbf70fb9d433", "fr_core_news_sm.3.8.0", "f" * 64]
)  # SHA-256 in hex
def test_names_sagemaker_may_send_are_accepted(name):
    model_names.check_name(name, MODELS_DIR)


@pytest.mark.parametrize(
    "name", ["", ".", "..", ".hidden", "-x", "a/b", "a b", "a\n", "é", "a" * 129, None, 7]
)
def test_a_name_that_is_no_safe_folder_name_is_400(name):
    with pytest.raises(ApiError) as e:
        model_names.check_name(name, MODELS_DIR)
    assert (e.value.status, e.value.code) == (400, "invalid_model_name")


def test_a_name_whose_socket_path_would_not_fit_is_400_naming_the_most():
    models_dir = "/tmp/" + "d" * 40 + "/models"
    longest = model_names.SOCKET_PATH_MAX - len(f"{models_dir}//sock")
    assert model_names.SOCKET_PATH_MAX - len(f"{MODELS_DIR}//sock") == 71  # as model_names.py says
    model_names.check_name("n" * longest, models_dir)
    with pytest.raises(ApiError) as e:
        model_names.check_name("n" * (longest + 1), models_dir)
    assert e.value.code == "model_name_too_long" and f"over {longest} characters" in str(e.value)


# --- memory -------------------------------------------------------------------------


def cgroup_v2(tmp_path, limit, current, inactive_file=0):
    (tmp_path / "memory.max").write_text(f"{limit}\n")
    (tmp_path / "memory.current").write_text(f"{current}\n")
    (tmp_path / "memory.stat").write_text(
        f"anon 1\nactive_file 5\ninactive_file {inactive_file}\nshmem 0\n"
    )
    return str(tmp_path)


def cgroup_v1(tmp_path, limit, usage, inactive_file=0):
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (tmp_path / "memory" / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (tmp_path / "memory" / "memory.stat").write_text(
        f"cache 9\ninactive_file 3\ntotal_inactive_file {inactive_file}\n"
    )
    return str(tmp_path)


def meminfo(tmp_path, available_kb):
    path = tmp_path / "meminfo"
    path.write_text(
        f"MemTotal:       16000000 kB\nMemFree:          100 kB\n"
        f"MemAvailable:   {available_kb} kB\n"
    )
    return str(path)


def test_cgroup_v2_limit_and_working_set(tmp_path):
    root = cgroup_v2(tmp_path, 1024 * MIB, 300 * MIB, inactive_file=100 * MIB)
    assert cgroups.cgroup_memory(root) == (1024 * MIB, 200 * MIB)  # page cache not counted


def test_cgroup_v1_limit_and_working_set(tmp_path):
    root = cgroup_v1(tmp_path, 512 * MIB, 200 * MIB, inactive_file=50 * MIB)
    assert cgroups.cgroup_memory(root) == (512 * MIB, 150 * MIB)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: cgroup_v2(p, "max", 10),
        lambda p: cgroup_v1(p, 9223372036854771712, 10),  # v1's "no limit"
    ],
)
def test_no_cgroup_limit_leaves_the_machines_memory_available(tmp_path, make):
    root = make(tmp_path)
    assert cgroups.cgroup_memory(root)[0] is None
    assert cgroups.available_bytes(root, meminfo(tmp_path, 2048)) == 2 * MIB


def test_available_is_the_limit_less_the_working_set_and_at_most_the_machines(tmp_path):
    root = cgroup_v2(tmp_path, 1024 * MIB, 300 * MIB, inactive_file=100 * MIB)
    assert cgroups.available_bytes(root, meminfo(tmp_path, 8 * 1024 * 1024)) == 824 * MIB
    assert cgroups.available_bytes(root, meminfo(tmp_path, 100 * 1024)) == 100 * MIB


def test_no_cgroup_files_at_all_is_the_machines_memory(tmp_path):
    assert cgroups.cgroup_memory(str(tmp_path)) == (None, None)
    assert cgroups.available_bytes(str(tmp_path), meminfo(tmp_path, 4096)) == 4 * MIB


def test_this_machine_has_some_memory_available():
    assert cgroups.available_bytes() > 0


# --- the estimate -------------------------------------------------------------------


def test_the_estimate_grows_with_the_size_on_disk_and_the_workers():
    e = estimate.Estimator(base=100, per_worker=10, disk_factor=2.0)
    assert e.estimate(1000, 1) == 100 + 10 + 2000
    assert e.estimate(1000, 3) == 100 + 30 + 2000


def test_loads_that_used_more_than_guessed_make_later_guesses_larger():
    e = estimate.Estimator(base=100, per_worker=0, disk_factor=1.0)
    e.observe(100, 1, used_bytes=400)  # twice the guess of 200
    e.observe(100, 1, used_bytes=100)  # half of it: the largest correction holds
    assert e.correction() == 2.0 and e.estimate(100, 1) == 400


def test_the_recycle_limit_is_room_each_worker_may_grow_into():
    e = estimate.Estimator(recycle_bytes=16, base=100, per_worker=0, disk_factor=0)
    assert e.estimate(0, 2) == 100 + 32


def test_folder_bytes_counts_the_files_under_a_folder(tmp_path):
    (tmp_path / "ner").mkdir()
    (tmp_path / "ner" / "model").write_bytes(b"x" * 1000)
    (tmp_path / "meta.json").write_bytes(b"{}")
    assert estimate.folder_bytes(str(tmp_path)) == 1002


# --- pagination, the model's environment, connections -------------------------------


def test_pages_follow_on_from_the_token():
    names = ["c", "a", "e", "b", "d"]
    assert paginate(names, "", 2) == (["a", "b"], "b")
    assert paginate(names, "b", 2) == (["c", "d"], "d")
    assert paginate(names, "d", 2) == (["e"], None)
    assert paginate(names, "", 5) == (sorted(names), None)
    assert paginate([], "", 5) == ([], None)
    # A model unloaded between two pages does not shift the next one.
    assert paginate(["a", "c", "d", "e"], "b", 2) == (["c", "d"], "d")


def test_a_model_runs_with_its_own_folder_and_workers_and_the_settings_accept_that():
    environ = {
        "SAGEMAKER_MULTI_MODEL": "true",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "4",
        "SPACY_MODEL": "en_core_web_sm",
        "MODEL_SERVER_TIMEOUT": "30",
    }
    env = model_env(
        environ, "m", "/opt/ml/models/m/model", "/opt/ml/models/m/model/p", 2, "/run/m/failure.json"
    )
    s = Settings.from_env(env, cpus=lambda: 8)
    assert (s.multi_model, s.workers, s.model_dir, s.spacy_model, s.timeout) == (
        False,
        2,
        "/opt/ml/models/m/model",
        "/opt/ml/models/m/model/p",
        30,
    )
    assert env["NER_MODEL_FAILURE_FILE"] == "/run/m/failure.json"
    assert env["NER_LOG_TAG"] == "model=m"  # on every log line of the model's processes


def test_connections_in_flight_counts_accepted_and_waiting_ones(tmp_path):
    path = str(tmp_path / "g.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(8)
    clients = []
    try:
        assert procfs.connections_in_flight(path) == 0
        for _ in range(2):
            clients.append(socket.socket(socket.AF_UNIX))
            clients[-1].connect(path)
        accepted, _ = server.accept()
        assert procfs.connections_in_flight(path) == 2  # one accepted, one in the backlog
        accepted.close()
        clients[0].close()
        wait_until(lambda: procfs.connections_in_flight(path) == 1, "one left")
    finally:
        for c in clients:
            c.close()
        server.close()


# --- nginx.conf, both modes ---------------------------------------------------------


@pytest.mark.parametrize("multi", [False, True])
def test_the_rendered_nginx_conf_holds_one_mode_and_nginx_accepts_it(tmp_path, multi):
    settings = Settings.from_env({"SAGEMAKER_MULTI_MODEL": str(multi)}, cpus=lambda: 1)
    conf = open(launch.render_nginx_conf(settings, str(tmp_path))).read()
    assert not re.search(r"^\s*# (@\w+_MODEL\{|\}@\w+_MODEL)$", conf, re.M)  # markers
    assert not re.search(r"@(RUN_DIR|MODEL_NAME|MODEL_SOCKET|LOAD_TIMEOUT)@", conf)
    assert ("/invoke$" in conf) is multi and ("manager.sock" in conf) is multi
    assert ("proxy_pass http://gunicorn;" in conf) is not multi
    # One copy of what every proxied request gets, whichever mode.
    for directive in ("proxy_send_timeout", "proxy_http_version", "client_max_body_size"):
        assert conf.count(f"{directive} ") == 1, directive
    checked = nginx_test(tmp_path)
    assert checked.returncode == 0, checked.stderr


# --- the manager, around a stand-in for a model's serve ------------------------------

# What the stand-in does is in its url folder's `behave` file: "ready" (with a child in
# its session, as gunicorn is), "invalid" (wsgi.py's report of a ModelError), "exit",
# "kill" (SIGKILL, as the OOM killer would), "slow" (ready once the test creates `go` in
# the url folder, or after a minute).
STAND_IN = textwrap.dedent("""\
    import json, os, signal, subprocess, sys, time
    folder = sys.argv[1]
    behave = open(os.path.join(os.environ["SM_MODEL_DIR"], "behave")).read().strip()
    if behave == "invalid":
        with open(os.environ["NER_MODEL_FAILURE_FILE"], "w") as f:
            json.dump({"code": "model_invalid", "message": "has no NER component"}, f)
        sys.exit(1)
    if behave == "exit":
        sys.exit(1)
    if behave == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if behave == "slow":
        gate, deadline = os.path.join(os.environ["SM_MODEL_DIR"], "go"), time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(os.path.join(folder, "pids"), "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    open(os.path.join(folder, "ready"), "w").close()
    time.sleep(60)
    """)


@pytest.fixture
def manager(tmp_path):
    stand_in = tmp_path / "stand_in.py"
    stand_in.write_text(STAND_IN)
    (tmp_path / "cgroup").mkdir()
    root = cgroup_v2(tmp_path / "cgroup", 64 * 1024 * MIB, 0)  # a test may lower it
    settings = Settings.from_env({}, cpus=lambda: 1)
    m = Manager(
        settings,
        str(tmp_path / "run"),
        command=[sys.executable, str(stand_in)],
        cgroup_root=root,
        meminfo=meminfo(tmp_path, 64 * 1024 * 1024),
    )
    yield m
    m.stop_all(0)


def model_dir(tmp_path, name, behave="ready"):
    url = tmp_path / "opt" / name / "model"
    url.mkdir(parents=True)
    (url / "config.cfg").write_text("[nlp]\n")
    (url / "meta.json").write_text("{}")
    (url / "behave").write_text(behave)
    return str(url)


def load(manager, name, url):
    return manager.handle("POST", "/models", json.dumps({"model_name": name, "url": url}).encode())


def error_of(call):
    with pytest.raises(ApiError) as e:
        call()
    return e.value.status, e.value.code, e.value.message


def test_load_list_get_and_unload_a_model(manager, tmp_path):
    url = model_dir(tmp_path, "m1")
    assert load(manager, "m1", url) == (200, {"modelName": "m1", "modelUrl": url})
    folder = os.path.join(manager.models_dir, "m1")
    assert os.path.exists(os.path.join(folder, "ready"))  # what nginx routes by
    assert manager.handle("GET", "/models", b"") == (
        200,
        {"models": [{"modelName": "m1", "modelUrl": url}]},
    )
    assert manager.handle("GET", "/models/m1", b"") == (200, {"modelName": "m1", "modelUrl": url})
    assert error_of(lambda: load(manager, "m1", url))[:2] == (409, "model_already_loaded")
    pids = [int(p) for p in open(os.path.join(folder, "pids")).read().split()]
    session = manager.table["m1"].proc.pid
    assert manager.handle("DELETE", "/models/m1", b"")[0] == 200
    # Every process of the model is gone when DELETE answers: its memory is free.
    assert procfs.session_pids(session) == [] and not os.path.exists(folder)
    for pid in pids:
        assert (
            not os.path.exists(f"/proc/{pid}")
            or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
        )
    assert error_of(lambda: manager.handle("GET", "/models/m1", b""))[:2] == (
        404,
        "model_not_found",
    )
    assert error_of(lambda: manager.handle("DELETE", "/models/m1", b""))[0] == 404
    assert manager.handle("GET", "/models", b"") == (200, {"models": []})  # never 404


def test_a_model_that_cannot_be_served_is_400_with_the_reason_and_leaves_nothing(manager, tmp_path):
    status, code, message = error_of(
        lambda: load(manager, "bad", model_dir(tmp_path, "bad", "invalid"))
    )
    assert (status, code) == (400, "model_invalid") and "has no NER component" in message
    assert manager.table == {} and os.listdir(manager.models_dir) == []
    assert load(manager, "good", model_dir(tmp_path, "good"))[0] == 200  # nothing else hurt


def test_a_folder_without_a_pipeline_is_400_before_anything_starts(manager, tmp_path):
    url = tmp_path / "junk"
    url.mkdir()
    (url / "weights.bin").write_bytes(b"x")
    status, code, message = error_of(lambda: load(manager, "junk", str(url)))
    assert (status, code) == (400, "model_invalid") and "no spaCy pipeline" in message
    assert error_of(lambda: load(manager, "none", str(tmp_path / "nothing")))[:2] == (
        400,
        "model_invalid",
    )


@pytest.mark.parametrize(
    "behave,status,code", [("kill", 507, "insufficient_memory"), ("exit", 500, "load_failed")]
)
def test_a_load_whose_process_dies_is_answered_and_forgotten(
    manager, tmp_path, behave, status, code
):
    assert error_of(lambda: load(manager, "m", model_dir(tmp_path, "m", behave)))[:2] == (
        status,
        code,
    )
    assert manager.table == {}


def test_a_load_that_would_not_fit_is_507_and_starts_nothing(tmp_path, manager):
    cgroup_v2(tmp_path / "cgroup", 300 * MIB, 100 * MIB)  # 200 MB free, less the reserve
    status, code, message = error_of(lambda: load(manager, "big", model_dir(tmp_path, "big")))
    assert (status, code) == (507, "insufficient_memory") and "unload a model" in message
    assert manager.table == {} and os.listdir(manager.models_dir) == []


def test_loads_of_different_models_run_at_once_and_a_loading_name_is_409(manager, tmp_path):
    urls = {n: model_dir(tmp_path, n, "slow") for n in ("a", "b")}
    answers = {}
    threads = [
        threading.Thread(target=lambda n=n: answers.update({n: load(manager, n, urls[n])}))
        for n in urls
    ]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(manager.table) == 2, "both loading")
        assert error_of(lambda: load(manager, "a", urls["a"]))[:2] == (409, "model_already_loaded")
        assert error_of(lambda: manager.handle("GET", "/models/a", b""))[0] == 404  # not yet
    finally:  # only now may the stand-ins go ready: both stayed loading until here
        for url in urls.values():
            open(os.path.join(url, "go"), "w").close()
        for t in threads:
            t.join()
    assert {n: a[0] for n, a in answers.items()} == {"a": 200, "b": 200}


def test_a_load_of_a_name_being_unloaded_waits_for_the_unload(manager, tmp_path):
    url = model_dir(tmp_path, "m")
    load(manager, "m", url)
    entry = manager.table["m"]
    entry.state = "unloading"  # as unload() leaves it while the model's serve stops
    finishing = threading.Timer(0.3, manager._stop, ([entry], 0))
    finishing.start()
    assert load(manager, "m", url)[0] == 200  # not 409
    finishing.join()
    assert manager.table["m"] is not entry and manager.table["m"].state == "ready"


def test_a_model_whose_process_exits_on_its_own_is_dropped(manager, tmp_path):
    load(manager, "m", model_dir(tmp_path, "m"))
    manager.table["m"].proc.send_signal(signal.SIGKILL)
    wait_until(lambda: (manager.reap(), "m" not in manager.table)[1], "dropped", timeout=5)
    assert manager.handle("GET", "/models", b"") == (200, {"models": []})


def test_listing_is_paginated(manager, tmp_path):
    for n in ("m3", "m1", "m2"):
        load(manager, n, model_dir(tmp_path, n))
    status, page = manager.handle("GET", "/models?max_results=2", b"")
    assert [m["modelName"] for m in page["models"]] == ["m1", "m2"]
    status, rest = manager.handle(
        "GET", f"/models?max_results=2&next_page_token={page['nextPageToken']}", b""
    )
    assert [m["modelName"] for m in rest["models"]] == ["m3"] and "nextPageToken" not in rest
    assert error_of(lambda: manager.handle("GET", "/models?max_results=0", b""))[0] == 400


@pytest.mark.parametrize(
    "method,target,body,status",
    [
        ("POST", "/models", b"not json", 400),
        ("POST", "/models", b'{"model_name": "m"}', 400),
        ("POST", "/models", b'{"model_name": "a/b", "url": "/x"}', 400),
        ("POST", "/models", b'{"model_name": "m", "url": "relative"}', 400),
        ("PUT", "/models", b"", 405),
        ("POST", "/models/m", b"", 405),
        ("GET", "/invocations", b"", 404),
    ],
)
def test_bad_requests_to_the_manager(manager, method, target, body, status):
    assert error_of(lambda: manager.handle(method, target, body))[0] == status


def test_the_manager_answers_http_on_its_unix_socket(manager, tmp_path):
    path = str(tmp_path / "run" / "manager.sock")
    httpd = manager_http.ManagerServer(path, manager)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:

        def request(method, target, body=None):
            conn = http.client.HTTPConnection("localhost", timeout=10)
            conn.sock = socket.socket(socket.AF_UNIX)
            conn.sock.connect(path)
            conn.request(method, target, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.getheader("Content-Type"), json.loads(response.read())

        url = model_dir(tmp_path, "m")
        body = json.dumps({"model_name": "m", "url": url})
        assert request("POST", "/models", body) == (
            200,
            "application/json",
            {"modelName": "m", "modelUrl": url},
        )
        assert request("POST", "/models", body)[0] == 409
        assert request("GET", "/models")[2] == {"models": [{"modelName": "m", "modelUrl": url}]}
        status, _, answer = request("GET", "/models/nope")
        assert status == 404 and answer["error"]["code"] == "model_not_found"
        assert request("DELETE", "/models/m")[0] == 200
    finally:
        httpd.shutdown()
        httpd.server_close()
