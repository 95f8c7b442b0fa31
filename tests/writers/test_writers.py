"""Our hand-encoded Examples and framing, checked with TensorFlow's own parser and reader."""
import io

import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.writers.parquet import instances_to_table, write_parquet
from pipeline.writers.tfrecord import serialize_example, write_tfrecords

INSTANCES = [
    schema.Instance(input_ids=[101, 2769, 103, 102, 200000, 102], num_a=4,
                    masked_lm_positions=[2, 4], masked_lm_ids=[4263, 7], next_sentence_label=1),
    schema.Instance(input_ids=[101, 5, 102, 6, 102], num_a=3, masked_lm_positions=[3],
                    masked_lm_ids=[6], next_sentence_label=0),
]


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


def test_parquet_rows_and_pack_round_trip():
    assert [schema.unpack_instance(schema.pack_instance(i)) for i in INSTANCES] == \
        [schema.Instance(tuple(i.input_ids), i.num_a, tuple(i.masked_lm_positions),
                         tuple(i.masked_lm_ids), i.next_sentence_label) for i in INSTANCES]
    assert instances_to_table(INSTANCES).to_pylist() == [i.row() for i in INSTANCES]
    sink = io.BytesIO()
    write_parquet(sink, INSTANCES, row_group_size=1)
    f = pq.ParquetFile(io.BytesIO(sink.getvalue()))
    assert f.num_row_groups == 2 and f.schema_arrow == schema.arrow_schema()
