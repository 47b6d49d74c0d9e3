"""Which device the model runs on (device.py), decided without a GPU (CI has none):
counting GPUs from device files and CUDA_VISIBLE_DEVICES, the workers' GPU slots, and
gunicorn's command line on a GPU (no --preload: CUDA does not survive a fork). The GPU
itself: scripts/gpu-check.sh, on a machine that has one."""

import subprocess
import sys

import pytest

import device
import launch
from conftest import PROGRAM_DIR
from settings import Settings
from tuning import LOAD_SECONDS


@pytest.fixture
def dev(tmp_path):
    """A /dev with two NVIDIA GPUs, as the NVIDIA container runtime mounts them."""
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-modeset"):
        (tmp_path / name).touch()
    return str(tmp_path / "nvidia[0-9]*")


@pytest.mark.parametrize(
    "visible, count",
    [(None, 2), ("0", 1), ("0,1", 2), ("1,0,2", 2), ("", 0), ("-1", 0), ("GPU-5a1b", 1)],
)
def test_gpus_are_the_device_files_narrowed_by_cuda_visible_devices(dev, visible, count):
    assert device.visible_gpus(visible, dev, can_drive=True) == count


def test_an_image_without_cupy_runs_on_the_cpu_whatever_it_sees(dev):
    assert device.visible_gpus(None, dev, can_drive=False) == 0
    assert not device.has_cupy()  # the venv the tests run in is the cpu image's
    assert device.visible_gpus(None, dev) == 0


def test_no_device_files_no_gpu(tmp_path):
    assert device.visible_gpus("0", str(tmp_path / "nvidia[0-9]*"), can_drive=True) == 0


def test_workers_take_free_slots_spread_over_the_gpus_and_a_dead_ones_is_reused(tmp_path):
    taken = [device.take_slot(str(tmp_path), gpus=2, per_gpu=2) for _ in range(4)]
    assert taken == [0, 1, 0, 1]  # slot i is on GPU i % gpus
    with pytest.raises(device.DeviceError, match="all 4 GPU slots are taken"):
        device.take_slot(str(tmp_path), gpus=2, per_gpu=2)
    device._held.pop(1).close()  # the worker on slot 1 (GPU 1) ends: its lock goes
    assert device.take_slot(str(tmp_path), gpus=2, per_gpu=2) == 1
    for f in device._held:
        f.close()
    device._held.clear()


def test_on_the_cpu_use_says_so_and_takes_no_slot(tmp_path):
    assert device.use(0, 1, str(tmp_path / "slots")) == "CPU"
    assert not (tmp_path / "slots").exists()


def test_gunicorn_preloads_the_model_on_the_cpu_and_not_on_a_gpu():
    cpu = Settings.from_env({}, cpus=lambda: 2, gpus=lambda visible: 0)
    gpu = Settings.from_env({}, cpus=lambda: 8, gpus=lambda visible: 1)
    assert "--preload" in launch.gunicorn_command(cpu, "/tmp/s.sock")
    command = launch.gunicorn_command(gpu, "/tmp/s.sock")
    assert "--preload" not in command
    assert command[command.index("--workers") + 1] == "1"  # one per GPU


def test_the_gunicorn_master_imports_no_spacy_so_cuda_cannot_start_before_the_fork():
    """gunicorn imports the worker class in its master. In the transformers image,
    importing thinc asks cupy and torch for the GPU count, which starts CUDA: a forked
    worker could not use the GPU after that."""
    script = (
        "import sys, worker; print(sorted({'spacy', 'thinc', 'torch', 'cupy'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROGRAM_DIR, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_a_gpu_worker_may_take_a_load_before_gunicorn_ends_it():
    gpu = Settings.from_env({}, cpus=lambda: 8, gpus=lambda visible: 1)
    command = launch.gunicorn_command(gpu, "/tmp/s.sock")
    assert int(command[command.index("--timeout") + 1]) >= LOAD_SECONDS
