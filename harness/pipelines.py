"""Real pipelines of the kinds users train, built here from generated data (nothing is
downloaded), for the tests and the benchmark.

- spancat_pipeline: a shared tok2vec that ner and spancat both listen to; spancat writes
  overlapping spans with scores under SPANS_KEY.
- transformer_pipeline: a tiny curated-transformers BERT + ner; it needs the transformers
  image, so transformer_pipeline_in_image trains it there.
- custom_code_model: a model.tar.gz's contents whose one component is a factory of its
  own, in code/, which needs a package that code/requirements.txt names (its wheel in
  code/wheels/, built here).
"""

import base64
import hashlib
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

SPANS_KEY = "sc"
_PEOPLE = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi"]
_PLACES = ["Paris", "Berlin", "Rome", "Madrid", "Lisbon", "Vienna", "Oslo", "Prague"]
_TEMPLATES = [
    "{person} from {place} arrived today .",
    "We met {person} from {place} at the station .",
    "Yesterday {person} from {place} called .",
    "The letter said that {person} from {place} had left .",
]


def span_sentences(count: int, seed: int = 0) -> list[tuple[str, list[tuple[int, int, str]]]]:
    """Sentences with a PERSON, a PLACE and an ORIGIN span that overlaps both ("Alice from
    Paris"), as (text, [(start, end, label)]); ner learns PERSON and PLACE from the same."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        person, place = rng.choice(_PEOPLE), rng.choice(_PLACES)
        text = rng.choice(_TEMPLATES).format(person=person, place=place)
        p = text.index(person)
        q = text.index(f"{person} from {place}") + len(f"{person} from ")
        spans = [(p, p + len(person), "PERSON"), (q, q + len(place), "PLACE")]
        sentences.append((text, spans + [(p, q + len(place), "ORIGIN")]))
    return sentences


def spancat_pipeline(path: Path, sentences: int = 200, epochs: int = 6) -> Path:
    """Train (a few seconds on 2 cores) and save a tok2vec + ner + spancat pipeline."""
    import spacy
    from spacy.training import Example

    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("en")
    tok2vec: Any = nlp.add_pipe("tok2vec")
    width = nlp.config["components"]["tok2vec"]["model"]["width"]
    listener = {"@architectures": "spacy.Tok2VecListener.v1", "width": width, "upstream": "*"}
    nlp.add_pipe("ner", config={"model": {"tok2vec": listener}})
    nlp.add_pipe(
        "spancat",
        config={"spans_key": SPANS_KEY, "model": {"tok2vec": listener}, "threshold": 0.5},
    )
    examples = [
        Example.from_dict(
            nlp.make_doc(text),
            {
                "entities": [s for s in spans if s[2] != "ORIGIN"],
                "spans": {SPANS_KEY: spans},
            },
        )
        for text, spans in span_sentences(sentences)
    ]
    optimizer = nlp.initialize(lambda: examples)
    # ner and spancat share the one tok2vec, as in spaCy's own configs.
    assert set(tok2vec.listening_components) == {"ner", "spancat"}
    rng = random.Random(0)
    for _ in range(epochs):
        rng.shuffle(examples)
        for start in range(0, len(examples), 16):
            nlp.update(examples[start : start + 16], sgd=optimizer, drop=0.1)
    nlp.meta["name"] = "tiny_test_spancat"
    nlp.meta["version"] = "0.0.1"
    nlp.to_disk(path)
    return path


# The custom component's module, as a user writes it in code/: it needs a package of its
# own (ner_test_terms, from code/requirements.txt) for the pattern it finds.
PATTERN_MODULE = """\
import re

from ner_test_terms import PRODUCT_PATTERN
from spacy.language import Language
from spacy.util import filter_spans


# No `assigns`, as most users' factories: the server must run it all the same.
@Language.factory("pattern_entities", default_config={"label": "PRODUCT"})
def make_pattern_entities(nlp, name, label):
    pattern = re.compile(PRODUCT_PATTERN)

    def pattern_entities(doc):
        spans = [doc.char_span(m.start(), m.end(), label=label) for m in pattern.finditer(doc.text)]
        doc.ents = filter_spans([s for s in spans if s is not None])
        return doc

    return pattern_entities
"""
TERMS_PACKAGE = ("ner_test_terms", "0.1.0", 'PRODUCT_PATTERN = r"\\bXR-\\d{3}\\b"\n')
# What the pattern component finds in it.
PRODUCT_TEXT = "Order XR-100 and XR-250, not XR-1."
PRODUCT_ENTITIES = [
    {"text": "XR-100", "label": "PRODUCT", "start": 6, "end": 12},
    {"text": "XR-250", "label": "PRODUCT", "start": 17, "end": 23},
]


def _wheel(
    folder: Path, name: str, version: str, files: dict[str, bytes], requires: tuple[str, ...] = ()
) -> Path:
    """A pure-Python wheel of `files` (path in the wheel: bytes) that depends on
    `requires`, written by hand, as pip installs it (offline: no build back-end needed)."""
    dist = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        **files,
        f"{dist}/METADATA": metadata.encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for inside, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record.append(f"{inside},sha256={digest.decode()},{len(data)}")
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for name_in_zip, data in files.items():
            whl.writestr(name_in_zip, data)
    return path


def _build_pattern_pipeline(path: Path, pythonpath: list[Path]) -> None:
    """The pipeline of the pattern component, saved to path. Built in a Python of its
    own, as the user's training run is: registering the factory in this process would
    clash with the next model built here."""
    script = (
        "import sys, spacy, ner_patterns\n"
        "nlp = spacy.blank('en')\n"
        "nlp.add_pipe('pattern_entities')\n"
        "nlp.meta['name'] = 'tiny_test_custom_code'\n"
        "nlp.meta['version'] = '0.0.1'\n"
        "nlp.to_disk(sys.argv[1])\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(path)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))},
        check=True,
        timeout=120,
    )


def custom_code_model(folder: Path, nested: bool = False) -> Path:
    """What a model.tar.gz holds: the pipeline (at the root, or in pipeline/ when
    nested) and code/ with the module, its requirements.txt and its wheel. folder."""
    code = folder / "code"
    code.mkdir(parents=True)
    (code / "ner_patterns.py").write_text(PATTERN_MODULE)
    name, version, init = TERMS_PACKAGE
    (code / "requirements.txt").write_text(f"{name}=={version}\n")
    # It depends on spaCy, as a user's package would: the image's must satisfy it (no
    # spaCy wheel in code/wheels/, no index), never a second copy.
    wheel = _wheel(
        code / "wheels", name, version, {f"{name}/__init__.py": init.encode()}, ("spacy>=3.8",)
    )
    _build_pattern_pipeline(folder / "pipeline" if nested else folder, [wheel, code])
    return folder


def custom_code_package(folder: Path) -> Path:
    """The same pipeline as a package made by `spacy package --code ner_patterns.py`: its
    code module beside the pipeline's folder, imported by the package's __init__.py, and
    the pattern in the module itself (a baked package brings no requirements). Its wheel."""
    name, version = "en_tiny_test_custom_code", "0.0.1"
    work = folder / "work"
    work.mkdir(parents=True)
    module = PATTERN_MODULE.replace(
        "from ner_test_terms import PRODUCT_PATTERN\n", TERMS_PACKAGE[2]
    )
    (work / "ner_patterns.py").write_text(module)
    _build_pattern_pipeline(work / "pipeline", [work])
    return pipeline_wheel(folder, work / "pipeline", name, version, {"ner_patterns": module})


def pipeline_wheel(
    folder: Path, pipeline: Path, name: str, version: str, modules: dict[str, str]
) -> Path:
    """A wheel laid out as `spacy package` makes one: the pipeline folder inside the
    package, and the code modules (name: source) beside the __init__.py that imports
    them. Written to folder; its path."""
    imports = "".join(f"from . import {m}  # noqa: F401\n" for m in modules)
    init = (
        f"from spacy.util import load_model_from_init_py\n{imports}\n\n"
        "def load(**overrides):\n"
        "    return load_model_from_init_py(__file__, **overrides)\n"
    )
    files = {f"{name}/__init__.py": init.encode()}
    files.update({f"{name}/{m}.py": source.encode() for m, source in modules.items()})
    for path in sorted(pipeline.rglob("*")):
        if path.is_file():
            inside = path.relative_to(pipeline).as_posix()
            files[f"{name}/{name}-{version}/{inside}"] = path.read_bytes()
    return _wheel(folder, name, version, files)


# A curated transformer small enough to train here from random weights in seconds: BERT,
# 2 layers of width 64, its pieces the characters of TRANSFORMER_CHARS (CharEncoder: no
# vocabulary to download), and an ner that listens to its last layer.
TRANSFORMER_CONFIG = """
[nlp]
lang = "en"
pipeline = ["transformer", "ner"]

[components]

[components.transformer]
factory = "curated_transformer"
all_layer_outputs = false

[components.transformer.model]
@architectures = "spacy-curated-transformers.BertTransformer.v1"
vocab_size = {vocab_size}
hidden_width = 64
intermediate_width = 128
num_attention_heads = 4
num_hidden_layers = 2
max_position_embeddings = 512
piece_encoder = {{"@architectures": "spacy-curated-transformers.CharEncoder.v1"}}
with_spans = {{"@architectures": "spacy-curated-transformers.WithStridedSpans.v1"}}

[components.ner]
factory = "ner"

[components.ner.model]
@architectures = "spacy.TransitionBasedParser.v2"
state_type = "ner"
hidden_width = 64
maxout_pieces = 2
use_upper = true

[components.ner.model.tok2vec]
@architectures = "spacy-curated-transformers.LastTransformerLayerListener.v1"
width = 64
pooling = {{"@layers": "reduce_mean.v1"}}

[initialize]

[initialize.components]

[initialize.components.transformer]

[initialize.components.transformer.piecer_loader]
@model_loaders = "spacy-curated-transformers.CharEncoderLoader.v1"
path = "{chars}"
"""
TRANSFORMER_CHARS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
    chr(c) for c in range(33, 127)
]


def _train_transformer_step_losses_as_float() -> None:
    """spacy-curated-transformers 0.3.1 reports its training loss with float() on a
    one-element array, which numpy 2.4 refuses. Training only, so only here: its module
    gets a float() that takes such an array (the module's globals come before builtins)."""
    import builtins

    import numpy
    from spacy_curated_transformers.pipeline import transformer

    transformer.float = lambda value: builtins.float(numpy.asarray(value).item())


def transformer_pipeline(path: Path, sentences: int = 400, steps: int = 200) -> Path:
    """Train (seconds on 2 cores) and save the tiny transformer + ner pipeline; needs
    the transformers image variant (torch, spacy-curated-transformers)."""
    import spacy
    from spacy.training import Example

    spacy.util.fix_random_seed(0)
    _train_transformer_step_losses_as_float()
    path.mkdir(parents=True, exist_ok=True)
    chars = path.parent / f"{path.name}-chars.txt"
    chars.write_text("\n".join(TRANSFORMER_CHARS) + "\n")
    text = TRANSFORMER_CONFIG.format(vocab_size=len(TRANSFORMER_CHARS), chars=chars)
    nlp = spacy.util.load_model_from_config(spacy.util.Config().from_str(text), auto_fill=True)
    examples = [
        Example.from_dict(nlp.make_doc(t), {"entities": [s for s in spans if s[2] != "ORIGIN"]})
        for t, spans in span_sentences(sentences)
    ]
    optimizer = nlp.initialize(lambda: examples)
    rng = random.Random(0)
    for step in range(steps):
        if step % (len(examples) // 16) == 0:
            rng.shuffle(examples)
        start = (step * 16) % (len(examples) - 16)
        nlp.update(examples[start : start + 16], sgd=optimizer, drop=0.1)
    nlp.meta["name"] = "tiny_test_transformer"
    nlp.meta["version"] = "0.0.1"
    nlp.to_disk(path)
    chars.unlink()
    return path


def transformer_pipeline_in_image(image: str, folder: Path, docker: str = "docker") -> Path:
    """Train transformer_pipeline inside `image` (the transformers variant: torch and
    spacy-curated-transformers are there, not on the host), as this user, with no
    network; saved to folder/trf, its path."""
    script = (
        "import sys; sys.path.insert(0, '/src'); from pathlib import Path; "
        "from harness.pipelines import transformer_pipeline; "
        "transformer_pipeline(Path('/out/trf'))"
    )
    command = [docker, "run", "--rm", "--network", "none"]
    command += ["--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp"]
    command += ["-v", f"{Path(__file__).resolve().parent.parent}:/src:ro", "-v", f"{folder}:/out"]
    done = subprocess.run(
        [*command, image, "python", "-c", script], capture_output=True, text=True, timeout=900
    )
    if done.returncode:
        raise RuntimeError(f"training the transformer pipeline in {image}: {done.stderr[-3000:]}")
    return folder / "trf"
