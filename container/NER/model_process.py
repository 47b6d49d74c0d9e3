"""One model of a multi-model endpoint as the manager (manager.py) runs it: its folder,
its process tree (`serve model <folder>`, a session of its own), and how that tree is
started, awaited until ready, and ended, so that all of its memory is free again."""

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from procfs import pss_bytes, session_pids
from protocol import ApiError
from settings import FAILURE_FILE_ENV, LOG_TAG_ENV
from tuning import (
    COMPUTE_THREAD_VARIABLES,
    GUARD_BYTES,
    LOAD_POLL_SECONDS,
    LOAD_SECONDS,
    MIB,
    PEAK_EVERY,
)

log = logging.getLogger("ner.manager")

# The failure codes a model's load reports (pipeline.report_failure, server.py) and the
# status each is answered with. A pipeline that cannot be served is the request's fault.
FAILURE_STATUS = {"model_invalid": 400, "insufficient_memory": 507}


def model_env(
    environ: Mapping[str, str],
    name: str,
    url: str,
    pipeline_dir: str,
    workers: int,
    failure_file: str,
) -> dict[str, str]:
    """A model's serve's environment: the container's, with the one model to load."""
    env = {
        k: v
        for k, v in environ.items()
        # Aliases would disagree with the workers set here (settings.py refuses that).
        if k not in ("SAGEMAKER_MULTI_MODEL", "SAGEMAKER_MODEL_SERVER_WORKERS")
    }
    env.update(
        {
            "SM_MODEL_DIR": url,
            # The pipeline the manager found in url: first in pipeline.resolve's order,
            # so neither a SPACY_MODEL of the container's nor the baked default can
            # stand in for it.
            "SPACY_MODEL": pipeline_dir,
            "MODEL_SERVER_WORKERS": str(workers),
            FAILURE_FILE_ENV: failure_file,
            LOG_TAG_ENV: f"model={name}",
        }
    )
    # The models share the container's cores: one intra-op thread per worker, as with a
    # worker per CPU, unless the user says otherwise.
    for variable in COMPUTE_THREAD_VARIABLES:
        env.setdefault(variable, "1")
    return env


@dataclass
class Model:
    name: str
    url: str
    folder: str
    disk_bytes: int
    estimate: int
    state: str = "loading"  # then "ready", then "unloading"
    proc: subprocess.Popen | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def ready_path(self) -> str:
        return os.path.join(self.folder, "ready")

    @property
    def failure_path(self) -> str:
        return os.path.join(self.folder, "failure.json")

    def info(self) -> dict[str, str]:
        return {"modelName": self.name, "modelUrl": self.url}

    def start(self, command: list[str], env: dict[str, str]) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)  # a leftover of an earlier one
        os.mkdir(self.folder)
        os.chmod(self.folder, 0o755)  # nginx's workers (nobody) look for the ready file
        # A session of its own: every process of the model is found (and ended) by it.
        self.proc = subprocess.Popen([*command, self.folder], env=env, start_new_session=True)

    def pss(self) -> int:
        """What the model's processes use together now."""
        return pss_bytes(session_pids(self.proc.pid)) if self.proc else 0

    def wait_ready(self, free_bytes: Callable[[], int]) -> int:
        """Until the model's serve says ready; the most its processes used meanwhile.
        ApiError for a load that fails, takes too long, or runs the container out of
        memory (`free_bytes`: what the container has free)."""
        assert self.proc is not None
        deadline = self.started + LOAD_SECONDS
        peak, polls = 0, 0
        while not os.path.exists(self.ready_path):
            polls += 1
            if polls % PEAK_EVERY == 0:  # what the estimate is for: the load's highest use
                peak = max(peak, self.pss())
            if self.proc.poll() is not None:
                raise self.failure()
            if time.monotonic() > deadline:
                raise ApiError(
                    500, "load_timeout", f"model {self.name} did not load within {LOAD_SECONDS} s"
                )
            free = free_bytes()
            if free < GUARD_BYTES:
                log.error(
                    "stopping the load of model %s: %d MB of memory left", self.name, free // MIB
                )
                raise ApiError(
                    507,
                    "insufficient_memory",
                    (
                        f"memory ran out while model {self.name} loaded; it was stopped "
                        "before the kernel's OOM killer had to act; unload a model"
                    ),
                )
            time.sleep(LOAD_POLL_SECONDS)
        return peak

    def failure(self) -> ApiError:
        """The ApiError for a model's serve that exited before it was ready."""
        try:
            with open(self.failure_path) as f:
                failure = json.load(f)
            code, message = failure["code"], failure["message"]
        except (OSError, ValueError, KeyError, TypeError):
            status = self.proc.returncode if self.proc else None
            if status == -signal.SIGKILL:
                code, message = "insufficient_memory", "killed while loading (out of memory?)"
            else:
                code, message = "load_failed", f"exited with status {status} while loading"
        log.error("model %s did not load: %s: %s", self.name, code, message)
        return ApiError(
            FAILURE_STATUS.get(code, 500),
            code,
            f"model {self.name}: {message}; see the container log",
        )

    def ask_to_stop(self) -> None:
        """No new invocations (nginx answers 404 at once); those in flight finish."""
        try:
            os.unlink(self.ready_path)
        except FileNotFoundError:
            pass
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("model %s did not stop in time; killed", self.name)

    def end(self) -> None:
        """Kill what is left of the model's processes and wait until none is left (its
        memory is free then); remove its folder."""
        if self.proc is not None:
            for _ in range(100):
                pids = session_pids(self.proc.pid)
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                if self.proc.poll() is None:
                    self.proc.wait()
                time.sleep(0.05)
            self.proc.poll()
        shutil.rmtree(self.folder, ignore_errors=True)
