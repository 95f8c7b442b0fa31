"""The TF2 training loop: strategy, distributed train/eval steps, checkpoints, logs, export.

Read top to bottom: ``make_strategy`` picks TPU / GPUs / default; ``fit`` applies the run
directory's resume rule (``trainer.run_setup``) after checking the shards against their
manifest, then ``Trainer`` builds model and optimizer under the strategy, restores the newest
checkpoint that restores (model, optimizer incl. its step, data position;
``trainer.tf2.checkpoints``) or imports ``init_checkpoint``, and runs chunks of steps in one
``tf.function`` (``steps_per_execution`` per host round trip on TPUs) between log, checkpoint
and eval boundaries. Per step each replica computes its share of the global-batch loss
(``model.training_loss``), gradients are summed across replicas, clipped by their global norm
and applied; so N replicas train exactly like one replica holding the global batch. The data's
sentence task (``DataSpec.next_sentence``) picks the features parsed, the loss (masked-LM only
for "none") and the metric names; dynamic data (``DataSpec.masking``) is masked by the input
pipeline (``trainer.tf2.data``) into the same features, so the step does not know the
difference. With ``jit_compile`` the per-replica step is compiled by XLA, as a TPU compiles it:
on a CPU this is how a test proves the step has static shapes and only XLA-compilable ops.

Length bins (``DataSpec.bins``): one input pipeline per bin, at that bin's lengths, and every
chunk of ``steps_per_execution`` steps reads one bin, the one ``trainer.bins.BinSchedule`` names
for the chunk (the same on every host and replica); calls never span two chunks. The step and
chunk functions exist once per shape (``Trainer.compiled``): one trace, and with XLA one
program, per bin. The data position is then the records each bin's stream has consumed on this
host, checkpointed beside the total; evaluation scores each held-out bin in turn and sums.
Every train line reports tokens_per_sec and padding_fraction (``input_mask`` sums, binned or
not).

Outputs under output_dir: ``run_config.json``, ``checkpoints/`` (tf.train.CheckpointManager),
``tensorboard/train`` and ``tensorboard/eval`` event files, ``metrics.jsonl``
(``trainer.metrics``).
"""
from __future__ import annotations

import dataclasses
import logging
import time

import keras
import tensorflow as tf

from pipeline import schema
from trainer import metrics, run_setup, storage
from trainer.bins import BinSchedule, split_steps
from trainer.data_contract import DataSpec, LengthBin
from trainer.run_setup import Run
from trainer.tf2 import checkpoints, hf_convert, optim
from trainer.tf2 import data as tfdata
from trainer.tf2 import model as bert

log = logging.getLogger(__name__)
SUM = tf.distribute.ReduceOp.SUM


def make_strategy(tpu: str | None = None) -> tf.distribute.Strategy:
    """TPUStrategy for ``tpu`` (a TPU name, grpc address, or "local" on a TPU VM);
    MirroredStrategy over all local GPUs if there are any; else the default strategy."""
    if tpu:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_accelerated(strategy: tf.distribute.Strategy) -> bool:
    devices = strategy.extended.worker_devices
    return any(("TPU" in d.upper() or "GPU" in d.upper()) for d in devices)


def dtype_policy(strategy: tf.distribute.Strategy, mixed_precision: str) -> str:
    """mixed_bfloat16 on TPUs and GPUs when asked; float32 on CPUs, where bf16 matmuls are
    emulated and slower."""
    if mixed_precision == "bf16" and is_accelerated(strategy):
        return "mixed_bfloat16"
    return "float32"


def dropout_rng_state(model) -> dict[str, tf.Variable]:
    """The dropout layers' RNG states, by position in ``model.variables``.

    Keras 3 keeps them in SeedGenerator objects that tf.train.Checkpoint does not reach through
    the model, so without this a resumed run would replay the dropout masks of step 0.
    """
    states = [v for v in model.variables if "seed_generator_state" in v.path]
    return {f"state_{i}": v.value for i, v in enumerate(states)}


class Trainer:
    """Model, optimizer, checkpoint and compiled steps of one run under one strategy.

    jit_compile: compile the per-replica train and eval steps with XLA (a TPU compiles them
    with XLA whatever this says; on CPUs and GPUs it is opt-in).
    """

    def __init__(self, run: Run, strategy: tf.distribute.Strategy, *, jit_compile: bool = False):
        self.run, self.strategy, self.jit_compile = run, strategy, jit_compile
        tc = run.train_config
        self.replicas = strategy.num_replicas_in_sync
        self.next_sentence = run.data.next_sentence
        self.global_batch = tc.batch_size * self.replicas  # per micro-batch
        # keras-hub layers draw initial weights and dropout seeds from Keras's global seed; set
        # it once, here, so a run is reproducible from its TrainConfig.seed.
        keras.utils.set_random_seed(tc.seed)
        with strategy.scope():
            self.model = bert.build_model(
                run.model_config, max_seq_length=run.data.max_seq_length,
                max_predictions_per_seq=run.data.max_predictions_per_seq,
                dtype=dtype_policy(strategy, tc.mixed_precision),
                next_sentence=self.next_sentence)
            self.optimizer = optim.make_optimizer(tc, no_decay=self.model.no_decay_variables())
            self.optimizer.build(self.model.trainable_variables)
        # Records this host has consumed: the data position (see data.py). Host-side, not
        # replicated: every host counts its own. Binned data: also per bin (bin i of
        # run.data.bins), which is what its streams resume from; unbinned checkpoints hold no
        # such entry, as before.
        self.data_examples = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.bin_examples = [tf.Variable(0, dtype=tf.int64, trainable=False)
                             for _ in run.data.bins]
        state = dict(model=self.model, optimizer=self.optimizer,
                     data_examples=self.data_examples, dropout_rng=dropout_rng_state(self.model))
        if run.data.bins:
            state["data_bins"] = {f"bin_{b.bound}": v
                                  for b, v in zip(run.data.bins, self.bin_examples)}
        self.checkpoint = tf.train.Checkpoint(**state)
        self.manager = self._make_manager()
        # Set when every checkpoint failed to restore: some variables may hold a failed
        # restore's values, so fit builds a fresh Trainer.
        self.tainted = False
        self.schedule = bin_schedule(run.data, tc, self.replicas)  # None: unbinned data
        self.shape = (run.data.max_seq_length, run.data.max_predictions_per_seq)
        self._compiled_fns = {}
        # The data's full-length steps; kept for inspection: tests read the XLA program
        # (experimental_get_compiler_ir). A bin's: compiled("train", bin_shape(b)).
        self.replica_step = self.compiled("train", self.shape)
        self.replica_eval = self.compiled("eval", self.shape)

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def _make_manager(self) -> tf.train.CheckpointManager:
        return tf.train.CheckpointManager(
            self.checkpoint, self.run.path(run_setup.CHECKPOINTS),
            max_to_keep=self.run.train_config.keep_checkpoints or None)  # 0: keep all, as torch

    def restore_or_init(self) -> str:
        """Resume from the newest checkpoint in output_dir that restores (older ones are
        tried when newer ones fail: ``checkpoints.restore_newest``), else import
        init_checkpoint. Returns what happened, for the log; sets ``tainted`` when every
        checkpoint failed."""
        latest, skipped = checkpoints.restore_newest(self.checkpoint, self.manager)
        if skipped:
            self.manager = self._make_manager()  # the state file no longer lists them
        if latest:
            position = int(self.data_examples.numpy())
            per_bin = ", ".join(f"bin {b.bound}: {int(v.numpy())}"
                                for b, v in zip(self.run.data.bins, self.bin_examples))
            return (f"resumed {latest} at step {self.step}, data position {position}"
                    + (f" ({per_bin})" if per_bin else ""))
        if skipped:
            self.tainted = True
            return f"no checkpoint restored ({len(skipped)} set aside): starting from step 0"
        if self.run.init_checkpoint:
            missing = hf_convert.load_hf_weights(self.model, self.run.init_checkpoint)
            return f"initialised from {self.run.init_checkpoint} (missing: {missing or 'none'})"
        return "initialised randomly"

    def part_shape(self, part: int | None) -> tuple[int, int]:
        """(sequence length, predictions) of the data (part None) or of bin ``part``."""
        return self.shape if part is None else bin_shape(self.run.data.bins[part])

    def train_dataset(self, part: int | None = None):
        """Distributed endless training batches starting at the checkpointed data position:
        of the data (part None, unbinned data only) or of bin ``part`` of binned data, at its
        lengths, from the records that bin has consumed."""
        tc, d = self.run.train_config, self.run.data
        fmt = schema.TFRECORD_DIR
        if part is None:
            if d.bins:
                raise ValueError(f"{d.data_dir} is binned: read it per bin (train_input)")
            files, sizes, offsets = d.paths(fmt), d.sizes(fmt), None
            start, masking = int(self.data_examples.numpy()), d.masking
        else:
            b = d.bins[part]
            files, sizes, offsets = b.paths[fmt], b.sizes[fmt], b.index_offsets[fmt]
            start, masking = int(self.bin_examples[part].numpy()), bin_masking(d, b)
        seq, preds = self.part_shape(part)

        def make(shards, batch_size):
            return tfdata.train_dataset(
                shards, batch_size=batch_size, max_seq_length=seq,
                max_predictions_per_seq=preds, seed=tc.seed,
                compression=d.tfrecord_compression, shuffle_buffer=tc.shuffle_buffer,
                start_example=start, next_sentence=d.next_sentence, masking=masking)

        dist, pipelines = tfdata.distribute(self.strategy, files, sizes,
                                            global_batch_size=self.global_batch,
                                            make_dataset=make, index_offsets=offsets)
        self.host_examples_per_step = self.global_batch * tc.grad_accum // pipelines
        return dist

    def train_input(self) -> TrainInput:
        """Iterators over the training data from the checkpointed position: one for unbinned
        data, one per drawn bin (and the schedule) for binned data."""
        if self.schedule is None:
            return TrainInput({None: iter(self.train_dataset())})
        drawn = {b.bound: i for i, b in enumerate(self.run.data.bins)
                 if b.bound in self.schedule.bounds}
        return TrainInput({i: iter(self.train_dataset(i)) for i in drawn.values()},
                          schedule=self.schedule,
                          chunk_steps=self.run.train_config.steps_per_execution, parts=drawn)

    def eval_input(self, data: DataSpec):
        """``eval_input`` of ``data`` for this trainer's strategy and global batch."""
        return eval_input(self.strategy, data, global_batch=self.global_batch,
                          eval_steps=self.run.train_config.eval_steps,
                          seed=self.run.train_config.seed)

    def _replica_step(self, *batches) -> dict[str, tf.Tensor]:
        """One optimizer update on this replica's micro-batches; returns its loss sums."""
        tc, ctx = self.run.train_config, tf.distribute.get_replica_context()
        variables = self.model.trainable_variables
        grads, totals = None, None
        for features in batches:  # grad_accum micro-batches, unrolled
            with tf.GradientTape() as tape:
                outputs = self.model(features, training=True)
                sums = bert.loss_sums(outputs, features, self.next_sentence)
                global_weight = ctx.all_reduce(SUM, sums["mlm_weight_sum"])
                loss = bert.training_loss(sums, global_mlm_weight=global_weight,
                                          global_batch_size=self.global_batch) / len(batches)
            new = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
            grads = new if grads is None else [a + b for a, b in zip(grads, new)]
            totals = metrics.add(totals, {**sums, **token_sums(features)})
        grads = ctx.all_reduce(SUM, grads)
        grads, norm = optim.clip_by_global_norm(grads, tc.max_grad_norm)
        self.optimizer.apply_gradients(zip(grads, variables))
        totals["grad_norm"] = norm / float(self.replicas)  # summed by the reduce below
        return totals

    def _replica_eval(self, features) -> dict[str, tf.Tensor]:
        return bert.loss_sums(self.model(features, training=False), features,
                              self.next_sentence)

    def compiled(self, kind: str, shape: tuple[int, int]):
        """The per-replica step of ``kind`` ("train", "eval"; "train_chunk", "eval_chunk":
        the tf.functions running a chunk of them) for batches of ``shape`` (sequence length,
        predictions), built on first use. One function per shape: each traces once, and with
        jit_compile each bin gets its own XLA program, as a TPU compiles one per shape;
        one function for all shapes would retrace per bin (and warn about it)."""
        key = (kind, tuple(shape))
        if key not in self._compiled_fns:
            if kind == "train_chunk":
                fn = self._make_train_chunk(self.compiled("train", shape))
            elif kind == "eval_chunk":
                fn = self._make_eval_chunk(self.compiled("eval", shape))
            else:
                fn = {"train": self._replica_step, "eval": self._replica_eval}[kind]
                if self.jit_compile:
                    fn = tf.function(fn, jit_compile=True)
            self._compiled_fns[key] = fn
        return self._compiled_fns[key]

    def _make_train_chunk(self, replica_step):
        accum = self.run.train_config.grad_accum

        @tf.function
        def train_chunk(iterator, num_steps):
            acc = {k: tf.constant(0.0) for k in metrics.sum_keys(self.next_sentence)
                   + metrics.TOKEN_SUM_KEYS + ("grad_norm",)}
            for _ in tf.range(num_steps):
                batches = tuple(next(iterator) for _ in range(accum))
                out = self.strategy.run(replica_step, args=batches)
                acc = {k: acc[k] + self.strategy.reduce(SUM, out[k], axis=None) for k in acc}
            return acc

        return train_chunk

    def _make_eval_chunk(self, replica_eval):
        @tf.function
        def eval_chunk(iterator, num_steps):
            acc = {k: tf.constant(0.0) for k in metrics.sum_keys(self.next_sentence)}
            for _ in tf.range(num_steps):
                out = self.strategy.run(replica_eval, args=(next(iterator),))
                acc = {k: acc[k] + self.strategy.reduce(SUM, out[k], axis=None) for k in acc}
            return acc

        return eval_chunk

    def train_steps(self, iterator, num_steps: int, part: int | None = None
                    ) -> dict[str, float]:
        """Run ``num_steps`` updates on ``iterator`` (of the data, or of bin ``part``);
        advance the data position (and the bin's); return the summed loss terms
        (``metrics.sum_keys``), tokens and token slots (``metrics.TOKEN_SUM_KEYS``) and the
        summed gradient norm."""
        chunk = self.compiled("train_chunk", self.part_shape(part))
        sums = chunk(iterator, tf.constant(num_steps, tf.int32))
        records = num_steps * self.host_examples_per_step
        self.data_examples.assign_add(records)
        if part is not None:
            self.bin_examples[part].assign_add(records)
        return {k: float(v.numpy()) for k, v in sums.items()}

    def evaluate(self, held_out: tuple[EvalPart, ...]) -> dict[str, float]:
        """Google's metrics (``metrics.eval_keys``) over ``held_out`` = ``eval_input(...)``,
        each part (bin) iterated from its start in turn, sums added: the same batches at
        every evaluation."""
        total = None
        for part in held_out:
            sums = self.compiled("eval_chunk", part.shape)(iter(part.dataset),
                                                           tf.constant(part.steps, tf.int32))
            total = metrics.add(total, {k: float(v.numpy()) for k, v in sums.items()})
        return metrics.finish(total, self.next_sentence)

    def export_hf(self, out_dir: str) -> str:
        """The model as a Hugging Face BertForPreTraining dir with the data's vocab and casing
        (for "none" data the pooler and NSP head are exported as they started)."""
        return hf_convert.export_hf(self.model, out_dir, vocab_file=self.run.data.vocab_file,
                                    do_lower_case=self.run.data.do_lower_case)


@dataclasses.dataclass
class TrainInput:
    """What ``fit`` reads training batches from. iterators: one distributed iterator per
    part: None for unbinned data; for binned data the index of each bin the schedule draws
    (in ``DataSpec.bins``), ``parts`` mapping its bound to that index. ``schedule`` names the
    bin of every chunk of ``chunk_steps`` (steps_per_execution) steps."""

    iterators: dict
    schedule: BinSchedule | None = None
    chunk_steps: int = 1
    parts: dict[int, int] = dataclasses.field(default_factory=dict)

    def part_at(self, step: int) -> int | None:
        """The part that step ``step`` (0-based) reads: the bin of its chunk."""
        if self.schedule is None:
            return None
        return self.parts[self.schedule.bin_at(step // self.chunk_steps)]

    def stop(self, step: int, stop: int) -> int:
        """``stop`` (``next_stop``), cut at the end of ``step``'s chunk for binned data: one
        call of the compiled loop reads one bin."""
        if self.schedule is None:
            return stop
        return min(stop, (step // self.chunk_steps + 1) * self.chunk_steps)


@dataclasses.dataclass(frozen=True)
class EvalPart:
    """Held-out batches of one shape: the distributed one-pass dataset, the steps scored per
    evaluation, (sequence length, predictions)."""

    dataset: object
    steps: int
    shape: tuple[int, int]


def bin_shape(length_bin: LengthBin) -> tuple[int, int]:
    """(sequence length, predictions) of a bin's batches."""
    return length_bin.bound, length_bin.max_predictions_per_seq


def bin_masking(data: DataSpec, length_bin: LengthBin):
    """Dynamic data's masking settings for one bin (its own max_predictions_per_seq); None
    for static data."""
    if data.masking is None:
        return None
    return dataclasses.replace(data.masking,
                               max_predictions_per_seq=length_bin.max_predictions_per_seq)


def token_sums(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """``metrics.TOKEN_SUM_KEYS`` of one batch: real tokens (the ``input_mask`` sum) and all
    token slots (rows x padded length), float32 scalars summed like the loss terms."""
    mask = features["input_mask"]
    return {"tokens": tf.reduce_sum(tf.cast(mask, tf.float32)),
            "token_slots": tf.cast(tf.size(mask), tf.float32)}


def bin_schedule(data: DataSpec, train_config, replicas: int, *,
                 announce: bool = False) -> BinSchedule | None:
    """The chunk schedule of binned data (None for unbinned data): a unit is a chunk of
    steps_per_execution updates, so a bin is drawn floor(instances / (global batch x
    grad_accum x steps_per_execution)) times per schedule epoch. run_setup.Refused when no bin
    fills one chunk; announce: log the schedule and warn about each bin never drawn."""
    tc = train_config
    schedule = run_setup.bin_schedule(
        data, unit=tc.batch_size * replicas * tc.grad_accum * tc.steps_per_execution,
        seed=tc.seed, unit_name="chunk",
        unit_parts="global batch x grad_accum x steps_per_execution", warn=announce)
    if schedule is not None and announce:
        log.info("length bins %s: %s chunks of %d steps per schedule epoch of %d chunks",
                 ",".join(map(str, schedule.bounds)), ",".join(map(str, schedule.batches)),
                 tc.steps_per_execution, schedule.steps_per_epoch)
    return schedule


def eval_input(strategy: tf.distribute.Strategy, data: DataSpec, *, global_batch: int,
               eval_steps: int, seed: int = 0) -> tuple[EvalPart, ...]:
    """The held-out parts to score at each evaluation: all of ``data``, or each length bin
    of binned data (at its own lengths). eval_steps in all (split between bins in proportion
    to their full global batches: ``trainer.bins.split_steps``), or fewer when one pass of the
    smallest host's files holds fewer full global batches; parts with none are left out.
    run_setup.Refused when no part holds one: nothing to evaluate. Dynamic data is masked as
    epoch 0 with ``seed`` (the run's): the same masks at every evaluation."""
    fmt = schema.TFRECORD_DIR
    if data.bins:
        parts = [(b.paths[fmt], b.sizes[fmt], b.index_offsets[fmt], bin_shape(b),
                  bin_masking(data, b)) for b in data.bins]
    else:
        parts = [(data.paths(fmt), data.sizes(fmt), None,
                  (data.max_seq_length, data.max_predictions_per_seq), data.masking)]
    built, full = [], []
    for files, sizes, offsets, (seq, preds), masking in parts:
        def make(shards, batch_size, seq=seq, preds=preds, masking=masking):
            return tfdata.eval_dataset(
                shards, batch_size=batch_size, max_seq_length=seq,
                max_predictions_per_seq=preds, compression=data.tfrecord_compression,
                next_sentence=data.next_sentence, masking=masking, seed=seed)

        dist, pipelines = tfdata.distribute(strategy, files, sizes,
                                            global_batch_size=global_batch, make_dataset=make,
                                            index_offsets=offsets)
        built.append((dist, (seq, preds)))
        full.append(tfdata.full_batches_per_pass(files, sizes, num_pipelines=pipelines,
                                                 pipeline_batch_size=global_batch // pipelines))
    if sum(full) == 0:
        where = " in any of its length bins" if data.bins else ""
        raise run_setup.Refused(f"{data.data_dir} holds fewer examples per input pipeline than "
                                f"one global batch of {global_batch}{where}: nothing to "
                                "evaluate")
    return tuple(EvalPart(dist, steps, shape)
                 for (dist, shape), steps in zip(built, split_steps(full, eval_steps)) if steps)


def tensorboard_scalars(output_dir: str):
    """scalars(split, step, values) for ``metrics.MetricsLog``: event files under
    output_dir/tensorboard/<split>, the scalars dashboard's format.

    ``tf.summary.scalar`` needs the tensorboard package at write time; ``tf.summary.write``
    with this metadata writes the same event without it (TensorBoard is a viewer dependency,
    not a training one).
    """
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    writers = {}

    def write(split: str, step: int, values: dict[str, float]) -> None:
        if split not in writers:
            writers[split] = tf.summary.create_file_writer(
                storage.join(output_dir, run_setup.TENSORBOARD, split))
        with writers[split].as_default(step=step):
            for name, value in values.items():
                tf.summary.write(name, tf.constant(value, tf.float32), metadata=metadata)
        writers[split].flush()

    return write


def next_stop(step: int, run: Run) -> int:
    """The next step at which to leave the compiled loop: a log, checkpoint or eval boundary,
    the last step, or steps_per_execution steps on."""
    tc = run.train_config
    periods = [tc.log_every, tc.checkpoint_every] + ([tc.eval_every] if run.eval_data else [])
    stops = [(step // p + 1) * p for p in periods]
    return min(stops + [step + tc.steps_per_execution, run.last_step])


@dataclasses.dataclass
class FitResult(run_setup.Outcome):
    """The run's Outcome plus the Trainer (for tests and notebooks)."""

    trainer: Trainer | None = None


def fit(run: Run, strategy: tf.distribute.Strategy | None = None, *,
        jit_compile: bool = False) -> FitResult:
    """Train to ``run.last_step`` (resuming per the run directory's rule), evaluating and
    checkpointing on the way; export after num_train_steps if asked.

    Raises run_setup.Refused, before writing or building anything, when output_dir holds
    another run, the held-out data is smaller than one global batch, or a TFRecord shard
    differs from its manifest (this process hashes them all: one process per host).
    """
    strategy = strategy or make_strategy(None)
    tc = run.train_config
    replicas = strategy.num_replicas_in_sync
    bin_schedule(run.data, tc, replicas, announce=True)  # refuses data without one chunk
    run_setup.refuse_changed_data(run, schema.TFRECORD_DIR,
                                  [run_setup.check_data(run, schema.TFRECORD_DIR)])
    held_out = None
    if run.eval_data is not None:
        held_out = eval_input(strategy, run.eval_data, global_batch=tc.batch_size * replicas,
                              eval_steps=tc.eval_steps, seed=tc.seed)
    record = run_setup.run_record(run, trainer="tf2", replicas=replicas)
    run_setup.start_run_dir(run, record, clear=run_setup.check_run_dir(run, record))
    trainer = Trainer(run, strategy, jit_compile=jit_compile)
    how = trainer.restore_or_init()
    if trainer.tainted:  # the failed checkpoints are set aside: this one starts clean
        trainer = Trainer(run, strategy, jit_compile=jit_compile)
        how = trainer.restore_or_init()
    log.info("%s; %d replicas, global batch %d x %d micro-batches, dtype %s%s",
             how, trainer.replicas, trainer.global_batch, tc.grad_accum,
             trainer.model.dtype_policy.name,
             ", steps compiled by XLA (jit_compile)" if jit_compile else "")
    stream = trainer.train_input()
    metrics_log = metrics.MetricsLog(run.output_dir, next_sentence=run.data.next_sentence,
                                     scalars=tensorboard_scalars(run.output_dir), tokens=True)
    step = trainer.step
    metrics_log.trim(step)
    result = FitResult(step=step, trainer=trainer)
    window, window_steps, t0 = None, 0, time.perf_counter()
    while step < run.last_step:
        part = stream.part_at(step)
        n = stream.stop(step, next_stop(step, run)) - step
        window = metrics.add(window, trainer.train_steps(stream.iterators[part], n, part))
        step, window_steps = step + n, window_steps + n
        if run.log_due(step):
            result.train = metrics.finish_train(
                window, run.data.next_sentence, grad_norm_sum=window["grad_norm"],
                steps=window_steps, learning_rate=run.learning_rate_at(step - 1),
                seconds=time.perf_counter() - t0, tokens=window["tokens"],
                token_slots=window["token_slots"])
            metrics_log.write("train", step, result.train)
            window, window_steps, t0 = None, 0, time.perf_counter()
        if run.checkpoint_due(step):
            log.info("saved %s", trainer.manager.save(checkpoint_number=step))
        if run.eval_due(step):
            result.eval = trainer.evaluate(held_out)
            metrics_log.write("eval", step, result.eval)
            t0 = time.perf_counter()  # eval time is not training throughput
    result.step = step
    if run.export_hf and step >= tc.num_train_steps:
        result.export_hf = trainer.export_hf(run.export_hf)
        log.info("exported Hugging Face model to %s", result.export_hf)
    return result
