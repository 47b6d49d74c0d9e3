"""Which device runs the model: a GPU when the image can drive one (the transformers
variant, which has cupy) and the container sees one, else the CPU.

On a GPU every worker loads its own copy of the model after gunicorn forks it (a CUDA
context does not survive a fork, so launch.py leaves out --preload), on the GPU of the
first free slot: MODEL_SERVER_WORKERS_PER_GPU slots per GPU, each a lock file the worker
holds for its life. A worker that dies frees its slot with its lock, and the worker that
replaces it takes that slot, so the workers stay spread over the GPUs.

No CUDA call is made to count the GPUs: the master must not start a CUDA context before
it forks, so they are counted from their device files, as the NVIDIA container runtime
mounts them (/dev/nvidia0, /dev/nvidia1, ...), and CUDA_VISIBLE_DEVICES.
"""

import fcntl
import glob
import importlib.util
import logging
import os
import re
import sys
from typing import IO

log = logging.getLogger("ner.device")
DEVICE_FILES = "/dev/nvidia[0-9]*"
# The slot this process holds, open for the life of the process (its lock is the slot).
_held: list[IO[str]] = []


class DeviceError(RuntimeError):
    """No device to run on; the message says why in one line."""


def has_cupy() -> bool:
    """The image can run spaCy on a GPU (cupy is installed); nothing is imported."""
    return importlib.util.find_spec("cupy") is not None


def visible_gpus(
    cuda_visible_devices: str | None,
    device_files: str = DEVICE_FILES,
    can_drive: bool | None = None,
) -> int:
    """The GPUs this container may use: its GPU device files, narrowed by
    CUDA_VISIBLE_DEVICES as CUDA narrows them (empty or -1: none); 0 in an image that
    cannot drive a GPU (can_drive; default: has_cupy())."""
    if not (has_cupy() if can_drive is None else can_drive):
        return 0
    found = len([f for f in glob.glob(device_files) if re.search(r"nvidia\d+$", f)])
    if cuda_visible_devices is None:
        return found
    listed = [d for d in cuda_visible_devices.split(",") if d.strip()]
    if not listed or listed[0].strip().startswith("-"):
        return 0
    return min(found, len(listed))


def take_slot(folder: str, gpus: int, per_gpu: int) -> int:
    """Lock the first free of gpus x per_gpu slot files in folder; that slot's GPU."""
    os.makedirs(folder, exist_ok=True)
    for slot in range(gpus * per_gpu):
        f = open(os.path.join(folder, f"gpu-slot-{slot}.lock"), "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        _held.append(f)
        return slot % gpus
    raise DeviceError(f"all {gpus * per_gpu} GPU slots are taken ({gpus} GPUs x {per_gpu})")


def use(gpus: int, per_gpu: int, slot_folder: str) -> str:
    """Put this process on its device before the model loads; what it is, for the log."""
    if not gpus:
        return "CPU"
    gpu = take_slot(slot_folder, gpus, per_gpu)
    import spacy  # here: after the fork, in the worker that runs the model

    try:
        spacy.require_gpu(gpu)
    except Exception as e:  # cupy raises its own CUDA errors
        raise DeviceError(f"cannot use GPU {gpu}: {type(e).__name__}: {e}") from None
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(gpu)["name"].decode()
    return f"GPU {gpu} ({name})"


def torch_threads() -> int | None:
    """torch's intra-op threads, where the pipeline brought torch in; else None."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None
