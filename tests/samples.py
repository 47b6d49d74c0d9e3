"""Texts with known answers from the real default model (en_core_web_sm 3.8.0), shared by the
tests that run it: on the host (test_serve.py) and in the image (test_container.py)."""

APPLE = "Apple is looking at buying U.K. startup for $1 billion"
APPLE_ENTITIES = [
    {"text": "Apple", "label": "ORG", "start": 0, "end": 5},
    {"text": "U.K.", "label": "GPE", "start": 27, "end": 31},
    {"text": "$1 billion", "label": "MONEY", "start": 44, "end": 54},
]


def batch_of(n):
    """A `texts` request of n sentences: real-model work that keeps a worker busy for
    about n / 500 seconds on these machines."""
    return {"texts": [f"{APPLE}, said Tim Cook in London on Monday {i}." for i in range(n)]}
