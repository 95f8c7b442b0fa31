"""Throughput of the TF2 trainer on this machine (a benchmark, not a test).

Prints examples/s of the tf.data input alone (read + shuffle + batch + parse) and steps/s of
BERT-Tiny and BERT-Mini training steps (forward, backward, all-reduce, clip, AdamW) on the
default strategy, on synthetic-but-valid shards written in Google's format::

    python -m bench.bench_tf_trainer [--seq 128 --preds 20 --batch 32 --steps 20]

(from the repo root: the fixtures it writes shards with live in tests/trainer).

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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--preds", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--instances", type=int, default=4000)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_tf_")
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
