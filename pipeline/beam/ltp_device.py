"""``--ltp_device``: where a neural LTP model runs on the workers.

Values: ``cpu`` (the default), ``cuda`` / ``cuda:N`` (a GPU of the worker), ``auto`` (``cuda``
where the worker's torch sees a GPU, else ``cpu``, decided on each worker: the launcher may have
no GPU while the workers do). The spelling is checked when the flags are read
(:func:`check_device`); a legacy (perceptron) model, which runs on the CPU only, refuses
``cuda`` before anything runs (:func:`check_model_device`; ``auto`` means the CPU for it). On a
worker, :func:`worker_device` turns the flag into the torch device the segmenter moves the model
to, and refuses ``cuda`` where torch sees no GPU, naming the worker's torch build.

A neural model on the CPU runs single-threaded (``torch.set_num_threads(1)``), like the legacy
model: Beam runs one worker per core, and torch's own thread pool would make the workers of a
machine compete for the same cores.
"""
from __future__ import annotations

import re

DEVICES = "cpu, cuda, cuda:N (N a GPU index) or auto"
_DEVICE = re.compile(r"cpu|auto|cuda(:[0-9]+)?")


def check_device(value: object) -> str:
    """``value`` if it is a device --ltp_device takes, else ValueError."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ValueError(f"--ltp_device {value!r} is not one of {DEVICES}")
    return value


def check_model_device(device: str, kind: str | None) -> None:
    """Refuse a GPU for a legacy model (``kind`` as the manifest's ``ltp_model.kind``: a hub
    model's kind is known only when a worker loads it, which then refuses it)."""
    if kind == "legacy" and device not in ("cpu", "auto"):
        raise ValueError(f"--ltp_device={device} moves a neural LTP model; --ltp_model is a "
                         "legacy (perceptron) model, which runs on the CPU only: drop "
                         "--ltp_device (or pass cpu or auto), or pass a neural model")


def worker_device(device: str, *, neural: bool) -> str:
    """The torch device this worker runs the model on, for ``--ltp_device=device``. For a
    legacy model (``neural`` false) torch is not imported: ``auto`` is ``cpu``. For a neural
    model on the CPU torch is set to one thread (see the module docstring)."""
    check_device(device)
    if not neural:
        return "cpu" if device == "auto" else device
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"--ltp_device={device}, but torch on this worker sees no GPU (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'}): run the "
                "workers on GPU machines with a CUDA build of torch, or pass "
                "--ltp_device=auto (GPU where there is one) or cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"--ltp_device={device}, but this worker has "
                               f"{torch.cuda.device_count()} GPU(s) (cuda:0 is the first)")
    if device == "cpu":
        torch.set_num_threads(1)
    return device
