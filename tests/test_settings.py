"""Settings: defaults, and a bad value stopping start-up with a clear message."""

import pytest

from settings import Settings, SettingsError, available_cpus


def test_defaults_match_sagemakers_contract():
    s = Settings.from_env({})
    assert (s.port, s.timeout, s.max_payload_mb, s.model_dir) == (8080, 60, 6, "/opt/ml/model")
    assert s.workers == available_cpus() >= 1
    assert s.max_payload_bytes == 6 * 1024 * 1024
    assert s.full_pipeline is False and s.spacy_model == "" and s.log_level == "INFO"


def test_every_setting_is_read():
    s = Settings.from_env({
        "SAGEMAKER_BIND_TO_PORT": "9000", "MODEL_SERVER_WORKERS": "3",
        "MODEL_SERVER_TIMEOUT": "30", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "4",
        "SPACY_MODEL": "my_model", "SM_MODEL_DIR": "/models", "SPACY_DEFAULT_MODEL": "/baked",
        "SPACY_FULL_PIPELINE": "yes", "LOG_LEVEL": "debug"})
    assert s == Settings(port=9000, workers=3, timeout=30, max_payload_mb=4, spacy_model="my_model",
                        model_dir="/models", default_model="/baked", full_pipeline=True,
                        log_level="DEBUG")


@pytest.mark.parametrize("name,value,message", [
    ("SAGEMAKER_BIND_TO_PORT", "http", "not a whole number"),
    ("SAGEMAKER_BIND_TO_PORT", "70000", "outside 1..65535"),
    ("MODEL_SERVER_WORKERS", "0", "outside 1..256"),
    ("MODEL_SERVER_TIMEOUT", "1.5", "not a whole number"),
    ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "-1", "outside 0..1024"),
    ("SPACY_FULL_PIPELINE", "maybe", "not true or false"),
    ("LOG_LEVEL", "loud", "not DEBUG, INFO, WARNING or ERROR"),
])
def test_a_bad_value_names_the_setting(name, value, message):
    with pytest.raises(SettingsError, match=message) as e:
        Settings.from_env({name: value})
    assert name in str(e.value)


def test_blank_values_mean_the_default():
    assert Settings.from_env({"SAGEMAKER_BIND_TO_PORT": " ", "LOG_LEVEL": ""}).port == 8080


def test_a_payload_limit_of_0_means_none_as_in_batch_transform():
    assert Settings.from_env({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}).max_payload_bytes is None
