"""The gunicorn worker class `serve` runs: gthread, with one change to how it accepts.

gunicorn's gthread worker accepts a connection whenever it has a free thread. With fewer
clients than threads, one worker can then take every request while another worker, and
its core, sits idle: with 2 workers, two concurrent batch requests would often run on one
worker, one after the other. Here a worker whose model is busy waits
ACCEPT_DEFER_SECONDS before it accepts, so that an idle worker, woken for the same
connection, takes it first. When every worker is busy they all accept after that short
wait, and the requests they hold merge into one nlp.pipe call (batcher.py).
"""

import time
from typing import TYPE_CHECKING, Any

from gunicorn.workers.gthread import ThreadWorker

import health
import recycle
from tuning import ACCEPT_DEFER_SECONDS

# gunicorn imports this module in its master, before it forks. spaCy must not come with
# it: in the transformers image, importing thinc asks cupy and torch how many GPUs there
# are, which starts CUDA, and a forked worker cannot use CUDA after that (device.py).
if TYPE_CHECKING:
    from predictor import NerApp


class MergingThreadWorker(ThreadWorker):
    @property
    def flask_app(self) -> "NerApp":
        """The Flask app gunicorn loaded (wsgi.py)."""
        return self.wsgi

    def accept(self, listener: Any) -> None:
        # The batcher says whether the model runs.
        if self.flask_app.runner.batcher.busy:
            time.sleep(ACCEPT_DEFER_SECONDS)
        super().accept(listener)  # EAGAIN when another worker took the connection: fine

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # Where a coordinator sends the parts of a large request (fanout.py): gunicorn's
        # own socket, which every worker accepts from.
        self.flask_app.runner.fanout.socket_path = self.sockets[0].cfg_addr

    def notify(self) -> None:
        # gthread calls this from its main loop at least once a second, busy or not: the
        # heartbeat /ping follows (health.py), beside gunicorn's own one for --timeout.
        super().notify()
        health.beat(self.flask_app.settings.heartbeat_dir)

    def run(self) -> None:
        recycle.watch(self)  # replaced once its memory has grown (MODEL_SERVER_RECYCLE_MB)
        super().run()
