"""python -m pipeline.verify on real outputs: intact, then damaged the ways copies and disks
damage files (a flipped bit, a cut-off end, a missing or stray file), and records that are
well-formed protobuf but break the data's contract."""
import gzip
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.tools import verify
from tests.tools.conftest import make_output, manifest, refresh_checksums, rewrite_manifest

SHARD0 = "tfrecord/part-00000-of-00002.tfrecord"
PARQUET0 = "parquet/part-00000-of-00002.parquet"


def run_verify(out, capsys, *flags):
    code = verify.main(["--output_dir", str(out), "--quiet", *flags])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def problems(text):
    """(file, record or None, rest) of each listed problem line."""
    found = []
    for line in text.splitlines():
        if not line.startswith("  ") or line.startswith("  ..."):
            continue
        where, rest = line.strip().split(": ", 1)
        file, _, record = where.partition(", record ")
        found.append((file, int(record) if record else None, rest))
    return found


def test_an_intact_output_passes_with_a_one_line_summary(output_dir, capsys):
    code, text = run_verify(output_dir, capsys)
    m = manifest(output_dir)
    assert code == 0, text
    assert text.count("\n") == 1 and text.startswith("OK: ")
    assert f"{m['total_instances']:,} instances" in text and "2 tfrecord, 2 parquet" in text
    assert "MB/s" in text


def flip(path, record: int, at: int, bit: int) -> None:
    """Flip a bit ``at`` bytes into the framed ``record`` of a TFRecord file (0-11: its length
    and length CRC, 12 on: its data)."""
    data = bytearray(path.read_bytes())
    start = 0
    for _ in range(record):  # each record: 8 + 4 + length + 4 bytes
        start += 16 + int.from_bytes(data[start:start + 8], "little")
    data[start + at] ^= bit
    path.write_bytes(bytes(data))


def test_a_flipped_bit_inside_a_record_names_the_file_and_record(damaged, capsys):
    flip(damaged / SHARD0, 3, 12 + 40, 0x04)
    code, text = run_verify(damaged, capsys)
    assert code == 1 and text.startswith("FAILED")
    found = problems(text)
    assert (SHARD0, 3, "data CRC mismatch (the record's bytes are corrupt)") in found
    assert any(f == SHARD0 and r is None and "sha256 differs" in rest for f, r, rest in found)
    assert "Traceback" not in text


def test_one_process_or_several_find_the_same(damaged, capsys):
    path = damaged / "tfrecord/part-00001-of-00002.tfrecord"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    (damaged / PARQUET0).write_bytes((damaged / PARQUET0).read_bytes()[:-10])
    one = run_verify(damaged, capsys, "--workers=1")
    two = run_verify(damaged, capsys, "--workers=2")
    assert one == two and one[0] == 1 and len(problems(one[1])) >= 3


def test_a_flipped_bit_in_a_length_field_stops_reading_there(damaged, capsys):
    flip(damaged / SHARD0, 5, 1, 0x01)
    code, text = run_verify(damaged, capsys)
    assert code == 1
    assert any(f == SHARD0 and r == 5 and "length CRC mismatch" in rest
               for f, r, rest in problems(text))


def test_a_truncated_tfrecord_is_reported_with_the_record_it_ends_in(damaged, capsys):
    path = damaged / SHARD0
    data = path.read_bytes()
    count = manifest(damaged)["shards"]["tfrecord"][0]["instances"]
    path.write_bytes(data[:-100])
    code, text = run_verify(damaged, capsys)
    found = problems(text)
    assert code == 1
    assert any(f == SHARD0 and r == count - 1 and "ends inside record" in rest
               for f, r, rest in found)
    assert any(f == SHARD0 and r is None and f"{len(data) - 100} bytes" in rest
               for f, r, rest in found)


def test_damaged_parquet_files_are_reported(damaged, capsys):
    truncated = damaged / PARQUET0
    truncated.write_bytes(truncated.read_bytes()[:-50])
    flipped = damaged / "parquet/part-00001-of-00002.parquet"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 3] ^= 0x20
    flipped.write_bytes(bytes(data))
    code, text = run_verify(damaged, capsys)
    found = problems(text)
    assert code == 1
    assert any(f == PARQUET0 and "not a readable Parquet file" in rest for f, _, rest in found)
    assert any(f == "parquet/part-00001-of-00002.parquet" and "sha256 differs" in rest
               for f, _, rest in found)
    assert "Traceback" not in text


def test_missing_and_stray_files_and_wrong_counts(damaged, capsys):
    os.remove(damaged / "parquet/part-00001-of-00002.parquet")
    (damaged / "tfrecord" / "part-00002-of-00003.tfrecord").write_bytes(b"left over")
    os.makedirs(damaged / "_pieces")
    (damaged / "_pieces" / "piece-0.bin").write_bytes(b"x")
    (damaged / "notes.txt").write_text("the user's own file is fine")

    def change(m):
        m["shards"]["tfrecord"][1]["instances"] += 1
    rewrite_manifest(damaged, change)
    code, text = run_verify(damaged, capsys)
    found = problems(text)
    assert code == 1
    assert ("parquet/part-00001-of-00002.parquet", None,
            "missing (listed in the manifest)") in found
    strays = {f for f, _, rest in found if rest.startswith("not in the manifest")}
    assert strays == {"tfrecord/part-00002-of-00003.tfrecord", "_pieces/piece-0.bin"}
    assert any(f == "tfrecord/part-00001-of-00002.tfrecord" and "records, the manifest says"
               in rest for f, _, rest in found)
    assert any(f == "manifest.json" and "total_instances" in rest for f, _, rest in found)


def rewrite_records(path, edit):
    """Parse every record with TensorFlow, let ``edit(index, example)`` change it, write them
    back with TensorFlow's writer (valid framing and CRCs)."""
    tf = pytest.importorskip("tensorflow")
    records = [tf.train.Example.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(str(path))]
    for i, example in enumerate(records):
        edit(i, example)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in records:
            writer.write(example.SerializeToString())


def test_well_framed_records_that_break_the_contract(damaged, capsys):
    vocab_size = manifest(damaged)["vocab_size"]

    def edit(i, example):
        f = example.features.feature
        if i == 1:
            f["input_ids"].int64_list.value[3] = vocab_size + 7
        elif i == 2:
            p = f["masked_lm_positions"].int64_list.value
            p[0], p[1] = p[1], p[0]
        elif i == 4:
            f["masked_lm_weights"].float_list.value[-1] = 1.0
        elif i == 6:
            f["next_sentence_labels"].int64_list.value[0] = 2
        elif i == 7:
            del f["segment_ids"]
        elif i == 8:
            del f["input_mask"].int64_list.value[-1]
        elif i == 9:
            f["masked_lm_ids"].float_list.value.extend([1.0] * 20)  # wrong type
            f["masked_lm_ids"].ClearField("int64_list")

    rewrite_records(damaged / SHARD0, edit)
    refresh_checksums(damaged)
    code, text = run_verify(damaged, capsys, "--max_problems=100")
    found = {(f, r): rest for f, r, rest in problems(text) if f == SHARD0}
    assert code == 1
    assert found[(SHARD0, 1)].startswith(f"input_ids: id {vocab_size + 7} at 3 is outside")
    assert found[(SHARD0, 2)].startswith("masked_lm_positions: position")
    assert found[(SHARD0, 4)].startswith("masked_lm_weights: not exactly 1.0")
    assert found[(SHARD0, 6)] == "next_sentence_labels: label 2: must be 0 or 1"
    assert found[(SHARD0, 7)] == "segment_ids: feature missing"
    assert found[(SHARD0, 8)] == "input_mask: 127 values, the schema says 128"
    assert found[(SHARD0, 9)] == "masked_lm_ids: float list, the schema says int64"
    assert {r for _, r in found} == {1, 2, 4, 6, 7, 8, 9}
    # Invalid records are reported once, not again as differing from their Parquet twins.
    assert not [r for f, r, _ in problems(text) if f == PARQUET0]


def test_tfrecord_and_parquet_must_hold_the_same_instances(damaged, capsys):
    table = pq.read_table(damaged / PARQUET0)
    labels = table.column(schema.LABEL_FEATURE).to_numpy().copy()
    labels[10] = 1 - labels[10]
    table = table.set_column(table.schema.get_field_index(schema.LABEL_FEATURE),
                             schema.LABEL_FEATURE, [labels])
    pq.write_table(table, damaged / PARQUET0)
    refresh_checksums(damaged)
    code, text = run_verify(damaged, capsys)
    assert code == 1
    assert problems(text) == [(PARQUET0, 10, f"label: differs from record 10 of {SHARD0}")]


def test_gzip_tfrecords_verify_and_a_damaged_gzip_stream_is_reported(
        tmp_path, small_ltp_model_dir, capsys):
    out = make_output(tmp_path, small_ltp_model_dir, "--compression=gzip")
    assert run_verify(out, capsys)[0] == 0
    path = out / "tfrecord/part-00001-of-00002.tfrecord.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    code, text = run_verify(out, capsys)
    assert code == 1 and len(raw) > 0
    assert any(f.endswith(".tfrecord.gz") and ("gzip" in rest or "ends inside" in rest)
               for f, _, rest in problems(text))


def test_single_segment_data_has_no_label_and_a_label_there_is_a_problem(
        tmp_path, small_ltp_model_dir, capsys):
    out = make_output(tmp_path, small_ltp_model_dir, "--next_sentence=none",
                      "--output_formats=tfrecord")
    assert manifest(out)["next_sentence"] == "none"
    code, text = run_verify(out, capsys)
    assert code == 0, text

    def add_label(i, example):
        if i == 0:
            example.features.feature[schema.LABEL_FEATURE].int64_list.value.append(0)
    rewrite_records(out / SHARD0, add_label)
    refresh_checksums(out)
    code, text = run_verify(out, capsys)
    assert code == 1
    assert (SHARD0, 0, "next_sentence_labels: feature not in the schema") in problems(text)


def test_a_directory_without_manifest_says_what_is_there(damaged, capsys):
    os.remove(damaged / "manifest.json")
    os.makedirs(damaged / "_pieces")
    (damaged / "_pieces" / "piece-00-1b-1r.bin").write_bytes(b"12345")
    code, text = run_verify(damaged, capsys)
    assert code == 1
    assert "has no manifest.json" in text and "has not finished" in text
    listed = {line.split()[0] for line in text.splitlines()[2:]}
    assert {"_pieces/", "tfrecord/", "parquet/", "stats.json", "vocab.txt"} <= listed
    shutil.rmtree(damaged)
    code, text = run_verify(damaged, capsys)
    assert code == 1 and "does not exist" in text


def test_bad_command_lines_exit_2(output_dir, capsys):
    with pytest.raises(SystemExit) as e:
        verify.main(["--output_dir", str(output_dir), "--s3_endpoint_urll=x"])
    assert e.value.code == 2
    assert "s3_endpoint_urll" in capsys.readouterr().err


def test_every_feature_is_read_as_tensorflow_reads_it(output_dir):
    """The reader under verify against TensorFlow's parser, record by record."""
    tf = pytest.importorskip("tensorflow")
    from pipeline.readers.output import open_output
    from pipeline.readers.shards import read_shard

    out = open_output(str(output_dir))
    m = out.manifest
    spec = schema.tf_feature_spec(m["max_seq_length"], m["max_predictions_per_seq"])
    theirs = [tf.io.parse_single_example(r, spec)
              for r in tf.data.TFRecordDataset(str(output_dir / SHARD0))]
    chunks = list(read_shard(out, "tfrecord", SHARD0, chunk_records=50))
    assert sum(c.size for c in chunks) == len(theirs) > 100
    for chunk in chunks:
        assert chunk.problems == []
        for name, column in chunk.columns.items():
            ours = column.values.reshape(chunk.size, -1)
            expected = np.stack([theirs[chunk.first + i][name].numpy()
                                 for i in range(chunk.size)])
            np.testing.assert_array_equal(ours, expected, err_msg=name)


def test_random_damage_is_always_a_finding_never_a_crash(output_dir, tmp_path, capsys):
    """Bits flipped at random places of either format: exit 1 and the damaged file named."""
    rng = np.random.default_rng(7)
    for trial in range(10):
        copy = tmp_path / f"copy{trial}"
        shutil.copytree(output_dir, copy)
        rel = [SHARD0, PARQUET0][trial % 2]
        data = bytearray((copy / rel).read_bytes())
        for at in rng.integers(0, len(data), size=1 + trial % 3):
            data[at] ^= 1 << int(rng.integers(0, 8))
        (copy / rel).write_bytes(bytes(data))
        code, text = run_verify(copy, capsys, "--workers=1")
        assert code == 1 and "Traceback" not in text, text
        assert any(f == rel for f, _, _ in problems(text)), text


def test_an_output_without_instances_verifies(tmp_path, small_ltp_model_dir, capsys):
    from pipeline.run import run

    (tmp_path / "one.txt").write_text("只有一句话。\n", encoding="utf-8")
    out = tmp_path / "out"
    run([f"--input={tmp_path / 'one.txt'}", f"--output_dir={out}", "--quiet",
         f"--ltp_model={small_ltp_model_dir}"])
    code, text = run_verify(out, capsys)
    assert code == 0 and "0 instances each format" in text
