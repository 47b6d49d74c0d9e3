"""The Flask app around a tiny real spaCy model: every request form, content negotiation,
and the table of bad requests. Fast: no nginx, no gunicorn (test_serve.py adds those;
test_batching.py covers concurrent requests and a pipeline that raises)."""

import itertools
import json

import pytest

import capacity
import pipeline
import predictor
from bad_requests import check_error, each_app_bad_request
from conftest import TRAIN
from settings import Settings
from tuning import SUGGESTED_MAX_PAYLOAD_MB

SENTENCE = "Alice works at Acme in Paris."
EXPECTED = [
    {"text": "Alice", "label": "PERSON", "start": 0, "end": 5},
    {"text": "Acme", "label": "ORG", "start": 15, "end": 19},
    {"text": "Paris", "label": "GPE", "start": 23, "end": 28},
]


@pytest.fixture(scope="module")
def settings(tiny_model):
    return Settings.from_env({"SPACY_MODEL": str(tiny_model), "MODEL_SERVER_WORKERS": "3"})


@pytest.fixture(scope="module")
def client(settings):
    return predictor.create_app(pipeline.load(settings), settings).test_client()


def invoke(client, body, content_type="application/json", **headers):
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    return client.post("/invocations", data=body, content_type=content_type, headers=headers)


def test_ping_answers_200_with_an_empty_body(client):
    response = client.get("/ping")
    assert response.status_code == 200 and response.data == b""


def test_one_text_gets_its_entities_with_character_offsets(client):
    response = invoke(client, {"text": SENTENCE})
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.get_json() == {"entities": EXPECTED}
    for e in EXPECTED:
        assert SENTENCE[e["start"] : e["end"]] == e["text"]


def test_offsets_count_characters_not_bytes(client):
    text = "Ünïcödé — " + SENTENCE
    entities = invoke(client, {"text": text}).get_json()["entities"]
    assert entities, "the tiny model should still find Alice, Acme and Paris"
    for e in entities:
        assert text[e["start"] : e["end"]] == e["text"]
    alice = [e for e in entities if e["text"] == "Alice"]
    assert alice and alice[0]["start"] == len("Ünïcödé — ")


def test_a_batch_gets_one_result_per_text_in_order(client):
    texts = ["Bob moved to Berlin.", "", SENTENCE, "Nothing happened here."]
    results = invoke(client, {"texts": texts}).get_json()["results"]
    assert len(results) == 4
    assert [e["text"] for e in results[0]["entities"]] == ["Bob", "Berlin"]
    assert results[1] == {"entities": []}
    assert results[2] == {"entities": EXPECTED}
    assert results[3] == {"entities": []}


def test_an_empty_batch_gets_an_empty_result(client):
    assert invoke(client, {"texts": []}).get_json() == {"results": []}


def test_the_blog_posts_request_gets_the_blog_posts_answer(client):
    response = invoke(client, {"input": SENTENCE})
    assert response.get_json() == {
        "output": [["Alice", "PERSON"], ["Acme", "ORG"], ["Paris", "GPE"]]
    }


def test_plain_text_is_one_text(client):
    response = invoke(client, SENTENCE.encode(), "text/plain; charset=utf-8")
    assert response.get_json() == {"entities": EXPECTED}


def test_a_byte_order_mark_is_not_part_of_the_text(client):
    response = invoke(client, "\ufeff" + SENTENCE, "text/plain")
    assert response.get_json() == {"entities": EXPECTED}


def test_jsonlines_answers_one_line_per_record_when_asked(client):
    body = f'"{SENTENCE}"\n{{"text": "Bob moved to Berlin."}}\n"Nothing happened here."\n'
    response = invoke(client, body, "application/jsonlines", Accept="application/jsonlines")
    assert response.status_code == 200
    assert response.content_type == "application/jsonlines"
    lines = response.data.decode().splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0]) == {"entities": EXPECTED}
    assert [e["text"] for e in json.loads(lines[1])["entities"]] == ["Bob", "Berlin"]
    assert json.loads(lines[2]) == {"entities": []}


def test_a_blank_jsonlines_line_is_an_empty_record_and_keeps_its_place(client):
    body = f'"{SENTENCE}"\n\n  \n"Eve lives in Rome."\n'
    response = invoke(client, body, "application/jsonlines", Accept="application/jsonlines")
    lines = [json.loads(line) for line in response.data.decode().splitlines()]
    assert len(lines) == 4
    assert lines[0] == {"entities": EXPECTED}
    assert lines[1] == lines[2] == {"entities": []}
    assert [e["text"] for e in lines[3]["entities"]] == ["Eve", "Rome"]


def test_jsonlines_without_accept_gets_one_json_document(client):
    response = invoke(client, f'"{SENTENCE}"\r\n"Eve lives in Rome."', "application/jsonlines")
    assert response.content_type == "application/json"
    results = response.get_json()["results"]
    assert results[0] == {"entities": EXPECTED} and len(results) == 2


def test_jsonlines_alias_content_types_are_accepted(client):
    for content_type in ("application/x-jsonlines", "application/jsonl"):
        assert invoke(client, f'"{SENTENCE}"\n', content_type).status_code == 200


@pytest.mark.parametrize(
    "accept",
    [None, "*/*", "application/*", "application/json", "text/html;q=0.5, application/json"],
)
def test_json_is_the_default_answer(client, accept):
    headers = {"Accept": accept} if accept else {}
    response = invoke(client, {"text": SENTENCE}, **headers)
    assert response.content_type == "application/json"
    assert response.get_json() == {"entities": EXPECTED}


def test_sagemaker_default_invocations_accept_answers_requests_without_accept(settings):
    nlp = pipeline.load(settings)
    lines = Settings.from_env(
        {
            "SPACY_MODEL": settings.spacy_model,
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "application/jsonlines",
        }
    )
    client = predictor.create_app(nlp, lines).test_client()
    body = f'"{SENTENCE}"\n"Eve lives in Rome."\n'
    for headers in ({}, {"Accept": "*/*"}):
        response = invoke(client, body, "application/jsonlines", **headers)
        assert response.content_type == "application/jsonlines"
        assert json.loads(response.data.decode().splitlines()[0]) == {"entities": EXPECTED}
    # A client that names a type still gets it.
    response = invoke(client, body, "application/jsonlines", Accept="application/json")
    assert response.get_json()["results"][0] == {"entities": EXPECTED}


def test_html_is_displacys_rendering_with_the_text_escaped(client):
    text = "<script>alert(1)</script> Alice works at Acme in Paris."
    response = invoke(client, {"text": text}, Accept="text/html")
    assert response.status_code == 200
    assert response.content_type == "text/html; charset=utf-8"
    page = response.data.decode()
    assert "<script" not in page and "&lt;script" in page
    assert "Acme" in page and "ORG" in page and "<html" in page


def test_sagemaker_headers_are_accepted_and_custom_attributes_echoed(client):
    response = invoke(
        client,
        {"text": SENTENCE},
        **{
            "X-Amzn-SageMaker-Custom-Attributes": "trace=abc-123",
            "X-Amzn-SageMaker-Inference-Id": "id-1",
        },
    )
    assert response.status_code == 200
    assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == "trace=abc-123"


def test_execution_parameters_describe_batch_transform(client):
    params = client.get("/execution-parameters").get_json()
    assert params["MaxConcurrentTransforms"] == 3  # one request per worker
    assert params["BatchStrategy"] == "MULTI_RECORD"
    # The least a job can ask for (tuning.py says why), within what the server accepts.
    assert params["MaxPayloadInMB"] == SUGGESTED_MAX_PAYLOAD_MB == 1


@pytest.mark.parametrize(
    "rate,env,expected",
    [
        # 100,000 characters/s x 600 s x 0.5 = 30,000,000 characters: 28 MiB.
        (100_000, {"SAGEMAKER_BATCH": "true"}, 28),
        # The same, 8 workers: SageMaker allows 100 MB across concurrent requests.
        (100_000, {"SAGEMAKER_BATCH": "true", "MODEL_SERVER_WORKERS": "8"}, 12),
        # Never over what nginx accepts.
        (100_000, {"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6"}, 6),
        # A real-time timeout: 100,000 x 60 x 0.5 = 3,000,000 characters: 2 MiB.
        (100_000, {}, 2),
        # A slow pipeline: not even 1 MB.
        (1_000, {}, 0),
    ],
)
def test_the_payload_within_the_timeout_is_what_one_worker_runs_in_half_of_it(rate, env, expected):
    settings = Settings.from_env({"MODEL_SERVER_WORKERS": "2", **env})
    assert capacity.payload_within_timeout_mb(rate, settings) == expected


@pytest.fixture(scope="module")
def ruler_model(tmp_path_factory):
    """A rules-only pipeline (entity_ruler): its entities do not depend on the words
    around them, so a text cut into pieces must get exactly the entities it gets whole.
    "New York" is two tokens: a cut between them must not cut the entity."""
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": label, "pattern": text}
            for text, ents in TRAIN
            for text, label in {(text[s:e], label) for s, e, label in ents}
        ]
        + [{"label": "GPE", "pattern": [{"LOWER": "new"}, {"LOWER": "york"}]}]
    )
    path = tmp_path_factory.mktemp("models") / "ruler"
    nlp.to_disk(path)
    return path


def ruler_app(path, **env):
    settings = Settings.from_env({"SPACY_MODEL": str(path), **env})
    return predictor.create_app(pipeline.load(settings), settings).test_client()


@pytest.fixture(scope="module")
def whole(ruler_model):
    """The rules-only app with the default sizes: these bodies are one group, one piece."""
    return ruler_app(ruler_model)


@pytest.fixture(scope="module")
def small_pieces(ruler_model):
    """The same app with small groups and pieces, so that small bodies take the paths
    large ones do: JSON Lines in several groups, texts in several pieces."""
    return ruler_app(
        ruler_model,
        MODEL_SERVER_BATCH_CHARACTERS="500",
        MODEL_SERVER_CHUNK_CHARACTERS="1000",
        MODEL_SERVER_MAX_TEXT_CHARACTERS="50000",
    )


def paragraphs(n):
    """A document of n short paragraphs: the tiny model's sentences, numbered."""
    return "\n\n".join(
        f"{text} Note {i}." for i, (text, _) in zip(range(n), itertools.cycle(TRAIN))
    )


def test_a_jsonlines_body_of_many_groups_gets_every_line_in_order(small_pieces, whole):
    records = [{"id": i, "text": SENTENCE} for i in range(400)]
    body = "".join(json.dumps(r) + "\n" for r in records)
    for accept in ("application/jsonlines", "application/json"):
        response = invoke(small_pieces, body, "application/jsonlines", Accept=accept)
        assert response.status_code == 200
        if accept == "application/json":
            lines = response.get_json()["results"]
        else:
            # One line per record and no newline after the last: batch transform's
            # AssembleWith=Line adds one after each answer, and a blank line would follow.
            assert response.data.count(b"\n") == 399 and not response.data.endswith(b"\n")
            lines = [json.loads(line) for line in response.data.decode().split("\n")]
        assert [r["id"] for r in lines] == list(range(400))
        assert all(r["entities"] == EXPECTED for r in lines), lines[0]
    # The same as the app whose one group holds the whole body.
    assert (
        invoke(whole, body, "application/jsonlines").get_json()
        == invoke(small_pieces, body, "application/jsonlines").get_json()
    )


def test_a_malformed_line_late_in_a_large_body_fails_it_whole_before_any_answer(small_pieces):
    lines = [json.dumps({"id": i, "text": SENTENCE}) for i in range(300)]
    lines[271] = '{"id": 271, "text": '
    response = invoke(small_pieces, "\n".join(lines), "application/jsonlines")
    check_error(response.status_code, response.headers, response.data, 400, "invalid_json")
    assert "line 272" in response.get_json()["error"]["message"]


def test_a_text_longer_than_a_piece_gets_the_entities_it_gets_whole(small_pieces, whole):
    text = paragraphs(60)  # about 2,000 characters: 3 pieces of at most 1,000
    got = invoke(small_pieces, {"text": text}).get_json()["entities"]
    assert got == invoke(whole, {"text": text}).get_json()["entities"]
    assert len(got) > 100
    for e in got:
        assert text[e["start"] : e["end"]] == e["text"]


@pytest.mark.parametrize("separator", [" ", "\n"])
def test_a_cut_inside_a_paragraph_never_cuts_an_entity(small_pieces, whole, separator):
    # One paragraph of about 3,000 characters, cut at whitespace or line breaks into
    # overlapping pieces; every position of "New York" relative to a cut comes up.
    words = separator.join(f"Alice met Bob in New York{'!' * (i % 7)}" for i in range(100))
    got = invoke(small_pieces, {"texts": [words]}).get_json()["results"][0]["entities"]
    assert got == invoke(whole, {"texts": [words]}).get_json()["results"][0]["entities"]
    assert [e["text"] for e in got].count("New York") == 100
    for e in got:
        assert words[e["start"] : e["end"]] == e["text"]


@pytest.mark.parametrize(
    "content_type,body",
    [
        ("text/plain", "a " * 25_001),
        ("application/json", json.dumps({"texts": ["Alice", "a " * 25_001]})),
        ("application/jsonlines", json.dumps("Alice") + "\n" + json.dumps("a " * 25_001)),
    ],
)
def test_a_text_over_the_max_text_characters_gets_413(small_pieces, content_type, body):
    response = invoke(small_pieces, body, content_type)
    check_error(response.status_code, response.headers, response.data, 413, "text_too_long")
    assert "MODEL_SERVER_MAX_TEXT_CHARACTERS" in response.get_json()["error"]["message"]


@each_app_bad_request
def test_a_bad_request_gets_a_json_4xx_and_the_app_keeps_answering(
    client, name, method, path, headers, body, status, code
):
    response = client.open(path, method=method, data=body, headers=headers)
    check_error(response.status_code, response.headers, response.data, status, code)
    assert invoke(client, {"text": SENTENCE}).get_json() == {"entities": EXPECTED}


def test_jsonlines_records_keep_their_other_fields_beside_the_entities(client):
    """Batch transform output can be matched to its input by id, not by line order alone."""
    body = (
        json.dumps({"id": 7, "text": SENTENCE})
        + "\n"
        + json.dumps(
            {"text": "Eve lives in Rome.", "meta": {"source": ["a", 1], "n": None}, "id": "x-8"}
        )
        + "\n"
        + json.dumps("Bob moved to Berlin.")
        + "\n"
        + json.dumps({"text": "Nothing happened here."})
        + "\n"
        + json.dumps({"id": 9, "text": "Carol", "entities": "theirs"})
        + "\n"
    )
    response = invoke(client, body, "application/jsonlines", Accept="application/jsonlines")
    lines = [json.loads(line) for line in response.data.decode().splitlines()]
    assert lines[0] == {"id": 7, "entities": EXPECTED}
    assert lines[1]["id"] == "x-8" and lines[1]["meta"] == {"source": ["a", 1], "n": None}
    assert [e["text"] for e in lines[1]["entities"]] == ["Eve", "Rome"]
    assert list(lines[2]) == ["entities"] and list(lines[3]) == ["entities"]
    assert lines[4]["id"] == 9 and isinstance(lines[4]["entities"], list)  # ours win
    as_json = invoke(client, body, "application/jsonlines").get_json()["results"]
    assert as_json == lines


def test_each_invocation_gets_one_log_line_with_its_inference_id(client, caplog):
    caplog.set_level("INFO", logger="ner.predictor")
    response = invoke(
        client,
        {"texts": [SENTENCE, "Bob moved to Berlin."]},
        **{"X-Amzn-SageMaker-Inference-Id": "abc-123"},
    )
    response.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("invocation")]
    assert len(lines) == 1, lines
    words = dict(w.split("=", 1) for w in lines[0].split()[1:])
    assert words["id"] == "abc-123" and words["status"] == "200" and words["part"] == "False"
    assert (words["texts"], words["characters"]) == ("2", str(len(SENTENCE) + 20))
    assert 0 <= float(words["wait_ms"]) <= float(words["total_ms"])
    assert 0 < float(words["model_ms"]) <= float(words["total_ms"])
    invoke(client, b"{", "application/json").close()
    bad = [r.getMessage() for r in caplog.records if r.getMessage().startswith("invocation")][-1]
    assert "id=- part=False status=400 texts=0" in bad
