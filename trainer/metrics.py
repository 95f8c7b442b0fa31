"""Google's pretraining metrics from additive sums, and the metrics.jsonl both trainers write.

Both trainers compute, per batch, the sums in ``SUM_KEYS`` (float32 scalars; MLM terms weighted
by ``masked_lm_weights``, so padded predictions count 0). Sums add across micro-batches, steps
and replicas before anything is divided, so a metric over N replicas is the metric of one
replica holding the whole global batch. ``finish`` turns sums into google-research/bert
``run_pretraining``'s metric names with one set of denominators for both frameworks.

metrics.jsonl: one JSON object per line, ``{"split": "train"|"eval", "step": N, ...}`` where
``step`` counts optimizer updates done. Eval lines hold ``EVAL_KEYS``; train lines hold
``TRAIN_KEYS`` (the same, over the updates since the previous train line, plus grad_norm,
learning_rate and examples_per_sec). Written by one process (rank 0), in step order; a
non-finite loss stops the run right after its line is written.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Callable, Dict, Mapping, Optional

from trainer import storage

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SUM_KEYS = ("mlm_loss_sum", "mlm_weight_sum", "mlm_correct_sum", "nsp_loss_sum",
            "nsp_correct_sum", "num_examples")
# Google adds this to the MLM weight sum so that a batch without predictions divides by ~0
# safely. Both trainers' training losses use it too (``mlm_denominator``).
MLM_DENOMINATOR_EPS = 1e-5
METRIC_NAMES = ("masked_lm_accuracy", "masked_lm_loss", "next_sentence_accuracy",
                "next_sentence_loss")
# loss = masked_lm_loss + next_sentence_loss; examples = examples the line's metrics cover.
EVAL_KEYS = ("loss",) + METRIC_NAMES + ("examples",)
TRAIN_KEYS = EVAL_KEYS + ("grad_norm", "learning_rate", "examples_per_sec")
SPLITS = ("train", "eval")


def mlm_denominator(weight_sum):
    """What the MLM loss sum is divided by (works on floats and framework tensors alike)."""
    return weight_sum + MLM_DENOMINATOR_EPS


def add(total: Optional[Mapping], more: Mapping) -> Dict:
    """Key-wise sum of two sum dicts; ``total`` None starts a new one."""
    return dict(more) if total is None else {k: total[k] + more[k] for k in more}


def finish(sums: Mapping[str, float]) -> Dict[str, float]:
    """``EVAL_KEYS`` from summed ``SUM_KEYS`` (over batches, steps and replicas)."""
    w = mlm_denominator(float(sums["mlm_weight_sum"]))
    n = max(float(sums["num_examples"]), 1.0)
    values = {"masked_lm_accuracy": float(sums["mlm_correct_sum"]) / w,
              "masked_lm_loss": float(sums["mlm_loss_sum"]) / w,
              "next_sentence_accuracy": float(sums["nsp_correct_sum"]) / n,
              "next_sentence_loss": float(sums["nsp_loss_sum"]) / n}
    return {"loss": values["masked_lm_loss"] + values["next_sentence_loss"], **values,
            "examples": float(sums["num_examples"])}


def finish_train(sums: Mapping[str, float], *, grad_norm_sum: float, steps: int,
                 learning_rate: float, seconds: float) -> Dict[str, float]:
    """``TRAIN_KEYS`` for a window of ``steps`` updates that took ``seconds``.

    grad_norm is the mean over the window of the global gradient norm before clipping;
    learning_rate is the one the window's last update used.
    """
    values = finish(sums)
    return {**values, "grad_norm": float(grad_norm_sum) / steps,
            "learning_rate": float(learning_rate),
            "examples_per_sec": values["examples"] / max(seconds, 1e-9)}


class MetricsLog:
    """output_dir/metrics.jsonl, a log line, and TensorBoard scalars through ``scalars``.

    scalars(split, step, values): the framework's TensorBoard writer (tensorboard/<split>/ in
    the run directory), or None. active: whether this process writes (rank 0 of a PyTorch
    run); every process checks the loss, so all ranks stop together on a non-finite one.
    """

    def __init__(self, output_dir: str, *,
                 scalars: Optional[Callable[[str, int, Dict[str, float]], None]] = None,
                 active: bool = True):
        self.path = storage.join(output_dir, METRICS_FILE)
        self.scalars = scalars
        self.active = active

    def write(self, split: str, step: int, values: Mapping[str, float]) -> None:
        expected = TRAIN_KEYS if split == "train" else EVAL_KEYS
        if split not in SPLITS or tuple(values) != expected:
            raise ValueError(f"a {split!r} line holds {expected}, got {tuple(values)}")
        if self.active:
            line = json.dumps({"split": split, "step": step, **values})
            storage.append_text(self.path, line + "\n")
            if self.scalars is not None:
                self.scalars(split, step, dict(values))
            log.info("%s step %d: %s", split, step,
                     " ".join(f"{k}={v:.5g}" for k, v in values.items()))
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(f"{split} loss is {values['loss']} at step {step}")

    def trim(self, last_step: int) -> None:
        """Drop lines after ``last_step``: a run resumed from that checkpoint logs them again."""
        if not self.active or not storage.exists(self.path):
            return
        lines = storage.read_text(self.path).splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line)["step"] <= last_step]
        if len(kept) != len(lines):
            storage.write_text(self.path, "".join(kept))


def read(path: str) -> list:
    """The lines of a metrics.jsonl as dicts (for scripts and tests)."""
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]
