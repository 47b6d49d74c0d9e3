"""Concurrent requests merged into one nlp.pipe call (batcher.py), inside a memory zone.

In-process tests drive the Flask app from many threads at once around a real tiny
pipeline with the misbehaving components of tests/plugins; the last tests start the real
`serve` (nginx + gunicorn gthread workers) with the same pipeline. Nothing here is timed:
a test holds the model busy (test_hold) for as long as it needs requests to queue, so the
nlp.pipe calls (test_count) are known exactly. Every test ends what it started: the held
model is released, and each app's batcher is closed (its watchdog thread ends).
"""

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import spacy

import ner_test_components as components  # noqa: E402 (conftest puts PLUGINS on the path)
import pipeline
import predictor
from bad_requests import check_error
from batcher import Batcher, PipelineError
from conftest import TRAIN, retry_while_504, wait_until
from cutting import Limit
from fanout import PART_HEADER, Fanout
from settings import Settings
from tuning import MIN_PART_CHARACTERS, PARTS_PER_WORKER

TEXTS = [text for text, _ in TRAIN]


def novel_words(n, seed):
    """Texts of words no model has seen: ids, names and typos, as real traffic brings."""
    return [
        f"Order X{seed}Q{i}Z by Zorblax{seed}v{i} reached Quenbury{i}x{seed} "
        f"on day {seed * 100000 + i}."
        for i in range(n)
    ]


@pytest.fixture
def make_app(misbehaving_model):
    """make_app(**env): a fresh app (and so a fresh batcher) around the pipeline, every
    component on. After the test the model is released and every batcher closed."""
    apps = []

    def make(**env):
        apps.append(app_with(misbehaving_model, **env))
        return apps[-1]

    yield make
    components.release()  # never leave a thread holding the model waiting on HOLD
    for application in apps:
        application.runner.batcher.close()


@pytest.fixture
def app(make_app):
    return make_app()


def app_with(model_dir, **env):
    """The app around the pipeline, every component on; the test components' state reset
    after the model's own warm-up call."""
    settings = Settings.from_env(
        {"SPACY_MODEL": str(model_dir), "SPACY_FULL_PIPELINE": "true", **env}
    )
    application = predictor.create_app(pipeline.load(settings), settings)
    components.reset()
    return application


def post(app, body, content_type="application/json", **headers):
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    # One test client per call: clients keep cookies and are not meant for sharing.
    return app.test_client().post(
        "/invocations", data=body, content_type=content_type, headers=headers
    )


class Held:
    """The model held busy by a HOLD request while the test queues requests behind it."""

    def __init__(self, app, pool):
        self.app, self.pool = app, pool
        self.batcher = app.runner.batcher
        self.first = pool.submit(post, app, {"text": "HOLD Alice works at Acme in Paris."})
        wait_until(components.holding.is_set, "the HOLD request never reached the model")

    def queue(self, bodies):
        """Send each (body[, content_type[, headers]]); return futures once all wait in
        the queue."""
        before = self.batcher.queued()
        futures = [self.pool.submit(self._send, *b) for b in bodies]
        wait_until(
            lambda: self.batcher.queued() == before + len(bodies),
            "the requests did not all reach the batcher's queue",
        )
        return futures

    def _send(self, body, content_type="application/json", headers=None):
        return post(self.app, body, content_type, **(headers or {}))

    def release(self):
        components.release()
        assert self.first.result(timeout=30).status_code == 200


def expected_entities(nlp_path, texts):
    nlp = spacy.load(nlp_path, exclude=["test_count"])  # not counted among the app's calls
    return [
        [
            {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
            for e in doc.ents
        ]
        for doc in nlp.pipe(texts)
    ]


def test_requests_queued_while_the_model_is_busy_merge_into_one_nlp_pipe_call(app):
    with ThreadPoolExecutor(32) as pool:
        held = Held(app, pool)
        futures = held.queue([({"text": t},) for t in TEXTS * 2])
        held.release()
        assert all(f.result(timeout=30).status_code == 200 for f in futures)
    # One call for the HOLD request, one for the 20 that queued behind it.
    assert components.pipe_calls == [1, 20]


def test_concurrent_requests_of_every_form_each_get_exactly_their_own_entities(
    app, misbehaving_model
):
    """64 threads at once, five request forms, different texts: no answer goes astray."""
    texts = [f"{t} Case {i}." for i, t in enumerate(TEXTS * 7)][:64]
    want = expected_entities(misbehaving_model, texts)
    forms = [
        lambda i: (
            ({"text": texts[i]}),
            "application/json",
            {},
            lambda r: [r.get_json()["entities"]],
        ),
        lambda i: (
            ({"texts": [texts[i], texts[-1 - i]]}),
            "application/json",
            {},
            lambda r: [x["entities"] for x in r.get_json()["results"]],
        ),
        lambda i: (texts[i].encode(), "text/plain", {}, lambda r: [r.get_json()["entities"]]),
        lambda i: (
            json.dumps({"id": i, "text": texts[i]}) + "\n" + json.dumps(texts[-1 - i]),
            "application/jsonlines",
            {"Accept": "application/jsonlines"},
            lambda r: [json.loads(line)["entities"] for line in r.data.decode().splitlines()],
        ),
    ]

    def one(i):
        body, content_type, headers, read = forms[i % len(forms)](i)
        response = post(app, body, content_type, **headers)
        assert response.status_code == 200, response.data
        got = read(response)
        expected = want[i : i + 1] if len(got) == 1 else [want[i], want[-1 - i]]
        return got, expected

    with ThreadPoolExecutor(64 + 1) as pool:  # and one for the HOLD request
        held = Held(app, pool)  # so that the 64 really arrive together, and merge
        futures = [pool.submit(one, i) for i in range(64)]
        wait_until(lambda: held.batcher.queued() == 64, "not all 64 requests queued")
        held.release()
        for future in futures:
            got, expected = future.result(timeout=60)
            assert got == expected
    blog = post(app, {"input": texts[0]}).get_json()
    assert blog == {"output": [[e["text"], e["label"]] for e in want[0]]}
    # The HOLD call; all 64 requests (96 texts: every other form sends two) in one call;
    # the blog post's request.
    assert components.pipe_calls == [1, 96, 1]


def test_a_failing_request_merged_with_good_ones_fails_alone(app, caplog):
    with ThreadPoolExecutor(8) as pool:
        held = Held(app, pool)
        good_before = held.queue([({"texts": TEXTS[:3]},)])
        bad = held.queue([({"texts": ["Bob moved to Berlin.", "RAISE this one"]},)])
        good_after = held.queue([({"text": TEXTS[0]},), ({"text": TEXTS[5]},)])
        held.release()
        failed = bad[0].result(timeout=30)
        check_error(failed.status_code, failed.headers, failed.data, 500, "internal_error")
        assert b"secret internal detail" not in failed.data
        for future in good_before + good_after:
            assert future.result(timeout=30).status_code == 200
    alice = good_after[0].result().get_json()["entities"]
    assert [e["text"] for e in alice] == ["Alice", "Acme", "Paris"]
    # The merged call failed once; its requests then ran one by one.
    assert components.pipe_calls[:2] == [1, 4]
    assert "secret internal detail" in caplog.text  # logged for the operator, with its trace


def test_the_character_cap_bounds_each_merged_call(make_app):
    app = make_app(MODEL_SERVER_BATCH_CHARACTERS="100")
    with ThreadPoolExecutor(16) as pool:
        held = Held(app, pool)
        forty = "Eve lives in Rome and Bob in Berlin, okay."  # 42 characters
        big = "Alice works at Acme in Paris. " * 10  # 300: over the cap, runs alone
        futures = held.queue(
            [({"text": forty},)] * 5 + [({"text": big},)] + [({"text": forty},)] * 2
        )
        held.release()
        assert all(f.result(timeout=30).status_code == 200 for f in futures)
    # Two 42-character requests fit in 100; the big one alone; then the last two.
    assert components.pipe_calls == [1, 2, 2, 1, 1, 2]


def test_a_request_over_the_cap_shares_the_model_with_the_requests_behind_it(make_app):
    """The batcher's own rule, for what reaches it whole: a request marked as a part of
    another worker's (an ordinary request over the cap, or a JSON Lines body, is first
    cut into groups of at most the cap, one after the other: fanout.py, stream.py)."""
    app = make_app(MODEL_SERVER_BATCH_CHARACTERS="100")
    with ThreadPoolExecutor(8) as pool:
        held = Held(app, pool)
        forty = "Eve lives in Rome and Bob in Berlin, okay."  # 42 characters
        big = held.queue([({"texts": [forty] * 6}, "application/json", {PART_HEADER: "1"})])
        small = held.queue([({"text": forty},)])
        held.release()
        assert (
            big[0].result(timeout=30).get_json()["results"]
            == [{"entities": small[0].result(timeout=30).get_json()["entities"]}] * 6
        )
    # Two of the big request's texts; then the small request with the big one's third;
    # then the rest of the big one. The small one did not wait for all six.
    assert components.pipe_calls == [1, 2, 2, 2, 1]


@pytest.mark.parametrize("merged", [False, True])
def test_a_component_raising_what_is_no_exception_fails_its_request_alone(app, merged):
    """SystemExit from a component: a JSON 500 for its request, the others answered, and
    the model handed on (the next request is answered too)."""
    with ThreadPoolExecutor(8) as pool:
        held = Held(app, pool)
        good = held.queue([({"text": TEXTS[0]},)]) if merged else []
        bad = held.queue([({"texts": ["Bob moved to Berlin.", "EXIT now"]},)])
        good += held.queue([({"text": TEXTS[1]},)]) if merged else []
        held.release()
        failed = bad[0].result(timeout=30)
        check_error(failed.status_code, failed.headers, failed.data, 500, "internal_error")
        assert all(f.result(timeout=30).status_code == 200 for f in good)
    after = post(app, {"text": TEXTS[0]})
    assert after.status_code == 200 and after.get_json()["entities"]
    assert not app.runner.batcher.busy and app.runner.batcher.queued() == 0


def test_an_answer_given_is_never_replaced():
    from batcher import _Job

    job = _Job(["a", "b"], timing=None)
    job.add([[], [{"text": "b"}]])
    job.finish(RuntimeError("raised later, by the zone's exit"))
    assert job.done and job.error is None and job.records == [[], [{"text": "b"}]]


def test_a_request_that_waited_past_the_timeout_is_dropped_with_a_504(make_app):
    app = make_app(MODEL_SERVER_TIMEOUT="1")
    with ThreadPoolExecutor(4) as pool:
        held = Held(app, pool)
        late = held.queue([({"text": TEXTS[0]},)])
        time.sleep(1.2)  # longer than MODEL_SERVER_TIMEOUT in the queue
        held.release()
        response = late[0].result(timeout=30)
    check_error(response.status_code, response.headers, response.data, 504, "model_timeout")
    assert components.pipe_calls == [1]  # it never reached the model


def test_a_stuck_model_call_wakes_the_watchdog():
    """The watchdog's action in a worker is to exit (test_serve below); here, a callback."""
    components.reset()
    watchdogs = {t for t in threading.enumerate() if t.name == "watchdog"}  # others' apps
    stuck = threading.Event()
    nlp = spacy.blank("en")
    nlp.add_pipe("test_stall")
    batcher = Batcher(
        nlp, Limit(1000), timeout=60, stuck_seconds=1, on_stuck=lambda seconds: stuck.set()
    )
    caller = threading.Thread(target=batcher.predict, args=(["STALL"],))
    caller.start()
    try:
        assert stuck.wait(timeout=10), "the watchdog did not notice a call stuck for 1 s"
    finally:  # the stalled call and the watchdog both end
        components.release()
        caller.join(timeout=10)
        batcher.close()
    assert not caller.is_alive()
    assert {t for t in threading.enumerate() if t.name == "watchdog"} == watchdogs


@pytest.mark.parametrize("marker", ["RAISE", "EXIT"])
def test_a_request_cut_by_the_cap_that_fails_leaves_the_model_to_the_next(marker):
    """A request over the cap goes back in the queue after its first slice; when a later
    slice fails, it is answered while still queued. The model must not be handed to it
    (no thread waits there any more): the next request is answered at once."""
    nlp = spacy.blank("en")
    nlp.add_pipe("test_raise")
    nlp.add_pipe("test_exit")
    batcher = Batcher(nlp, Limit(10), timeout=60, stuck_seconds=60)
    try:
        with pytest.raises((RuntimeError, PipelineError)):
            batcher.predict(["a" * 10, f"{marker} b", "c" * 10])
        assert not batcher.busy and batcher.queued() == 0
        assert batcher.predict(["hello"]) == [{"entities": []}]
    finally:
        batcher.close()


@pytest.mark.parametrize(
    "content_type,body",
    [
        ("application/jsonlines", "\n" * 3000),
        ("application/json", json.dumps({"texts": [""] * 3000})),
    ],
)
def test_no_merged_call_takes_more_than_1024_texts_however_short(app, content_type, body):
    """Three thousand empty texts are no characters, but three thousand Docs."""
    response = post(app, body, content_type)
    assert response.status_code == 200
    answer = response.get_data(as_text=True)  # a streamed answer runs as it is read
    assert answer.count('{"entities":[]}') == 3000
    assert len(components.pipe_calls) > 1
    assert max(components.pipe_calls) <= 1024 and sum(components.pipe_calls) == 3000


def test_novel_words_leave_the_vocabulary_as_it_was(app, misbehaving_model):
    nlp_strings = app.runner.batcher.nlp.vocab.strings
    post(app, {"texts": novel_words(10, seed=0)})
    before = len(nlp_strings)
    for seed in range(1, 21):
        assert post(app, {"texts": novel_words(50, seed)}).status_code == 200
        assert post(app, novel_words(1, seed + 100)[0].encode(), "text/plain").status_code == 200
    assert len(nlp_strings) == before
    # Without a memory zone the same traffic adds its words for good.
    nlp = spacy.load(misbehaving_model)
    list(nlp.pipe(novel_words(50, seed=1)))
    assert len(nlp.vocab.strings) > len(spacy.load(misbehaving_model).vocab.strings) + 100


def test_html_is_rendered_from_plain_records_after_the_zone_closed(app):
    response = post(app, {"text": "Alice works at Acme in Paris."}, Accept="text/html")
    page = response.data.decode()
    assert response.status_code == 200 and page.startswith("<!DOCTYPE html>")
    for entity, label in (("Alice", "PERSON"), ("Acme", "ORG"), ("Paris", "GPE")):
        assert re.search(f"<mark[^>]*>{entity}<span[^>]*>{label}</span></mark>", page)


# --- the same through the real serve ------------------------------------------------


def test_a_request_over_the_timeout_gets_a_json_504_and_the_worker_survives(serve_with_plugins):
    """A short text that takes the model 3 s (test_sleep): nothing could have told in
    advance, so nginx answers 504 at MODEL_SERVER_TIMEOUT; the worker lives on."""
    # Less than test_sleep's 3 s; not 1 s, which a stall of the machine could exceed on
    # the request below that must answer 200.
    server = serve_with_plugins(MODEL_SERVER_TIMEOUT=2, MODEL_SERVER_WORKERS=1, LOG_LEVEL="DEBUG")
    before = server.gunicorn_workers()[1]
    calls = len(pipe_calls_logged(server))
    response = requests.post(f"{server.url}/invocations", json={"text": "SLEEP Alice"}, timeout=30)
    check_error(response.status_code, response.headers, response.content, 504, "model_timeout")
    # Once the worker is done with the abandoned request, it serves the next one (sent
    # earlier, it would wait behind the sleep for longer than the timeout too).
    wait_until(
        lambda: len(pipe_calls_logged(server)) > calls,
        "the worker never finished the abandoned request",
        interval=0.1,
    )
    answer = retry_while_504(
        lambda: requests.post(f"{server.url}/invocations", json={"text": TEXTS[0]}, timeout=30)
    )
    assert answer.status_code == 200 and answer.json()["entities"]
    assert server.gunicorn_workers()[1] == before


def pipe_calls_logged(server):
    """(requests, texts) of every merged call the batcher has logged (at DEBUG)."""
    return [
        (int(m[1]), int(m[2]))
        for m in re.finditer(r"nlp\.pipe call \d+: (\d+) requests, (\d+) texts", server.logs())
    ]


def test_serve_merges_the_requests_queued_behind_a_busy_model_and_keeps_the_vocabulary_flat(
    serve_with_plugins, hold
):
    server = serve_with_plugins(MODEL_SERVER_WORKERS=1, LOG_LEVEL="DEBUG", **hold.env)
    url = f"{server.url}/invocations"
    texts = [novel_words(1, seed)[0] for seed in range(200)]
    behind = 8  # fewer than the worker's 16 threads: it takes every one of them at once
    calls_before = len(pipe_calls_logged(server))
    with ThreadPoolExecutor(32) as pool:
        first = pool.submit(requests.post, url, json={"text": "HOLD " + TEXTS[0]}, timeout=60)
        wait_until(hold.holding, "the HOLD request never reached the model")
        queued = [
            pool.submit(requests.post, url, json={"text": t}, timeout=60) for t in texts[:behind]
        ]
        wait_until(
            lambda: f"waits for the model: {behind} queued" in server.logs(),
            f"the {behind} requests did not all queue behind the HOLD request",
        )
        hold.release()
        answers = [f.result() for f in queued]
        assert first.result().status_code == 200
        # The HOLD call, then one call for all that queued behind it (each is logged once
        # its call is over, which may be just after its requests are answered).
        wait_until(
            lambda: len(pipe_calls_logged(server)) == calls_before + 2,
            "the merged call was not logged",
        )
        assert pipe_calls_logged(server)[calls_before:] == [(1, 1), (behind, behind)]
        answers += list(
            pool.map(lambda t: requests.post(url, json={"text": t}, timeout=60), texts[behind:])
        )
    assert all(a.status_code == 200 for a in answers)
    for text, answer in zip(texts, answers, strict=True):
        for e in answer.json()["entities"]:
            assert text[e["start"] : e["end"]] == e["text"]
    calls = [line for line in server.logs().splitlines() if "nlp.pipe call" in line]
    strings = {int(line.rsplit("vocabulary ", 1)[1].split()[0]) for line in calls}
    assert len(strings) == 1, f"the vocabulary grew: {sorted(strings)[:3]}..."


def test_a_worker_stuck_in_the_model_is_replaced(serve_with_plugins):
    # test_stall never returns, so any timeout is over; not 1 s, which a stall of the
    # machine could exceed on the request below that must answer 200.
    server = serve_with_plugins(MODEL_SERVER_WORKERS=1, MODEL_SERVER_TIMEOUT=2)
    before = server.gunicorn_workers()[1]
    response = requests.post(f"{server.url}/invocations", json={"text": "STALL here"}, timeout=30)
    check_error(response.status_code, response.headers, response.content, 504, "model_timeout")
    # WORKER_BACKSTOP_SECONDS (10) after the timeout, the watchdog ends the worker.
    wait_until(
        lambda: server.gunicorn_workers()[1] and server.gunicorn_workers()[1] != before,
        "the stuck worker was not replaced",
        timeout=40,
        interval=0.1,
    )
    # The new worker may still be starting.
    answer = retry_while_504(
        lambda: requests.post(f"{server.url}/invocations", json={"text": TEXTS[0]}, timeout=30)
    )
    assert [e["text"] for e in answer.json()["entities"]] == ["Alice", "Acme", "Paris"]
    assert "the model is stuck" in server.logs()
    assert server.proc.poll() is None, "serve itself must keep running"


@pytest.mark.parametrize(
    "workers,characters,expected",
    [
        # A 1 MB mini-batch on 2 workers: 2 x PARTS_PER_WORKER parts, not 7 of a whole merged
        # call each.
        (2, 700_000, -(-700_000 // (2 * PARTS_PER_WORKER))),
        # A larger request: parts as large as one merged call may be, no larger.
        (2, 10_000_000, 100_000),
        # A little over one merged call: not below MIN_PART_CHARACTERS, each part costing a
        # round trip.
        (2, 120_000, MIN_PART_CHARACTERS),
        # One merged call's worth: one group, not parts.
        (2, 50_000, 100_000),
        # One worker: no tail to shorten.
        (1, 700_000, 100_000),
    ],
)
def test_a_shared_request_is_cut_into_several_parts_per_worker(workers, characters, expected):
    fanout = Fanout(workers, threads=16)
    fanout.socket_path = "/run/gunicorn.sock"  # as worker.py sets it in a worker
    assert fanout.part_limit(characters, Limit(100_000)) == Limit(expected)
