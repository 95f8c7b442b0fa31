"""--length_bins end to end on the real sample corpus: binning only places instances."""
import filecmp
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.core.bins import bin_of, max_predictions, parse_bins
from pipeline.run import run
from tests import realdata

COMMON = ["--num_shards=3", "--range_mb=0.004", "--max_seq_length=64",
          "--max_predictions_per_seq=10", "--dupe_factor=2"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, small_ltp_model_dir):
    root = tmp_path_factory.mktemp("bins")
    corpus = realdata.write_corpus(root)
    made = {}
    for name, flags in {"plain": [], "binned": ["--length_bins=16,32"],
                        "binned_mp2": ["--length_bins=16,32", "--direct_num_workers=2",
                                       "--direct_running_mode=multi_processing"],
                        "empty_bin": ["--length_bins=8,32"],
                        "dynamic": ["--length_bins=16,32", "--masking=dynamic"]}.items():
        out = root / name
        made[name] = (out, run([f"--input={corpus}", f"--ltp_model={small_ltp_model_dir}",
                                f"--output_dir={out}"] + COMMON + flags))
    return made


def rows_of(out, entries):
    rows = []
    for entry in entries:
        rows += pq.read_table(out / entry["path"]).to_pylist()
    return rows


def canonical(rows):
    return sorted(json.dumps(r, sort_keys=True) for r in rows)


def test_binned_instances_are_exactly_the_unbinned_ones(outputs):
    plain_out, plain = outputs["plain"]
    binned_out, binned = outputs["binned"]
    assert binned["format_version"] == schema.BINNED_FORMAT_VERSION
    assert plain["format_version"] == schema.MANIFEST_FORMAT_VERSION and "bins" not in plain
    assert binned["total_instances"] == plain["total_instances"] > 100
    assert canonical(rows_of(binned_out, binned["shards"]["parquet"])) == \
        canonical(rows_of(plain_out, plain["shards"]["parquet"]))


def test_each_bin_holds_its_lengths_in_balanced_shards(outputs):
    out, manifest = outputs["binned"]
    bins = schema.length_bins(manifest)
    assert [b["bound"] for b in bins] == [16, 32, 64]
    assert [b["max_predictions_per_seq"] for b in bins] == [2, 5, 10]  # round(16 * .15) = 2
    lower = 0
    for b in bins:
        entries = b["shards"]["parquet"]
        counts = [e["instances"] for e in entries]
        assert len(counts) == 3 and max(counts) - min(counts) <= 1
        assert sum(counts) == b["instances"] > 0
        assert all(e["path"].startswith(f"parquet/len-{b['bound']:04d}/") for e in entries)
        lengths = [len(r["input_ids"]) for r in rows_of(out, entries)]
        assert lower < min(lengths) and max(lengths) <= b["bound"]
        preds = [len(r["masked_lm_positions"]) for r in rows_of(out, entries)]
        assert max(preds) <= b["max_predictions_per_seq"]
        lower = b["bound"]
    assert sum(b["instances"] for b in bins) == manifest["total_instances"]


def test_each_bins_tfrecords_parse_with_googles_spec_at_its_lengths(outputs):
    import tensorflow as tf

    out, manifest = outputs["binned"]
    for b in schema.length_bins(manifest):
        spec = schema.tf_feature_spec(b["bound"], b["max_predictions_per_seq"])
        entry = b["shards"]["tfrecord"][0]
        records = [r.numpy() for r in tf.data.TFRecordDataset(str(out / entry["path"]))]
        assert len(records) == entry["instances"]
        parsed = tf.io.parse_example(tf.constant(records), spec)
        assert parsed["input_ids"].shape == (len(records), b["bound"])


def test_binned_output_is_byte_identical_with_two_workers(outputs):
    one, manifest = outputs["binned"]
    two = outputs["binned_mp2"][0]
    paths = [e["path"] for fmt in ("tfrecord", "parquet") for e in manifest["shards"][fmt]]
    match, mismatch, errors = filecmp.cmpfiles(one, two, paths, shallow=False)
    assert len(match) == 18 and not mismatch and not errors


def test_an_empty_bin_has_no_shards_and_is_recorded(outputs):
    out, manifest = outputs["empty_bin"]
    first = schema.length_bins(manifest)[0]
    assert first == {"bound": 8, "max_predictions_per_seq": 1, "instances": 0, "shards": {}}
    assert not (out / "tfrecord" / "len-0008").exists()
    assert sum(b["instances"] for b in manifest["bins"]) == manifest["total_instances"]


def test_dynamic_data_bins_too(outputs):
    out, manifest = outputs["dynamic"]
    assert manifest["masking"]["mode"] == "dynamic"
    for b in schema.length_bins(manifest):
        rows = rows_of(out, b["shards"]["parquet"])
        assert rows and all(len(r["word_starts"]) == len(r["input_ids"]) <= b["bound"]
                            for r in rows)


def test_overwriting_binned_output_with_unbinned_leaves_no_bin_directory(
        tmp_path, outputs, small_ltp_model_dir):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(outputs["binned"][0], out)
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    corpus = realdata.write_corpus(tmp_path)
    run([f"--input={corpus}", f"--ltp_model={small_ltp_model_dir}", f"--output_dir={out}",
         "--overwrite"] + COMMON)
    assert sorted(os.listdir(out / "tfrecord")) == [f"part-0000{i}-of-00003.tfrecord"
                                                   for i in range(3)]
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"


@pytest.mark.parametrize("spec,message", [
    ("64,32", "strictly increasing"), ("32,32", "strictly increasing"),
    ("4,32", "smallest bound is 8"), ("32,128", "below --max_seq_length"),
    ("x", "expected increasing"),
])
def test_bad_bins_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_bins(spec, 128)


def test_bad_bins_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="below --max_seq_length"):
        run(["--length_bins=64,128", f"--output_dir={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()


def test_bin_of_and_max_predictions_by_hand():
    bounds = parse_bins("16,32", 64)
    assert bounds == (16, 32, 64)
    assert bin_of(np.array([5, 16, 17, 32, 33, 64]), bounds).tolist() == [0, 0, 1, 1, 2, 2]
    assert parse_bins(None, 64) == () and parse_bins("none", 64) == ()
    # The masking budget at the bound: round(30 * 0.15) = round(4.5) = 4 (half to even).
    assert max_predictions(30, 20, 0.15) == 4 and max_predictions(512, 76, 0.15) == 76
