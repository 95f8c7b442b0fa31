"""The whole job on DirectRunner, read back as its consumers read it.

TFRecords with Google's exact FixedLenFeature spec (TensorFlow), Parquet with pyarrow and with
Hugging Face ``datasets``: both hold the same instances, shards are balanced, and the manifest
and stats describe them.
"""
import glob
import gzip
import json
import os

import pytest

from pipeline import schema
from pipeline.run import run
from tests import realdata

MAX_SEQ, MAX_PRED = 128, 20


def sample_documents(n):
    with open(realdata.SAMPLE_CORPUS, encoding="utf-8") as f:
        return f.read().split("\n\n")[:n]


@pytest.fixture(scope="module")
def job(tmp_path_factory, small_ltp_model_dir):
    root = tmp_path_factory.mktemp("e2e")
    docs = sample_documents(60)
    (root / "a.txt").write_text("\n\n".join(docs[:30]) + "\n", encoding="utf-8")
    (root / "b.txt.gz").write_bytes(gzip.compress(("\n\n".join(docs[30:]) + "\n").encode()))
    out = root / "out"
    manifest = run([f"--input={root}/*.txt*", f"--output_dir={out}", "--dupe_factor=2",
                    f"--ltp_model={small_ltp_model_dir}",
                    "--num_shards=3", f"--max_seq_length={MAX_SEQ}",
                    f"--max_predictions_per_seq={MAX_PRED}"])
    return out, manifest


def read_tfrecords(out, manifest):
    """Every record, parsed with Google's spec, shard after shard; checks each shard holds as
    many records as the manifest says."""
    import tensorflow as tf

    spec = schema.tf_feature_spec(manifest["max_seq_length"], manifest["max_predictions_per_seq"])
    records = []
    for shard in manifest["shards"]["tfrecord"]:
        parsed = [tf.io.parse_single_example(raw, spec)
                  for raw in tf.data.TFRecordDataset(os.path.join(out, shard["path"]))]
        assert len(parsed) == shard["instances"], shard["path"]
        records += [{k: v.numpy().tolist() for k, v in ex.items()} for ex in parsed]
    return records


def test_manifest_describes_balanced_shards(job):
    out, manifest = job
    assert manifest["total_instances"] > 300
    counts = [s["instances"] for s in manifest["shards"]["tfrecord"]]
    assert len(counts) == 3 and max(counts) - min(counts) <= 1
    assert sum(counts) == manifest["total_instances"]
    assert manifest["vocab_size"] == 21128 and manifest["ltp_model"]["kind"] == "legacy"
    with open(os.path.join(out, "vocab.txt"), "rb") as f:
        import hashlib
        assert hashlib.sha256(f.read()).hexdigest() == manifest["vocab_sha256"]
    schema.validate_manifest(manifest)
    for entry in manifest["shards"]["tfrecord"] + manifest["shards"]["parquet"]:
        with open(os.path.join(out, entry["path"]), "rb") as f:
            data = f.read()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"], entry["sha256"])
    assert not glob.glob(os.path.join(out, "**", ".tmp-*"), recursive=True)
    assert not os.path.exists(os.path.join(out, "_pieces"))  # temporary instances removed


def test_tfrecord_google_spec_and_parquet_hold_the_same_instances(job):
    import pyarrow.parquet as pq

    out, manifest = job
    tf_rows = read_tfrecords(out, manifest)
    pq_rows = []
    for shard in manifest["shards"]["parquet"]:
        pq_rows += pq.read_table(os.path.join(out, shard["path"])).to_pylist()
    assert len(tf_rows) == len(pq_rows) == manifest["total_instances"]
    for t, p in zip(tf_rows, pq_rows):
        n, m = len(p["input_ids"]), len(p["masked_lm_positions"])
        assert t["input_ids"] == p["input_ids"] + [0] * (MAX_SEQ - n)
        assert t["input_mask"] == [1] * n + [0] * (MAX_SEQ - n)
        assert t["segment_ids"][:n] == p["segment_ids"]
        assert t["masked_lm_positions"] == p["masked_lm_positions"] + [0] * (MAX_PRED - m)
        assert t["masked_lm_ids"][:m] == p["masked_lm_ids"]
        assert t["masked_lm_weights"] == [1.0] * m + [0.0] * (MAX_PRED - m)
        assert t["next_sentence_labels"] == [p["next_sentence_labels"]]
        # Google's layout: [CLS] A [SEP] B [SEP]; never predict position 0.
        ids = p["input_ids"]
        assert ids[0] == 101 and ids[-1] == 102 and ids.count(102) == 2
        assert 0 not in p["masked_lm_positions"] and 1 <= m <= MAX_PRED


def test_parquet_loads_with_hf_datasets(job):
    import datasets

    out, manifest = job
    files = [os.path.join(out, s["path"]) for s in manifest["shards"]["parquet"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train",
                               cache_dir=str(out.parent / "hf_cache"))
    assert len(ds) == manifest["total_instances"]
    assert set(ds.column_names) == set(schema.FEATURE_NAMES)


def test_stats_count_what_happened(job):
    out, manifest = job
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    c, d = stats["counts"], stats["derived"]
    assert c["documents"] == 60 and c["files"] == 2
    assert c["instances"] == manifest["total_instances"] == c["nsp_next"] + c["nsp_random"]
    assert 0.3 < d["nsp_random_share"] < 0.7
    assert sum(stats["seq_length_histogram"].values()) == c["instances"]
    # Whole-word masking at work: most masked Chinese characters come with their whole word.
    assert d["masked_cjk_in_whole_multichar_words_share"] > 0.5


def test_non_empty_output_dir_is_refused_then_overwritten(job, tmp_path, small_ltp_model_dir):
    out, manifest = job
    with pytest.raises(FileExistsError, match="--overwrite"):
        run([f"--input={realdata.SAMPLE_CORPUS}", f"--output_dir={out}"])
    target = tmp_path / "again"
    target.mkdir()
    (target / "keep.txt").write_text("user file")
    (target / "manifest.json").write_text("{}")
    (target / "_pieces" / "run-20200101-000000-00000000").mkdir(parents=True)  # a crashed run
    (target / "_pieces" / "run-20200101-000000-00000000" /
     "piece-0123456789abcdef-5b-1r.bin").write_bytes(b"stale")
    small = tmp_path / "small.txt"
    small.write_text("\n\n".join(sample_documents(5)), encoding="utf-8")
    again = run([f"--input={small}", f"--output_dir={target}", "--overwrite", "--dupe_factor=1",
                 f"--ltp_model={small_ltp_model_dir}",
                 "--num_shards=2"])
    assert again["total_instances"] > 0 and (target / "keep.txt").exists()
    assert not (target / "_pieces").exists()


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches no file"):
        run([f"--input={tmp_path}/nothing-*.txt", f"--output_dir={tmp_path}/o"])


def test_command_line_says_where_the_output_went_and_refuses_clearly(tmp_path,
                                                                     small_ltp_model_dir):
    import subprocess
    import sys

    small = tmp_path / "small.txt"
    small.write_text("\n\n".join(sample_documents(4)), encoding="utf-8")
    argv = [sys.executable, "-m", "pipeline.run", f"--input={small}",
            f"--output_dir={tmp_path / 'out'}", "--dupe_factor=1", "--num_shards=1",
            f"--ltp_model={small_ltp_model_dir}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=realdata.REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reading 1 file(s)" in done.stderr and "instances in 1 shard(s) under" in done.stderr
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=realdata.REPO)
    assert again.returncode == 2 and "pass --overwrite" in again.stderr


@pytest.mark.parametrize("task", ["sop", "none"])
def test_other_sentence_tasks_through_the_job(task, tmp_path, small_ltp_model_dir):
    """SOP keeps Google's feature (its meaning in the manifest); ``none`` has no label at all,
    in either format, and one segment per instance."""
    import pyarrow.parquet as pq
    import tensorflow as tf

    small = tmp_path / "small.txt"
    small.write_text("\n\n".join(sample_documents(20)), encoding="utf-8")
    out = tmp_path / task
    manifest = run([f"--input={small}", f"--output_dir={out}", "--dupe_factor=2",
                    "--num_shards=2", f"--next_sentence={task}",
                    f"--ltp_model={small_ltp_model_dir}"])
    assert manifest["next_sentence"] == task and manifest["total_instances"] > 50
    names = [f["name"] for f in manifest["features"]]
    assert ("next_sentence_labels" in names) == (task == "sop")
    import pyarrow as pa

    table = pa.concat_tables([pq.read_table(out / s["path"])
                              for s in manifest["shards"]["parquet"]])
    assert table.column_names == names
    spec = schema.tf_feature_spec(MAX_SEQ, MAX_PRED, task)
    for raw in tf.data.TFRecordDataset(str(out / manifest["shards"]["tfrecord"][0]["path"])):
        example = tf.train.Example.FromString(raw.numpy())
        assert sorted(example.features.feature) == sorted(names)
        tf.io.parse_single_example(raw, spec)
    with open(out / "stats.json", encoding="utf-8") as f:
        stats = json.load(f)
    if task == "sop":
        assert 0.4 < stats["derived"]["sop_swapped_share"] < 0.6
        assert set(table.column("next_sentence_labels").to_pylist()) == {0, 1}
    else:
        rows = table.to_pylist()
        assert all(set(r["segment_ids"]) == {0} and r["input_ids"].count(102) == 1 for r in rows)
        assert stats["derived"]["nsp_random_share"] is None


def test_nfkc_punct_removes_most_unknown_tokens_and_stats_name_the_rest(job, tmp_path,
                                                                        small_ltp_model_dir):
    out, _ = job
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as f:
        before = json.load(f)
    top = dict(before["unk_top_chars"])
    assert top and sum(top.values()) <= before["counts"]["unk_tokens"]
    assert "“" in top and "”" in top  # bert-base-chinese lacks curly quotes
    small = tmp_path / "small.txt"
    small.write_text("\n\n".join(sample_documents(60)) + "\n", encoding="utf-8")
    after_out = tmp_path / "normalized"
    run([f"--input={small}", f"--output_dir={after_out}", "--dupe_factor=1",
         "--normalize=nfkc_punct", f"--ltp_model={small_ltp_model_dir}"])
    with open(after_out / "stats.json", encoding="utf-8") as f:
        after = json.load(f)
    assert after["derived"]["unk_rate"] < before["derived"]["unk_rate"] / 10
    assert "“" not in dict(after["unk_top_chars"])
