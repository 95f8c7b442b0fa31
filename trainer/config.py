"""Model and training configuration shared by the PyTorch and TF2 trainers.

Plain dataclasses, no framework imports: both trainers, the tests and the HF exporter read the
same presets. A model preset is a YAML file of ``ModelConfig`` fields (the fields of Hugging
Face's ``BertConfig``, so the export is a rename-free copy); a training preset is a YAML file of
``TrainConfig`` fields. Unknown keys are refused rather than ignored, because a misspelt key in a
config silently keeping its default is the classic way to train the wrong model.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, TypeVar

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

    vocab_size: Optional[int] = None
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

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a dict; also valid ``BertConfig(**d)`` keyword arguments."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run (one phase: a fixed sequence length).

    batch_size is per replica (per GPU process / per TPU core or chip replica); the global batch
    is batch_size * replicas * grad_accum. max_seq_length / max_predictions_per_seq state the
    phase this config was tuned for; None means "whatever the data's manifest says", and a
    number is checked against the manifest before any step.
    """

    batch_size: int = 32
    grad_accum: int = 1
    num_train_steps: int = 1000
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-6
    max_grad_norm: float = 1.0
    max_seq_length: Optional[int] = None
    max_predictions_per_seq: Optional[int] = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 1000
    eval_steps: int = 100
    log_every: int = 100
    seed: int = 12345
    shuffle_buffer: int = 10000
    num_workers: int = 0
    mixed_precision: str = "bf16"
    steps_per_execution: int = 1

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, "
                             f"got {self.mixed_precision!r}")
        for name in ("batch_size", "grad_accum", "num_train_steps", "log_every",
                     "checkpoint_every", "eval_every", "steps_per_execution"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.num_workers < 0 or self.shuffle_buffer < 0:
            raise ValueError("warmup_steps, num_workers and shuffle_buffer must be >= 0")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def from_dict(cls: type, values: Mapping[str, Any], *, source: str = "config") -> Any:
    """Build dataclass ``cls`` from ``values``, refusing unknown keys (typos) by name."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} keys {unknown}; known: {sorted(known)}")
    return cls(**dict(values))


def load_yaml(path: str) -> Dict[str, Any]:
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
