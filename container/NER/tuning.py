"""The fixed numbers that tune the server, each with why it is what it is.

Not settings: no environment variable changes them (settings.py holds those). They are
here, in one module, so that a maintainer tuning the server finds every knob in one
place, and so that the modules that use them stay about what they do. Measured effects
of changing them belong in the benchmark's generated results, not here.
"""

MIB = 1024 * 1024

# --- merging (batcher.py, cutting.py) -----------------------------------------------
# The most texts one merged call takes, whatever their characters: a body of a million
# blank lines is no characters, but a million Docs. Four of nlp.pipe's usual minibatches.
MAX_TEXTS_PER_CALL = 1024

# --- long texts (pieces.py) ---------------------------------------------------------
# Longer than any entity, short against a piece: the overlap a cut inside a paragraph
# costs is run twice.
OVERLAP = 200
# The shortest piece a long text is cut into (and MODEL_SERVER_CHUNK_CHARACTERS's least),
# however small the unit it goes in: a piece this long costs its overlap a few times over
# at most.
MIN_PIECE_CHARACTERS = 1_000

# --- what a request costs (capacity.py) ---------------------------------------------
# What a text costs the model beside its characters, in characters: making a Doc and its
# entity record, which a body of a million one-word lines pays a million times.
TEXT_WORK = 32
# The most MaxPayloadInMB one worker runs in this share of MODEL_SERVER_TIMEOUT: what the
# start-up log warns about. Room for texts slower than the calibration's, and for a
# worker that shares its core with the requests merged beside the mini-batch.
PAYLOAD_SHARE_OF_TIMEOUT = 0.5
# What /execution-parameters suggests as MaxPayloadInMB: the least a job can ask for,
# however fast the workers. A mini-batch is made before it is sent, and the SageMaker
# Python SDK's local mode makes it by adding one record at a time to a string, so its
# time grows with the square of the payload while the server waits with nothing to do.
# Small mini-batches also mean little to retry when one fails. A 1 MB request still holds
# thousands of records, seconds of a worker's time beside which one HTTP round trip is
# nothing, and fans out to every worker.
SUGGESTED_MAX_PAYLOAD_MB = 1

# --- one request on every worker (fanout.py) ----------------------------------------
# A shared request is cut into at least this many parts per worker. Its last part runs
# while the other workers have nothing left of it, and a transform job's client sends its
# next mini-batch only once this one is answered: small parts keep that tail short.
PARTS_PER_WORKER = 32
# But none smaller than this (unless a merged call is smaller still): each part costs an
# HTTP round trip on gunicorn's socket.
MIN_PART_CHARACTERS = 10_000
# Parts in flight beyond one per worker, waiting in a worker's queue (batcher.py): the
# next part starts as soon as that worker's current one ends, without waiting for the
# round trip through the coordinator's thread, which shares its worker's GIL with a model
# call and so answers late. gunicorn gives a waiting part to either busy worker, so with
# one waiting the other worker often finds none when its part ends; with two, on two
# workers, each usually has one.
IN_FLIGHT_BEYOND_WORKERS = 2
# Answered parts held while an earlier one still runs, per worker: room for the parts in
# flight and as many answered beside them, so that a stalled part does not let the rest
# of a large body pile up in memory.
PARTS_AHEAD = 4

# --- JSON Lines bodies (stream.py) --------------------------------------------------
# The socket is read this much at a time.
BLOCK_BYTES = 1 << 20
# A body up to this size stays in memory; a larger one moves to a temporary file.
SPOOL_IN_MEMORY = 1 << 20

# --- the gunicorn worker (worker.py) ------------------------------------------------
# Long enough for an idle worker's main thread to wake and accept; short against one
# model call of even one text.
ACCEPT_DEFER_SECONDS = 0.002

# --- recycling (recycle.py) ---------------------------------------------------------
# Often enough that a worker overshoots its limit by little more than one merged call's
# worth of memory; reading smaps_rollup is cheap beside that.
RECYCLE_CHECK_SECONDS = 1.0
# How often a recycling worker looks whether the requests it holds are answered.
RECYCLE_DRAIN_POLL_SECONDS = 0.01
# Readings whose least counts: longer than any one merged call, short against the growth.
RECYCLE_WINDOW = 10

# --- heartbeats (health.py) ---------------------------------------------------------
# gthread's loop can call notify() many times a second under load; a touch this often is
# plenty against a window of seconds.
BEAT_SECONDS = 0.5
# A worker counts only once it has kept beating this long, one full turn of gthread's
# idle loop: a worker that crash-loops (the OOM killer ending each new one as it takes its
# first request) beats once, and must not make the instance look healthy. Short against
# the window, so that the one worker of a small instance being replaced does not cause a
# false 503.
SETTLE_SECONDS = 1.0

# --- starting and stopping (launch.py, server.py) -----------------------------------
# SageMaker sends SIGKILL about 30 s after SIGTERM: finish well inside that.
SHUTDOWN_SECONDS = 27
# How long gunicorn lets a busy worker finish its request once it is told to stop. It is
# told last, after nginx has drained (server.py), so this only bounds a request that was
# still running at the end of the shutdown budget.
GRACEFUL_SECONDS = 3
# Defaults for the workers' environment; a value the user sets wins.
# - The workers are the parallelism: numpy's OpenBLAS and OpenMP (torch's intra-op
#   threads) would otherwise start a thread per CPU in every worker, N workers x N threads
#   on N cores. They get the CPUs shared among the workers (Settings.compute_threads):
#   one each when there is a worker per CPU.
# - Any request thread may run the model (batcher.py), and glibc gives each thread that
#   allocates its own malloc arena, each keeping its high-water mark; two arenas per
#   worker keep most of that memory, at no cost the benchmark could see.
COMPUTE_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
WORKER_ENV_DEFAULTS = {"MALLOC_ARENA_MAX": "2"}
# nginx's large_client_header_buffers size: the longest request line or header line it
# accepts (nginx.conf says why this one). gunicorn's limits follow it.
HEADER_BUFFER_BYTES = 16 * 1024
# The kernel's OOM killer picks the process with the highest score: a multi-model
# endpoint's model processes, never nginx or the manager, so that the container outlives
# a model that did not fit. Inherited by gunicorn and its workers.
MODEL_OOM_SCORE_ADJ = 1000

# --- multi-model endpoints (manager.py, estimate.py) --------------------------------
# The longest a load may take, from the request to the model's first answered /ping;
# nginx waits a little longer for the manager's answer (launch.py renders it).
LOAD_SECONDS = 300
# A model's serve stops within its own SHUTDOWN_SECONDS; after this its processes are
# killed.
UNLOAD_SECONDS = 30
# How often a waiting load looks at the model's files and at the free memory, and every
# how many of those it also adds up its processes' memory (a walk over /proc).
LOAD_POLL_SECONDS = 0.05
PEAK_EVERY = 5
# The first guess at a model's memory before any load has been seen: its process tree
# (its serve, a gunicorn master holding Python, spaCy and the pipeline, and each worker's
# private memory) plus the pipeline's size on disk times a factor. Deliberately on the
# high side: every load corrects the guesses after it with what it really used
# (estimate.Estimator.observe), so a high first guess costs at most one refused load on
# a nearly full container, a low one an OOM kill.
BASE_BYTES = 160 * MIB
WORKER_BYTES = 40 * MIB
DISK_FACTOR = 2.0
# Memory a load must leave free, for the requests of the models already loaded (their
# batches' working memory) and for nginx's buffers.
RESERVE_BYTES = 128 * MIB
# A load is stopped (507) once the container has less than this free while it runs.
GUARD_BYTES = 64 * MIB

# --- a pipeline's code/requirements.txt (custom_code.py) ----------------------------
# pip's own defaults (5 retries, 15 s each) make a container without internet wait
# minutes before it says so; one retry still rides out a dropped connection.
PIP_RETRIES = 1
PIP_TIMEOUT_SECONDS = 15
