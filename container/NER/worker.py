"""The gunicorn worker class `serve` runs: gthread, with one change to how it accepts.

gunicorn's gthread worker accepts a connection whenever it has a free thread. With fewer
clients than threads, one worker can then take every request while another worker, and
its core, sits idle: measured with 2 workers, two concurrent batch requests often ran on
one worker, one after the other. Here a worker whose model is busy waits
ACCEPT_DEFER_SECONDS before it accepts, so that an idle worker, woken for the same
connection, takes it first. When every worker is busy they all accept after that short
wait, and the requests they hold merge into one nlp.pipe call (batcher.py).
"""

import time

from gunicorn.workers.gthread import ThreadWorker

import health
import recycle

# Long enough for an idle worker's main thread to wake and accept; short against one
# model call (a few ms for one text, about 100 ms for 64).
ACCEPT_DEFER_SECONDS = 0.002


class MergingThreadWorker(ThreadWorker):
    def accept(self, listener):
        # self.wsgi is the Flask app (wsgi.py); its batcher says whether the model runs.
        if self.wsgi.extensions["batcher"].busy:
            time.sleep(ACCEPT_DEFER_SECONDS)
        super().accept(listener)  # EAGAIN when another worker took the connection: fine

    def load_wsgi(self):
        super().load_wsgi()
        # Where a coordinator sends the parts of a large request (fanout.py): gunicorn's
        # own socket, which every worker accepts from.
        self.wsgi.extensions["fanout"].socket_path = self.sockets[0].cfg_addr

    def notify(self):
        # gthread calls this from its main loop at least once a second, busy or not: the
        # heartbeat /ping follows (health.py), beside gunicorn's own one for --timeout.
        super().notify()
        health.beat()

    def run(self):
        recycle.watch(self)  # replaced once its memory has grown (MODEL_SERVER_RECYCLE_MB)
        super().run()
