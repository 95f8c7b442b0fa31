"""Pretrain BERT (MLM, + NSP or SOP as the data says) with TF2 on a TPU, GPUs or the CPU.

From the repo root (any of the three forms; the console script needs ``pip install -e .``)::

    python trainer/train_tpu.py --data_dir out --model_config configs/model/bert-tiny.yaml \\
        --train_config configs/train/cpu-smoke.yaml --output_dir runs/tiny
    python -m trainer.train_tpu ... --eval_data_dir out_heldout --export_hf runs/tiny/hf
    bert-wwm-train-tf ...

On a TPU VM (data and output_dir on GCS)::

    python trainer/train_tpu.py --tpu local --data_dir gs://b/zh-128 \\
        --model_config configs/model/bert-base.yaml --train_config configs/train/tpu-v3-8.yaml \\
        --output_dir gs://b/runs/base-p1

The flags are trainer/train_torch.py's (``trainer/flags.py``); rerunning the same command
resumes from output_dir's newest checkpoint that restores (``trainer/run_setup.py`` states the
rule). A data/model mismatch is refused before TensorFlow is even imported; shards that differ
from their manifest (size, sha256) before the first step, unless --skip_data_check.
"""
from __future__ import annotations

import json
import logging
import os
import sys

if __name__ == "__main__" and not __package__:
    # `python trainer/train_tpu.py` puts trainer/ itself first on sys.path: from a checkout that
    # is not pip-installed `import trainer` would fail, and trainer/config.py would shadow any
    # top-level module named config. The repo root takes its place; only this script form,
    # never an import of the module, does this.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from trainer import flags, quiet, run_setup  # noqa: E402

DESCRIPTION = __doc__.split("\n")[0]


def train(argv=None) -> dict:
    """Parse, check, train; return the run's summary (``run_setup.Outcome.summary``)."""
    args = flags.parse_args(argv, description=DESCRIPTION)
    quiet.configure(verbose=args.verbose)
    run = run_setup.prepare_or_exit(args)
    with quiet.tensorflow_startup(verbose=args.verbose):  # its load and device probe print most
        from trainer.tf2 import loop  # deferred: TensorFlow loads only for a run that can start

        strategy = loop.make_strategy(args.tpu)
    try:
        # --compile: the per-replica steps compiled by XLA on GPUs and CPUs too, one program
        # per batch shape (per length bin), as a TPU always compiles them.
        return loop.fit(run, strategy, jit_compile=args.compile is not None).summary()
    except run_setup.Refused as e:
        raise SystemExit(f"refusing to train: {e}") from None


def main(argv=None) -> None:
    """The console entry point: train, then print the summary as JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print(json.dumps(train(argv), indent=1))


if __name__ == "__main__":
    main()
