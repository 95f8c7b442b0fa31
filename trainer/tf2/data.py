"""tf.data input over the pipeline's TFRecord shards, with a resumable data position.

Every batch is a dict of Google's feature names (``pipeline.schema.FEATURES``) with static shapes
(TPUs compile one program per shape): int32 ``input_ids``/``input_mask``/``segment_ids``
[batch, max_seq_length], int32 ``masked_lm_positions``/``masked_lm_ids`` and float32
``masked_lm_weights`` [batch, max_predictions_per_seq], int32 ``next_sentence_labels`` [batch, 1]
(absent for ``next_sentence="none"`` data, whose records have no such feature:
``schema.tf_feature_spec(..., next_sentence)`` is the spec for each sentence task).

Data position. TF can checkpoint a plain ``tf.data`` iterator (``tf.train.Checkpoint(iterator=
...)``), but not the ``DistributedIterator`` that ``distribute_datasets_from_function`` returns
under MirroredStrategy/TPUStrategy (it sits on a MultiDeviceIterator whose state TF does not save:
tensorflow#56372, #24408; checked here on TF 2.21). So the stream is made a pure function of
(seed, files, examples already consumed by this host): epoch ``e`` visits the host's files in an
order drawn from (seed, e), interleaves them deterministically and shuffles with a buffer seeded
by (seed, e). Resuming at N examples rebuilds the stream at epoch N // epoch_size and skips the
first N % epoch_size *serialized* records of that epoch (no parsing), so a resumed run sees
exactly the examples an uninterrupted run would have seen: nothing replayed, nothing skipped.
The skip costs at most one epoch of raw record reads at start-up.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorflow as tf

from pipeline import schema

AUTOTUNE = tf.data.AUTOTUNE
# Files read at once per host. More files in flight mix documents better before the shuffle
# buffer; reads are sequential per file, so this is also the I/O parallelism.
DEFAULT_CYCLE_LENGTH = 8
_INT32_FEATURES = tuple(n for n, dtype, _ in schema.FEATURES if dtype == "int64")


@dataclasses.dataclass(frozen=True)
class HostShards:
    """The files one input pipeline (host) reads, and how many examples one epoch holds.

    record_stride / record_offset: when there are fewer files than hosts every host reads all
    files and keeps records ``i % record_stride == record_offset``; with enough files the
    stride is 1 and hosts split by file (no host reads bytes it throws away).
    """

    files: list[str]
    epoch_size: int
    record_stride: int = 1
    record_offset: int = 0


def host_shards(files: Sequence[str], sizes: Sequence[int], *, num_pipelines: int = 1,
                pipeline_id: int = 0) -> HostShards:
    """Split the manifest's shards between input pipelines (one per host).

    files/sizes: parallel lists from the manifest (paths, instances per shard). Files go to
    hosts round-robin (``files[pipeline_id::num_pipelines]``, what ``Dataset.shard`` would do),
    which the pipeline's balanced shards make an even split of examples.
    """
    if len(files) != len(sizes) or not files:
        raise ValueError(f"need parallel non-empty files/sizes, got {len(files)}/{len(sizes)}")
    if len(files) >= num_pipelines:
        mine = list(range(pipeline_id, len(files), num_pipelines))
        return HostShards(files=[files[i] for i in mine],
                          epoch_size=sum(int(sizes[i]) for i in mine))
    total = sum(int(s) for s in sizes)
    return HostShards(files=list(files), epoch_size=len(range(pipeline_id, total, num_pipelines)),
                      record_stride=num_pipelines, record_offset=pipeline_id)


def parse_examples(serialized: tf.Tensor, *, max_seq_length: int, max_predictions_per_seq: int,
                   next_sentence: str = "nsp") -> dict[str, tf.Tensor]:
    """[batch] serialized tf.train.Example -> Google's features, int64 cast to int32.

    Parsing a whole batch at once (``parse_example``) is several times faster than per-record
    parsing; the spec is exactly ``schema.tf_feature_spec`` so a wrong length fails loudly (and
    so does a missing label in data whose manifest says it has one).
    """
    spec = schema.tf_feature_spec(max_seq_length, max_predictions_per_seq, next_sentence)
    features = tf.io.parse_example(serialized, spec)
    return {name: tf.cast(t, tf.int32) if name in _INT32_FEATURES else t
            for name, t in features.items()}


def _epoch_records(shards: HostShards, epoch: tf.Tensor, *, seed: int, compression: str,
                   shuffle_buffer: int, cycle_length: int) -> tf.data.Dataset:
    """Serialized records of one epoch of this host, in an order fixed by (seed, epoch)."""
    epoch = tf.cast(epoch, tf.int64)
    files = tf.constant(shards.files)
    if shuffle_buffer > 0:
        files = tf.random.experimental.stateless_shuffle(
            files, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
        cycle_length=min(cycle_length, len(shards.files)), block_length=1,
        num_parallel_calls=AUTOTUNE, deterministic=True)
    if shards.record_stride > 1:
        ds = ds.shard(shards.record_stride, shards.record_offset)
    if shuffle_buffer > 0:
        ds = ds.shuffle(shuffle_buffer, seed=tf.constant(seed, tf.int64) * 1_000_003 + epoch,
                        reshuffle_each_iteration=False)
    return ds


def train_records(shards: HostShards, *, seed: int, compression: str = "",
                  shuffle_buffer: int = 10000, start_example: int = 0,
                  cycle_length: int = DEFAULT_CYCLE_LENGTH) -> tf.data.Dataset:
    """Endless serialized records of this host, starting ``start_example`` records in.

    Epochs are concatenated (no boundary in batches), each reshuffled by its own seed.
    """
    if shards.epoch_size <= 0:
        raise ValueError(f"host has no examples in {shards.files}")
    first_epoch, offset = divmod(int(start_example), shards.epoch_size)
    kwargs = dict(seed=seed, compression=compression, shuffle_buffer=shuffle_buffer,
                  cycle_length=cycle_length)
    head = _epoch_records(shards, tf.constant(first_epoch, tf.int64), **kwargs).skip(offset)
    tail = tf.data.Dataset.range(first_epoch + 1, 2**62).flat_map(
        lambda e: _epoch_records(shards, e, **kwargs))
    return head.concatenate(tail)


def batch_and_parse(records: tf.data.Dataset, *, batch_size: int, max_seq_length: int,
                    max_predictions_per_seq: int, next_sentence: str = "nsp"
                    ) -> tf.data.Dataset:
    """Batch with drop_remainder (static batch dim), parse, prefetch."""
    ds = records.batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda s: parse_examples(s, max_seq_length=max_seq_length,
                                         max_predictions_per_seq=max_predictions_per_seq,
                                         next_sentence=next_sentence),
                num_parallel_calls=AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    # We split files between hosts ourselves; auto-sharding would split them again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(AUTOTUNE)


def train_dataset(shards: HostShards, *, batch_size: int, max_seq_length: int,
                  max_predictions_per_seq: int, seed: int, compression: str = "",
                  shuffle_buffer: int = 10000, start_example: int = 0,
                  next_sentence: str = "nsp") -> tf.data.Dataset:
    """Endless training batches of ``batch_size`` for one host (see ``train_records``)."""
    records = train_records(shards, seed=seed, compression=compression,
                            shuffle_buffer=shuffle_buffer, start_example=start_example)
    return batch_and_parse(records, batch_size=batch_size, max_seq_length=max_seq_length,
                           max_predictions_per_seq=max_predictions_per_seq,
                           next_sentence=next_sentence)


def eval_dataset(shards: HostShards, *, batch_size: int, max_seq_length: int,
                 max_predictions_per_seq: int, compression: str = "",
                 next_sentence: str = "nsp") -> tf.data.Dataset:
    """One pass of held-out full batches in file order (the remainder is dropped: static
    shapes). Not shuffled: every evaluation of a run scores the same examples, so curves
    compare. How many steps one pass holds: ``full_batches_per_pass``.
    """
    ds = tf.data.Dataset.from_tensor_slices(shards.files).interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
        cycle_length=1)
    if shards.record_stride > 1:
        ds = ds.shard(shards.record_stride, shards.record_offset)
    return batch_and_parse(ds, batch_size=batch_size, max_seq_length=max_seq_length,
                           max_predictions_per_seq=max_predictions_per_seq,
                           next_sentence=next_sentence)


def full_batches_per_pass(files: Sequence[str], sizes: Sequence[int], *, num_pipelines: int,
                          pipeline_batch_size: int) -> int:
    """Global batches one pass can fill on every host: hosts step together, so the host with
    the fewest examples decides (pipeline_batch_size = global batch / num_pipelines)."""
    return min(host_shards(files, sizes, num_pipelines=num_pipelines,
                           pipeline_id=p).epoch_size // pipeline_batch_size
               for p in range(num_pipelines))


def distribute(strategy: tf.distribute.Strategy, files: Sequence[str], sizes: Sequence[int], *,
               global_batch_size: int, make_dataset):
    """``strategy.distribute_datasets_from_function`` over ``make_dataset(shards, batch)``.

    Each input pipeline (host) gets its own files via its InputContext and yields per-replica
    batches (global batch / replicas); the strategy hands them to its local replicas.
    Returns (distributed dataset, number of input pipelines): each pipeline consumes
    global_batch_size / pipelines records per step, which is what the data position counts.
    """
    pipelines = []

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        pipelines.append(ctx.num_input_pipelines)
        shards = host_shards(files, sizes, num_pipelines=ctx.num_input_pipelines,
                             pipeline_id=ctx.input_pipeline_id)
        return make_dataset(shards, ctx.get_per_replica_batch_size(global_batch_size))

    dist = strategy.distribute_datasets_from_function(dataset_fn)
    return dist, (pipelines[0] if pipelines else 1)
