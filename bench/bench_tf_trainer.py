"""Throughput of the TF2 trainer on this machine (a benchmark, not a test).

Prints examples/s of the tf.data input alone (read + shuffle + batch + parse) and steps/s of
BERT-Tiny and BERT-Mini training steps (forward, backward, all-reduce, clip, AdamW) on the
default strategy, on synthetic-but-valid shards written in Google's format::

    python -m bench.bench_tf_trainer [--seq 128 --preds 20 --batch 32 --steps 20]

(from the repo root: the fixtures it writes shards with live in tests/trainer).

``--length_bins 16,40`` instead compares binned and unbinned training on the same instances:
the real pipeline's output of short documents of the built-in sample (seq 64), written with
and without those bins, then BERT-Tiny ``loop.fit`` runs of ``--steps`` updates in chunks of
``--steps_per_execution`` on each; prints tokens_per_sec, examples_per_sec and padding_fraction
of the second half of each run (each bin's step is traced when it is first drawn, mostly in
the first half: use enough steps).

Figures depend heavily on what else runs on the CPU; the first (tracing) call is excluded.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import tensorflow as tf

from pipeline import schema
from tests.trainer import tf_fixtures as fx
from trainer import config as cfg
from trainer import data_contract
from trainer.run_setup import Run
from trainer.tf2 import data as tfdata
from trainer.tf2 import loop

REPO = fx.REPO

VOCAB = 21128  # bert-base-chinese


def input_examples_per_sec(spec, *, batch: int, seconds: float = 5.0) -> float:
    shards = tfdata.host_shards(spec.paths(schema.TFRECORD_DIR), spec.sizes(schema.TFRECORD_DIR))
    ds = tfdata.train_dataset(shards, batch_size=batch, max_seq_length=spec.max_seq_length,
                              max_predictions_per_seq=spec.max_predictions_per_seq, seed=1,
                              shuffle_buffer=10000, next_sentence=spec.next_sentence)
    it = iter(ds)
    next(it)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(it)
        n += batch
    return n / (time.perf_counter() - start)


def steps_per_sec(preset: str, spec, *, batch: int, steps: int, output_dir: str) -> float:
    model = dataclasses.replace(cfg.load_model_config(os.path.join(REPO, preset)),
                                vocab_size=VOCAB)
    train = cfg.TrainConfig(batch_size=batch, num_train_steps=steps + 1, warmup_steps=1,
                            mixed_precision="fp32", shuffle_buffer=1000)
    trainer = loop.Trainer(Run(model_config=model, train_config=train, data=spec,
                               output_dir=output_dir), tf.distribute.get_strategy())
    it = iter(trainer.train_dataset())
    trainer.train_steps(it, 1)  # trace + compile
    start = time.perf_counter()
    trainer.train_steps(it, steps)
    return steps / (time.perf_counter() - start)


def binned_vs_unbinned(length_bins: str, *, batch: int, steps: int, steps_per_execution: int,
                       tmp: str) -> None:
    """tokens/s and padding of BERT-Tiny on the same instances, binned and unbinned."""
    from trainer import metrics

    model = dataclasses.replace(cfg.load_model_config(
        os.path.join(REPO, "configs/model/bert-tiny.yaml")), vocab_size=VOCAB)
    train = cfg.TrainConfig(batch_size=batch, num_train_steps=steps, warmup_steps=1,
                            log_every=max(1, steps // 2), checkpoint_every=steps,
                            shuffle_buffer=1000,
                            steps_per_execution=steps_per_execution, mixed_precision="fp32")
    for name, bins in (("unbinned", None), ("binned", length_bins)):
        data_dir = fx.make_binned_dir(os.path.join(tmp, name), sentences=800, length_bins=bins)
        spec = data_contract.load_data_dir(data_dir, model)
        run = Run(model_config=model, train_config=train, data=spec,
                  output_dir=os.path.join(tmp, name, "run"))
        loop.fit(run, tf.distribute.get_strategy())
        line = metrics.read(os.path.join(run.output_dir, metrics.METRICS_FILE))[-1]
        print(f"{name:>8}: {line['tokens_per_sec']:.0f} tokens/s, "
              f"{line['examples_per_sec']:.0f} examples/s, padding "
              f"{line['padding_fraction']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--preds", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--instances", type=int, default=4000)
    p.add_argument("--length_bins", help="compare binned and unbinned training (see above)")
    p.add_argument("--steps_per_execution", type=int, default=10)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_tf_")
    if args.length_bins:
        binned_vs_unbinned(args.length_bins, batch=args.batch, steps=args.steps,
                           steps_per_execution=args.steps_per_execution, tmp=tmp)
        return
    data_dir = fx.make_data_dir(os.path.join(tmp, "data"), num_instances=args.instances,
                                num_shards=4, seed=0, max_seq_length=args.seq,
                                max_predictions=args.preds, vocab_size=VOCAB)
    spec = data_contract.load_data_dir(data_dir, cfg.ModelConfig(vocab_size=VOCAB))
    print(f"seq {args.seq}, preds {args.preds}, batch {args.batch}, cpu cores {os.cpu_count()}")
    print(f"tf.data input: {input_examples_per_sec(spec, batch=args.batch):.0f} examples/s")
    for name, preset in (("Tiny", "configs/model/bert-tiny.yaml"),
                         ("Mini", "configs/model/bert-mini.yaml")):
        rate = steps_per_sec(preset, spec, batch=args.batch, steps=args.steps,
                             output_dir=os.path.join(tmp, name))
        print(f"BERT-{name}: {rate:.2f} steps/s = {rate * args.batch:.0f} examples/s")


if __name__ == "__main__":
    main()
