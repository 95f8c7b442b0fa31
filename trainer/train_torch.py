"""Pretrain BERT (MLM + NSP) with PyTorch on the pipeline's Parquet shards.

One process (CPU or one GPU), from the repo root:

    python trainer/train_torch.py --data_dir OUT --model_config configs/model/bert-tiny.yaml \
        --train_config configs/train/cpu-smoke.yaml --output_dir runs/x \
        [--eval_data_dir EVAL_OUT] [--init_checkpoint HF_DIR] [--export_hf runs/x/hf] [--resume]

(or ``python -m trainer.train_torch ...``). Data-parallel on one node with 8 GPUs (nccl), or
2 CPU processes (gloo):

    torchrun --standalone --nproc_per_node=8 trainer/train_torch.py --data_dir OUT \
        --model_config configs/model/bert-base.yaml --train_config configs/train/gpu.yaml \
        --output_dir runs/base-128 --eval_data_dir EVAL_OUT --export_hf runs/base-128/hf --resume

Several nodes: ``torchrun --nnodes=N --nproc_per_node=8 --rdzv_backend=c10d
--rdzv_endpoint=HOST:29400 --rdzv_id=JOB trainer/train_torch.py ...`` on every node.

Flags named like TrainConfig fields (--batch_size, --num_train_steps, --learning_rate, ...)
override the YAML. --resume continues from the newest complete checkpoint in --output_dir
(same world size and --num_workers), or starts fresh when there is none, so the same command
can be re-run after a preemption.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import List, Optional

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer.config import (TrainConfig, load_model_config, load_train_config,  # noqa: E402
                            with_overrides)

_OVERRIDABLE = ("batch_size", "grad_accum", "num_train_steps", "learning_rate", "warmup_steps",
                "weight_decay", "optimizer", "max_seq_length", "max_predictions_per_seq",
                "checkpoint_every", "keep_checkpoints", "eval_every", "eval_steps", "log_every",
                "seed", "shuffle_buffer", "num_workers", "mixed_precision", "max_grad_norm")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", required=True, help="pipeline output dir (has manifest.json)")
    p.add_argument("--model_config", required=True, help="configs/model/*.yaml")
    p.add_argument("--train_config", required=True, help="configs/train/*.yaml")
    p.add_argument("--output_dir", required=True, help="checkpoints, metrics.jsonl, tensorboard")
    p.add_argument("--eval_data_dir", help="held-out pipeline output dir for eval metrics")
    p.add_argument("--init_checkpoint", help="HF directory to start from (e.g. phase-1 export)")
    p.add_argument("--export_hf", help="write a Hugging Face model dir here at the end")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--stop_at_step", type=int,
                   help="exit after this step (schedule unchanged); continue with --resume")
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name in _OVERRIDABLE:
        kind = {"int": int, "float": float, "str": str}[
            types[name].replace("Optional[", "").rstrip("]")]
        p.add_argument(f"--{name}", type=kind, default=None, help=f"override TrainConfig.{name}")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    from trainer.pt import dist, loop  # deferred: --help stays fast and torch-free

    model_config = load_model_config(args.model_config)
    train_config = with_overrides(load_train_config(args.train_config),
                                  {k: getattr(args, k) for k in _OVERRIDABLE})
    options = loop.RunOptions(data_dir=args.data_dir, output_dir=args.output_dir,
                              eval_data_dir=args.eval_data_dir,
                              init_checkpoint=args.init_checkpoint, export_hf=args.export_hf,
                              resume=args.resume, stop_at_step=args.stop_at_step)
    ctx = dist.init_from_env()
    try:
        return loop.train(model_config, train_config, options, ctx)
    finally:
        dist.shutdown(ctx)


if __name__ == "__main__":
    main()
