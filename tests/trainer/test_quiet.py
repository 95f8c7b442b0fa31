"""Start-up noise kept off stderr (trainer.quiet), and only noise: the lines TensorFlow 2.21
printed on this CPU machine before the change, verbatim, against lines that must show."""
import logging
import os
import subprocess
import sys

import pytest

from trainer import quiet

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STARTUP_NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796554725.550181   23938 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.",
    "I0000 00:00:1718012345.123456   1234 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors.",
]
NO_GPU_NOISE = [
    "I0000 00:00:1796554725.491759   23938 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1796554730.283730   23938 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1718012345.123456   1234 cuda_dnn.cc:8310] Unable to register cuDNN factory: "
    "Attempting to register factory for plugin cuDNN when one has already been registered",
]
MUST_SHOW = [
    "E0000 00:00:1796554730.283730   23938 op_kernel.cc:1830] OP_REQUIRES failed at "
    "save_restore_v2_ops.cc:160 : NOT_FOUND: /gs/bucket/ckpt; No such file or directory",
    "W0000 00:00:1796554730.283730   23938 loader.cc:12] something TF warns about",
    "Traceback (most recent call last):",
    "2026-12-06 10:58:50,286 trainer.run_setup: data check: 2 tfrecord shards match",
    "refusing to train: held-out data smaller than one batch",
]


def test_the_filter_drops_start_up_noise_and_nothing_else():
    without_gpu = quiet.noise_filter(gpu_driver=False)
    assert all(without_gpu(line) for line in STARTUP_NOISE + NO_GPU_NOISE)
    assert not any(without_gpu(line) for line in MUST_SHOW)
    with_gpu = quiet.noise_filter(gpu_driver=True)  # there, a failed cuInit is news
    assert all(with_gpu(line) for line in STARTUP_NOISE)
    assert not any(with_gpu(line) for line in NO_GPU_NOISE + MUST_SHOW)


FILTERED = """
import os, sys
from trainer import quiet
with quiet.filtered_stderr(quiet.noise_filter(gpu_driver=False)):
    os.write(2, sys.argv[1].encode() + b"\\n")  # as C++ writes: straight to fd 2
    print("from python", file=sys.stderr)
    os.write(2, b"a line in two ")
    os.write(2, b"writes\\nno newline at the end")
print("after", file=sys.stderr)
"""


def test_filtered_stderr_passes_other_lines_in_order_and_restores_stderr():
    lines = STARTUP_NOISE[:2] + MUST_SHOW[:1] + NO_GPU_NOISE[1:2] + MUST_SHOW[1:2]
    proc = subprocess.run([sys.executable, "-c", FILTERED, "\n".join(lines)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [MUST_SHOW[0], MUST_SHOW[1], "from python",
                                        "a line in two writes", "no newline at the endafter"]


def test_verbose_shows_everything_and_sets_tensorflow_to_log_all(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with quiet.tensorflow_startup(verbose=True):
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    with quiet.tensorflow_startup(verbose=False):
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"  # INFO off; warnings, errors show
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet.tensorflow_startup(verbose=False):
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"  # the user's own choice stays


@pytest.fixture
def absl_logger():
    absl = logging.getLogger("absl")
    before = absl.level
    absl.setLevel(logging.NOTSET)
    yield absl
    absl.setLevel(before)


@pytest.mark.parametrize("verbose", [False, True])
def test_absl_info_and_progress_bars_show_only_with_verbose(verbose, monkeypatch, absl_logger):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.delitem(sys.modules, "transformers", raising=False)  # its bars stay as they are
    quiet.configure(verbose=verbose)
    assert absl_logger.getEffectiveLevel() == (logging.getLogger().getEffectiveLevel()
                                               if verbose else logging.WARNING)
    assert ("HF_HUB_DISABLE_PROGRESS_BARS" in os.environ) is not verbose
