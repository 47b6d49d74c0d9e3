"""spaCy components that misbehave on purpose, for the tests of the request path.

They are real spaCy components, added to a real (tiny) pipeline saved with nlp.to_disk,
and loaded by `serve` the way any custom component is: through the `spacy_factories`
entry point that the dist-info folder beside this file declares. Tests that start `serve`
put this folder on PYTHONPATH; in-process tests import the module.

Each acts only on texts holding its marker word, so the same pipeline answers ordinary
texts normally:
- test_raise: raises on RAISE (a pipeline bug on one request's text);
- test_stall: never returns on STALL (a model stuck for good);
- test_hold: waits on HOLD until the test calls release() (the model busy for as long
  as a test needs to queue requests behind it). Under `serve` the test is another
  process: with NER_TEST_HOLD_DIR set, HOLD writes `holding-<pid>` there and runs (on the
  CPU, as a model does) until a file `release` appears;
- test_count: counts the nlp.pipe calls that reach it (one per call: spaCy calls a
  component's pipe() once per nlp.pipe);
- test_sleep: takes 3 s on SLEEP (a short text the model is slow on);
- test_exit: raises SystemExit, which is no Exception, on EXIT.
"""

import os
import threading
import time

from spacy.language import Language

holding = threading.Event()  # set while a HOLD text is in the pipeline
_release = threading.Event()
pipe_calls = []  # one entry per nlp.pipe call: the number of docs it carried


def release():
    _release.set()


def reset():
    holding.clear()
    _release.clear()
    pipe_calls.clear()


@Language.component("test_raise")
def raise_on_marker(doc):
    if "RAISE" in doc.text:
        raise RuntimeError("secret internal detail")
    return doc


@Language.component("test_stall")
def stall_on_marker(doc):
    # release() ends it, so that an in-process test leaves no thread behind.
    while "STALL" in doc.text and not _release.is_set():
        time.sleep(0.2)  # a pure-Python loop: the worker's other threads keep running
    return doc


HOLD_DIR_ENV = "NER_TEST_HOLD_DIR"
HOLD_SECONDS = 60  # at most: a test that fails does not leave a worker held for good


@Language.component("test_hold")
def hold_on_marker(doc):
    if "HOLD" in doc.text:
        folder = os.environ.get(HOLD_DIR_ENV)
        if folder:
            open(os.path.join(folder, f"holding-{os.getpid()}"), "w").close()
            release_file = os.path.join(folder, "release")
            deadline = time.monotonic() + HOLD_SECONDS
            while not os.path.exists(release_file) and time.monotonic() < deadline:
                pass  # busy in Python, holding the GIL as a model call does
        else:
            holding.set()
            _release.wait(timeout=HOLD_SECONDS)
    return doc


class PipeCounter:
    def __call__(self, doc):
        pipe_calls.append(1)
        return doc

    def pipe(self, docs, **kwargs):
        pipe_calls.append(0)
        for doc in docs:
            pipe_calls[-1] += 1
            yield doc


@Language.factory("test_count")
def make_counter(nlp, name):
    return PipeCounter()


@Language.component("test_sleep")
def sleep_on_marker(doc):
    if "SLEEP" in doc.text:
        time.sleep(3)
    return doc


@Language.component("test_exit")
def exit_on_marker(doc):
    # Not an Exception: what a component calling sys.exit(), or a stray KeyboardInterrupt,
    # raises through nlp.pipe.
    if "EXIT" in doc.text:
        raise SystemExit("a component called sys.exit()")
    return doc
