"""A batch transform job at real size: the SageMaker SDK's local mode (v2, the notebook's
SDK) runs the real image over two JSON Lines files of 8 MB each, as a job on AWS would
send them (SplitType=Line, MultiRecord, AssembleWith=Line).

Once with MaxPayloadInMB=6 (the real-time limit, what most examples set) and once with
nothing set, so that /execution-parameters decides (what the notebook does: 1 MB). Local mode
writes whatever the container answers into the output, error bodies included, and still
says Completed: so every output line is checked, against its input line.
"""

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from harness import transform_job

sys.path.insert(0, str(ROOT / "bench"))
import corpus  # noqa: E402
from tuning import SUGGESTED_MAX_PAYLOAD_MB  # noqa: E402

FILE_BYTES = 8 * 1024 * 1024
# Every this many records, the entities are compared with in-process spaCy's.
SAMPLE_EVERY = 97


def sdk_containers(docker):
    """Every container on the network the SDK's local mode puts its containers on."""
    return set(
        subprocess.run(
            [docker, "ps", "-aq", "--filter", "network=sagemaker-local"],
            capture_output=True,
            text=True,
        ).stdout.split()
    )


def write_inputs(folder):
    """Two JSON Lines files of at least FILE_BYTES each: {"id", "text"} per line."""
    records, sentences = {}, corpus.sentences(8192)
    for n in range(2):
        lines, size, i = [], 0, 0
        while size < FILE_BYTES:
            record = {"id": f"part{n}-{i}", "text": sentences[(i * 7 + n) % len(sentences)]}
            line = json.dumps(record) + "\n"
            lines.append(line)
            size += len(line.encode())
            i += 1
        (folder / f"part-{n}.jsonl").write_text("".join(lines))
        records[f"part-{n}.jsonl"] = [json.loads(line) for line in lines]
    return records


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("transform-input")
    return folder, write_inputs(folder)


@pytest.fixture(scope="module")
def nlp():
    import pipeline
    from settings import Settings

    return pipeline.load(Settings.from_env({"SM_MODEL_DIR": "/nonexistent"}))


@pytest.mark.parametrize(
    "job", [{"MaxPayloadInMB": 6}, {}], ids=["max-payload-6", "execution-parameters"]
)
def test_a_transform_job_of_two_8_mb_files_answers_every_record(
    docker, image, inputs, nlp, tmp_path, job
):
    if not transform_job.NOTEBOOK_PYTHON.exists():
        pytest.fail(f"{transform_job.NOTEBOOK_PYTHON} is missing; run scripts/setup-notebook.sh")
    input_dir, records = inputs
    output_dir = tmp_path / "output"
    output_dir.mkdir()
    before = sdk_containers(docker)
    try:
        result = transform_job.run(image, input_dir, output_dir, job, timeout=1800)
    finally:  # the SDK stops its container but leaves it behind
        started = sdk_containers(docker) - before
        if started:
            subprocess.run([docker, "rm", "-f", *started], capture_output=True)
    assert result.returncode == 0, result.stderr[-6000:]
    ran = json.loads(result.stdout.splitlines()[-1])
    assert ran["status"] == "Completed"
    # Without a MaxPayloadInMB of the job's own, local mode took the server's suggestion
    # (/execution-parameters: one worker's worth, made quickly).
    assert ran["max_payload_mb"] == job.get("MaxPayloadInMB", SUGGESTED_MAX_PAYLOAD_MB)

    sample_texts, sample_answers = [], []
    for name, inputs_of_file in records.items():
        out = (output_dir / f"{name}.out").read_text().splitlines()
        assert len(out) == len(inputs_of_file), (name, len(out), len(inputs_of_file))
        for i, (record, line) in enumerate(zip(inputs_of_file, out, strict=True)):
            answer = json.loads(line)
            assert "error" not in answer, (name, i, line)
            assert answer["id"] == record["id"], (name, i, line)
            for e in answer["entities"]:
                assert record["text"][e["start"] : e["end"]] == e["text"], (record, e)
            if i % SAMPLE_EVERY == 0:
                sample_texts.append(record["text"])
                sample_answers.append(answer["entities"])
    with nlp.memory_zone():
        expected = [
            [
                {"text": e.text, "label": e.label_, "start": e.start_char, "end": e.end_char}
                for e in doc.ents
            ]
            for doc in nlp.pipe(sample_texts)
        ]
    assert sample_answers == expected
