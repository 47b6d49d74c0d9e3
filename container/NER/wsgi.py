"""The WSGI entry point gunicorn loads: `gunicorn wsgi:app`.

`serve` starts gunicorn with --preload, so this module runs once in the gunicorn master:
the model is loaded and warmed before the workers fork, and every worker shares that one
copy of its weights (copy-on-write) instead of loading its own. On a GPU there is no
--preload (a CUDA context does not survive a fork): each worker runs this module itself,
and loads its own copy on its GPU (device.py).
"""

import gc
import logging
import sys

import pipeline
import predictor
from settings import Settings, configure_logging

settings = Settings.from_env()
configure_logging(settings.log_level, settings.log_tag)
try:
    nlp = pipeline.load(settings)
    app = predictor.create_app(nlp, settings)
except pipeline.ModelError as e:
    logging.getLogger("ner.wsgi").critical("cannot start: %s", e)
    # A multi-model load's answer (manager.py).
    pipeline.report_failure(settings.failure_file, "model_invalid", str(e))
    sys.exit(3)  # gunicorn reports the failed app load and exits; serve follows it
except MemoryError:
    # A multi-model endpoint answers this load 507, and SageMaker unloads other models to
    # make room; with one model, the same exit as any failed load.
    logging.getLogger("ner.wsgi").critical("cannot start: out of memory loading the model")
    pipeline.report_failure(
        settings.failure_file, "insufficient_memory", "out of memory while loading the model"
    )
    sys.exit(3)

# Objects that exist now live as long as the server. Moving them out of the collector's
# reach keeps its passes from touching (and so copying) the pages the workers share.
gc.freeze()
