"""Benchmark (not a test): the PyTorch trainer's input pipeline and train steps on this CPU.

    python -m bench.bench_torch_trainer --data_dir OUT [--batch_size 32] [--steps 20]

Prints examples/s of the Parquet stream alone (decode + pad + shuffle + labels, no model), and
steps/s and examples/s of full train steps (forward, backward, AdamW) for BERT-Tiny and
BERT-Mini at the data's sequence length. For data with length bins (``--length_bins``) the
stream is timed per bin (the trainer's stream of that bin, padded to its bound) and the train
steps on the last bin (the data's sequence length). Numbers depend on what else the machine
runs: report them with the command and `nproc`/load average.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import time

import torch

from trainer import data_contract
from trainer.config import TrainConfig, load_model_config
from trainer.pt.data import ShardDataset, StreamConfig
from trainer.pt.loop import stream_config
from trainer.pt.model import Pretrainer, build_model, build_optimizer, build_scheduler

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stream(spec, batch_size: int, length_bin=None) -> StreamConfig:
    """The trainer's training stream (``trainer.pt.loop.stream_config``): of the whole data,
    or of one length bin; for binned data without ``length_bin``, its last bin's."""
    if length_bin is None and spec.bins:
        length_bin = spec.bins[-1]
    config = TrainConfig(batch_size=batch_size, seed=1, shuffle_buffer=1000)
    return stream_config(spec, config, train=True, length_bin=length_bin)


def bench_input(spec, *, batch_size: int, batches: int, length_bin=None) -> float:
    """Examples/s of the stream alone, single process (what each DataLoader worker does)."""
    it = iter(ShardDataset(stream(spec, batch_size, length_bin)))
    next(it)  # file open + metadata, once per reader
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def bench_model(spec, preset: str, *, batch_size: int, steps: int) -> tuple:
    """(steps/s, examples/s) of full AdamW train steps, batches pre-read so only compute counts."""
    config = load_model_config(os.path.join(REPO, "configs", "model", f"{preset}.yaml"))
    config = dataclasses.replace(config, vocab_size=spec.vocab_size)
    pretrainer = Pretrainer(build_model(config, generator_seed=0), spec.next_sentence).train()
    train_config = TrainConfig(num_train_steps=steps + 1, warmup_steps=1)
    optimizer = build_optimizer(pretrainer, train_config)
    scheduler = build_scheduler(optimizer, train_config)
    batches = list(itertools.islice(ShardDataset(stream(spec, batch_size)), steps + 1))

    def step(batch):
        pretrainer(batch)["loss"].backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up: allocator, optimizer state
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    elapsed = time.perf_counter() - start
    return steps / elapsed, steps * batch_size / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", required=True)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--input_batches", type=int, default=100)
    p.add_argument("--models", default="bert-tiny,bert-mini")
    args = p.parse_args()
    manifest = data_contract.read_manifest(args.data_dir)
    spec = data_contract.load_data_dir(
        args.data_dir, data_contract.resolve_model_config(
            load_model_config(os.path.join(REPO, "configs", "model", "bert-tiny.yaml")), manifest))
    print(f"cpu: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}; data seq {spec.max_seq_length}/"
          f"{spec.max_predictions_per_seq}, vocab {spec.vocab_size}, batch {args.batch_size}")
    for length_bin in spec.bins or (None,):
        rate = bench_input(spec, batch_size=args.batch_size, batches=args.input_batches,
                           length_bin=length_bin)
        where = f" (bin {length_bin.bound})" if length_bin else ""
        print(f"input pipeline{where}: {rate:,.0f} examples/s")
    for preset in args.models.split(","):
        steps_s, examples_s = bench_model(spec, preset, batch_size=args.batch_size,
                                          steps=args.steps)
        print(f"{preset}: {steps_s:.2f} steps/s, {examples_s:,.0f} examples/s")


if __name__ == "__main__":
    main()
