"""Third-party start-up noise kept off both trainers' stderr unless --verbose; never an error.

What a TF run on a CPU machine printed before its first line of ours, and what is done about it:

- TensorFlow's C++ INFO lines (``cpu_feature_guard.cc ... optimized to use available CPU
  instructions``, ``oneDNN custom operations are on``, ``TFRecordDataset buffer_size is
  unspecified``): ``TF_CPP_MIN_LOG_LEVEL=1`` (set before TensorFlow loads, unless the
  environment sets it) drops INFO only: TF's warnings and errors still print.
- Lines TensorFlow prints while it loads, before that level applies, and its CUDA probe on a
  machine without an NVIDIA driver: absl's ``All log messages before absl::InitializeLog() is
  called are written to STDERR``, ``cudart_stub.cc ... Could not find cuda drivers``, the ERROR
  ``failed call to cuInit: ... UNKNOWN ERROR (303)`` and, in older builds, ``Unable to register
  cuDNN factory`` and the like. No log level hides the ERROR without hiding real errors, so
  ``tensorflow_startup`` filters file descriptor 2 by line while TensorFlow is imported and its
  devices are listed: those lines are dropped (the CUDA ones only where no NVIDIA driver is
  installed: with one, a failed cuInit is news), every other line passes unchanged, in order.
- absl's Python INFO lines (``Sharding callback duration`` at every TF checkpoint) and Hugging
  Face progress bars (``Writing model shards`` at export): ``configure``.

``--verbose`` (a run flag of both trainers) turns all of this off and sets
``TF_CPP_MIN_LOG_LEVEL=0``. The PyTorch trainer never imports TensorFlow; for it the flag only
concerns absl and progress bars.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator

# Noise wherever TensorFlow runs.
STARTUP_NOISE = (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate "
    r"compiler flags\.$",
    r"\] oneDNN custom operations are on\.",
)
# Noise only where no NVIDIA driver is installed: TensorFlow probing for a GPU that cannot be.
NO_GPU_NOISE = (
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers",
    r"\] failed call to cuInit: ",
    r"\] Unable to register cu(DNN|FFT|BLAS) factory",
    r"\] computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
)
NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0")
FORWARD_TIMEOUT_S = 10.0


def has_nvidia_driver() -> bool:
    return any(os.path.exists(path) for path in NVIDIA_DRIVER_FILES)


def noise_filter(*, gpu_driver: bool) -> Callable[[str], bool]:
    """Whether a stderr line is start-up noise (see the module doc)."""
    patterns = STARTUP_NOISE + (() if gpu_driver else NO_GPU_NOISE)
    noise = re.compile("|".join(f"(?:{p})" for p in patterns))
    return lambda line: noise.search(line) is not None


def configure(*, verbose: bool) -> None:
    """Python-side noise, for both trainers (call before transformers is imported)."""
    if verbose:
        return
    logging.getLogger("absl").setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers loads
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


@contextlib.contextmanager
def tensorflow_startup(*, verbose: bool) -> Iterator[None]:
    """Wrap ``import tensorflow`` and the first device listing (make_strategy): TF's C++ log
    level, and its load-time and CUDA-probe lines filtered out of stderr (module doc)."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    with filtered_stderr(noise_filter(gpu_driver=has_nvidia_driver())):
        yield


@contextlib.contextmanager
def filtered_stderr(is_noise: Callable[[str], bool]) -> Iterator[None]:
    """Drop the lines written to file descriptor 2 (by C++ and Python alike) for which
    ``is_noise``; pass every other line on unchanged and in order. Meant for a bounded stretch
    (a library's start-up): a thread forwards the lines until the block ends."""
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward, args=(read_end, original, is_noise),
                                 name="stderr-filter", daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the forwarder reads EOF
        forwarder.join(FORWARD_TIMEOUT_S)
        if not forwarder.is_alive():  # else a child process holds the pipe: leave fds open
            os.close(original)


def _forward(read_end: int, out: int, is_noise: Callable[[str], bool]) -> None:
    """Copy the pipe to ``out`` line by line, noise left out; drain it to EOF whatever
    happens, so no writer to fd 2 ever blocks on a full pipe."""
    pending, broken = b"", False
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        kept = b"".join(line + b"\n" for line in lines
                        if not is_noise(line.decode("utf-8", "replace")))
        broken = broken or not _write_all(out, kept)
    if pending and not broken and not is_noise(pending.decode("utf-8", "replace")):
        _write_all(out, pending)
    os.close(read_end)


def _write_all(fd: int, data: bytes) -> bool:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:  # stderr closed: nothing to show it on
        return False
    return True
