"""Finding, loading and warming the spaCy pipeline (no request runs here).

Where the model comes from, first match wins:
1. SPACY_MODEL: an installed package name or a path;
2. a pipeline in SM_MODEL_DIR (/opt/ml/model, where SageMaker unpacks ModelDataUrl),
   at its root or in exactly one sub-folder;
3. SPACY_DEFAULT_MODEL: the pipeline baked into the image.
"""

import json
import logging
import os
import re
import time
from typing import TYPE_CHECKING

import device
from settings import Settings

if TYPE_CHECKING:  # spaCy is imported where a pipeline is loaded: the manager needs none
    from spacy.language import Language

log = logging.getLogger("ner.pipeline")
CODE_DOC = "docs/pipelines.md#custom-code"
TRANSFORMERS_DOC = "docs/pipelines.md#transformer-pipelines"
# Where spaCy's own components come from (and the packages that add pipelines to it): a
# component of theirs declares what it sets.
LIBRARY_PACKAGES = ("spacy", "spacy_legacy", "spacy_curated_transformers", "thinc")
# What every pipeline runs once before it is served.
WARM_UP = "Warm-up: Apple is looking at buying U.K. startup for $1 billion."


class ModelError(RuntimeError):
    """The model cannot be served; the message says why in one line."""


def unreadable_hint() -> str:
    # The image runs as a user of its own (uid 10001), which reads a mounted or unpacked
    # model only where its files are readable by others.
    return (
        f"this server runs as uid {os.getuid()}, which cannot read it: make the files "
        "readable by others (chmod -R a+rX before packing or mounting), or run the "
        "container as their owner (docker run --user)"
    )


def is_pipeline_dir(path: str) -> bool:
    """A folder written by `nlp.to_disk` (or a packaged pipeline's data folder)."""
    return os.path.isfile(os.path.join(path, "config.cfg")) and os.path.isfile(
        os.path.join(path, "meta.json")
    )


def find_in_model_dir(model_dir: str) -> str | None:
    """The pipeline folder inside model_dir, or None when model_dir holds no files at all."""
    if not os.path.isdir(model_dir):
        return None
    if not os.access(model_dir, os.R_OK | os.X_OK):
        raise ModelError(f"{model_dir}: {unreadable_hint()}")
    if is_pipeline_dir(model_dir):
        return model_dir
    entries = [e for e in sorted(os.listdir(model_dir)) if not e.startswith(".")]
    for entry in entries:
        path = os.path.join(model_dir, entry)
        if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):
            raise ModelError(f"{path}: {unreadable_hint()}")
    if not entries:
        return None
    candidates = [
        os.path.join(model_dir, e) for e in entries if is_pipeline_dir(os.path.join(model_dir, e))
    ]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ModelError(f"{model_dir} holds several spaCy pipelines {candidates}; keep one")
    # Something was unpacked here on purpose (ModelDataUrl): serving the baked default
    # instead would hide the mistake, so stop.
    raise ModelError(
        f"{model_dir} has files {entries[:5]} but no spaCy pipeline "
        "(a folder with config.cfg and meta.json, at its root or one level down)"
    )


def resolve(settings: Settings) -> tuple[str, str]:
    """(what to pass to spacy.load, why that one) by the precedence above."""
    if settings.spacy_model:
        return settings.spacy_model, "SPACY_MODEL"
    found = find_in_model_dir(settings.model_dir)
    if found:
        return found, settings.model_dir
    return settings.default_model, "SPACY_DEFAULT_MODEL"


def served_components(nlp: "Language", spans: bool = True) -> list[str]:
    """The components the answer depends on: those that set doc.ents, those that write
    doc.spans (when spans are answered), the user's own that say nothing of what they
    set, and the shared embedding layers (tok2vec, transformer) they listen to.
    Everything else is disabled.

    For en_core_web_sm this is just `ner`, which embeds with its own internal tok2vec;
    the shared tok2vec feeds only the tagger and parser.
    """
    from results import span_setters

    setters = [n for n in nlp.pipe_names if "doc.ents" in nlp.get_pipe_meta(n).assigns]
    needed = set(setters + (span_setters(nlp) if spans else []) + own_components(nlp))
    for name, pipe in nlp.pipeline:
        listeners = getattr(pipe, "listening_components", None) or []
        if needed.intersection(listeners):
            needed.add(name)
    return [n for n in nlp.pipe_names if n in needed]


def own_components(nlp: "Language") -> list[str]:
    """The user's own components that do not say what they set (their factory declares
    no `assigns`, as most do not): they may set the entities or spans, so they run."""
    return [
        name
        for name, pipe in nlp.pipeline
        if not nlp.get_pipe_meta(name).assigns
        and getattr(pipe, "__module__", type(pipe).__module__).split(".")[0] not in LIBRARY_PACKAGES
    ]


def answered_span_keys(nlp: "Language", settings: Settings) -> list[str]:
    """The doc.spans keys every answer carries: SPACY_SPAN_KEYS, or by default every key
    the pipeline writes (results.written_keys, probed with the warm-up text)."""
    from results import written_keys

    if settings.span_keys is not None:
        return list(settings.span_keys)
    return written_keys(nlp, nlp(WARM_UP))


def check_transformers(folder: str, source: str) -> None:
    """A transformer pipeline needs the package its factory comes from: say which image
    has it, rather than spaCy's "Can't find factory"."""
    import importlib.util

    with open(os.path.join(folder, "config.cfg"), encoding="utf-8") as f:
        factories = set(re.findall(r'^\s*factory\s*=\s*"([^"]+)"', f.read(), re.M))
    if "curated_transformer" in factories and not importlib.util.find_spec(
        "spacy_curated_transformers"
    ):
        raise ModelError(
            f"model {folder!r} (from {source}) is a transformer pipeline "
            "(spacy-curated-transformers), which this image cannot run: build the "
            f"transformers variant (VARIANT=transformers make image; {TRANSFORMERS_DOC})"
        )
    if "transformer" in factories and not importlib.util.find_spec("spacy_transformers"):
        raise ModelError(
            f"model {folder!r} (from {source}) is a spacy-transformers pipeline (factory "
            "'transformer'), which no variant of this image serves: spaCy 3.8's transformer "
            f"pipelines use spacy-curated-transformers ({TRANSFORMERS_DOC})"
        )


def _load_with_code(name: str, source: str, settings: Settings) -> "Language":
    """spacy.load, after the pipeline's own code/ (custom_code.py) for one in a folder."""
    from custom_code import CodeError, load_code

    if os.path.isdir(name):
        try:
            check_transformers(name, source)
            load_code(name, settings.model_dir, settings.code_modules)
        except CodeError as e:
            raise ModelError(f"model {name!r} (from {source}): {e}") from None
        except PermissionError as e:
            raise ModelError(f"{e.filename}: {unreadable_hint()}") from None
    import spacy  # here, not above: the model manager finds pipelines without spaCy

    try:
        return spacy.load(name)
    except Exception as e:  # spaCy raises OSError, ValueError, catalogue errors...
        # spaCy's messages run to paragraphs (E002 lists every factory): the first one.
        reason = " ".join(str(e).split("\n\n")[0].split())
        if "Can't find factory for 'curated_transformer'" in reason:
            reason += (
                f" It is a transformer pipeline: build VARIANT=transformers ({TRANSFORMERS_DOC})"
            )
        elif "Can't find factory" in reason or "Could not find function" in reason:
            reason += f" Is it in code/ beside the pipeline? ({CODE_DOC})"
        elif isinstance(e, PermissionError) and str(e.filename).startswith(name):
            reason += f": {unreadable_hint()}"
        raise ModelError(f"cannot load spaCy model {name!r} (from {source}): {reason}") from None


def load(settings: Settings) -> "Language":
    """Load, trim and warm the pipeline; raise ModelError with a one-line reason."""
    name, source = resolve(settings)
    if os.sep in name or name.startswith("."):
        if not os.path.exists(name):
            raise ModelError(f"model path {name} (from {source}) does not exist")
        if not is_pipeline_dir(name):
            raise ModelError(
                f"model path {name} (from {source}) is not a spaCy pipeline: "
                "no config.cfg and meta.json"
            )
    try:
        on = device.use(settings.gpus, settings.slots_per_gpu, settings.gpu_slot_dir)
    except device.DeviceError as e:
        raise ModelError(str(e)) from None
    nlp = _load_with_code(name, source, settings)

    served = served_components(nlp, spans=settings.span_keys != ())
    if not served:
        raise ModelError(
            f"model {name!r} (from {source}) has no component that sets doc.ents or "
            f"writes doc.spans (components: {nlp.pipe_names or 'none'})"
        )
    if not settings.full_pipeline:
        nlp.select_pipes(enable=served)

    # The first call allocates buffers and fills caches; do it here rather than in a
    # client's request, and before /ping reports ready.
    list(nlp.pipe([WARM_UP]))
    warmed, seconds = warm_tokenizer(nlp)
    threads = device.torch_threads()

    labels = sorted({label for n in served for label in getattr(nlp.get_pipe(n), "labels", ())})
    log.info(
        "model %s_%s %s from %s (%s); running %s; labels %s; device: %s; tokenizer cache "
        "warmed with %d words in %.1f s",
        nlp.meta.get("lang", "?"),
        nlp.meta.get("name", "?"),
        nlp.meta.get("version", "?"),
        name,
        source,
        ",".join(nlp.pipe_names),
        ",".join(labels),
        on + (f" (torch intra-op threads {threads})" if threads else ""),
        warmed,
        seconds,
    )
    return nlp


def report_failure(path: str, code: str, message: str) -> None:
    """Tell the model manager why this model cannot be served, as {"code", "message"} in
    the file at path (Settings.failure_file); nothing without one (a server of one
    model)."""
    if not path:
        return
    try:
        with open(f"{path}.new", "w") as f:
            json.dump({"code": code, "message": message}, f)
        os.replace(f"{path}.new", path)  # whole or not at all
    except OSError as e:
        log.warning("cannot write %s: %s", path, e)


def warm_tokenizer(nlp: "Language", chunk: int = 5000) -> tuple[int, float]:
    """Fill the tokenizer's cache from the words the pipeline's StringStore holds.

    Requests run inside nlp.memory_zone() (batcher.py), where spaCy does not add to the
    tokenizer cache, so whatever is cached now is all the cache will ever hold. The
    model's own vocabulary (tens of thousands of words for en_core_web_sm) is the best guess of
    the words that will come. All of it is tokenized, but the cache keeps only what fits
    in its max_cache_size (spaCy's default: 10,000 entries), the first words tokenized.
    This runs once, in gunicorn's master before the fork, so every worker shares the
    cache. Returns (words tokenized, seconds).
    """
    started = time.perf_counter()
    words = [
        s
        for s in nlp.vocab.strings
        if 0 < len(s) < 50 and s.isprintable() and not any(c.isspace() for c in s)
    ]
    for i in range(0, len(words), chunk):
        nlp.tokenizer(" ".join(words[i : i + chunk]))
    return len(words), time.perf_counter() - started
