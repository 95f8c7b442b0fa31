"""The PyTorch pretraining loop, top to bottom: check data -> build -> restore -> train ->
evaluate -> checkpoint -> export.

``train(model_config, train_config, options, ctx)`` is the whole run; ``trainer/train_torch.py``
only parses flags into those objects. Metrics go to stdout (rank 0), to
``output_dir/metrics.jsonl`` (one JSON object per log/eval event, for scripts and tests) and to
TensorBoard under ``output_dir/tensorboard`` when ``torch.utils.tensorboard`` imports.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import warnings
from typing import Dict, Iterator, Optional

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from trainer import data_contract, hf_export
from trainer.config import ModelConfig, TrainConfig
from trainer.pt import checkpoint
from trainer.pt.data import CursorTracker, ShardDataset, StreamConfig
from trainer.pt.dist import DistContext, sum_across
from trainer.pt.model import (Pretrainer, build_model, build_optimizer, build_scheduler,
                              count_parameters, finish_metrics, is_finite)

FORMAT = "parquet"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Where things are. stop_at_step ends the process early without changing the schedule
    (a time-boxed job, or a test of resume); the run continues later with ``resume=True``."""

    data_dir: str
    output_dir: str
    eval_data_dir: Optional[str] = None
    init_checkpoint: Optional[str] = None
    export_hf: Optional[str] = None
    resume: bool = False
    stop_at_step: Optional[int] = None


class MetricsLog:
    """Rank 0 writes stdout lines, metrics.jsonl and (if available) TensorBoard scalars."""

    def __init__(self, output_dir: str, ctx: DistContext):
        self.active = ctx.is_main
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.tb = self._tensorboard(output_dir) if self.active else None

    @staticmethod
    def _tensorboard(output_dir: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # tensorboard is an optional extra of torch
            warnings.warn(f"TensorBoard summaries disabled ({e}); metrics.jsonl is still written")
            return None
        return SummaryWriter(os.path.join(output_dir, "tensorboard"))

    def write(self, kind: str, step: int, values: Dict[str, float]) -> None:
        if not self.active:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        print(f"[{kind}] step {step} " + " ".join(f"{k}={v:.5g}" for k, v in values.items()),
              flush=True)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def prepare(model_config: ModelConfig, train_config: TrainConfig, options: RunOptions):
    """Resolve the model config and check every data dir before any model is built.

    Returns (model_config with vocab_size, train DataSpec, eval DataSpec or None).
    """
    if options.init_checkpoint:
        model_config = hf_export.model_config_from_hf(options.init_checkpoint)
    manifest = data_contract.read_manifest(options.data_dir)
    model_config = data_contract.resolve_model_config(model_config, manifest)
    load = lambda d: data_contract.load_data_dir(
        d, model_config, max_seq_length=train_config.max_seq_length,
        max_predictions_per_seq=train_config.max_predictions_per_seq)
    train_spec = load(options.data_dir)
    eval_spec = load(options.eval_data_dir) if options.eval_data_dir else None
    return model_config, train_spec, eval_spec


def stream_config(spec, config: TrainConfig, *, train: bool) -> StreamConfig:
    return StreamConfig(paths=tuple(spec.paths(FORMAT)), batch_size=config.batch_size,
                        max_seq_length=spec.max_seq_length,
                        max_predictions_per_seq=spec.max_predictions_per_seq, seed=config.seed,
                        shuffle_buffer=config.shuffle_buffer, repeat=train, shuffle=train)


def train_batches(spec, config: TrainConfig, ctx: DistContext,
                  tracker: CursorTracker) -> Iterator[Dict[str, torch.Tensor]]:
    """Endless batches for this rank, starting at the tracker's cursor."""
    dataset = ShardDataset(stream_config(spec, config, train=True), rank=ctx.rank,
                           world_size=ctx.world_size, num_workers=config.num_workers,
                           cursors=tracker.cursors, batches_consumed=tracker.batches)
    # Own generator: DataLoader draws worker base seeds from it instead of the process RNG,
    # which would otherwise shift the dropout stream of a resumed run.
    loader = DataLoader(dataset, batch_size=None, num_workers=config.num_workers,
                        pin_memory=ctx.device.type == "cuda",
                        generator=torch.Generator().manual_seed(config.seed))
    return iter(loader)


def to_device(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(ctx: DistContext, config: TrainConfig):
    """bf16 autocast on CUDA only: CPU bf16 matmuls are slow on most CPUs and fp32 is exact."""
    if ctx.device.type == "cuda" and config.mixed_precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(pretrainer: Pretrainer, spec, config: TrainConfig, ctx: DistContext) -> Dict[str, float]:
    """Google's four metrics over up to eval_steps batches per rank of the held-out shards."""
    dataset = ShardDataset(stream_config(spec, config, train=False), rank=ctx.rank,
                           world_size=ctx.world_size)
    was_training = pretrainer.training
    pretrainer.eval()
    sums: Dict[str, float] = {}
    for i, batch in enumerate(dataset):
        if i >= config.eval_steps:
            break
        with autocast(ctx, config):
            out = pretrainer(to_device(batch, ctx.device))
        for k, v in out.items():
            if k.endswith(("_sum", "_hits", "_count")):
                sums[k] = sums.get(k, 0.0) + float(v)
    pretrainer.train(was_training)
    totals = sum_across(ctx, {k: sums.get(k, 0.0) for k in (
        "masked_lm_loss_sum", "masked_lm_hits", "masked_lm_count", "next_sentence_loss_sum",
        "next_sentence_hits", "next_sentence_count")})
    return {**finish_metrics(totals), "eval_examples": totals["next_sentence_count"]}


def train_step(model, batches: Iterator, tracker: CursorTracker, *, optimizer, scheduler,
               config: TrainConfig, ctx: DistContext) -> float:
    """One optimizer update over grad_accum micro-batches; returns the mean micro-batch loss.

    DDP all-reduces gradients only on the last micro-batch (no_sync on the others).
    """
    total = 0.0
    for micro in range(config.grad_accum):
        batch = next(batches)
        tracker.update(batch)
        last = micro == config.grad_accum - 1
        sync = model.no_sync() if (ctx.distributed and not last) else contextlib.nullcontext()
        with sync:
            with autocast(ctx, config):
                loss = model(to_device(batch, ctx.device))["loss"]
            (loss / config.grad_accum).backward()
        total += loss.detach()
    if config.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(total) / config.grad_accum


def save_checkpoint(options: RunOptions, step: int, *, pretrainer, optimizer, scheduler,
                    tracker: CursorTracker, model_config, train_config, ctx) -> None:
    state = {"model": pretrainer.model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": step,
             "model_config": model_config.to_dict(), "train_config": train_config.to_dict(),
             "world_size": ctx.world_size, "num_workers": train_config.num_workers}
    rank_state = {"rng": checkpoint.rng_state(ctx.device), "data": tracker.state_dict()}
    checkpoint.save(options.output_dir, step, ctx=ctx, state=state, rank_state=rank_state,
                    keep=train_config.keep_checkpoints)


def restore(options: RunOptions, *, pretrainer, optimizer, scheduler, train_config, ctx):
    """(start step, tracker) from the latest complete checkpoint, or (0, fresh) without one."""
    path = checkpoint.latest_checkpoint(options.output_dir) if options.resume else None
    if path is None:
        if options.resume and ctx.is_main:
            print(f"--resume: no checkpoint under {options.output_dir}, starting at step 0")
        torch.manual_seed(train_config.seed + ctx.rank)  # dropout; the loop owns this RNG
        return 0, CursorTracker()
    state, rank_state = checkpoint.load(path, ctx=ctx)
    if state["num_workers"] != train_config.num_workers:
        raise ValueError(f"{path} used {state['num_workers']} DataLoader workers, this run "
                         f"{train_config.num_workers}: exact data resume needs the same number")
    pretrainer.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    checkpoint.set_rng_state(rank_state["rng"], ctx.device)
    if ctx.is_main:
        print(f"resumed from {path} at step {state['step']}", flush=True)
    return state["step"], CursorTracker.from_state_dict(rank_state["data"])


def train(model_config: ModelConfig, train_config: TrainConfig, options: RunOptions,
          ctx: DistContext) -> Dict[str, float]:
    """The whole run. Returns the last eval metrics (empty without --eval_data_dir)."""
    model_config, train_spec, eval_spec = prepare(model_config, train_config, options)
    os.makedirs(options.output_dir, exist_ok=True)
    log = MetricsLog(options.output_dir, ctx)
    pretrainer = Pretrainer(build_model(model_config, init_checkpoint=options.init_checkpoint,
                                        generator_seed=train_config.seed)).to(ctx.device)
    optimizer = build_optimizer(pretrainer, train_config)
    scheduler = build_scheduler(optimizer, train_config)
    step, tracker = restore(options, pretrainer=pretrainer, optimizer=optimizer,
                            scheduler=scheduler, train_config=train_config, ctx=ctx)
    model = (DistributedDataParallel(pretrainer, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
             if ctx.distributed else pretrainer)
    if ctx.is_main:
        print(f"model {count_parameters(pretrainer):,} parameters; data {train_spec.data_dir} "
              f"({train_spec.manifest['total_instances']} instances, seq "
              f"{train_spec.max_seq_length}); world {ctx.world_size}", flush=True)
    save_at = lambda s: save_checkpoint(options, s, pretrainer=pretrainer, optimizer=optimizer,
                                        scheduler=scheduler, tracker=tracker,
                                        model_config=model_config, train_config=train_config,
                                        ctx=ctx)
    examples_per_step = train_config.batch_size * train_config.grad_accum * ctx.world_size
    batches = train_batches(train_spec, train_config, ctx, tracker)
    end = min(train_config.num_train_steps, options.stop_at_step or train_config.num_train_steps)
    metrics: Dict[str, float] = {}
    model.train()
    window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0
    while step < end:
        lr = scheduler.get_last_lr()[0]
        loss = train_step(model, batches, tracker, optimizer=optimizer, scheduler=scheduler,
                          config=train_config, ctx=ctx)
        step += 1
        window_steps, window_loss = window_steps + 1, window_loss + loss
        if not is_finite(torch.tensor(loss)):
            raise FloatingPointError(f"loss is {loss} at step {step}")
        if step % train_config.log_every == 0 or step == end:
            elapsed = time.perf_counter() - window_start
            log.write("train", step, {"loss": window_loss / window_steps, "learning_rate": lr,
                                      "examples_per_sec": examples_per_step * window_steps / elapsed,
                                      "steps_per_sec": window_steps / elapsed})
            window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0
        if eval_spec is not None and (step % train_config.eval_every == 0 or step == train_config.num_train_steps):
            metrics = evaluate(pretrainer, eval_spec, train_config, ctx)
            log.write("eval", step, metrics)
        if step % train_config.checkpoint_every == 0 or step == end:
            save_at(step)
    if options.export_hf and step >= train_config.num_train_steps and ctx.is_main:
        path = hf_export.export_hf_for_data(options.export_hf, model_config=model_config,
                                            save_weights=pretrainer.model.save_pretrained,
                                            spec=train_spec)
        print(f"exported Hugging Face model to {path}", flush=True)
    log.close()
    return metrics
