"""The TF2 training loop: strategy, distributed train/eval steps, checkpoints, logs, export.

Read top to bottom: ``make_strategy`` picks TPU / GPUs / default; ``Trainer`` builds model and
optimizer under the strategy, restores the latest checkpoint (model, optimizer incl. its step,
data position) or imports ``init_checkpoint``, then ``fit`` runs chunks of steps in one
``tf.function`` (``steps_per_execution`` per host round trip on TPUs) between log, checkpoint
and eval boundaries. Per step each replica computes its share of the global-batch loss
(``model.training_loss``), gradients are summed across replicas, clipped by their global norm
and applied; so N replicas train exactly like one replica holding the global batch.

Outputs under model_dir: ``ckpt/`` (tf.train.CheckpointManager), ``train/`` and ``eval/``
TensorBoard event files, ``metrics.jsonl`` (one JSON object per log/eval line).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Dict, Optional

import keras
import tensorflow as tf

from trainer.config import ModelConfig, TrainConfig
from trainer.data_contract import DataSpec
from trainer.tf2 import data as tfdata
from trainer.tf2 import hf_convert, optim
from trainer.tf2 import model as bert

log = logging.getLogger(__name__)
SUM = tf.distribute.ReduceOp.SUM


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything one training run needs; built by ``train_tpu.main`` from flags + YAML."""

    model_config: ModelConfig
    train_config: TrainConfig
    data: DataSpec
    model_dir: str
    eval_data: Optional[DataSpec] = None
    init_checkpoint: Optional[str] = None
    export_hf: Optional[str] = None


def make_strategy(tpu: Optional[str] = None) -> tf.distribute.Strategy:
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


def dropout_rng_state(model) -> Dict[str, tf.Variable]:
    """The dropout layers' RNG states, by position in ``model.variables``.

    Keras 3 keeps them in SeedGenerator objects that tf.train.Checkpoint does not reach through
    the model, so without this a resumed run would replay the dropout masks of step 0.
    """
    states = [v for v in model.variables if "seed_generator_state" in v.path]
    return {f"state_{i}": v.value for i, v in enumerate(states)}


class Trainer:
    """Model, optimizer, checkpoint and compiled steps of one run under one strategy."""

    def __init__(self, spec: RunSpec, strategy: tf.distribute.Strategy):
        self.spec, self.strategy = spec, strategy
        tc = spec.train_config
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = tc.batch_size * self.replicas  # per micro-batch
        # keras-hub layers draw initial weights and dropout seeds from Keras's global seed; set
        # it once, here, so a run is reproducible from its TrainConfig.seed.
        keras.utils.set_random_seed(tc.seed)
        with strategy.scope():
            self.model = bert.build_model(
                spec.model_config, max_seq_length=spec.data.max_seq_length,
                max_predictions_per_seq=spec.data.max_predictions_per_seq,
                dtype=dtype_policy(strategy, tc.mixed_precision))
            self.optimizer = optim.make_optimizer(tc, no_decay=self.model.no_decay_variables())
            self.optimizer.build(self.model.trainable_variables)
        # Records this host has consumed: the data position (see data.py). Host-side, not
        # replicated: every host counts its own.
        self.data_examples = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                              data_examples=self.data_examples,
                                              dropout_rng=dropout_rng_state(self.model))
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(spec.model_dir, "ckpt"),
            max_to_keep=tc.keep_checkpoints)
        self._train_chunk = self._make_train_chunk()
        self._eval_chunk = self._make_eval_chunk()

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore_or_init(self) -> str:
        """Resume from the latest checkpoint in model_dir, else import init_checkpoint.
        Returns what happened, for the log."""
        latest = self.manager.latest_checkpoint
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            return f"resumed {latest} at step {self.step}, data position {int(self.data_examples.numpy())}"
        if self.spec.init_checkpoint:
            missing = hf_convert.load_hf_weights(self.model, self.spec.init_checkpoint)
            return f"initialised from {self.spec.init_checkpoint} (missing: {missing or 'none'})"
        return "initialised randomly"

    def train_dataset(self):
        """Distributed endless training batches starting at the checkpointed data position."""
        tc, d = self.spec.train_config, self.spec.data

        def make(shards, batch_size):
            return tfdata.train_dataset(
                shards, batch_size=batch_size, max_seq_length=d.max_seq_length,
                max_predictions_per_seq=d.max_predictions_per_seq, seed=tc.seed,
                compression=d.tfrecord_compression, shuffle_buffer=tc.shuffle_buffer,
                start_example=int(self.data_examples.numpy()))

        dist, pipelines = tfdata.distribute(
            self.strategy, d.paths("tfrecord"), d.sizes("tfrecord"),
            global_batch_size=self.global_batch, make_dataset=make)
        self.host_examples_per_step = self.global_batch * tc.grad_accum // pipelines
        return dist

    def eval_dataset(self, data: DataSpec):
        def make(shards, batch_size):
            return tfdata.eval_dataset(
                shards, batch_size=batch_size, max_seq_length=data.max_seq_length,
                max_predictions_per_seq=data.max_predictions_per_seq,
                compression=data.tfrecord_compression)

        dist, _ = tfdata.distribute(self.strategy, data.paths("tfrecord"),
                                    data.sizes("tfrecord"), global_batch_size=self.global_batch,
                                    make_dataset=make)
        return dist

    def _replica_step(self, *batches) -> Dict[str, tf.Tensor]:
        """One optimizer update on this replica's micro-batches; returns its loss sums."""
        tc, ctx = self.spec.train_config, tf.distribute.get_replica_context()
        variables = self.model.trainable_variables
        grads, totals = None, None
        for features in batches:  # grad_accum micro-batches, unrolled
            with tf.GradientTape() as tape:
                outputs = self.model(features, training=True)
                sums = bert.loss_sums(outputs, features)
                global_weight = ctx.all_reduce(SUM, sums["mlm_weight_sum"])
                loss = bert.training_loss(sums, global_mlm_weight=global_weight,
                                          global_batch_size=self.global_batch) / len(batches)
            new = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
            grads = new if grads is None else [a + b for a, b in zip(grads, new)]
            totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
        grads = ctx.all_reduce(SUM, grads)
        grads, norm = optim.clip_by_global_norm(grads, tc.max_grad_norm)
        self.optimizer.apply_gradients(zip(grads, variables))
        totals["grad_norm"] = norm / float(self.replicas)  # summed by the reduce below
        return totals

    def _make_train_chunk(self):
        accum = self.spec.train_config.grad_accum

        @tf.function
        def train_chunk(iterator, num_steps):
            acc = {k: tf.constant(0.0) for k in bert.SUM_KEYS + ("grad_norm",)}
            for _ in tf.range(num_steps):
                batches = tuple(next(iterator) for _ in range(accum))
                out = self.strategy.run(self._replica_step, args=batches)
                acc = {k: acc[k] + self.strategy.reduce(SUM, out[k], axis=None) for k in acc}
            return acc

        return train_chunk

    def _replica_eval(self, features) -> Dict[str, tf.Tensor]:
        return bert.loss_sums(self.model(features, training=False), features)

    def _make_eval_chunk(self):
        @tf.function
        def eval_chunk(iterator, num_steps):
            acc = {k: tf.constant(0.0) for k in bert.SUM_KEYS}
            for _ in tf.range(num_steps):
                out = self.strategy.run(self._replica_eval, args=(next(iterator),))
                acc = {k: acc[k] + self.strategy.reduce(SUM, out[k], axis=None) for k in acc}
            return acc

        return eval_chunk

    def train_steps(self, iterator, num_steps: int) -> Dict[str, float]:
        """Run ``num_steps`` updates; advance the data position; return summed loss terms."""
        sums = self._train_chunk(iterator, tf.constant(num_steps, tf.int32))
        self.data_examples.assign_add(num_steps * self.host_examples_per_step)
        return {k: float(v.numpy()) for k, v in sums.items()}

    def evaluate(self, data: DataSpec) -> Dict[str, float]:
        """Google's metrics over eval_steps global batches of ``data`` (same ones every time)."""
        steps = self.spec.train_config.eval_steps
        sums = self._eval_chunk(iter(self.eval_dataset(data)), tf.constant(steps, tf.int32))
        return bert.metrics_from_sums({k: float(v.numpy()) for k, v in sums.items()})


def _scalar_metadata():
    """Metadata that makes TensorBoard's scalars dashboard show a ``tf.summary.write`` value.

    ``tf.summary.scalar`` needs the tensorboard package at write time; ``tf.summary.write``
    with this metadata writes the same event without it (TensorBoard is a viewer dependency,
    not a training one).
    """
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    return metadata


class MetricsLog:
    """TensorBoard scalars (model_dir/train, model_dir/eval) plus model_dir/metrics.jsonl."""

    def __init__(self, model_dir: str):
        self.path = os.path.join(model_dir, "metrics.jsonl")
        self.writers = {split: tf.summary.create_file_writer(os.path.join(model_dir, split))
                        for split in ("train", "eval")}

    def write(self, split: str, step: int, values: Dict[str, float]) -> None:
        metadata = _scalar_metadata()
        with self.writers[split].as_default(step=step):
            for name, value in values.items():
                tf.summary.write(name, tf.constant(value, tf.float32), metadata=metadata)
        self.writers[split].flush()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"split": split, "step": step, **values}) + "\n")
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        log.info("%s step %d: %s", split, step, shown)


def next_stop(step: int, config: TrainConfig, *, evaluating: bool) -> int:
    """The next step at which to leave the compiled loop: a log, checkpoint or eval boundary,
    the end, or steps_per_execution steps on."""
    periods = [config.log_every, config.checkpoint_every] + ([config.eval_every] if evaluating else [])
    stops = [(step // p + 1) * p for p in periods]
    return min(stops + [step + config.steps_per_execution, config.num_train_steps])


def write_run_config(spec: RunSpec, strategy: tf.distribute.Strategy) -> None:
    """model_dir/run_config.json: the configs and data this run trains on (for humans)."""
    info = {"model_config": spec.model_config.to_dict(),
            "train_config": spec.train_config.to_dict(),
            "data_dir": spec.data.data_dir,
            "eval_data_dir": spec.eval_data.data_dir if spec.eval_data else None,
            "replicas": strategy.num_replicas_in_sync,
            "init_checkpoint": spec.init_checkpoint}
    with open(os.path.join(spec.model_dir, "run_config.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)


@dataclasses.dataclass
class FitResult:
    """What a run ended with: last train/eval metrics (Google's names), throughput of the last
    log window, the export path, and the Trainer (for tests and notebooks)."""

    step: int
    train: Optional[Dict[str, float]] = None
    eval: Optional[Dict[str, float]] = None
    examples_per_sec: Optional[float] = None
    export_hf: Optional[str] = None
    trainer: Optional[Trainer] = None

    def summary(self) -> Dict:
        return {"step": self.step, "train": self.train, "eval": self.eval,
                "examples_per_sec": self.examples_per_sec, "export_hf": self.export_hf}


def fit(spec: RunSpec, strategy: Optional[tf.distribute.Strategy] = None) -> FitResult:
    """Train (resuming if model_dir has checkpoints) to num_train_steps, evaluating and
    checkpointing on the way; export at the end if asked."""
    strategy = strategy or make_strategy(None)
    tc = spec.train_config
    os.makedirs(spec.model_dir, exist_ok=True)
    write_run_config(spec, strategy)
    trainer = Trainer(spec, strategy)
    log.info("%s; %d replicas, global batch %d x %d micro-batches, dtype %s",
             trainer.restore_or_init(), trainer.replicas, trainer.global_batch, tc.grad_accum,
             trainer.model.dtype_policy.name)
    iterator = iter(trainer.train_dataset())
    metrics_log = MetricsLog(spec.model_dir)
    schedule = optim.BertSchedule(tc.learning_rate, tc.warmup_steps, tc.num_train_steps)
    step = trainer.step
    result = FitResult(step=step, trainer=trainer)
    window, window_steps, t0 = None, 0, time.perf_counter()
    while step < tc.num_train_steps:
        n = next_stop(step, tc, evaluating=spec.eval_data is not None) - step
        sums = trainer.train_steps(iterator, n)
        window = sums if window is None else {k: window[k] + sums[k] for k in sums}
        step, window_steps = step + n, window_steps + n
        if step % tc.log_every == 0 or step == tc.num_train_steps:
            elapsed = time.perf_counter() - t0
            values = bert.metrics_from_sums(window)
            values.update(grad_norm=window["grad_norm"] / window_steps,
                          learning_rate=float(schedule(step - 1)),
                          examples_per_sec=window_steps * trainer.global_batch * tc.grad_accum
                          / elapsed)
            metrics_log.write("train", step, values)
            result.train, result.examples_per_sec = values, values["examples_per_sec"]
            window, window_steps, t0 = None, 0, time.perf_counter()
        if step % tc.checkpoint_every == 0 or step == tc.num_train_steps:
            log.info("saved %s", trainer.manager.save(checkpoint_number=step))
        if spec.eval_data is not None and (step % tc.eval_every == 0
                                           or step == tc.num_train_steps):
            result.eval = trainer.evaluate(spec.eval_data)
            metrics_log.write("eval", step, result.eval)
            t0 = time.perf_counter()  # eval time is not training throughput
    result.step = step
    if spec.export_hf:
        result.export_hf = hf_convert.export_hf(
            trainer.model, spec.export_hf, vocab_file=spec.data.vocab_file,
            do_lower_case=spec.data.do_lower_case)
        log.info("exported Hugging Face model to %s", result.export_hf)
    return result
