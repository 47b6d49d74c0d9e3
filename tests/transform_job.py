"""A batch transform job run by the SageMaker SDK's local mode (v2) against an image, as
test_transform.py and the benchmark run it. It runs under .venv-notebook's Python, where
the SDK lives (it is not in the test environment), and prints one JSON line: the job's
status, its seconds, the seconds local mode spent making mini-batches, and the
MaxPayloadInMB it made them for.

usage: transform_job.py IMAGE INPUT_DIR OUTPUT_DIR JOB_JSON
JOB_JSON: extra create_transform_job arguments, e.g. {"MaxPayloadInMB": 6}; {} leaves
MaxPayloadInMB (and MaxConcurrentTransforms, which local mode holds at 1) to
/execution-parameters. BatchStrategy is always MultiRecord, as in the notebook: local mode
would take /execution-parameters' "MULTI_RECORD" (the form AWS documents) as it stands,
and refuse it.
"""

import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
from sagemaker.local import LocalSession  # noqa: E402
from sagemaker.local.data import MultiRecordStrategy  # noqa: E402


class Batching:
    """The seconds local mode spends making mini-batches (reading a file and adding its
    records to a string, one at a time, up to MaxPayloadInMB), while the container waits,
    and the MaxPayloadInMB it made them for: MultiRecordStrategy.pad, timed whole."""

    seconds = 0.0
    max_payload_mb = None


def _timed(pad):
    def timed_pad(strategy, file, size=6):
        Batching.max_payload_mb = size
        batches = pad(strategy, file, size)
        while True:
            started = time.perf_counter()
            batch = next(batches, None)
            Batching.seconds += time.perf_counter() - started
            if batch is None:
                return
            yield batch

    return timed_pad


MultiRecordStrategy.pad = _timed(MultiRecordStrategy.pad)


def main(image, input_dir, output_dir, job):
    logging.getLogger("sagemaker").setLevel(os.environ.get("SDK_LOG", "WARNING"))
    # Telemetry off: a local run talks to nothing but Docker.
    session = LocalSession(
        boto_session=boto3.Session(region_name="us-east-1"),
        sagemaker_config={
            "SchemaVersion": "1.0",
            "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
        },
    )
    session.config = {"local": {"local_code": True}}
    sm = session.sagemaker_client
    name = f"spacy-ner-test-{uuid.uuid4().hex[:8]}"
    # Local mode needs "Environment" in the container definition, and a ModelDataUrl,
    # which it mounts at /opt/ml/model: an empty folder serves the baked pipeline, as a
    # model without one does on AWS.
    no_model = tempfile.mkdtemp(prefix="no-model-")
    os.chmod(no_model, 0o755)  # mkdtemp's 0700 would hide it from the image's own user
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::123456789012:role/local",
        PrimaryContainer={
            "Image": image,
            "Environment": {},
            "ModelDataUrl": Path(no_model).as_uri(),
        },
    )
    started = time.monotonic()
    try:
        sm.create_transform_job(
            TransformJobName=name,
            ModelName=name,
            TransformInput={
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": Path(input_dir).as_uri()}
                },
                "ContentType": "application/jsonlines",
                "SplitType": "Line",
            },
            TransformOutput={
                "S3OutputPath": Path(output_dir).as_uri(),
                "Accept": "application/jsonlines",
                "AssembleWith": "Line",
            },
            TransformResources={"InstanceType": "local", "InstanceCount": 1},
            BatchStrategy="MultiRecord",
            **job,
        )
        described = sm.describe_transform_job(TransformJobName=name)
    finally:
        sm.delete_model(ModelName=name)
    seconds = time.monotonic() - started
    # The SDK's own times of the job: from once the container answers /ping (and
    # /execution-parameters) to its last answer written; the rest of `seconds` is the
    # container's start and stop.
    inference = (described["TransformEndTime"] - described["TransformStartTime"]).total_seconds()
    print(
        json.dumps(
            {
                "status": described["TransformJobStatus"],
                "seconds": seconds,
                "inference_seconds": inference,
                "batching_seconds": Batching.seconds,
                "max_payload_mb": Batching.max_payload_mb,
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
