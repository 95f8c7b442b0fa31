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
from trainer.data_contract import DataSpec
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
        # replicated: every host counts its own.
        self.data_examples = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                              data_examples=self.data_examples,
                                              dropout_rng=dropout_rng_state(self.model))
        self.manager = self._make_manager()
        # Set when every checkpoint failed to restore: some variables may hold a failed
        # restore's values, so fit builds a fresh Trainer.
        self.tainted = False
        self._train_chunk = self._make_train_chunk()
        self._eval_chunk = self._make_eval_chunk()

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
            return f"resumed {latest} at step {self.step}, data position {position}"
        if skipped:
            self.tainted = True
            return f"no checkpoint restored ({len(skipped)} set aside): starting from step 0"
        if self.run.init_checkpoint:
            missing = hf_convert.load_hf_weights(self.model, self.run.init_checkpoint)
            return f"initialised from {self.run.init_checkpoint} (missing: {missing or 'none'})"
        return "initialised randomly"

    def train_dataset(self):
        """Distributed endless training batches starting at the checkpointed data position."""
        tc, d = self.run.train_config, self.run.data

        def make(shards, batch_size):
            return tfdata.train_dataset(
                shards, batch_size=batch_size, max_seq_length=d.max_seq_length,
                max_predictions_per_seq=d.max_predictions_per_seq, seed=tc.seed,
                compression=d.tfrecord_compression, shuffle_buffer=tc.shuffle_buffer,
                start_example=int(self.data_examples.numpy()), next_sentence=d.next_sentence,
                masking=d.masking)

        dist, pipelines = tfdata.distribute(
            self.strategy, d.paths(schema.TFRECORD_DIR), d.sizes(schema.TFRECORD_DIR),
            global_batch_size=self.global_batch, make_dataset=make)
        self.host_examples_per_step = self.global_batch * tc.grad_accum // pipelines
        return dist

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
            totals = metrics.add(totals, sums)
        grads = ctx.all_reduce(SUM, grads)
        grads, norm = optim.clip_by_global_norm(grads, tc.max_grad_norm)
        self.optimizer.apply_gradients(zip(grads, variables))
        totals["grad_norm"] = norm / float(self.replicas)  # summed by the reduce below
        return totals

    def _replica_eval(self, features) -> dict[str, tf.Tensor]:
        return bert.loss_sums(self.model(features, training=False), features,
                              self.next_sentence)

    def _compiled(self, replica_fn):
        return tf.function(replica_fn, jit_compile=True) if self.jit_compile else replica_fn

    def _make_train_chunk(self):
        accum = self.run.train_config.grad_accum
        # Kept for inspection: tests read the XLA program (experimental_get_compiler_ir).
        self.replica_step = replica_step = self._compiled(self._replica_step)

        @tf.function
        def train_chunk(iterator, num_steps):
            acc = {k: tf.constant(0.0)
                   for k in metrics.sum_keys(self.next_sentence) + ("grad_norm",)}
            for _ in tf.range(num_steps):
                batches = tuple(next(iterator) for _ in range(accum))
                out = self.strategy.run(replica_step, args=batches)
                acc = {k: acc[k] + self.strategy.reduce(SUM, out[k], axis=None) for k in acc}
            return acc

        return train_chunk

    def _make_eval_chunk(self):
        self.replica_eval = replica_eval = self._compiled(self._replica_eval)

        @tf.function
        def eval_chunk(iterator, num_steps):
            acc = {k: tf.constant(0.0) for k in metrics.sum_keys(self.next_sentence)}
            for _ in tf.range(num_steps):
                out = self.strategy.run(replica_eval, args=(next(iterator),))
                acc = {k: acc[k] + self.strategy.reduce(SUM, out[k], axis=None) for k in acc}
            return acc

        return eval_chunk

    def train_steps(self, iterator, num_steps: int) -> dict[str, float]:
        """Run ``num_steps`` updates; advance the data position; return the summed loss terms
        (``metrics.sum_keys``) and the summed gradient norm."""
        sums = self._train_chunk(iterator, tf.constant(num_steps, tf.int32))
        self.data_examples.assign_add(num_steps * self.host_examples_per_step)
        return {k: float(v.numpy()) for k, v in sums.items()}

    def evaluate(self, held_out) -> dict[str, float]:
        """Google's metrics (``metrics.eval_keys``) over ``held_out`` = ``eval_input(...)``,
        iterated from its start: the same batches at every evaluation."""
        dist, steps = held_out
        sums = self._eval_chunk(iter(dist), tf.constant(steps, tf.int32))
        return metrics.finish({k: float(v.numpy()) for k, v in sums.items()}, self.next_sentence)

    def export_hf(self, out_dir: str) -> str:
        """The model as a Hugging Face BertForPreTraining dir with the data's vocab and casing
        (for "none" data the pooler and NSP head are exported as they started)."""
        return hf_convert.export_hf(self.model, out_dir, vocab_file=self.run.data.vocab_file,
                                    do_lower_case=self.run.data.do_lower_case)


def eval_input(strategy: tf.distribute.Strategy, data: DataSpec, *, global_batch: int,
               eval_steps: int, seed: int = 0):
    """(distributed one-pass batches of ``data``, steps per evaluation): eval_steps, or fewer
    when one pass of the smallest host's files holds fewer full global batches.
    run_setup.Refused when that is none: nothing to evaluate. Dynamic data is masked as epoch
    0 with ``seed`` (the run's): the same masks at every evaluation."""
    def make(shards, batch_size):
        return tfdata.eval_dataset(
            shards, batch_size=batch_size, max_seq_length=data.max_seq_length,
            max_predictions_per_seq=data.max_predictions_per_seq,
            compression=data.tfrecord_compression, next_sentence=data.next_sentence,
            masking=data.masking, seed=seed)

    files, sizes = data.paths(schema.TFRECORD_DIR), data.sizes(schema.TFRECORD_DIR)
    dist, pipelines = tfdata.distribute(strategy, files, sizes, global_batch_size=global_batch,
                                        make_dataset=make)
    full = tfdata.full_batches_per_pass(files, sizes, num_pipelines=pipelines,
                                        pipeline_batch_size=global_batch // pipelines)
    if full == 0:
        raise run_setup.Refused(f"{data.data_dir} holds fewer examples per input pipeline than "
                                f"one global batch of {global_batch}: nothing to evaluate")
    return dist, min(eval_steps, full)


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
    log.info("%s; %d replicas, global batch %d x %d micro-batches, dtype %s",
             how, trainer.replicas, trainer.global_batch, tc.grad_accum,
             trainer.model.dtype_policy.name)
    iterator = iter(trainer.train_dataset())
    metrics_log = metrics.MetricsLog(run.output_dir, next_sentence=run.data.next_sentence,
                                     scalars=tensorboard_scalars(run.output_dir))
    step = trainer.step
    metrics_log.trim(step)
    result = FitResult(step=step, trainer=trainer)
    window, window_steps, t0 = None, 0, time.perf_counter()
    while step < run.last_step:
        n = next_stop(step, run) - step
        window = metrics.add(window, trainer.train_steps(iterator, n))
        step, window_steps = step + n, window_steps + n
        if run.log_due(step):
            result.train = metrics.finish_train(
                window, run.data.next_sentence, grad_norm_sum=window["grad_norm"],
                steps=window_steps, learning_rate=run.learning_rate_at(step - 1),
                seconds=time.perf_counter() - t0)
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
