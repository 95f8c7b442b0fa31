"""Shared pytest fixtures (keep this file small; add fixtures below)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The job as a user starts it, in a Python where Beam's optional GCP client is missing (as
# without the gcp extra): Beam then warns on import, and the job must keep that out.
WITHOUT_APITOOLS = ("import sys; sys.modules['apitools'] = None; "
                    "from pipeline.run import main; main(sys.argv[1:])")


def run_cli(args, cache):
    """``python -m pipeline.run ARGS`` (as above) with ``BERT_WWM_CACHE=cache``; returns
    (stdout, stderr), failing the test on a non-zero exit."""
    env = dict(os.environ, BERT_WWM_CACHE=str(cache))
    proc = subprocess.run([sys.executable, "-c", WITHOUT_APITOOLS, *args], env=env,
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


@pytest.fixture(scope="session", autouse=True)
def bert_wwm_cache(tmp_path_factory):
    """Point ``BERT_WWM_CACHE`` at one pytest temp dir per session unless the caller set it
    (set it to a persistent directory to reuse the default LTP model between sessions)."""
    if not os.environ.get("BERT_WWM_CACHE"):
        os.environ["BERT_WWM_CACHE"] = str(tmp_path_factory.mktemp("bert_wwm_cache"))
    return os.environ["BERT_WWM_CACHE"]


@pytest.fixture(scope="session")
def first_run(bert_wwm_cache, tmp_path_factory):
    """The README's first command, run as a user's very first run: the default job in an
    empty cache, which builds the default LTP model (~30 s). The session's cache is used when
    it is still empty, so the model is built once per session for every test that needs it;
    a cache that already holds the model (BERT_WWM_CACHE set by the caller) is not emptied:
    the first run then gets a fresh one. Returns stdout, stderr, the cache and the model."""
    from pipeline.default_segmenter import cache as model_cache

    cache = Path(bert_wwm_cache)
    if model_cache.is_complete(cache / model_cache.MODEL_NAME):
        cache = tmp_path_factory.mktemp("first_run_cache")
    out = tmp_path_factory.mktemp("first_run") / "output"
    stdout, stderr = run_cli([f"--output_dir={out}"], cache)
    return {"stdout": stdout, "stderr": stderr, "cache": cache, "output": out,
            "model": cache / model_cache.MODEL_NAME}


@pytest.fixture(scope="session")
def default_ltp_model_dir(first_run):
    """The built-in legacy LTP model (trained on first use, ~30 s), as a directory path."""
    return first_run["model"]


@pytest.fixture(scope="session")
def small_ltp_model_dir(tmp_path_factory):
    """A throw-away legacy LTP model (1,500 training paragraphs, 1 epoch: a few seconds), for
    tests that need real segmentation but not the default model's accuracy. Its predictions
    are deterministic (single-threaded perceptron, no shuffling), so outputs made with it are
    stable across builds."""
    from pipeline.default_segmenter.cache import build_model

    return str(build_model(tmp_path_factory.mktemp("ltp") / "small-model", epochs=1,
                           max_train_paragraphs=1500))


@pytest.fixture(scope="session")
def neural_ltp_model_dir(tmp_path_factory):
    """A neural LTP model with random weights (``pipeline.dev.neural_ltp``, tiny shape: 32
    hidden, 2 layers; built offline in about a second once torch is imported), loadable by
    ``ltp.LTP(path)``. It segments at random but deterministically (fixed seed)."""
    from pipeline.dev.neural_ltp import build_neural_model

    return str(build_neural_model(tmp_path_factory.mktemp("ltp") / "tiny-neural"))
