"""The command line of both trainers, defined once: ``train_tpu.py`` and ``train_torch.py``
build their parsers here, so a flag has one name and one meaning in both.

Run flags say where things are and how the run directory is treated; every ``TrainConfig`` field
is a flag too (``--batch_size 8``), with the field's help text, overriding the --train_config
preset. Three flags concern one framework: --tpu (TF; the PyTorch trainer refuses it rather
than run elsewhere), --num_workers (PyTorch) and --steps_per_execution (TF).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from trainer.config import TrainConfig

RUN_FLAGS = (
    ("--data_dir", dict(required=True, help="pipeline output dir to train on (manifest.json)")),
    ("--train_config", dict(required=True, help="training preset, configs/train/*.yaml")),
    ("--output_dir", dict(required=True, help="the run directory: run_config.json, "
                                              "checkpoints/, metrics.jsonl, tensorboard/. A "
                                              "rerun with the same configuration resumes here")),
    ("--model_config", dict(help="model preset, configs/model/*.yaml; required unless "
                                 "--init_checkpoint (whose shape it must match) gives one")),
    ("--eval_data_dir", dict(help="held-out pipeline output dir, scored every eval_every")),
    ("--init_checkpoint", dict(help="Hugging Face BERT dir to start from (e.g. a phase-1 "
                                    "export); ignored when resuming from a checkpoint")),
    ("--export_hf", dict(help="write a Hugging Face model dir here after the last step")),
    ("--overwrite", dict(action="store_true",
                         help="start over: delete this trainer's files in --output_dir "
                              "(whatever run they hold) instead of resuming or refusing")),
    ("--stop_at_step", dict(type=int, help="stop after this update (schedule unchanged); "
                                           "rerun the same command to continue")),
    ("--skip_data_check", dict(action="store_true",
                                help="train without comparing each shard's size and sha256 "
                                     "with the data's manifest.json (read in full before the "
                                     "first step, at every start and resume)")),
    ("--tpu", dict(help="TF only: TPU name or grpc address, 'local' on a TPU VM")),
    ("--compile", dict(nargs="?", const="inductor", default=None, metavar="BACKEND",
                       help="PyTorch: torch.compile the model with this backend (inductor "
                            "when none is named; aot_eager needs no C++ compiler), static "
                            "shapes: one graph per batch shape, i.e. per length bin, compiled "
                            "when the bin is first drawn. TF: XLA-compile the train and eval "
                            "steps (jit_compile) on GPUs and CPUs as on TPUs, one program per "
                            "bin; BACKEND is ignored")),
    ("--verbose", dict(action="store_true",
                       help="show third-party start-up noise, hidden by default (warnings and "
                            "errors always show): TensorFlow's C++ INFO lines and, without an "
                            "NVIDIA driver, its CUDA probing (failed cuInit ...); absl's INFO "
                            "lines; Hugging Face progress bars (trainer/quiet.py)")),
)


def _flag_type(name: str) -> type:
    """int/float/str of a TrainConfig field (Optional[int] -> int)."""
    hint = typing.get_type_hints(TrainConfig)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    for flag, kwargs in RUN_FLAGS:
        parser.add_argument(flag, **kwargs)
    group = parser.add_argument_group("TrainConfig fields (override --train_config)")
    for field in dataclasses.fields(TrainConfig):
        group.add_argument(f"--{field.name}", type=_flag_type(field.name), default=None,
                           help=field.metadata["help"])
    return parser


def parse_args(argv: list[str] | None, *, description: str) -> argparse.Namespace:
    return build_parser(description).parse_args(argv)


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given on the command line (None: keep the preset's value)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
