"""The transformers variant of the image (VARIANT=transformers) serving a real transformer
pipeline: a tiny curated-transformers BERT + ner (harness.pipelines.transformer_pipeline),
trained inside the image, since no weights can be fetched from a model hub. Served
answers equal nlp.pipe's in the same image, through every request form. The cpu image
refuses the pipeline with one line naming the variant to build."""

import json
import re
import subprocess

import pytest
import requests

from conftest import baked
from harness.pipelines import pipeline_wheel, span_sentences, transformer_pipeline_in_image
from harness.servers import Container

TEXTS = [text for text, _ in span_sentences(24, seed=11)]
# Cut into pieces at MODEL_SERVER_CHUNK_CHARACTERS=1000: paragraphs of 500 to 1,000
# characters, so that each piece is one paragraph with the break after it (a cut at a
# paragraph break has no overlap). A transformer reads a piece in the context of that piece
# only, so the answer to compare with is nlp.pipe's on each paragraph.
CHUNK = 1000


def paragraphs():
    sentences = iter(text for text, _ in span_sentences(400, seed=12))
    for _ in range(12):
        paragraph = next(sentences)
        while len(paragraph) < CHUNK // 2:
            paragraph += " " + next(sentences)
        yield paragraph


PARAGRAPHS = [p + "\n\n" for p in paragraphs()]
LONG_TEXT = "".join(PARAGRAPHS)


@pytest.fixture(scope="module")
def trf_model(docker, transformers_image, tmp_path_factory):
    return transformer_pipeline_in_image(
        transformers_image, tmp_path_factory.mktemp("transformer"), docker
    )


@pytest.fixture(scope="module")
def expected(docker, transformers_image, trf_model):
    """nlp.pipe's entities for TEXTS and LONG_TEXT, in the image, as the answer has them."""
    script = (
        "import json, sys, spacy\n"
        "nlp = spacy.load('/model')\n"
        "texts = json.loads(sys.argv[1])\n"
        "print(json.dumps([[{'text': e.text, 'label': e.label_, 'start': e.start_char,"
        " 'end': e.end_char} for e in d.ents] for d in nlp.pipe(texts)]))\n"
    )
    args = [docker, "run", "--rm", "-v", f"{trf_model}:/model:ro", transformers_image]
    texts = json.dumps([*TEXTS, *PARAGRAPHS])
    done = subprocess.run(
        [*args, "python", "-c", script, texts], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    answers = json.loads(done.stdout)
    short, per_paragraph = answers[: len(TEXTS)], answers[len(TEXTS) :]
    assert all(short), "the tiny transformer should find entities in every sentence"
    long, offset = [], 0
    for paragraph, entities in zip(PARAGRAPHS, per_paragraph, strict=True):
        long += [{**e, "start": e["start"] + offset, "end": e["end"] + offset} for e in entities]
        offset += len(paragraph)
    return short, long


@pytest.fixture(scope="module")
def served(docker, transformers_image, trf_model):
    container = Container(
        transformers_image,
        ("-v", f"{trf_model}:/opt/ml/model:ro"),
        env={"MODEL_SERVER_CHUNK_CHARACTERS": str(CHUNK)},
        docker=docker,
    )
    try:
        yield container.wait_ready(timeout=300)
    finally:
        container.remove()


def post(server, body, content_type="application/json", **headers):
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(
        f"{server.url}/invocations",
        data=data.encode(),
        headers={"Content-Type": content_type, **headers},
        timeout=120,
    )


def test_the_start_up_log_says_transformer_on_cpu(served):
    logs = served.logs()
    assert "running transformer,ner" in logs, logs[-3000:]
    assert "device: CPU (torch intra-op threads" in logs, logs[-3000:]


def test_served_entities_equal_nlp_pipe_in_every_form(served, expected):
    short, _ = expected
    one = post(served, {"text": TEXTS[0]})
    assert one.status_code == 200 and one.json() == {"entities": short[0]}
    batch = post(served, {"texts": TEXTS}).json()
    assert batch == {"results": [{"entities": e} for e in short]}
    body = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS))
    lines = post(served, body, "application/jsonlines", Accept="application/jsonlines")
    got = [json.loads(line) for line in lines.text.splitlines()]
    assert got == [{"id": i, "entities": e} for i, e in enumerate(short)]
    blog = post(served, {"input": TEXTS[1]}).json()
    assert blog == {"output": [[e["text"], e["label"]] for e in short[1]]}
    page = post(served, {"text": TEXTS[2]}, Accept="text/html")
    mark = r"<mark[^>]*>\s*(.*?)\s*<span[^>]*>\s*(.*?)\s*</span>\s*</mark>"
    marked = re.findall(mark, page.text, re.S)
    assert page.status_code == 200 and marked == [(e["text"], e["label"]) for e in short[2]]


def test_a_long_text_in_pieces_has_every_offset_right(served, expected):
    _, long = expected
    answer = post(served, {"text": LONG_TEXT}).json()["entities"]
    assert len(LONG_TEXT) > 5 * CHUNK
    assert all(LONG_TEXT[e["start"] : e["end"]] == e["text"] for e in answer)
    assert answer == long


def test_the_cpu_image_refuses_a_transformer_pipeline_naming_the_variant(docker, image, trf_model):
    done = subprocess.run(
        [docker, "run", "--rm", "-v", f"{trf_model}:/opt/ml/model:ro", image, "serve"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    line = next(line for line in output.splitlines() if "cannot start:" in line)
    assert "transformer pipeline" in line and "VARIANT=transformers" in line, line
    assert "Traceback" not in output


def test_a_baked_transformer_package_is_served(docker, transformers_image, trf_model, tmp_path):
    wheel = pipeline_wheel(tmp_path, trf_model, "en_tiny_test_transformer", "0.0.1", {})
    with baked(docker, f"{transformers_image}-baked-test", wheel, "transformers") as container:
        answer = post(container, {"text": TEXTS[0]})
        assert answer.status_code == 200 and answer.json()["entities"]
        assert "tiny_test_transformer" in container.logs()
