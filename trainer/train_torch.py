"""Pretrain BERT (MLM, + NSP or SOP as the data says) with PyTorch on the pipeline's Parquet shards.

One process (CPU or one GPU), from the repo root (or ``python -m trainer.train_torch``, or the
console script ``bert-wwm-train-torch`` after ``pip install -e .``)::

    python trainer/train_torch.py --data_dir OUT --model_config configs/model/bert-tiny.yaml \\
        --train_config configs/train/cpu-smoke.yaml --output_dir runs/x \\
        [--eval_data_dir EVAL_OUT] [--init_checkpoint HF_DIR] [--export_hf runs/x/hf]

Data-parallel on one node with 8 GPUs (nccl), or 2 CPU processes (gloo)::

    torchrun --standalone --nproc_per_node=8 trainer/train_torch.py --data_dir OUT \\
        --model_config configs/model/bert-base.yaml --train_config configs/train/gpu.yaml \\
        --output_dir runs/base-128 --eval_data_dir EVAL_OUT --export_hf runs/base-128/hf

Several nodes: ``torchrun --nnodes=N --nproc_per_node=8 --rdzv_backend=c10d
--rdzv_endpoint=HOST:29400 --rdzv_id=JOB trainer/train_torch.py ...`` on every node.

The flags are trainer/train_tpu.py's (``trainer/flags.py``); rerunning the same command resumes
from output_dir's newest complete checkpoint that loads, e.g. after a preemption
(``trainer/run_setup.py`` states the rule). Shards that differ from their manifest (size,
sha256) are refused before the first step unless --skip_data_check. --output_dir must be local
(``torch.save`` writes local files); --tpu is refused (TPUs are the TF trainer's). Data made with
``--masking=dynamic`` is masked anew every epoch from (seed, epoch, instance), held-out data with
epoch 0's masks (``trainer/pt/data.py``; docs/training.md, "Dynamic masking"). Data made with
``--length_bins`` is read one bin per update, padded to that bin's bound, the bins scheduled as
NVIDIA LDDL does (docs/training.md, "Length bins").

TensorFlow is never imported. On CPUs each process takes its share of the CPUs it may use and
OpenMP threads sleep at barriers instead of spinning (``OMP_WAIT_POLICY=PASSIVE`` unless the
environment sets it): on a shared CPU spinning halved throughput (``trainer/pt/threads.py``).
"""
from __future__ import annotations

import json
import logging
import os
import sys

if __name__ == "__main__" and not __package__:
    # `python trainer/train_torch.py` (and torchrun, which runs the file the same way) puts
    # trainer/ itself first on sys.path: from a checkout that is not pip-installed `import
    # trainer` would fail, and trainer/config.py would shadow any top-level module named config.
    # The repo root takes its place; only this script form, never an import, does this.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from trainer import flags, quiet, run_setup, storage  # noqa: E402
from trainer.pt import threads  # noqa: E402  (torch-free: it must act before torch loads)

DESCRIPTION = __doc__.split("\n")[0]


def train(argv: list[str] | None = None) -> dict | None:
    """Parse, check, train; return the run's summary on rank 0 (None on other ranks)."""
    args = flags.parse_args(argv, description=DESCRIPTION)
    quiet.configure(verbose=args.verbose)
    if args.tpu:
        raise SystemExit("refusing to train: --tpu is for trainer/train_tpu.py; the PyTorch "
                         "trainer runs on CPUs and GPUs")
    if storage.is_remote(args.output_dir):
        raise SystemExit(f"refusing to train: --output_dir {args.output_dir} must be a local "
                         "directory for the PyTorch trainer (torch.save writes local files)")
    run = run_setup.prepare_or_exit(args)
    threads.default_wait_policy()  # libgomp reads it when torch loads, on the next line

    from trainer.pt import dist, loop  # deferred: --help and refusals stay fast and torch-free

    ctx = dist.init_from_env()
    try:
        summary = loop.train(run, ctx, compile_backend=args.compile)
    except run_setup.Refused as e:
        raise SystemExit(f"refusing to train: {e}") from None
    finally:
        dist.shutdown(ctx)
    return summary if ctx.is_main else None


def main(argv: list[str] | None = None) -> None:
    """The console entry point: train, then print the summary as JSON (rank 0)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    summary = train(argv)
    if summary is not None:
        print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
