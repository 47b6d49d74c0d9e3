"""A real spancat pipeline (harness.pipelines: tok2vec + ner + spancat listening to it)
served by the real `serve`: its overlapping spans and their scores come back beside the
entities, equal to nlp.pipe's in this process, through every request form."""

import json

import pytest
import requests

from harness.pipelines import SPANS_KEY, span_sentences

TEXTS = [text for text, _ in span_sentences(40, seed=7)]
SCORE_TOLERANCE = 1e-5  # merged calls batch texts differently: float sums may differ


@pytest.fixture(scope="module")
def nlp(spancat_model):
    import spacy

    return spacy.load(spancat_model)


@pytest.fixture
def server(start_server, spancat_model):
    return start_server(SPACY_MODEL=spancat_model)


def expected(nlp, texts):
    """What nlp.pipe says, as the answer should carry it, read here from the Docs."""
    answers = []
    for doc in nlp.pipe(texts):
        group = doc.spans[SPANS_KEY]
        spans = [
            {"text": s.text, "label": s.label_, "start": s.start_char, "end": s.end_char}
            for s in group
        ]
        for record, score in zip(spans, group.attrs["scores"], strict=True):
            record["score"] = float(score)
        entities = [
            {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
            for e in doc.ents
        ]
        spans.sort(key=lambda s: (s["start"], s["end"]))  # the answer's order: the text's
        answers.append({"entities": entities, "spans": {SPANS_KEY: spans}})
    return answers


def assert_same(answers, wanted):
    """Equal, scores within SCORE_TOLERANCE; and the model found something to compare."""
    assert len(answers) == len(wanted)
    for got, want in zip(answers, wanted, strict=True):
        assert got["entities"] == want["entities"]
        assert set(got["spans"]) == set(want["spans"])
        for key, spans in want["spans"].items():
            assert [
                {**s, "score": pytest.approx(s["score"], abs=SCORE_TOLERANCE)} for s in spans
            ] == (got["spans"][key])
    assert any(w["spans"][SPANS_KEY] for w in wanted)


def invoke(server, data, content_type="application/json", **headers):
    return requests.post(
        f"{server.url}/invocations",
        data=data if isinstance(data, (bytes, str)) else json.dumps(data),
        headers={"Content-Type": content_type, **headers},
        timeout=60,
    )


def test_overlapping_spans_with_scores_come_beside_the_entities(server, nlp):
    response = invoke(server, {"text": TEXTS[0]})
    assert response.status_code == 200
    (want,) = expected(nlp, TEXTS[:1])
    assert_same([response.json()], [want])
    labels = [s["label"] for s in response.json()["spans"][SPANS_KEY]]
    assert sorted(labels) == ["ORIGIN", "PERSON", "PLACE"]  # ORIGIN overlaps both


def test_a_batch_and_json_lines_carry_every_texts_spans(server, nlp):
    wanted = expected(nlp, TEXTS)
    batch = invoke(server, {"texts": TEXTS})
    assert batch.status_code == 200
    assert_same(batch.json()["results"], wanted)

    body = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS))
    lines = invoke(server, body, "application/jsonlines", Accept="application/jsonlines")
    assert lines.status_code == 200
    records = [json.loads(line) for line in lines.text.splitlines()]
    assert [r.pop("id") for r in records] == list(range(len(TEXTS)))
    assert_same(records, wanted)


def test_the_blog_posts_form_carries_spans_beside_its_pairs(server, nlp):
    (want,) = expected(nlp, TEXTS[:1])
    answer = invoke(server, {"input": TEXTS[0]}).json()
    assert answer["output"] == [[e["text"], e["label"]] for e in want["entities"]]
    assert_same([{"entities": want["entities"], **answer}], [want])


def test_html_is_displacys_span_style(server):
    response = invoke(server, {"text": TEXTS[0]}, Accept="text/html")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.text
    # displaCy's span style draws one labelled line per span, overlaps included.
    assert 'class="spans"' in page
    assert all(label in page for label in ("ORIGIN", "PERSON", "PLACE"))


def test_a_long_texts_spans_come_back_with_offsets_into_the_whole_text(
    start_server, spancat_model, nlp
):
    """Cut into pieces of about 1,000 characters: every span's offsets point into the
    whole text, and they are those of nlp.pipe on the whole text."""
    text = " ".join(text for text, _ in span_sentences(400, seed=3))
    server = start_server(SPACY_MODEL=spancat_model, MODEL_SERVER_CHUNK_CHARACTERS=1000)
    response = invoke(server, {"text": text})
    assert response.status_code == 200
    answer = response.json()
    spans = answer["spans"][SPANS_KEY]
    assert all(text[s["start"] : s["end"]] == s["text"] for s in spans + answer["entities"])
    assert sum(s["label"] == "ORIGIN" for s in spans) == 400
    (want,) = expected(nlp, [text])
    place = [(s["start"], s["end"], s["label"]) for s in want["spans"][SPANS_KEY]]
    assert [(s["start"], s["end"], s["label"]) for s in spans] == place
    assert answer["entities"] == want["entities"]


def test_span_keys_setting_names_the_keys_answered(start_server, spancat_model, nlp):
    chosen = start_server(SPACY_MODEL=spancat_model, SPACY_SPAN_KEYS=f"{SPANS_KEY},other")
    answer = invoke(chosen, {"text": TEXTS[0]}).json()
    assert answer["spans"]["other"] == []
    assert answer["spans"][SPANS_KEY]

    none = start_server(SPACY_MODEL=spancat_model, SPACY_SPAN_KEYS="none")
    answer = invoke(none, {"text": TEXTS[0]}).json()
    assert answer == {"entities": expected(nlp, TEXTS[:1])[0]["entities"]}
    assert "; running tok2vec,ner; " in none.logs()  # spancat, which only spans need, is off
