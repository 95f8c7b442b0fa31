"""Pretrain BERT (MLM + NSP) with TF2 on a TPU, local GPUs or the CPU from pipeline shards.

From the repo root (either form)::

    python trainer/train_tpu.py --data_dir out --model_config configs/model/bert-tiny.yaml \\
        --train_config configs/train/cpu-smoke.yaml --model_dir runs/tiny
    python -m trainer.train_tpu ... --eval_data_dir out_heldout --export_hf runs/tiny/hf

On a TPU VM (data and model_dir on GCS)::

    python -m trainer.train_tpu --tpu local --data_dir gs://b/zh-128 \\
        --model_config configs/model/bert-base.yaml --train_config configs/train/tpu-v3-8.yaml \\
        --model_dir gs://b/runs/base-p1

Every TrainConfig field is also a flag (``--batch_size 8 --num_train_steps 100``) and wins over
the YAML. ``--init_checkpoint`` takes a Hugging Face BERT dir (e.g. a phase-1 export); without
``--model_config`` its config.json is the model. Rerunning with the same --model_dir resumes
from the latest checkpoint (model, optimizer, step, data position). A data/model mismatch is
refused before TensorFlow is even imported.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import typing

if __package__ in (None, ""):  # run as a script: import the repo's packages, not trainer/*
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from trainer import config as cfg  # noqa: E402
from trainer import data_contract, hf_export  # noqa: E402


def _flag_type(field: dataclasses.Field):
    hint = typing.get_type_hints(cfg.TrainConfig)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", required=True, help="pipeline output dir (manifest.json)")
    p.add_argument("--model_config", help="configs/model/*.yaml (default: init_checkpoint's)")
    p.add_argument("--train_config", required=True, help="configs/train/*.yaml")
    p.add_argument("--model_dir", required=True, help="checkpoints, TensorBoard, metrics")
    p.add_argument("--tpu", help="TPU name or grpc address; 'local' on a TPU VM")
    p.add_argument("--eval_data_dir", help="held-out pipeline output dir")
    p.add_argument("--init_checkpoint", help="Hugging Face BERT dir to start from")
    p.add_argument("--export_hf", help="write a Hugging Face dir here at the end")
    group = p.add_argument_group("TrainConfig overrides")
    for field in dataclasses.fields(cfg.TrainConfig):
        group.add_argument(f"--{field.name}", type=_flag_type(field), default=None)
    return p.parse_args(argv)


def load_configs(args: argparse.Namespace):
    """(ModelConfig, TrainConfig) from YAML presets, init_checkpoint and flag overrides."""
    if args.model_config:
        model_config = cfg.load_model_config(args.model_config)
    elif args.init_checkpoint:
        model_config = hf_export.model_config_from_hf(args.init_checkpoint)
    else:
        raise SystemExit("--model_config is required unless --init_checkpoint gives one")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(cfg.TrainConfig)}
    train_config = cfg.with_overrides(cfg.load_train_config(args.train_config), overrides)
    return model_config, train_config


def check_data(args, model_config: cfg.ModelConfig, train_config: cfg.TrainConfig):
    """Resolved ModelConfig and DataSpecs (train, eval or None); ValueError on any mismatch."""
    manifest = data_contract.read_manifest(args.data_dir)
    model_config = data_contract.resolve_model_config(model_config, manifest)
    phase = dict(max_seq_length=train_config.max_seq_length,
                 max_predictions_per_seq=train_config.max_predictions_per_seq)
    data = data_contract.load_data_dir(args.data_dir, model_config, **phase)
    eval_data = None
    if args.eval_data_dir:
        eval_data = data_contract.load_data_dir(
            args.eval_data_dir, model_config, max_seq_length=data.max_seq_length,
            max_predictions_per_seq=data.max_predictions_per_seq)
    if args.init_checkpoint:
        from trainer.tf2.hf_convert import check_same_shape  # numpy only

        check_same_shape(model_config, hf_export.model_config_from_hf(args.init_checkpoint),
                         source=args.init_checkpoint)
    return model_config, data, eval_data


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    model_config, train_config = load_configs(args)
    try:
        model_config, data, eval_data = check_data(args, model_config, train_config)
    except ValueError as e:
        raise SystemExit(f"refusing to train: {e}") from None

    from trainer.tf2 import loop  # deferred: TensorFlow loads only for a run that can start

    spec = loop.RunSpec(model_config=model_config, train_config=train_config, data=data,
                        model_dir=args.model_dir, eval_data=eval_data,
                        init_checkpoint=args.init_checkpoint, export_hf=args.export_hf)
    summary = loop.fit(spec, loop.make_strategy(args.tpu)).summary()
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
