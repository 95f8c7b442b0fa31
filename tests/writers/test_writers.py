"""Our hand-encoded Examples and framing, checked with TensorFlow's own parser and reader."""
import io
import pickle
import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.common.tfrecord import frame_record
from pipeline.core.instance import Instance, InstanceBatch
from pipeline.writers import tfrecord
from pipeline.writers.parquet import ParquetSink, batch_to_table
from pipeline.writers.tfrecord import TFRecordSink, framed_batch, serialize_batch

INSTANCES = [
    Instance(input_ids=[101, 2769, 103, 102, 200000, 102], num_a=4,
                    masked_lm_positions=[2, 4], masked_lm_ids=[4263, 7], next_sentence_label=1),
    Instance(input_ids=[101, 5, 102, 6, 102], num_a=3, masked_lm_positions=[3],
                    masked_lm_ids=[6], next_sentence_label=0),
]


def serialize_example(inst, max_seq_length, max_predictions_per_seq):
    return serialize_batch(InstanceBatch.from_instances([inst]), max_seq_length,
                           max_predictions_per_seq)[0]


def write_tfrecords(f, records, gzip):
    sink = TFRecordSink(f, gzip=gzip)
    sink.write_framed(b"".join(frame_record(r) for r in records))
    sink.close()


def test_example_bytes_parse_to_the_padded_features():
    tf = pytest.importorskip("tensorflow")
    for inst in INSTANCES:
        example = tf.train.Example.FromString(serialize_example(inst, 8, 3))
        feats = example.features.feature
        assert set(feats) == set(schema.FEATURE_NAMES)
        for name, values in inst.padded_features(8, 3).items():
            kind = feats[name].WhichOneof("kind")
            assert list(getattr(feats[name], kind).value) == values, name


def test_overlong_instance_is_refused():
    with pytest.raises(ValueError):
        serialize_example(INSTANCES[0], 4, 3)


@pytest.mark.parametrize("gzip", [False, True])
def test_tfrecord_files_read_back_with_crc_checks(tmp_path, gzip):
    tf = pytest.importorskip("tensorflow")
    path = tmp_path / "x.tfrecord"
    with open(path, "wb") as f:
        write_tfrecords(f, (serialize_example(i, 8, 3) for i in INSTANCES), gzip=gzip)
    spec = schema.tf_feature_spec(8, 3)
    ds = tf.data.TFRecordDataset(str(path), compression_type="GZIP" if gzip else "")
    got = [tf.io.parse_single_example(r, spec) for r in ds]
    assert [g["input_ids"].numpy().tolist() for g in got] == \
        [i.padded_features(8, 3)["input_ids"] for i in INSTANCES]
    assert got[0]["masked_lm_weights"].numpy().tolist() == [1.0, 1.0, 0.0]


def _random_instances(n, seed, max_seq=16, max_pred=4, top=30000):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(3, max_seq)
        m = rng.randint(0, min(max_pred, length - 2))
        out.append(Instance(
            input_ids=[rng.choice([0, 1, 127, 128, 16383, 16384, top]) if rng.random() < 0.3
                       else rng.randint(0, top) for _ in range(length)],
            num_a=rng.randint(2, length - 1),
            masked_lm_positions=sorted(rng.sample(range(1, length), m)),
            masked_lm_ids=[rng.randint(0, top) for _ in range(m)],
            next_sentence_label=rng.randint(0, 1)))
    return out


@pytest.mark.parametrize("top", [30000, 250000])  # uint16 and int32 id columns
def test_instance_batch_round_trips(top):
    rows = _random_instances(300, seed=top, top=top)
    batch = InstanceBatch.from_instances(rows)
    assert batch.tokens.dtype == (np.uint16 if top < 1 << 16 else np.int32)
    assert batch.instances() == [Instance(list(i.input_ids), i.num_a,
                                                 list(i.masked_lm_positions),
                                                 list(i.masked_lm_ids), i.next_sentence_label)
                                 for i in rows]
    order = list(range(299, -1, -3)) + [0, 0]
    assert batch.take(order).instances() == [batch.instances()[k] for k in order]
    assert batch.slice(17, 120).instances() == batch.instances()[17:120]
    assert len(batch.slice(5, 5)) == 0
    again = pickle.loads(pickle.dumps(InstanceBatch.concat([batch.take([]), batch])))
    assert again.instances() == batch.instances()


def test_batch_serialization_parses_with_tensorflow():
    tf = pytest.importorskip("tensorflow")
    rows = _random_instances(200, seed=7, max_seq=40, max_pred=6, top=250000)
    spec = schema.tf_feature_spec(40, 6)
    records = serialize_batch(InstanceBatch.from_instances(rows), 40, 6)
    for inst, record in zip(rows, records):
        got = tf.io.parse_single_example(record, spec)
        for name, values in inst.padded_features(40, 6).items():
            assert got[name].numpy().tolist() == values, name


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("with_label", [True, False])
def test_framed_batches_are_the_framed_records(monkeypatch, tmp_path, dynamic, with_label):
    """The whole-batch encoder (pieces of one pool gathered with numpy, CRCs filled in) gives
    exactly the framing of each serialized record, across its chunk boundaries, and
    TensorFlow's reader checks every CRC."""
    tf = pytest.importorskip("tensorflow")
    monkeypatch.setattr(tfrecord, "ROWS_PER_GATHER", 7)
    monkeypatch.setattr(tfrecord, "VARINT_CHUNK", 13)
    rows = _random_instances(50, seed=11, max_seq=40, max_pred=6, top=250000)
    batch = InstanceBatch.from_instances(rows)
    if dynamic:
        batch = InstanceBatch(batch.tokens, batch.lengths, batch.num_a, [], [],
                              np.zeros(len(batch)), batch.pair_label,
                              word_starts=(batch.tokens % 3 == 0).astype(np.uint8))
    records = serialize_batch(batch, 40, 6, with_label=with_label, dynamic=dynamic)
    framed = framed_batch(batch, 40, 6, with_label=with_label, dynamic=dynamic)
    assert framed == b"".join(frame_record(r) for r in records)
    empty = batch.take([])
    assert framed_batch(empty, 40, 6) == b"" and serialize_batch(empty, 40, 6) == []
    path = tmp_path / "x.tfrecord"
    path.write_bytes(framed)
    spec = schema.tf_feature_spec(40, 6, "nsp" if with_label else "none",
                                  "dynamic" if dynamic else "static")
    got = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(str(path))]
    assert [g["input_ids"].numpy().tolist() for g in got] == \
        [i.padded_features(40, 6)["input_ids"] for i in rows]
    if dynamic:
        assert [g[schema.WORD_STARTS].numpy().tolist()[:len(i.input_ids)] for g, i in
                zip(got, rows)] == [[int(t % 3 == 0) for t in i.input_ids] for i in rows]


@pytest.mark.parametrize("bad", [1 << 28, -1])
def test_ids_the_varint_encoder_cannot_take_are_refused(bad):
    with pytest.raises(ValueError, match="out of range"):
        tfrecord._varints(np.array([5, bad], dtype=np.int64))


def test_parquet_rows():
    batch = InstanceBatch.from_instances(INSTANCES)
    assert batch_to_table(batch).to_pylist() == [i.row() for i in INSTANCES]
    sink = io.BytesIO()
    out = ParquetSink(sink, row_group_size=1)
    out.write(batch)
    out.close()
    f = pq.ParquetFile(io.BytesIO(sink.getvalue()))
    assert f.num_row_groups == 2 and f.schema_arrow == schema.arrow_schema()


def test_an_empty_parquet_shard_is_a_valid_file():
    sink = io.BytesIO()
    out = ParquetSink(sink)
    out.write(None)
    out.close()
    table = pq.read_table(io.BytesIO(sink.getvalue()))
    assert table.num_rows == 0 and table.schema == schema.arrow_schema()
