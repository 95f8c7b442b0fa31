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

Dynamic data (manifest masking mode "dynamic": ``word_starts``, no masked_lm_* features) is
masked here, on the host, by ``pipeline.core.masking.mask_dynamic``, the function the pipeline
and the PyTorch trainer use. Every record carries its stable index (its shard's index offset +
its position in the file, ``TFRecordDataset.enumerate``) and the epoch it was read for through
interleave, host split and shuffle; each batch is parsed, then masked in a
``tf.numpy_function`` from (run seed, epoch, index) per row, so the masks do not depend on the
batch size, the number of input pipelines, or a resume; a batch that straddles two epochs masks
each row with its own. The output is exactly static data's features (static shapes, int32), so
the model step is the same. Held-out dynamic data is masked as epoch 0: the same masks at every
evaluation. The masking runs in this Python process: on a TPU VM, GPUs or a CPU, not on a
remote TPU worker (TPU Node), which cannot run Python.

Length bins (``DataSpec.bins``): each bin is a Google-format dataset of its own, padded to its
bound and its max_predictions_per_seq, so the loop builds one such stream per bin (its files,
its lengths, its own data position and epochs; dynamic bins keep their files' stable indexes:
``host_shards(index_offsets=...)``) and picks the bin of every chunk of steps
(``trainer.bins``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from pipeline import schema
from pipeline.core.masking import MaskingConfig, mask_dynamic

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
    index_offsets: the stable index of each file's first record (record k of ``files[i]`` has
    index ``index_offsets[i] + k``: ``DataSpec.index_offsets``), which dynamic masking keys on.
    """

    files: list[str]
    epoch_size: int
    record_stride: int = 1
    record_offset: int = 0
    index_offsets: list[int] | None = None


def host_shards(files: Sequence[str], sizes: Sequence[int], *, num_pipelines: int = 1,
                pipeline_id: int = 0,
                index_offsets: Sequence[int] | None = None) -> HostShards:
    """Split the manifest's shards between input pipelines (one per host).

    files/sizes: parallel lists from the manifest (paths, instances per shard). Files go to
    hosts round-robin (``files[pipeline_id::num_pipelines]``, what ``Dataset.shard`` would do),
    which the pipeline's balanced shards make an even split of examples. Each file keeps its
    stable index offset: by default the instances of the files before it in ``files``; a length
    bin's files pass their own (``LengthBin.index_offsets``: their place in the whole data).
    """
    if len(files) != len(sizes) or not files:
        raise ValueError(f"need parallel non-empty files/sizes, got {len(files)}/{len(sizes)}")
    if index_offsets is None:
        offsets = [int(o) for o in np.cumsum([0] + [int(s) for s in sizes[:-1]])]
    elif len(index_offsets) != len(files):
        raise ValueError(f"{len(index_offsets)} index offsets for {len(files)} files")
    else:
        offsets = [int(o) for o in index_offsets]
    if len(files) >= num_pipelines:
        mine = list(range(pipeline_id, len(files), num_pipelines))
        return HostShards(files=[files[i] for i in mine],
                          epoch_size=sum(int(sizes[i]) for i in mine),
                          index_offsets=[offsets[i] for i in mine])
    total = sum(int(s) for s in sizes)
    return HostShards(files=list(files), epoch_size=len(range(pipeline_id, total, num_pipelines)),
                      record_stride=num_pipelines, record_offset=pipeline_id,
                      index_offsets=offsets)


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


def _mask_rows(input_ids, input_mask, segment_ids, word_starts, index, epoch, *, seed: int,
               config: MaskingConfig):
    """``mask_dynamic`` of one batch whose rows may belong to different epochs (epochs are
    concatenated): each epoch's rows are masked with their own epoch. numpy in, numpy out:
    (input_ids, masked_lm_positions, masked_lm_ids, masked_lm_weights)."""
    names = ("input_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights")
    epochs = np.unique(epoch)
    if len(epochs) == 1:
        out = mask_dynamic(input_ids, input_mask, segment_ids, word_starts, index,
                           epoch=int(epochs[0]), seed=seed, config=config)
        return tuple(out[n] for n in names)
    n, p = len(index), config.max_predictions_per_seq
    result = (np.empty_like(input_ids, dtype=np.int64), np.empty((n, p), np.int64),
              np.empty((n, p), np.int64), np.empty((n, p), np.float32))
    for e in epochs:
        rows = epoch == e
        out = mask_dynamic(input_ids[rows], input_mask[rows], segment_ids[rows],
                           word_starts[rows], index[rows], epoch=int(e), seed=seed,
                           config=config)
        for array, name in zip(result, names):
            array[rows] = out[name]
    return result


def parse_and_mask(serialized: tf.Tensor, index: tf.Tensor, epoch: tf.Tensor, *,
                   max_seq_length: int, max_predictions_per_seq: int, next_sentence: str,
                   masking: MaskingConfig, seed: int) -> dict[str, tf.Tensor]:
    """[batch] serialized dynamic Examples with their stable indexes and epochs -> static
    data's features (``parse_examples``'s names, dtypes and static shapes), masked by
    ``mask_dynamic`` with ``seed``."""
    if masking.max_predictions_per_seq != max_predictions_per_seq:
        raise ValueError(f"masking max_predictions_per_seq {masking.max_predictions_per_seq} "
                         f"!= data max_predictions_per_seq {max_predictions_per_seq}")
    spec = schema.tf_feature_spec(max_seq_length, max_predictions_per_seq, next_sentence,
                                  masking="dynamic")
    features = tf.io.parse_example(serialized, spec)
    masked = tf.numpy_function(
        lambda *a: _mask_rows(*a, seed=seed, config=masking),
        [features["input_ids"], features["input_mask"], features["segment_ids"],
         features[schema.WORD_STARTS], index, epoch],
        [tf.int64, tf.int64, tf.int64, tf.float32], stateful=False, name="mask_dynamic")
    batch = serialized.shape[0]
    out = {}
    for name, t in zip(("input_ids", "masked_lm_positions", "masked_lm_ids",
                        "masked_lm_weights"), masked):
        width = max_seq_length if name == "input_ids" else max_predictions_per_seq
        t.set_shape([batch, width])
        out[name] = t
    out["input_mask"], out["segment_ids"] = features["input_mask"], features["segment_ids"]
    if schema.LABEL_FEATURE in features:
        out[schema.LABEL_FEATURE] = features[schema.LABEL_FEATURE]
    return {name: tf.cast(out[name], tf.int32) if name in _INT32_FEATURES else out[name]
            for name in schema.FEATURE_NAMES if name in out}


def _read_files(files: tf.Tensor, offsets: tf.Tensor | None, *, compression: str,
                cycle_length: int, parallel: bool) -> tf.data.Dataset:
    """The records of ``files`` interleaved one at a time; with ``offsets`` (a stable index
    per file) each record comes as (index, serialized)."""
    if offsets is None:
        ds = tf.data.Dataset.from_tensor_slices(files)

        def read(f):
            return tf.data.TFRecordDataset(f, compression_type=compression)
    else:
        ds = tf.data.Dataset.from_tensor_slices((files, offsets))

        def read(f, first):
            return tf.data.TFRecordDataset(f, compression_type=compression).enumerate(first)
    if not parallel:
        return ds.interleave(read, cycle_length=cycle_length)
    return ds.interleave(read, cycle_length=cycle_length, block_length=1,
                         num_parallel_calls=AUTOTUNE, deterministic=True)


def _with_epoch(ds: tf.data.Dataset, epoch: tf.Tensor) -> tf.data.Dataset:
    """(index, serialized) -> ((index, serialized), epoch). A zip, not a map: a map per
    record made the keyed stream 4x slower (bench/tf_input_masking.py)."""
    return tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensors(epoch).repeat()))


def _epoch_records(shards: HostShards, epoch: tf.Tensor, *, seed: int, compression: str,
                   shuffle_buffer: int, cycle_length: int, keyed: bool = False
                   ) -> tf.data.Dataset:
    """Serialized records of one epoch of this host, in an order fixed by (seed, epoch).

    keyed (dynamic data): ((stable index, serialized), epoch) instead, in the same order.
    """
    epoch = tf.cast(epoch, tf.int64)
    files = tf.constant(shards.files)
    offsets = tf.constant(shards.index_offsets, tf.int64) if keyed else None
    if shuffle_buffer > 0:
        shuffle_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        if keyed:  # one permutation of both lists
            order = tf.random.experimental.stateless_shuffle(
                tf.range(len(shards.files), dtype=tf.int64), seed=shuffle_seed)
            files, offsets = tf.gather(files, order), tf.gather(offsets, order)
        else:
            files = tf.random.experimental.stateless_shuffle(files, seed=shuffle_seed)
    ds = _read_files(files, offsets, compression=compression,
                     cycle_length=min(cycle_length, len(shards.files)), parallel=True)
    if shards.record_stride > 1:
        ds = ds.shard(shards.record_stride, shards.record_offset)
    if shuffle_buffer > 0:
        ds = ds.shuffle(shuffle_buffer, seed=tf.constant(seed, tf.int64) * 1_000_003 + epoch,
                        reshuffle_each_iteration=False)
    return _with_epoch(ds, epoch) if keyed else ds


def train_records(shards: HostShards, *, seed: int, compression: str = "",
                  shuffle_buffer: int = 10000, start_example: int = 0,
                  cycle_length: int = DEFAULT_CYCLE_LENGTH, keyed: bool = False
                  ) -> tf.data.Dataset:
    """Endless serialized records of this host, starting ``start_example`` records in.

    Epochs are concatenated (no boundary in batches), each reshuffled by its own seed.
    keyed: ((stable index, serialized), epoch) per record (dynamic data).
    """
    if shards.epoch_size <= 0:
        raise ValueError(f"host has no examples in {shards.files}")
    if keyed and shards.index_offsets is None:
        raise ValueError("dynamic data needs the files' index offsets (host_shards sets them)")
    first_epoch, offset = divmod(int(start_example), shards.epoch_size)
    kwargs = dict(seed=seed, compression=compression, shuffle_buffer=shuffle_buffer,
                  cycle_length=cycle_length, keyed=keyed)
    head = _epoch_records(shards, tf.constant(first_epoch, tf.int64), **kwargs).skip(offset)
    tail = tf.data.Dataset.range(first_epoch + 1, 2**62).flat_map(
        lambda e: _epoch_records(shards, e, **kwargs))
    return head.concatenate(tail)


def batch_and_parse(records: tf.data.Dataset, *, batch_size: int, max_seq_length: int,
                    max_predictions_per_seq: int, next_sentence: str = "nsp",
                    masking: MaskingConfig | None = None, seed: int = 0) -> tf.data.Dataset:
    """Batch with drop_remainder (static batch dim), parse, prefetch.

    masking (dynamic data, records keyed as ``train_records(keyed=True)``): parse and mask
    each batch (``parse_and_mask``) with ``seed``.
    """
    ds = records.batch(batch_size, drop_remainder=True)
    if masking is None:
        ds = ds.map(lambda s: parse_examples(s, max_seq_length=max_seq_length,
                                             max_predictions_per_seq=max_predictions_per_seq,
                                             next_sentence=next_sentence),
                    num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        def parse_keyed(keyed, epoch):
            index, serialized = keyed
            return parse_and_mask(serialized, index, epoch, max_seq_length=max_seq_length,
                                  max_predictions_per_seq=max_predictions_per_seq,
                                  next_sentence=next_sentence, masking=masking, seed=seed)

        ds = ds.map(parse_keyed, num_parallel_calls=AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    # We split files between hosts ourselves; auto-sharding would split them again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(AUTOTUNE)


def train_dataset(shards: HostShards, *, batch_size: int, max_seq_length: int,
                  max_predictions_per_seq: int, seed: int, compression: str = "",
                  shuffle_buffer: int = 10000, start_example: int = 0,
                  next_sentence: str = "nsp", masking: MaskingConfig | None = None
                  ) -> tf.data.Dataset:
    """Endless training batches of ``batch_size`` for one host (see ``train_records``).

    masking: dynamic data's settings (``DataSpec.masking``): each record is masked for the
    epoch it is read in, keyed on (``seed``, epoch, its stable index). None: static data.
    """
    records = train_records(shards, seed=seed, compression=compression,
                            shuffle_buffer=shuffle_buffer, start_example=start_example,
                            keyed=masking is not None)
    return batch_and_parse(records, batch_size=batch_size, max_seq_length=max_seq_length,
                           max_predictions_per_seq=max_predictions_per_seq,
                           next_sentence=next_sentence, masking=masking, seed=seed)


def eval_dataset(shards: HostShards, *, batch_size: int, max_seq_length: int,
                 max_predictions_per_seq: int, compression: str = "",
                 next_sentence: str = "nsp", masking: MaskingConfig | None = None,
                 seed: int = 0) -> tf.data.Dataset:
    """One pass of held-out full batches in file order (the remainder is dropped: static
    shapes). Not shuffled: every evaluation of a run scores the same examples, so curves
    compare. How many steps one pass holds: ``full_batches_per_pass``.

    masking (dynamic data): masked as epoch 0 with ``seed``, so every evaluation also scores
    the same masks.
    """
    keyed = masking is not None
    if keyed and shards.index_offsets is None:
        raise ValueError("dynamic data needs the files' index offsets (host_shards sets them)")
    ds = _read_files(tf.constant(shards.files),
                     tf.constant(shards.index_offsets, tf.int64) if keyed else None,
                     compression=compression, cycle_length=1, parallel=False)
    if shards.record_stride > 1:
        ds = ds.shard(shards.record_stride, shards.record_offset)
    if keyed:
        ds = _with_epoch(ds, tf.constant(0, tf.int64))
    return batch_and_parse(ds, batch_size=batch_size, max_seq_length=max_seq_length,
                           max_predictions_per_seq=max_predictions_per_seq,
                           next_sentence=next_sentence, masking=masking, seed=seed)


def full_batches_per_pass(files: Sequence[str], sizes: Sequence[int], *, num_pipelines: int,
                          pipeline_batch_size: int) -> int:
    """Global batches one pass can fill on every host: hosts step together, so the host with
    the fewest examples decides (pipeline_batch_size = global batch / num_pipelines)."""
    return min(host_shards(files, sizes, num_pipelines=num_pipelines,
                           pipeline_id=p).epoch_size // pipeline_batch_size
               for p in range(num_pipelines))


def distribute(strategy: tf.distribute.Strategy, files: Sequence[str], sizes: Sequence[int], *,
               global_batch_size: int, make_dataset,
               index_offsets: Sequence[int] | None = None):
    """``strategy.distribute_datasets_from_function`` over ``make_dataset(shards, batch)``.

    Each input pipeline (host) gets its own files via its InputContext and yields per-replica
    batches (global batch / replicas); the strategy hands them to its local replicas.
    Returns (distributed dataset, number of input pipelines): each pipeline consumes
    global_batch_size / pipelines records per step, which is what the data position counts.
    index_offsets: the files' stable index offsets when not those of ``files`` alone (a length
    bin's: ``host_shards``).
    """
    pipelines = []

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        pipelines.append(ctx.num_input_pipelines)
        shards = host_shards(files, sizes, num_pipelines=ctx.num_input_pipelines,
                             pipeline_id=ctx.input_pipeline_id, index_offsets=index_offsets)
        return make_dataset(shards, ctx.get_per_replica_batch_size(global_batch_size))

    dist = strategy.distribute_datasets_from_function(dataset_fn)
    return dist, (pipelines[0] if pipelines else 1)
