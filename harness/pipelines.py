"""Real pipelines of the kinds users train, built here from generated data (nothing is
downloaded), for the tests and the benchmark.

- spancat_pipeline: a shared tok2vec that ner and spancat both listen to; spancat writes
  overlapping spans with scores under SPANS_KEY.
"""

import random
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
