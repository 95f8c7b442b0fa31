"""tf.data input: Google's shapes and dtypes, host sharding, compression, exact resume."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from pipeline import schema  # noqa: E402
from tests.trainer import tf_fixtures as fx  # noqa: E402
from trainer import data_contract  # noqa: E402
from trainer.tf2 import data as tfdata  # noqa: E402

SEQ, PREDS = 32, 5


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fx.make_data_dir(str(tmp_path_factory.mktemp("tf_data")), num_instances=60,
                            num_shards=3, seed=3)


def _shards(data_dir, **kwargs):
    manifest = data_contract.read_manifest(data_dir)
    return tfdata.host_shards(data_contract.shard_paths(data_dir, manifest, schema.TFRECORD_DIR),
                              data_contract.shard_sizes(manifest, schema.TFRECORD_DIR), **kwargs)


def _row_keys(ds, n_batches):
    """Each example as a hashable key (its input_ids), in stream order."""
    keys = []
    for batch in ds.take(n_batches):
        keys += [tuple(r) for r in batch["input_ids"].numpy()]
    return keys


def test_batches_have_googles_names_static_shapes_and_int32(data_dir):
    ds = tfdata.train_dataset(_shards(data_dir), batch_size=4, max_seq_length=SEQ,
                              max_predictions_per_seq=PREDS, seed=1, shuffle_buffer=16)
    expected = {"input_ids": ([4, SEQ], tf.int32), "input_mask": ([4, SEQ], tf.int32),
                "segment_ids": ([4, SEQ], tf.int32),
                "masked_lm_positions": ([4, PREDS], tf.int32),
                "masked_lm_ids": ([4, PREDS], tf.int32),
                "masked_lm_weights": ([4, PREDS], tf.float32),
                "next_sentence_labels": ([4, 1], tf.int32)}
    spec = ds.element_spec
    assert set(spec) == set(expected)
    for name, (shape, dtype) in expected.items():
        assert spec[name].shape.as_list() == shape, name  # static, batch dim included
        assert spec[name].dtype == dtype, name
    batch = next(iter(ds))
    assert np.all(batch["input_ids"].numpy()[:, 0] == fx.CLS_ID)
    assert set(np.unique(batch["masked_lm_weights"].numpy())) <= {0.0, 1.0}


def test_an_epoch_reads_every_example_once_split_between_hosts(data_dir):
    everything = set(_row_keys(tfdata.eval_dataset(
        _shards(data_dir), batch_size=60, max_seq_length=SEQ, max_predictions_per_seq=PREDS), 1))
    assert len(everything) == 60
    for pipelines in (2, 5):  # 5 > 3 files: falls back to record striding
        seen = []
        for host in range(pipelines):
            shards = _shards(data_dir, num_pipelines=pipelines, pipeline_id=host)
            ds = tfdata.train_dataset(shards, batch_size=1, max_seq_length=SEQ,
                                      max_predictions_per_seq=PREDS, seed=5, shuffle_buffer=8)
            seen += _row_keys(ds, shards.epoch_size)
        assert sorted(seen) == sorted(everything), pipelines


def test_gzip_shards_are_read_when_the_manifest_says_so(tmp_path):
    d = fx.make_data_dir(str(tmp_path / "gz"), num_instances=12, num_shards=2, seed=4,
                         compression="GZIP")
    spec = data_contract.load_data_dir(d, fx_model_config())
    assert spec.tfrecord_compression == "GZIP"
    ds = tfdata.eval_dataset(_shards(d), batch_size=12, max_seq_length=SEQ,
                             max_predictions_per_seq=PREDS, compression="GZIP")
    assert len(set(_row_keys(ds, 1))) == 12


def fx_model_config():
    from trainer.config import ModelConfig

    return ModelConfig(vocab_size=64, **fx.TINY)


@pytest.mark.parametrize("start", [7, 60, 95])
def test_resuming_at_n_examples_continues_the_stream_exactly(data_dir, start):
    """The data position: a stream rebuilt at N equals the uninterrupted stream from N on,
    also across epoch boundaries (60 examples per epoch)."""
    shards = _shards(data_dir)
    kwargs = dict(batch_size=1, max_seq_length=SEQ, max_predictions_per_seq=PREDS, seed=9,
                  shuffle_buffer=16)
    full = _row_keys(tfdata.train_dataset(shards, **kwargs), 160)
    resumed = _row_keys(tfdata.train_dataset(shards, start_example=start, **kwargs), 160 - start)
    assert resumed == full[start:]
    assert full[:60] != full[60:120]  # each epoch has its own order
    assert sorted(full[:60]) == sorted(full[60:120])


def test_distribute_gives_each_replica_its_per_replica_batch(data_dir):
    manifest = data_contract.read_manifest(data_dir)
    strategy = tf.distribute.get_strategy()

    def make(shards, batch_size):
        return tfdata.eval_dataset(shards, batch_size=batch_size, max_seq_length=SEQ,
                                   max_predictions_per_seq=PREDS)

    dist, pipelines = tfdata.distribute(
        strategy, data_contract.shard_paths(data_dir, manifest, schema.TFRECORD_DIR),
        data_contract.shard_sizes(manifest, schema.TFRECORD_DIR), global_batch_size=6,
        make_dataset=make)
    assert pipelines == 1
    assert next(iter(dist))["input_ids"].shape == (6, SEQ)
