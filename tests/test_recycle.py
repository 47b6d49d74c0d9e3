"""Workers replaced once their memory has grown (recycle.py, MODEL_SERVER_RECYCLE_MB).

The real `serve` (nginx + gunicorn + a real tiny pipeline) with a limit of 1 MB, so that
novel words make every worker recycle again and again under traffic. What a client sees:
every request answered, right; what the log shows: one worker recycling at a time; what
the master shows: as many workers as it was started with.
"""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
import spacy

from conftest import TRAIN
from results import entity_records

RECYCLES = 4  # enough to see workers replaced, each after the one before
CLIENTS = 8
RECYCLE_WAIT_SECONDS = 600


def texts_for(client, i):
    """Texts of words no model has seen, around sentences the tiny model knows."""
    return [
        f"Order X{client}Q{i}Z{k} by Zorblax{i}v{k}c{client}. {TRAIN[(i + k) % 5][0]}"
        for k in range(20)
    ]


def events(logs):
    """The recycle lines and gunicorn's worker exits, in log order: (what, pid)."""
    pattern = re.compile(
        r"recycle (begins): pid (\d+)|recycle (ends): pid (\d+)"
        r"|Worker (exiting) \(pid: (\d+)\)"
    )
    found = []
    for m in pattern.finditer(logs):
        what, pid = [g for g in m.groups() if g]
        found.append((what, int(pid)))
    return found


def test_workers_recycle_under_traffic_and_every_request_gets_its_answer(start_server, tiny_model):
    server = start_server(SPACY_MODEL=tiny_model, MODEL_SERVER_WORKERS=2, MODEL_SERVER_RECYCLE_MB=1)
    started_with = server.gunicorn_workers()[1]
    nlp = spacy.load(tiny_model)
    url = f"{server.url}/invocations"
    stop = threading.Event()

    def client(c):
        """(texts sent, answer) for every request until told to stop."""
        sent, i = [], 0
        with requests.Session() as session:
            while not stop.is_set():
                texts = texts_for(c, i)
                sent.append((texts, session.post(url, json={"texts": texts}, timeout=60)))
                i += 1
        return sent

    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client, c) for c in range(CLIENTS)]
        try:
            # Generous: the wait ends at the fourth recycle; only a server that never
            # recycles waits it out.
            deadline = time.monotonic() + RECYCLE_WAIT_SECONDS
            while sum(what == "exiting" for what, _ in events(server.logs())) < RECYCLES:
                assert time.monotonic() < deadline, "workers did not recycle under traffic"
                assert not any(f.done() for f in futures), futures[0].result()  # raises
                time.sleep(0.1)
        finally:  # the clients stop whatever failed: the pool's exit waits for them
            stop.set()
        answers = [pair for f in futures for pair in f.result()]

    # Every request answered, with the entities nlp.pipe finds in its texts.
    assert all(response.status_code == 200 for _, response in answers), {
        r.status_code: r.text[:200] for _, r in answers if r.status_code != 200
    }
    for texts, response in answers:
        expected = [{"entities": entity_records(doc)} for doc in nlp.pipe(texts)]
        assert response.json()["results"] == expected

    # One worker recycles at a time: each begins, ends and exits before the next begins.
    log = events(server.logs())
    recycles = [e for e in log if e[0] != "exiting" or any(b == ("begins", e[1]) for b in log)]
    assert len(recycles) >= 3 * RECYCLES
    for i in range(0, len(recycles) - len(recycles) % 3, 3):
        pid = recycles[i][1]
        assert recycles[i : i + 3] == [("begins", pid), ("ends", pid), ("exiting", pid)], recycles[
            i : i + 6
        ]

    # The master keeps its two workers, new ones in place of the old.
    deadline = time.monotonic() + 30
    while len(server.gunicorn_workers()[1]) != 2:
        assert time.monotonic() < deadline, f"workers now: {server.gunicorn_workers()[1]}"
        time.sleep(0.1)
    assert set(server.gunicorn_workers()[1]) != set(started_with)
    assert server.running()
