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
Binned data (``DataSpec.bins``) is read as one stream per bin; every update's micro-batches come
from the one bin ``trainer.bins.BinSchedule`` names for that update (the same on every rank),
padded to its bound; evaluation scores each bin's batches in turn (``trainer.bins.split_steps``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from pipeline import schema
from trainer import hf_export, metrics, run_setup, storage
from trainer.bins import BinSchedule, split_steps
from trainer.config import TrainConfig
from trainer.data_contract import DataSpec, LengthBin
from trainer.event_file import EventFileWriter
from trainer.pt import checkpoint, threads
from trainer.pt.data import (
    BinnedCursorTracker,
    CursorTracker,
    ShardDataset,
    StreamConfig,
    binned_batches,
    reader_files,
    tracker_from_state,
)
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


def stream_config(spec: DataSpec, config: TrainConfig, *, train: bool,
                  length_bin: LengthBin | None = None) -> StreamConfig:
    """The stream of ``spec``'s Parquet shards, or of one of its length bins: that bin's
    shards, padded to its bound and its max_predictions_per_seq. Dynamic data is masked by the
    stream with the run's seed: training data for the epoch being read, held-out data always
    for epoch 0 (a bin's instances keep their stable indexes: the masks of unbinned reading)."""
    fmt = schema.PARQUET_DIR
    if length_bin is None:
        paths, seq, preds = spec.paths(fmt), spec.max_seq_length, spec.max_predictions_per_seq
        offsets = spec.index_offsets(fmt)
    else:
        paths, seq = length_bin.paths[fmt], length_bin.bound
        preds, offsets = length_bin.max_predictions_per_seq, length_bin.index_offsets[fmt]
    masking = spec.masking
    if masking is not None and masking.max_predictions_per_seq != preds:
        masking = dataclasses.replace(masking, max_predictions_per_seq=preds)
    return StreamConfig(paths=tuple(paths), batch_size=config.batch_size, max_seq_length=seq,
                        max_predictions_per_seq=preds, seed=config.seed,
                        shuffle_buffer=config.shuffle_buffer, repeat=train, shuffle=train,
                        next_sentence=spec.next_sentence, masking=masking,
                        index_offsets=tuple(offsets) if spec.dynamic else (),
                        mask_epoch=None if train else 0)


def data_parts(spec: DataSpec) -> list[tuple[LengthBin | None, list[int]]]:
    """(bin, its Parquet shards' sizes) per part of the data: one part (None) for unbinned
    data, one per non-empty bin, in bound order, for binned data."""
    if not spec.bins:
        return [(None, spec.sizes(schema.PARQUET_DIR))]
    return [(b, b.sizes[schema.PARQUET_DIR]) for b in spec.bins]


def global_batch(config: TrainConfig, ctx: DistContext) -> int:
    """Examples per optimizer update over all ranks."""
    return config.batch_size * ctx.world_size * config.grad_accum


def bin_schedule(spec: DataSpec, config: TrainConfig, ctx: DistContext) -> BinSchedule | None:
    """The bin schedule of binned training data (None for unbinned data). A bin with fewer
    instances than one global batch is never drawn (a warning names it); run_setup.Refused,
    on every rank alike, when no bin holds one."""
    schedule = run_setup.bin_schedule(spec, unit=global_batch(config, ctx), seed=config.seed,
                                      unit_name="global batch",
                                      unit_parts="batch_size x ranks x grad_accum",
                                      warn=ctx.is_main)
    if schedule is not None and ctx.is_main:
        log.info("length bins %s: %s batches per schedule epoch of %d updates",
                 ",".join(map(str, schedule.bounds)), ",".join(map(str, schedule.batches)),
                 schedule.steps_per_epoch)
    return schedule


def _loader(config: StreamConfig, train: TrainConfig, ctx: DistContext,
            tracker: CursorTracker) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's endless batches of one stream, starting at the tracker's cursor."""
    dataset = ShardDataset(config, rank=ctx.rank, world_size=ctx.world_size,
                           num_workers=train.num_workers, cursors=tracker.cursors,
                           batches_consumed=tracker.batches)
    # Own generator: DataLoader draws worker base seeds from it instead of the process RNG,
    # which would otherwise shift the dropout stream of a resumed run.
    loader = DataLoader(dataset, batch_size=None, num_workers=train.num_workers,
                        pin_memory=ctx.device.type == "cuda", worker_init_fn=threads.init_worker,
                        generator=torch.Generator().manual_seed(train.seed))
    return iter(loader)


def train_batches(spec: DataSpec, config: TrainConfig, ctx: DistContext,
                  tracker: CursorTracker | BinnedCursorTracker, *,
                  schedule: BinSchedule | None = None,
                  start_step: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Endless micro-batches for this rank, starting at the tracker's cursor(s). Binned data
    (``schedule`` given): one stream per drawn bin, each from its own cursors, and update
    ``start_step`` onwards read the bins the schedule names."""
    if schedule is None:
        return _loader(stream_config(spec, config, train=True), config, ctx, tracker)
    streams = {b.bound: _loader(stream_config(spec, config, train=True, length_bin=b), config,
                                ctx, tracker.tracker(b.bound))
               for b in spec.bins if b.bound in schedule.bounds}
    return binned_batches(streams, schedule, start_step=start_step,
                          micro_batches=config.grad_accum)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(ctx: DistContext, config: TrainConfig):
    """bf16 autocast on CUDA only: CPU bf16 matmuls are slow on most CPUs and fp32 is exact."""
    if ctx.device.type == "cuda" and config.mixed_precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def eval_batches(spec: DataSpec, config: TrainConfig, ctx: DistContext) -> tuple[int, ...]:
    """Batches this rank scores per evaluation from each part of the held-out data
    (``data_parts``: one for unbinned data, one per bin): eval_steps in all (split over the
    bins in proportion to their full batches), or fewer when one pass over its held-out files
    holds fewer full batches (0 for a rank without files: more ranks than held-out shards).
    Every rank counts all ranks from the manifest, so all agree to refuse
    (run_setup.Refused) held-out data without one full batch anywhere."""
    full = []  # per part, per rank
    for _, sizes in data_parts(spec):
        full.append([sum(sizes[f] for f in reader_files(range(len(sizes)), reader=r,
                                                        num_readers=ctx.world_size))
                     // config.batch_size for r in range(ctx.world_size)])
    if max(max(part) for part in full) == 0:
        raise run_setup.Refused(f"{spec.data_dir}: no rank's held-out files hold one batch of "
                                f"{config.batch_size}: nothing to evaluate")
    return split_steps([part[ctx.rank] for part in full], config.eval_steps)


@torch.no_grad()
def evaluate(pretrainer: Pretrainer, spec: DataSpec, config: TrainConfig, ctx: DistContext, *,
             steps: tuple[int, ...]) -> dict[str, float]:
    """``metrics.eval_keys`` over ``steps[i]`` full batches per rank of part i of the held-out
    shards (``eval_batches``; binned data: each bin's batches in turn, padded to its bound),
    read in file order from the start: the same examples at every evaluation. Dynamic
    held-out data is masked with epoch 0's masks (``stream_config``): the same masks too."""
    was_training = pretrainer.training
    pretrainer.eval()
    sums = None
    for (length_bin, _), count in zip(data_parts(spec), steps):
        if not count:
            continue
        dataset = ShardDataset(stream_config(spec, config, train=False, length_bin=length_bin),
                               rank=ctx.rank, world_size=ctx.world_size)
        for _, batch in zip(range(count), dataset):
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
    gradient norm before clipping, as device tensors (no host sync), and its
    ``metrics.TOKEN_SUM_KEYS`` (real tokens, token slots) as numbers, counted on the host
    batch. DDP all-reduces gradients only on the last micro-batch (no_sync on the others).
    """
    sums = None
    tokens = dict.fromkeys(metrics.TOKEN_SUM_KEYS, 0.0)
    for micro in range(config.grad_accum):
        batch = next(batches)
        tracker.update(batch)
        mask = batch["attention_mask"]
        tokens = metrics.add(tokens, metrics.token_counts(int(mask.sum()), mask.numel()))
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
    return {**sums, **tokens}


def save_checkpoint(run: Run, step: int, *, pretrainer, optimizer, scheduler,
                    tracker: CursorTracker | BinnedCursorTracker, ctx: DistContext) -> None:
    state = {"model": pretrainer.model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": step,
             "model_config": run.model_config.to_dict(),
             "train_config": run.train_config.to_dict(), "world_size": ctx.world_size}
    rank_state = {"rng": checkpoint.rng_state(ctx.device), "data": tracker.state_dict()}
    checkpoint.save(run.output_dir, step, ctx=ctx, state=state, rank_state=rank_state,
                    keep=run.train_config.keep_checkpoints)


def restore(loaded: tuple | None, *, pretrainer, optimizer, scheduler, seed: int,
            ctx: DistContext, binned: bool = False):
    """(start step, tracker) from ``loaded`` = ``checkpoint.load_newest``'s (state, rank
    state), or (0, fresh) when it is None. binned: the data has length bins, whose tracker
    holds every bin's cursors (``BinnedCursorTracker``); checkpoints of unbinned data hold
    one stream's (``CursorTracker``), as they always did.

    The run directory's rule (run_setup) has already made sure a checkpoint there is this
    run's: same configs, world size and DataLoader workers, which exact data resume needs. So
    a state that loads but does not fit the model is a bug, and raises here: only unreadable
    checkpoints are skipped (in ``load_newest``, before anything is applied).
    """
    if loaded is None:
        torch.manual_seed(seed + ctx.rank)  # dropout; the loop owns this RNG
        return 0, BinnedCursorTracker() if binned else CursorTracker()
    state, rank_state = loaded
    tracker = tracker_from_state(rank_state["data"])
    if isinstance(tracker, BinnedCursorTracker) != binned:
        raise ValueError(f"checkpoint at step {state['step']} holds the data position of "
                         f"{'un' if binned else ''}binned data, but the data is "
                         f"{'' if binned else 'un'}binned")
    pretrainer.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    checkpoint.set_rng_state(rank_state["rng"], ctx.device)
    return state["step"], tracker


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


def compile_model(model: torch.nn.Module, backend: str, *, shapes: int) -> torch.nn.Module:
    """``torch.compile(model)`` for training (``--compile``): static shapes, so each batch shape
    (one per length bin: ``shapes``) gets a graph of its own, compiled the first time it comes,
    and none is recompiled after; dynamo's recompile limit is raised to hold them all.
    Evaluation keeps the eager model (its batches may end short)."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), shapes + 1))
    return torch.compile(model, backend=backend, dynamic=False)


def train(run: Run, ctx: DistContext, *, compile_backend: str | None = None) -> dict:
    """The whole run, to ``run.last_step``; returns ``run_setup.Outcome.summary()``.
    compile_backend: ``compile_model`` the training model with this torch.compile backend.

    Raises run_setup.Refused, before writing or building anything, when output_dir holds
    another run, the held-out data is smaller than one batch per rank, or a shard differs from
    its manifest (``check_data``).
    """
    tc, task = run.train_config, run.data.next_sentence
    thread_info = threads.configure(ctx.local_world_size)
    if ctx.is_main:
        log.info("%s; DataLoader workers %d (1 thread each)", threads.describe(thread_info),
                 tc.num_workers)
    steps_per_eval = eval_batches(run.eval_data, tc, ctx) if run.eval_data else ()
    schedule = bin_schedule(run.data, tc, ctx)
    check_data(run, ctx)
    open_run_dir(run, ctx)
    latest, loaded = checkpoint.load_newest(run.output_dir, ctx=ctx)
    pretrainer = Pretrainer(build_model(run.model_config,
                                        init_checkpoint=None if latest else run.init_checkpoint,
                                        generator_seed=tc.seed), task).to(ctx.device)
    optimizer = build_optimizer(pretrainer, tc)
    scheduler = build_scheduler(optimizer, tc)
    step, tracker = restore(loaded, pretrainer=pretrainer, optimizer=optimizer,
                            scheduler=scheduler, seed=tc.seed, ctx=ctx,
                            binned=schedule is not None)
    del loaded  # the checkpoint's CPU copy
    model = pretrainer
    if ctx.distributed:
        model = DistributedDataParallel(
            pretrainer, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if compile_backend:
        model = compile_model(model, compile_backend, shapes=len(schedule.bounds) if schedule
                              else 1)
        if ctx.is_main:
            log.info("torch.compile(backend=%s): one graph per batch shape, compiled when "
                     "first met", compile_backend)
    board = TensorBoard(run.output_dir) if ctx.is_main else None
    metrics_log = metrics.MetricsLog(run.output_dir, next_sentence=task, scalars=board,
                                     active=ctx.is_main, tokens=True)
    metrics_log.trim(step)
    if ctx.is_main:
        log.info("%s; model %s parameters; data %s (%d instances, seq %d); world %d",
                 f"resumed {latest} at step {step}" if latest else
                 f"initialised from {run.init_checkpoint}" if run.init_checkpoint else
                 "initialised randomly", f"{count_parameters(pretrainer):,}",
                 run.data.data_dir, run.data.manifest["total_instances"],
                 run.data.max_seq_length, ctx.world_size)
    batches = train_batches(run.data, tc, ctx, tracker, schedule=schedule, start_step=step)
    outcome = run_setup.Outcome(step=step)
    model.train()
    window, window_steps, window_start = None, 0, time.perf_counter()
    while step < run.last_step:
        window = metrics.add(window, train_step(model, batches, tracker, optimizer=optimizer,
                                                scheduler=scheduler, config=tc, ctx=ctx))
        step, window_steps = step + 1, window_steps + 1
        if run.log_due(step):
            totals = sum_across(ctx, {k: float(window[k])
                                      for k in metrics.sum_keys(task) + metrics.TOKEN_SUM_KEYS})
            outcome.train = metrics.finish_train(
                totals, task, grad_norm_sum=float(window["grad_norm"]), steps=window_steps,
                learning_rate=run.learning_rate_at(step - 1),
                seconds=time.perf_counter() - window_start, tokens=totals["tokens"],
                token_slots=totals["token_slots"])
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
