"""Shared pytest fixtures (keep this file small; add fixtures below)."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def bert_wwm_cache(tmp_path_factory):
    """Point ``BERT_WWM_CACHE`` at one pytest temp dir per session unless the caller set it
    (set it to a persistent directory to reuse the default LTP model between sessions)."""
    if not os.environ.get("BERT_WWM_CACHE"):
        os.environ["BERT_WWM_CACHE"] = str(tmp_path_factory.mktemp("bert_wwm_cache"))
    return os.environ["BERT_WWM_CACHE"]


@pytest.fixture(scope="session")
def default_ltp_model_dir(bert_wwm_cache):
    """The built-in legacy LTP model (trained on first use, ~30 s), as a directory path."""
    from pipeline.core.ltp_default import default_model_dir

    return default_model_dir()


@pytest.fixture(scope="session")
def small_ltp_model_dir(tmp_path_factory):
    """A throw-away legacy LTP model (1,500 training paragraphs, 1 epoch: a few seconds), for
    tests that need real segmentation but not the default model's accuracy. Its predictions
    are deterministic (single-threaded perceptron, no shuffling), so outputs made with it are
    stable across builds."""
    from pipeline.core.ltp_default import build_model

    return str(build_model(tmp_path_factory.mktemp("ltp") / "small-model", epochs=1,
                           max_train_paragraphs=1500))
