"""Running tests/transform_job.py (a batch transform job in the SageMaker SDK's local
mode) for the tests and the benchmark alike.

The SDK lives in .venv-notebook, not in the test environment, so the driver runs under
that Python, with no AWS credentials or endpoints in its environment: local mode talks to
the Docker engine only, and a stray AWS_* variable must not send it to an account.
"""

import json
import subprocess
from pathlib import Path

from harness.servers import ROOT, host_env

NOTEBOOK_PYTHON = ROOT / ".venv-notebook" / "bin" / "python"
DRIVER = ROOT / "tests" / "transform_job.py"


def run(
    image: str, input_dir: Path, output_dir: Path, job: dict[str, object], timeout: float
) -> subprocess.CompletedProcess[str]:
    """The driver's run over input_dir into output_dir; its last stdout line is the job's
    JSON (status, seconds, max_payload_mb, ...). `job`: extra create_transform_job
    arguments."""
    env = {k: v for k, v in host_env(0).items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", PYTHONPATH="")
    paths = [str(p) for p in (NOTEBOOK_PYTHON, DRIVER)]
    return subprocess.run(
        [*paths, image, str(input_dir), str(output_dir), json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
