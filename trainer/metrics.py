"""Google's pretraining metrics from additive sums, and the metrics.jsonl both trainers write.

Both trainers compute, per batch, the sums in ``sum_keys(next_sentence)`` (float32 scalars; MLM
terms weighted by ``masked_lm_weights``, so padded predictions count 0). Sums add across
micro-batches, steps and replicas before anything is divided, so a metric over N replicas is the
metric of one replica holding the whole global batch. ``finish`` turns sums into
google-research/bert ``run_pretraining``'s metric names with one set of denominators for both
frameworks.

The sentence task of the data (``pipeline.schema.sentence_task``: the manifest's
``next_sentence``) decides which metrics exist. The 2-way head on [CLS] (``nsp_*`` sums) is
scored under Google's names for NSP data, under ALBERT's run_pretraining names for SOP data,
and not at all for single-segment data, which trains masked-LM only::

    nsp   loss, masked_lm_accuracy, masked_lm_loss, next_sentence_accuracy, next_sentence_loss
    sop   loss, masked_lm_accuracy, masked_lm_loss, sentence_order_accuracy, sentence_order_loss
    none  loss, masked_lm_accuracy, masked_lm_loss                     (loss = masked_lm_loss)

metrics.jsonl: one JSON object per line, ``{"split": "train"|"eval", "step": N, ...}`` where
``step`` counts optimizer updates done. Eval lines hold ``eval_keys(next_sentence)``; train
lines hold ``train_keys(next_sentence, tokens=True)`` (the same, over the updates since the
previous train line, plus grad_norm, learning_rate, examples_per_sec, tokens_per_sec and
padding_fraction; ``tokens=False``, the default, leaves out the last two, for a caller that
does not count tokens). Written by one process (rank 0), in step order; a non-finite loss
stops the run right after its line is written.

Tokens. ``tokens`` is the number of real (non-padding) token slots of a batch, the sum of its
``attention_mask`` (``input_mask``); ``token_slots`` is the number of all its token slots
(batch x padded length). Both add over micro-batches, steps and replicas like the metric sums
(``TOKEN_SUM_KEYS``); ``finish_train`` turns them into ``tokens_per_sec`` (real tokens of the
global batches per second) and ``padding_fraction`` (padding slots / all slots of the batches
since the previous train line). Plain numbers: any framework can count them.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping

from pipeline import schema
from trainer import storage

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
MLM_SUM_KEYS = ("mlm_loss_sum", "mlm_weight_sum", "mlm_correct_sum")
# The 2-way sentence head's sums (NSP or SOP: the same head, schema.LABEL_FEATURE as labels).
PAIR_SUM_KEYS = ("nsp_loss_sum", "nsp_correct_sum")
# Google adds this to the MLM weight sum so that a batch without predictions divides by ~0
# safely. Both trainers' training losses use it too (``mlm_denominator``).
MLM_DENOMINATOR_EPS = 1e-5
MLM_METRICS = ("masked_lm_accuracy", "masked_lm_loss")
# (accuracy, loss) of the sentence head per sentence task: Google's names for NSP, ALBERT's
# run_pretraining names for SOP, none without sentence pairs.
PAIR_METRICS = {"nsp": ("next_sentence_accuracy", "next_sentence_loss"),
                "sop": ("sentence_order_accuracy", "sentence_order_loss"),
                "none": ()}
TRAIN_EXTRA_KEYS = ("grad_norm", "learning_rate", "examples_per_sec")
# What a train line adds when its trainer counts tokens (``finish_train(tokens=...)``), and the
# two sums they are made of (real tokens, all token slots; see the module doc).
TOKEN_KEYS = ("tokens_per_sec", "padding_fraction")
TOKEN_SUM_KEYS = ("tokens", "token_slots")


def has_pair_head(next_sentence: str) -> bool:
    """Whether data of this sentence task trains the 2-way head (nsp, sop) or not (none)."""
    if next_sentence not in PAIR_METRICS:
        raise ValueError(f"next_sentence must be one of {schema.SENTENCE_TASKS}, "
                         f"got {next_sentence!r}")
    return bool(PAIR_METRICS[next_sentence])


def sum_keys(next_sentence: str) -> tuple[str, ...]:
    """The per-batch sums of this task: MLM terms, the sentence head's (nsp, sop), examples."""
    pair = PAIR_SUM_KEYS if has_pair_head(next_sentence) else ()
    return MLM_SUM_KEYS + pair + ("num_examples",)


def metric_names(next_sentence: str) -> tuple[str, ...]:
    """Google's metric names that data of this task has (see the module doc)."""
    has_pair_head(next_sentence)  # refuses an unknown task
    return MLM_METRICS + PAIR_METRICS[next_sentence]


def eval_keys(next_sentence: str) -> tuple[str, ...]:
    """An eval line's keys: loss (MLM + sentence head), the metrics, examples scored."""
    return ("loss",) + metric_names(next_sentence) + ("examples",)


def train_keys(next_sentence: str, *, tokens: bool = False) -> tuple[str, ...]:
    """A train line's keys; with ``tokens`` (both trainers count them) also ``TOKEN_KEYS``."""
    return eval_keys(next_sentence) + TRAIN_EXTRA_KEYS + (TOKEN_KEYS if tokens else ())


def token_counts(attention_mask_sum: float, slots: float) -> dict[str, float]:
    """``TOKEN_SUM_KEYS`` of one batch from plain numbers: the sum of its attention mask (real
    tokens) and its number of token slots (rows x padded length)."""
    return {"tokens": float(attention_mask_sum), "token_slots": float(slots)}


def mlm_denominator(weight_sum):
    """What the MLM loss sum is divided by (works on floats and framework tensors alike)."""
    return weight_sum + MLM_DENOMINATOR_EPS


def add(total: Mapping | None, more: Mapping) -> dict:
    """Key-wise sum of two sum dicts; ``total`` None starts a new one."""
    return dict(more) if total is None else {k: total[k] + more[k] for k in more}


def finish(sums: Mapping[str, float], next_sentence: str) -> dict[str, float]:
    """``eval_keys(next_sentence)`` from summed ``sum_keys(next_sentence)`` (over batches,
    steps and replicas): MLM terms divided by the weight sum + epsilon, the sentence head's by
    the number of examples; loss is their sum (masked_lm_loss alone for "none")."""
    w = mlm_denominator(float(sums["mlm_weight_sum"]))
    n = max(float(sums["num_examples"]), 1.0)
    values = {"masked_lm_accuracy": float(sums["mlm_correct_sum"]) / w,
              "masked_lm_loss": float(sums["mlm_loss_sum"]) / w}
    loss = values["masked_lm_loss"]
    if has_pair_head(next_sentence):
        accuracy, pair_loss = PAIR_METRICS[next_sentence]
        values[accuracy] = float(sums["nsp_correct_sum"]) / n
        values[pair_loss] = float(sums["nsp_loss_sum"]) / n
        loss += values[pair_loss]
    return {"loss": loss, **values, "examples": float(sums["num_examples"])}


def finish_train(sums: Mapping[str, float], next_sentence: str, *, grad_norm_sum: float,
                 steps: int, learning_rate: float, seconds: float, tokens: float | None = None,
                 token_slots: float | None = None) -> dict[str, float]:
    """``train_keys(next_sentence)`` for a window of ``steps`` updates that took ``seconds``.

    grad_norm is the mean over the window of the global gradient norm before clipping;
    learning_rate is the one the window's last update used. With ``tokens`` and
    ``token_slots`` (the window's real tokens and token slots, summed over replicas), the
    line also holds ``TOKEN_KEYS`` (``train_keys(next_sentence, tokens=True)``):
    tokens_per_sec = tokens / seconds and padding_fraction = 1 - tokens / token_slots.
    """
    values = finish(sums, next_sentence)
    seconds = max(seconds, 1e-9)
    values = {**values, "grad_norm": float(grad_norm_sum) / steps,
              "learning_rate": float(learning_rate),
              "examples_per_sec": values["examples"] / seconds}
    if (tokens is None) != (token_slots is None):
        raise ValueError("tokens and token_slots go together")
    if tokens is not None:
        slots = float(token_slots)
        values["tokens_per_sec"] = float(tokens) / seconds
        values["padding_fraction"] = (slots - float(tokens)) / slots if slots > 0 else 0.0
    return values


class MetricsLog:
    """output_dir/metrics.jsonl, a log line, and TensorBoard scalars through ``scalars``.

    next_sentence: the data's sentence task, which fixes the keys every line must hold.
    scalars(split, step, values): the framework's TensorBoard writer (tensorboard/<split>/ in
    the run directory), or None. active: whether this process writes (rank 0 of a PyTorch
    run); every process checks the loss, so all ranks stop together on a non-finite one.
    tokens: train lines hold ``TOKEN_KEYS`` too (``train_keys(..., tokens=True)``).
    """

    def __init__(self, output_dir: str, *, next_sentence: str,
                 scalars: Callable[[str, int, dict[str, float]], None] | None = None,
                 active: bool = True, tokens: bool = False):
        self.path = storage.join(output_dir, METRICS_FILE)
        self.keys = {"train": train_keys(next_sentence, tokens=tokens),
                     "eval": eval_keys(next_sentence)}
        self.scalars = scalars
        self.active = active

    def write(self, split: str, step: int, values: Mapping[str, float]) -> None:
        expected = self.keys.get(split)
        if expected is None or tuple(values) != expected:
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
