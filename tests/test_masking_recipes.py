"""The masking recipes end to end: --masking=dynamic output and --ngram_masking static output,
on the real sample corpus with real LTP, tokenizers, Beam and TensorFlow's parser."""
import filecmp
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.run import run
from tests import realdata

MACBERT = ["--ngram_masking=1,2,3,4", "--ngram_weights=0.4,0.3,0.2,0.1"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, small_ltp_model_dir):
    root = tmp_path_factory.mktemp("recipes")
    corpus = realdata.write_corpus(root)
    common = [f"--input={corpus}", f"--ltp_model={small_ltp_model_dir}", "--num_shards=2",
              "--range_mb=0.004", "--max_seq_length=64", "--max_predictions_per_seq=10"]
    made = {}
    for name, flags in {"dynamic": ["--masking=dynamic"],
                        "dynamic_mp2": ["--masking=dynamic", "--direct_num_workers=2",
                                        "--direct_running_mode=multi_processing"],
                        "static": ["--dupe_factor=1"],
                        "ngram": ["--dupe_factor=1"] + MACBERT,
                        "dynamic_ngram": ["--masking=dynamic"] + MACBERT}.items():
        out = root / name
        made[name] = (out, run(common + flags + [f"--output_dir={out}"]))
    return made


def parquet_rows(out):
    rows = []
    for name in sorted(os.listdir(out / schema.PARQUET_DIR)):
        rows += pq.read_table(out / schema.PARQUET_DIR / name).to_pylist()
    return rows


def test_dynamic_output_has_word_starts_and_no_masks(outputs):
    out, manifest = outputs["dynamic"]
    assert manifest["masking"]["mode"] == "dynamic"
    assert manifest["config"]["dupe_factor"] == 1  # the default in this mode
    assert [f["name"] for f in manifest["features"]] == [
        "input_ids", "input_mask", "segment_ids", "word_starts", "next_sentence_labels"]
    rows = parquet_rows(out)
    assert len(rows) == manifest["total_instances"] > 50
    mask_id = manifest["masking"]["mask_id"]
    for row in rows:
        ids, starts, segments = row["input_ids"], row["word_starts"], row["segment_ids"]
        assert len(starts) == len(ids) and mask_id not in ids
        num_a = segments.count(0)
        # 0 on [CLS] and both [SEP]; the first token of each segment starts a word.
        assert starts[0] == starts[num_a - 1] == starts[-1] == 0
        assert starts[1] == 1 and starts[num_a] == 1
        assert set(starts) <= {0, 1}
    # Chinese words of several characters: whole-word groups really are words.
    assert sum(r["word_starts"].count(0) for r in rows) > 3 * len(rows)


def test_dynamic_tfrecords_parse_with_the_dynamic_spec(outputs):
    import tensorflow as tf

    out, manifest = outputs["dynamic"]
    spec = schema.tf_feature_spec(64, 10, "nsp", "dynamic")
    assert "masked_lm_positions" not in spec and "word_starts" in spec
    first = manifest["shards"]["tfrecord"][0]
    records = list(tf.data.TFRecordDataset(str(out / first["path"])))
    assert len(records) == first["instances"]
    rows = parquet_rows(out)[:first["instances"]]
    for record, row in zip(records[:20], rows):
        parsed = tf.io.parse_single_example(record, spec)
        n = len(row["input_ids"])
        assert parsed["input_ids"].numpy()[:n].tolist() == row["input_ids"]
        assert parsed["word_starts"].numpy().tolist() == row["word_starts"] + [0] * (64 - n)


def test_dynamic_output_is_byte_identical_with_two_workers(outputs):
    one, two = outputs["dynamic"][0], outputs["dynamic_mp2"][0]
    for fmt in (schema.TFRECORD_DIR, schema.PARQUET_DIR):
        names = sorted(os.listdir(one / fmt))
        match, mismatch, errors = filecmp.cmpfiles(one / fmt, two / fmt, names, shallow=False)
        assert len(match) == 2 and not mismatch and not errors


def test_dynamic_output_holds_as_many_instances_in_fewer_bytes(outputs):
    # Dupe 1 both: the same number of instances; no masked_lm_* features in dynamic data.
    dynamic, static = outputs["dynamic"][1], outputs["static"][1]
    assert dynamic["total_instances"] == static["total_instances"]
    size = lambda m: sum(s["bytes"] for s in m["shards"]["tfrecord"])  # noqa: E731
    assert size(dynamic) < size(static)


def spans(row):
    """Runs of consecutive masked positions of a static row, in tokens (a span of several
    words is one run; static rows carry no word boundaries)."""
    positions = row["masked_lm_positions"]
    runs, last = [], None
    for p in positions:
        if last is not None and p == last + 1:
            runs[-1] += 1
        else:
            runs.append(1)
        last = p
    return runs


def test_ngram_static_output_counts_spans_by_length(outputs):
    out, manifest = outputs["ngram"]
    assert manifest["masking"]["ngram_lengths"] == [1, 2, 3, 4]
    assert manifest["masking"]["ngram_weights"] == [0.4, 0.3, 0.2, 0.1]
    with open(out / schema.STATS_FILE, encoding="utf-8") as f:
        counts = json.load(f)["counts"]
    by_length = np.array([counts[f"masked_spans:{n}"] for n in (1, 2, 3, 4)])
    shares = by_length / by_length.sum()
    assert by_length.sum() > 100
    # 40/30/20/10 drawn; at 64 tokens (a budget of about 9) the span that reaches the budget
    # is shortened, so single words gain some points (bench/README.md has the figures).
    assert shares[0] > shares[1] > shares[2] > shares[3] > 0.03
    assert abs(shares[1] - 0.3) < 0.05
    # Longer masked runs than the unigram output: spans of several words.
    static_runs = [r for row in parquet_rows(outputs["static"][0]) for r in spans(row)]
    ngram_runs = [r for row in parquet_rows(out) for r in spans(row)]
    assert np.mean(ngram_runs) > np.mean(static_runs) + 0.5
    total = sum(len(row["masked_lm_positions"]) for row in parquet_rows(out))
    assert total == counts["masked_tokens"]


def test_ngram_settings_travel_to_dynamic_data(outputs):
    _, manifest = outputs["dynamic_ngram"]
    assert manifest["masking"]["mode"] == "dynamic"
    assert manifest["masking"]["ngram_lengths"] == [1, 2, 3, 4]


@pytest.mark.parametrize("flags,message", [
    (["--masking=dynamic", "--exact_google_draws"], "exact_google_draws"),
    (["--ngram_masking=1,2", "--exact_google_draws"], "exact_google_draws"),
    (["--ngram_masking=1,2", "--ngram_weights=0.6,0.6"], "sum to 1"),
    (["--ngram_masking=1,2,3", "--ngram_weights=0.5,0.5"], "3 span lengths"),
    (["--ngram_masking=0,1"], ">= 1"),
    (["--masking=sometimes"], "invalid choice"),
])
def test_bad_masking_flags_are_refused_before_anything_runs(tmp_path, flags, message, capsys):
    out = tmp_path / "out"
    with pytest.raises((ValueError, SystemExit)) as raised:
        run(flags + [f"--output_dir={out}"])
    text = str(raised.value) + capsys.readouterr().err
    assert message in text
    assert not out.exists()
