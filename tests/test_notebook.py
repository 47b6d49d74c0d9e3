"""notebook.ipynb run headless with papermill, top to bottom, from .venv-notebook:
- LOCAL_MODE=True against the real image, served by the SageMaker SDK's local mode in
  Docker: the invoke cells must show the real model's entities, and no container may be
  left running;
- LOCAL_MODE=False against a moto server (and a local registry for the push): every ECR,
  SageMaker, S3 and STS request the notebook makes must be accepted, and clean-up must
  leave nothing behind."""

import json
import os
import re
import shutil
import subprocess
import uuid

import pytest

from aws_local import build_env, local_registry, moto_server, private_docker_config  # noqa: F401 (fixtures)
from conftest import ROOT, free_port

NOTEBOOK = ROOT / "notebook.ipynb"
NOTEBOOK_VENV = ROOT / ".venv-notebook"
PAPERMILL = NOTEBOOK_VENV / "bin" / "papermill"
IMAGE_NAME = "spacy-ner-sagemaker"
# The SDK's local mode puts every container it starts on this Docker network.
SDK_NETWORK = "sagemaker-local"


@pytest.fixture(scope="module")
def papermill():
    if not PAPERMILL.exists():
        pytest.fail(f"{PAPERMILL} is missing; run scripts/setup-notebook.sh")
    return PAPERMILL


def execute(papermill, out, env, **parameters):
    """Run the notebook; return its output as text (every stream, plain text and HTML)."""
    command = [
        str(papermill),
        str(NOTEBOOK),
        str(out),
        "-k",
        "python3",
        "--cwd",
        str(ROOT),
        "--no-progress-bar",
        "--log-output",
    ]
    for name, value in parameters.items():
        command += ["-p", name, str(value)]
    # The kernel is the interpreter papermill runs under: .venv-notebook's.
    env = {**env, "PATH": f"{NOTEBOOK_VENV / 'bin'}:{env['PATH']}"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"notebook failed:\n{result.stderr[-6000:]}"
    return outputs_text(json.loads(out.read_text()))


def outputs_text(notebook):
    parts = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            parts.append("".join(output.get("text", "")))
            data = output.get("data", {})
            for kind in ("text/plain", "text/html"):
                parts.append("".join(data.get(kind, "")))
    return "\n".join(parts)


def entity(text, label, span=r"\d+-\d+"):
    """A line the notebook's show_entities prints."""
    return re.compile(rf"^{re.escape(text)}\s+{label}\s+{span}(?!\d)", re.MULTILINE)


def sdk_containers(docker, all_states=False):
    command = [docker, "ps", "-q", "--filter", f"network={SDK_NETWORK}"]
    if all_states:
        command.insert(2, "-a")
    return set(subprocess.run(command, capture_output=True, text=True).stdout.split())


def local_env():
    """No AWS credentials and no instance-metadata lookups: local mode needs neither, and
    the SDK would hand any credentials it finds to the container."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


def test_local_mode_runs_top_to_bottom_against_the_real_image(papermill, docker, image, tmp_path):
    if not (
        shutil.which("docker-compose")
        or subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        pytest.fail("the SDK's local mode needs docker compose; run scripts/setup-notebook.sh")
    before = sdk_containers(docker, all_states=True)
    try:
        # The prebuilt image (IMAGE_URI) spares a rebuild; the build cell's script is
        # tested with the real build in test_build_and_push.py.
        text = execute(
            papermill,
            tmp_path / "local.ipynb",
            local_env(),
            LOCAL_MODE=True,
            IMAGE_URI=image,
            LOCAL_PORT=free_port(),
        )
        # Every endpoint was deleted, and deleting stopped its container.
        assert sdk_containers(docker) & (sdk_containers(docker, all_states=True) - before) == set()
    finally:
        started = sdk_containers(docker, all_states=True) - before
        if started:
            subprocess.run([docker, "rm", "-f", *started], capture_output=True)

    # One text, with character offsets.
    assert entity("Apple", "ORG", "0-5").search(text), text
    assert entity("U.K.", "GPE", "27-31").search(text), text
    # The batch: one result per text, in order.
    assert entity("San Francisco", "GPE").search(text), text
    assert entity("London", "GPE").search(text), text
    # The blog post's format.
    assert re.search(r"\['America', 'GPE'\]", text), text
    # displaCy's markup, rendered as HTML.
    assert re.search(r'<mark class="entity"[^>]*>\s*Apple', text), text
    # The own pipeline from model.tar.gz answered, not the baked-in one.
    assert entity("SageMaker", "AWS_SERVICE").search(text), text
    assert entity("Amazon S3", "AWS_SERVICE").search(text), text
    # The serverless variant (local mode: the same container with one worker).
    assert entity("Cupertino", "GPE").search(text), text
    assert len(re.findall(r"^deleted \S+-endpoint-\S+ ", text, re.MULTILINE)) == 3, text
    # Autoscaling: the target is derived from the benchmark's results; no call is made.
    assert re.search(
        r"^target: \d+ x 0\.5 = \d+ invocations per instance per minute$", text, re.MULTILINE
    ), text
    assert "local mode has no autoscaling" in text
    # The batch transform job really ran: each input record, matched by its id, shows the
    # real model's entities (the ids come back from the server beside the entities).
    assert re.search(r"spacy-ner-transform-\S+ Completed", text), text
    for doc_id, entities in (
        ("doc-0", "Apple (ORG), U.K. (GPE), $1 billion (MONEY)"),
        ("doc-4", "Ada Lovelace (PERSON), London (GPE), 1815 (DATE)"),
        ("doc-5", "Toyota (ORG)"),
    ):
        assert re.search(rf"^{doc_id}  .*\n        -> {re.escape(entities)}", text, re.MULTILINE), (
            doc_id,
            text,
        )
    assert "-> -" not in text, "a record got no answer"
    # Async inference's local stand-in: the long document past nlp.max_length and the JSON
    # Lines file, through the image with the async environment.
    found = re.search(
        r"^document\.txt: ([\d,]+) entities, every offset right: (\w+)$", text, re.MULTILINE
    )
    assert found and int(found[1].replace(",", "")) > 10_000 and found[2] == "True", text
    assert "records.jsonl: 3,000 answer lines for 3,000 records" in text
    assert re.search(
        r"^rec-0  -> Apple \(ORG\), U\.K\. \(GPE\), \$1 billion \(MONEY\)$", text, re.MULTILINE
    ), text
    assert "on AWS: invoke_endpoint_async(" in text
    # The multi-model stand-in: the image in MME mode, loaded, listed, invoked and unloaded
    # as SageMaker does it, with the real English and French pipelines.
    assert re.search(r"^en\.tar\.gz: en_core_web_sm\S* 3\.8\.0, ", text, re.MULTILINE), text
    assert re.search(r"^fr\.tar\.gz: fr_core_news_sm 3\.8\.0, ", text, re.MULTILINE), text
    assert "load en: 200" in text and "load fr: 200" in text, text
    listed = re.search(r"^GET /models: (.*)$", text, re.MULTILINE)
    assert listed and sorted(m["modelName"] for m in json.loads(listed[1])["models"]) == [
        "en",
        "fr",
    ], text
    assert re.search(
        r"^en\.tar\.gz \(en_core_web_sm\S*\):\nApple +ORG +0-5$", text, re.MULTILINE
    ), text
    french = text[text.index("fr.tar.gz (fr_core_news_sm):") :]
    assert entity("Emmanuel Macron", "PER", "0-15").search(french), text
    assert entity("Paris", "LOC").search(french), text
    assert "unload en: 200" in text and "unload fr: 200" in text, text
    after = re.search(r"^GET /models after the unloads: (.*)$", text, re.MULTILINE)
    assert after and json.loads(after[1]) == {"models": []}, text
    assert "on AWS: invoke_endpoint(EndpointName='spacy-ner-mme-endpoint-" in text


def test_aws_mode_requests_are_valid_and_clean_up_leaves_nothing(
    papermill, docker, moto_server, local_registry, tmp_path
):
    # The build cell runs build_and_push.sh for real: moto answers its ECR and STS calls,
    # the local registry takes the push (REGISTRY), the build reuses `make image`'s cache.
    env = {
        **moto_server.env(),
        **build_env(),
        "REGISTRY": local_registry.host,
        "DOCKER_CONFIG": private_docker_config(tmp_path),
    }
    tag = f"nb-{uuid.uuid4().hex[:8]}"
    try:
        text = execute(
            papermill,
            tmp_path / "aws.ipynb",
            env,
            LOCAL_MODE=False,
            IMAGE_NAME=IMAGE_NAME,
            IMAGE_TAG=tag,
            ROLE_ARN="arn:aws:iam::123456789012:role/spacy-ner-test",
            ASYNC_WAIT_SECONDS=0,
        )
    finally:
        subprocess.run(
            [docker, "rmi", f"{IMAGE_NAME}:{tag}", f"{local_registry.host}/{IMAGE_NAME}:{tag}"],
            capture_output=True,
        )

    # The image was pushed and the models used its URI.
    assert tag in local_registry.tags(IMAGE_NAME)
    assert f"image: {local_registry.host}/{IMAGE_NAME}:{tag}" in text
    assert [
        r["repositoryName"]
        for r in moto_server.client("ecr").describe_repositories()["repositories"]
    ] == [IMAGE_NAME]
    # Five endpoints went InService (main, own pipeline, serverless, async, multi-model)...
    assert len(re.findall(r"-endpoint-\S+ InService\b", text)) == 5, text
    # ...the multi-model one from a model whose ModelDataUrl is the archives' prefix.
    assert re.search(
        r"^mme model: spacy-ner-mme-\S+ Mode MultiModel ModelDataUrl "
        r"s3://sagemaker-us-east-1-123456789012/spacy-ner/\S+/mme/$",
        text,
        re.MULTILINE,
    ), text
    assert "invocation of en.tar.gz failed" not in text, text
    assert "no output records (a mock AWS runs no container and writes none)" in text
    assert "left over: nothing" in text
    # The scaling target and policy the notebook registered, as AWS answered them...
    assert re.search(
        r"^scalable target: endpoint/spacy-ner-endpoint-\S+/variant/AllTraffic "
        r"1\.\.4 instances$",
        text,
        re.MULTILINE,
    ), text
    assert re.search(
        r"^scaling policy: spacy-ner-invocations-\S+ TargetTrackingScaling "
        r"SageMakerVariantInvocationsPerInstance target \d+$",
        text,
        re.MULTILINE,
    )
    # ...and the batch transform job's arguments.
    sm = moto_server.client("sagemaker")
    [job] = sm.list_transform_jobs()["TransformJobSummaries"]
    job = sm.describe_transform_job(TransformJobName=job["TransformJobName"])
    assert job["TransformJobStatus"] == "Completed" and job["BatchStrategy"] == "MultiRecord"
    # Left to /execution-parameters; a timeout the server's own matches, one retry.
    assert "MaxPayloadInMB" not in job and "MaxConcurrentTransforms" not in job, job
    assert job["ModelClientConfig"] == {
        "InvocationsTimeoutInSeconds": 600,
        "InvocationsMaxRetries": 1,
    }
    assert job["TransformInput"]["SplitType"] == "Line"
    assert job["TransformInput"]["ContentType"] == "application/jsonlines"
    source = job["TransformInput"]["DataSource"]["S3DataSource"]
    assert source["S3DataType"] == "S3Prefix" and source["S3Uri"].endswith("/transform/input/")
    assert job["TransformOutput"]["AssembleWith"] == "Line"
    assert job["TransformOutput"]["Accept"] == "application/jsonlines"
    assert job["TransformResources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1}
    # The async endpoint: its configuration as AWS answered it, scale to zero, the alarm
    # that starts the first instance, and both requests queued.
    assert re.search(
        r"^async endpoint config: spacy-ner-async-config-\S+ output "
        r"s3://\S+/async/output/ at most 2 at once per instance$",
        text,
        re.MULTILINE,
    ), text
    assert re.search(
        r"^async scalable target: endpoint/spacy-ner-async-endpoint-\S+/variant/"
        r"AllTraffic 0\.\.4 instances$",
        text,
        re.MULTILINE,
    ), text
    assert re.search(
        r"^async scaling policy: spacy-ner-async-backlog-\S+ TargetTrackingScaling$",
        text,
        re.MULTILINE,
    ), text
    assert re.search(
        r"^async scaling policy: spacy-ner-async-from-zero-\S+ StepScaling$", text, re.MULTILINE
    ), text
    assert re.search(r"^document\.txt: queued, answer at s3://", text, re.MULTILINE), text
    assert re.search(r"^records\.jsonl: queued, answer at s3://", text, re.MULTILINE), text
    assert (
        "no async answer for document.txt, records.jsonl within ASYNC_WAIT_SECONDS=0; "
        "it will be at its OutputLocation"
    ) in text
    assert moto_server.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    # Nothing is left: endpoints, configurations, models (the transform's too), scaling
    # targets, and the S3 objects (model.tar.gz, the transform's input).
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []
    autoscaling = moto_server.client("application-autoscaling")
    assert (
        autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    )
    s3 = moto_server.client("s3")
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "sagemaker-us-east-1-123456789012" in buckets
    # (moto writes a placeholder answer of invoke_endpoint_async into a bucket of its own.)
    for bucket in buckets:
        assert s3.list_objects_v2(Bucket=bucket, Prefix="spacy-ner/").get("KeyCount") == 0
