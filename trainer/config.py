"""Model and training configuration shared by the PyTorch and TF2 trainers.

Plain dataclasses, no framework imports: both trainers, the tests and the HF exporter read the
same presets. A model preset is a YAML file of ``ModelConfig`` fields (the fields of Hugging
Face's ``BertConfig``, so the export is a rename-free copy); a training preset is a YAML file of
``TrainConfig`` fields. Unknown keys are refused rather than ignored, because a misspelt key in a
config silently keeping its default is the classic way to train the wrong model.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

import yaml

OPTIMIZERS = ("adamw", "lamb")
MIXED_PRECISION = ("bf16", "fp32")

C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """BERT architecture; field names and meanings are ``transformers.BertConfig``'s.

    vocab_size may be None in a preset: the trainers then take it from the data's manifest
    (``data_contract.resolve_model_config``), so one preset serves English and Chinese vocabs.
    """

    vocab_size: int | None = None
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict; also valid ``BertConfig(**d)`` keyword arguments."""
        return dataclasses.asdict(self)


def _option(default: Any, help: str) -> Any:
    """A TrainConfig field whose help text is also its command-line flag's (trainer/flags.py)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run (one phase: a fixed sequence length).

    batch_size is per replica (per GPU process / per TPU core or chip replica); the global batch
    is batch_size * replicas * grad_accum. max_seq_length / max_predictions_per_seq state the
    phase this config was tuned for; None means "whatever the data's manifest says", and a
    number is checked against the manifest before any step. Each field is also a flag of both
    trainers, with the help text given here.
    """

    batch_size: int = _option(32, "examples per replica (GPU process, TPU core) per micro-batch")
    grad_accum: int = _option(1, "micro-batches per optimizer update")
    num_train_steps: int = _option(1000, "optimizer updates of the whole run (the schedule's end)")
    learning_rate: float = _option(1e-4, "peak learning rate (after warmup)")
    warmup_steps: int = _option(100, "updates of linear warmup from 0")
    weight_decay: float = _option(0.01, "decoupled weight decay (not on biases and LayerNorms)")
    optimizer: str = _option("adamw", "adamw or lamb (bias-corrected, Keras's Lamb rule)")
    adam_beta1: float = _option(0.9, "first-moment decay")
    adam_beta2: float = _option(0.999, "second-moment decay")
    adam_epsilon: float = _option(1e-6, "added to the root of the second moment")
    max_grad_norm: float = _option(1.0, "clip gradients to this global norm; <= 0: no clipping")
    max_seq_length: int | None = _option(None, "the phase's sequence length; checked "
                                                  "against the data's manifest")
    max_predictions_per_seq: int | None = _option(None, "the phase's predictions per "
                                                           "sequence; checked against the manifest")
    checkpoint_every: int = _option(1000, "save a checkpoint every N updates (and at the end)")
    keep_checkpoints: int = _option(3, "newest checkpoints kept, older ones deleted; 0: all")
    eval_every: int = _option(1000, "evaluate every N updates (and at num_train_steps)")
    eval_steps: int = _option(100, "batches per replica scored at each evaluation: full "
                                   "batches only, never more than one pass over the held-out "
                                   "data, the same examples every time")
    log_every: int = _option(100, "write a train line to metrics.jsonl every N updates")
    seed: int = _option(12345, "initial weights, dropout and the data order")
    shuffle_buffer: int = _option(10000, "examples shuffled together when reading")
    num_workers: int = _option(0, "PyTorch only: DataLoader worker processes per rank")
    mixed_precision: str = _option("bf16", "bf16 (on GPUs and TPUs; CPUs stay fp32) or fp32")
    steps_per_execution: int = _option(1, "TF only: updates per host round trip (TPUs)")

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, "
                             f"got {self.mixed_precision!r}")
        for name in ("batch_size", "grad_accum", "num_train_steps", "log_every",
                     "checkpoint_every", "eval_every", "eval_steps", "steps_per_execution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.num_workers < 0 or self.shuffle_buffer < 0:
            raise ValueError("warmup_steps, num_workers and shuffle_buffer must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def from_dict(cls: type, values: Mapping[str, Any], *, source: str = "config") -> Any:
    """Build dataclass ``cls`` from ``values``, refusing unknown keys (typos) by name."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} keys {unknown}; known: {sorted(known)}")
    return cls(**dict(values))


def load_yaml(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(values).__name__}")
    return values


def load_model_config(path: str) -> ModelConfig:
    """Read a ``configs/model/*.yaml`` preset."""
    return from_dict(ModelConfig, load_yaml(path), source=path)


def load_train_config(path: str) -> TrainConfig:
    """Read a ``configs/train/*.yaml`` preset."""
    return from_dict(TrainConfig, load_yaml(path), source=path)


def with_overrides(config: C, overrides: Mapping[str, Any]) -> C:
    """``config`` with the non-None entries of ``overrides`` replaced (e.g. CLI flags)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return from_dict(type(config), {**dataclasses.asdict(config), **given}, source="overrides")


def learning_rate(step: int, *, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """BERT's schedule: linear warmup from 0 to base_lr, then linear decay to 0 at total_steps.

    ``step`` is the number of optimizer updates already applied (0 for the first update), so the
    first update uses base_lr / warmup_steps rather than 0 (a wasted step). Past total_steps the
    rate stays 0. Pure, so both trainers and the tests share one definition.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return 0.0
    return base_lr * (total_steps - step) / max(1, total_steps - warmup_steps)
