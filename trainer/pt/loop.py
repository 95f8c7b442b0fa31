"""The PyTorch pretraining loop, top to bottom: run directory -> build -> restore -> train ->
evaluate -> checkpoint -> export.

``train(run, ctx)`` is the whole run; ``trainer/train_torch.py`` only parses the shared flags
and checks data and configs into a ``run_setup.Run``. The run directory follows
``run_setup``'s resume rule; metrics go to ``output_dir/metrics.jsonl`` (``trainer.metrics``,
rank 0) and to TensorBoard event files under ``output_dir/tensorboard/<split>``
(``trainer.event_file``: neither TensorFlow nor the tensorboard package is imported). The
data's sentence task (``DataSpec.next_sentence``) picks the columns read, the loss (masked-LM
only for "none") and the metric names; dynamic data (``DataSpec.masking``) is masked by the
data stream (``trainer/pt/data.py``), so the model sees the same batches as for static data.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from pipeline import schema
from trainer import hf_export, metrics, run_setup, storage
from trainer.config import TrainConfig
from trainer.event_file import EventFileWriter
from trainer.pt import checkpoint, threads
from trainer.pt.data import CursorTracker, ShardDataset, StreamConfig, reader_files
from trainer.pt.dist import DistContext, barrier, gather_objects, sum_across
from trainer.pt.model import (
    Pretrainer,
    build_model,
    build_optimizer,
    build_scheduler,
    count_parameters,
)
from trainer.run_setup import Run

log = logging.getLogger(__name__)


class TensorBoard:
    """scalars(split, step, values) for ``metrics.MetricsLog``: one event file per split under
    output_dir/tensorboard/<split>, tags named as the metrics (as the TF trainer writes them).
    Written by ``trainer.event_file``, not torch.utils.tensorboard, which imports TensorFlow
    whenever it is installed."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.writers: dict[str, EventFileWriter] = {}

    def __call__(self, split: str, step: int, values: dict[str, float]) -> None:
        if split not in self.writers:
            self.writers[split] = EventFileWriter(
                storage.join(self.output_dir, run_setup.TENSORBOARD, split))
        self.writers[split].add(step, values)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def stream_config(spec, config: TrainConfig, *, train: bool) -> StreamConfig:
    """The stream of ``spec``'s Parquet shards. Dynamic data is masked by the stream with the
    run's seed: training data for the epoch being read, held-out data always for epoch 0."""
    return StreamConfig(paths=tuple(spec.paths(schema.PARQUET_DIR)),
                        batch_size=config.batch_size, max_seq_length=spec.max_seq_length,
                        max_predictions_per_seq=spec.max_predictions_per_seq, seed=config.seed,
                        shuffle_buffer=config.shuffle_buffer, repeat=train, shuffle=train,
                        next_sentence=spec.next_sentence, masking=spec.masking,
                        index_offsets=(tuple(spec.index_offsets(schema.PARQUET_DIR))
                                       if spec.dynamic else ()),
                        mask_epoch=None if train else 0)


def train_batches(spec, config: TrainConfig, ctx: DistContext,
                  tracker: CursorTracker) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches for this rank, starting at the tracker's cursor."""
    dataset = ShardDataset(stream_config(spec, config, train=True), rank=ctx.rank,
                           world_size=ctx.world_size, num_workers=config.num_workers,
                           cursors=tracker.cursors, batches_consumed=tracker.batches)
    # Own generator: DataLoader draws worker base seeds from it instead of the process RNG,
    # which would otherwise shift the dropout stream of a resumed run.
    loader = DataLoader(dataset, batch_size=None, num_workers=config.num_workers,
                        pin_memory=ctx.device.type == "cuda", worker_init_fn=threads.init_worker,
                        generator=torch.Generator().manual_seed(config.seed))
    return iter(loader)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(ctx: DistContext, config: TrainConfig):
    """bf16 autocast on CUDA only: CPU bf16 matmuls are slow on most CPUs and fp32 is exact."""
    if ctx.device.type == "cuda" and config.mixed_precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def eval_batches(spec, config: TrainConfig, ctx: DistContext) -> int:
    """Batches this rank scores per evaluation: eval_steps, or fewer when one pass over its
    held-out files holds fewer full batches (0 for a rank without files: more ranks than
    held-out shards). Every rank counts all ranks from the manifest, so all agree to refuse
    (run_setup.Refused) held-out data without one full batch anywhere."""
    sizes = spec.sizes(schema.PARQUET_DIR)
    full = [sum(sizes[f] for f in reader_files(range(len(sizes)), reader=r,
                                               num_readers=ctx.world_size)) // config.batch_size
            for r in range(ctx.world_size)]
    if max(full) == 0:
        raise run_setup.Refused(f"{spec.data_dir}: no rank's held-out files hold one batch of "
                                f"{config.batch_size}: nothing to evaluate")
    return min(config.eval_steps, full[ctx.rank])


@torch.no_grad()
def evaluate(pretrainer: Pretrainer, spec, config: TrainConfig, ctx: DistContext, *,
             steps: int) -> dict[str, float]:
    """``metrics.eval_keys`` over ``steps`` full batches per rank of the held-out shards, read
    in file order from the start: the same examples at every evaluation. Dynamic held-out
    data is masked with epoch 0's masks (``stream_config``): the same masks too."""
    dataset = ShardDataset(stream_config(spec, config, train=False), rank=ctx.rank,
                           world_size=ctx.world_size)
    was_training = pretrainer.training
    pretrainer.eval()
    sums = None
    for _, batch in zip(range(steps), dataset):
        with autocast(ctx, config):
            out = pretrainer(to_device(batch, ctx.device))
        sums = metrics.add(sums, out["sums"])
    pretrainer.train(was_training)
    mine = {k: float(sums[k]) if sums else 0.0 for k in metrics.sum_keys(spec.next_sentence)}
    return metrics.finish(sum_across(ctx, mine), spec.next_sentence)


def train_step(model, batches: Iterator, tracker: CursorTracker, *, optimizer, scheduler,
               config: TrainConfig, ctx: DistContext) -> dict[str, torch.Tensor]:
    """One optimizer update over grad_accum micro-batches.

    Returns this rank's ``metrics.sum_keys`` summed over the micro-batches and the global
    gradient norm before clipping, as device tensors (no host sync). DDP all-reduces gradients
    only on the last micro-batch (no_sync on the others).
    """
    sums = None
    for micro in range(config.grad_accum):
        batch = next(batches)
        tracker.update(batch)
        last = micro == config.grad_accum - 1
        sync = model.no_sync() if (ctx.distributed and not last) else contextlib.nullcontext()
        with sync:
            with autocast(ctx, config):
                out = model(to_device(batch, ctx.device))
            (out["loss"] / config.grad_accum).backward()
        sums = metrics.add(sums, {k: v.detach() for k, v in out["sums"].items()})
    max_norm = config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
    sums["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm).detach()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return sums


def save_checkpoint(run: Run, step: int, *, pretrainer, optimizer, scheduler,
                    tracker: CursorTracker, ctx: DistContext) -> None:
    state = {"model": pretrainer.model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": step,
             "model_config": run.model_config.to_dict(),
             "train_config": run.train_config.to_dict(), "world_size": ctx.world_size}
    rank_state = {"rng": checkpoint.rng_state(ctx.device), "data": tracker.state_dict()}
    checkpoint.save(run.output_dir, step, ctx=ctx, state=state, rank_state=rank_state,
                    keep=run.train_config.keep_checkpoints)


def restore(loaded: tuple | None, *, pretrainer, optimizer, scheduler, seed: int,
            ctx: DistContext):
    """(start step, tracker) from ``loaded`` = ``checkpoint.load_newest``'s (state, rank
    state), or (0, fresh) when it is None.

    The run directory's rule (run_setup) has already made sure a checkpoint there is this
    run's: same configs, world size and DataLoader workers, which exact data resume needs. So
    a state that loads but does not fit the model is a bug, and raises here: only unreadable
    checkpoints are skipped (in ``load_newest``, before anything is applied).
    """
    if loaded is None:
        torch.manual_seed(seed + ctx.rank)  # dropout; the loop owns this RNG
        return 0, CursorTracker()
    state, rank_state = loaded
    pretrainer.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    checkpoint.set_rng_state(rank_state["rng"], ctx.device)
    return state["step"], CursorTracker.from_state_dict(rank_state["data"])


def export_hf(run: Run, pretrainer: Pretrainer, out_dir: str) -> str:
    """The model as a Hugging Face BertForPreTraining dir with the data's vocab and casing
    (for "none" data the pooler and NSP head are exported as they started)."""
    return hf_export.export_hf_for_data(out_dir, model_config=run.model_config,
                                        save_weights=pretrainer.model.save_pretrained,
                                        spec=run.data)


def check_data(run: Run, ctx: DistContext) -> None:
    """Refuse (run_setup.Refused, on every rank) Parquet shards, training or held-out, that
    differ from their manifest.

    Each node checks the shards once, split over its processes (LOCAL_RANK of
    LOCAL_WORLD_SIZE), and the reports are gathered from all ranks: every rank then refuses
    or none does. Per node rather than per world, because a node may read its own copy of
    the data (a local disk); on a shared file system or bucket that costs one read of the
    data per node, not one per rank.
    """
    report = run_setup.check_data(run, schema.PARQUET_DIR, part=ctx.local_rank,
                                  parts=ctx.local_world_size)
    run_setup.refuse_changed_data(run, schema.PARQUET_DIR, gather_objects(ctx, report),
                                  verbose=ctx.is_main)


def open_run_dir(run: Run, ctx: DistContext) -> None:
    """The resume rule: every rank checks (read only), then rank 0 clears and writes."""
    record = run_setup.run_record(run, trainer="pytorch", replicas=ctx.world_size)
    clear = run_setup.check_run_dir(run, record)
    barrier(ctx)
    if ctx.is_main:
        run_setup.start_run_dir(run, record, clear=clear)
    barrier(ctx)


def train(run: Run, ctx: DistContext) -> dict:
    """The whole run, to ``run.last_step``; returns ``run_setup.Outcome.summary()``.

    Raises run_setup.Refused, before writing or building anything, when output_dir holds
    another run, the held-out data is smaller than one batch per rank, or a shard differs from
    its manifest (``check_data``).
    """
    tc, task = run.train_config, run.data.next_sentence
    thread_info = threads.configure(ctx.local_world_size)
    if ctx.is_main:
        log.info("%s; DataLoader workers %d (1 thread each)", threads.describe(thread_info),
                 tc.num_workers)
    steps_per_eval = eval_batches(run.eval_data, tc, ctx) if run.eval_data else 0
    check_data(run, ctx)
    open_run_dir(run, ctx)
    latest, loaded = checkpoint.load_newest(run.output_dir, ctx=ctx)
    pretrainer = Pretrainer(build_model(run.model_config,
                                        init_checkpoint=None if latest else run.init_checkpoint,
                                        generator_seed=tc.seed), task).to(ctx.device)
    optimizer = build_optimizer(pretrainer, tc)
    scheduler = build_scheduler(optimizer, tc)
    step, tracker = restore(loaded, pretrainer=pretrainer, optimizer=optimizer,
                            scheduler=scheduler, seed=tc.seed, ctx=ctx)
    del loaded  # the checkpoint's CPU copy
    model = pretrainer
    if ctx.distributed:
        model = DistributedDataParallel(
            pretrainer, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    board = TensorBoard(run.output_dir) if ctx.is_main else None
    metrics_log = metrics.MetricsLog(run.output_dir, next_sentence=task, scalars=board,
                                     active=ctx.is_main)
    metrics_log.trim(step)
    if ctx.is_main:
        log.info("%s; model %s parameters; data %s (%d instances, seq %d); world %d",
                 f"resumed {latest} at step {step}" if latest else
                 f"initialised from {run.init_checkpoint}" if run.init_checkpoint else
                 "initialised randomly", f"{count_parameters(pretrainer):,}",
                 run.data.data_dir, run.data.manifest["total_instances"],
                 run.data.max_seq_length, ctx.world_size)
    batches = train_batches(run.data, tc, ctx, tracker)
    outcome = run_setup.Outcome(step=step)
    model.train()
    window, window_steps, window_start = None, 0, time.perf_counter()
    while step < run.last_step:
        window = metrics.add(window, train_step(model, batches, tracker, optimizer=optimizer,
                                                scheduler=scheduler, config=tc, ctx=ctx))
        step, window_steps = step + 1, window_steps + 1
        if run.log_due(step):
            totals = sum_across(ctx, {k: float(window[k]) for k in metrics.sum_keys(task)})
            outcome.train = metrics.finish_train(
                totals, task, grad_norm_sum=float(window["grad_norm"]), steps=window_steps,
                learning_rate=run.learning_rate_at(step - 1),
                seconds=time.perf_counter() - window_start)
            metrics_log.write("train", step, outcome.train)  # every rank: the same totals
            window, window_steps, window_start = None, 0, time.perf_counter()
        if run.eval_due(step):
            outcome.eval = evaluate(pretrainer, run.eval_data, tc, ctx, steps=steps_per_eval)
            metrics_log.write("eval", step, outcome.eval)
            window_start = time.perf_counter()  # eval time is not training throughput
        if run.checkpoint_due(step):
            save_checkpoint(run, step, pretrainer=pretrainer, optimizer=optimizer,
                            scheduler=scheduler, tracker=tracker, ctx=ctx)
    outcome.step = step
    if run.export_hf and step >= tc.num_train_steps and ctx.is_main:
        outcome.export_hf = export_hf(run, pretrainer, run.export_hf)
        log.info("exported Hugging Face model to %s", outcome.export_hf)
    if board is not None:
        board.close()
    return outcome.summary()
