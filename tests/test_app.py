"""The Flask app around a tiny real spaCy model: every request form, content negotiation,
and the table of bad requests. Fast: no nginx, no gunicorn (test_serve.py adds those;
test_batching.py covers concurrent requests and a pipeline that raises)."""

import json

import pytest

import model
import predictor
from bad_requests import check_error, each_bad_request
from settings import Settings

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
    return predictor.create_app(model.load(settings), settings).test_client()


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
        assert SENTENCE[e["start"]:e["end"]] == e["text"]


def test_offsets_count_characters_not_bytes(client):
    text = "Ünïcödé — " + SENTENCE
    entities = invoke(client, {"text": text}).get_json()["entities"]
    assert entities, "the tiny model should still find Alice, Acme and Paris"
    for e in entities:
        assert text[e["start"]:e["end"]] == e["text"]
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
    assert response.get_json() == {"output": [["Alice", "PERSON"], ["Acme", "ORG"],
                                              ["Paris", "GPE"]]}


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


@pytest.mark.parametrize("accept", [None, "*/*", "application/*", "application/json",
                                    "text/html;q=0.5, application/json"])
def test_json_is_the_default_answer(client, accept):
    headers = {"Accept": accept} if accept else {}
    response = invoke(client, {"text": SENTENCE}, **headers)
    assert response.content_type == "application/json"
    assert response.get_json() == {"entities": EXPECTED}


def test_sagemaker_default_invocations_accept_answers_requests_without_accept(settings):
    nlp = model.load(settings)
    lines = Settings.from_env({"SPACY_MODEL": settings.spacy_model,
                               "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "application/jsonlines"})
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
    response = invoke(client, {"text": SENTENCE},
                      **{"X-Amzn-SageMaker-Custom-Attributes": "trace=abc-123",
                         "X-Amzn-SageMaker-Inference-Id": "id-1"})
    assert response.status_code == 200
    assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == "trace=abc-123"


def test_execution_parameters_describe_batch_transform(client):
    assert client.get("/execution-parameters").get_json() == {
        "MaxConcurrentTransforms": 3, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}


@each_bad_request
def test_a_bad_request_gets_a_json_4xx_and_the_app_keeps_answering(
        client, name, method, path, headers, body, status, code):
    response = client.open(path, method=method, data=body, headers=headers)
    check_error(response.status_code, response.headers, response.data, status, code)
    assert invoke(client, {"text": SENTENCE}).get_json() == {"entities": EXPECTED}


def test_jsonlines_records_keep_their_other_fields_beside_the_entities(client):
    """Batch transform output can be matched to its input by id, not by line order alone."""
    body = (json.dumps({"id": 7, "text": SENTENCE}) + "\n"
            + json.dumps({"text": "Eve lives in Rome.", "meta": {"source": ["a", 1], "n": None},
                          "id": "x-8"}) + "\n"
            + json.dumps("Bob moved to Berlin.") + "\n"
            + json.dumps({"text": "Nothing happened here."}) + "\n"
            + json.dumps({"id": 9, "text": "Carol", "entities": "theirs"}) + "\n")
    response = invoke(client, body, "application/jsonlines", Accept="application/jsonlines")
    lines = [json.loads(line) for line in response.data.decode().splitlines()]
    assert lines[0] == {"id": 7, "entities": EXPECTED}
    assert lines[1]["id"] == "x-8" and lines[1]["meta"] == {"source": ["a", 1], "n": None}
    assert [e["text"] for e in lines[1]["entities"]] == ["Eve", "Rome"]
    assert list(lines[2]) == ["entities"] and list(lines[3]) == ["entities"]
    assert lines[4]["id"] == 9 and isinstance(lines[4]["entities"], list)  # ours win
    as_json = invoke(client, body, "application/jsonlines").get_json()["results"]
    assert as_json == lines
