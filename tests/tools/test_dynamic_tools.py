"""The tools on dynamic data (--masking=dynamic: word_starts, no masks stored) and inspect's
--json on both kinds: what inspect prints against the shards as pyarrow reads them and against
pipeline.core.masking.mask_dynamic (the trainers' masking); verify on intact and damaged
word_starts; the report's masking section."""
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.common.tfrecord import frame_record
from pipeline.core.masking import MaskingConfig, mask_dynamic
from pipeline.readers.output import open_output
from pipeline.readers.tfrecord import iter_frames
from pipeline.tools import inspect, verify
from pipeline.tools.report import __main__ as report
from pipeline.tools.report import page as report_page
from tests.tools.conftest import make_output, manifest, refresh_checksums, rewrite_manifest

SHARD0 = "tfrecord/part-00000-of-00002.tfrecord"
PARQUET0 = "parquet/part-00000-of-00002.parquet"
PARQUET1 = "parquet/part-00001-of-00002.parquet"


@pytest.fixture(scope="module")
def dynamic_dir(tmp_path_factory, small_ltp_model_dir):
    """Dynamic NSP data with n-gram settings, both formats, 2 shards. Copy it to change it."""
    return make_output(tmp_path_factory.mktemp("tools-dynamic"), small_ltp_model_dir,
                       "--masking=dynamic", "--dupe_factor=1", "--ngram_masking=1,2,3",
                       "--ngram_weights=0.5,0.3,0.2")


@pytest.fixture
def dynamic_copy(tmp_path, dynamic_dir):
    target = tmp_path / "dynamic"
    shutil.copytree(dynamic_dir, target)
    return target


def run_tool(main, out, capsys, *flags):
    code = main(["--output_dir", str(out), *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_lines(text):
    return [json.loads(line) for line in text.splitlines()]


def parquet_rows(out, shard):
    return pq.read_table(out / manifest(out)["shards"]["parquet"][shard]["path"]).to_pylist()


def vocab(out):
    return (out / "vocab.txt").read_text(encoding="utf-8").rstrip("\n").split("\n")


def padded(row, name, width, fill=0):
    return row[name] + [fill] * (width - len(row[name]))


def test_json_shows_static_instances_as_each_format_stores_them(output_dir, capsys):
    m = manifest(output_dir)
    offset = m["shards"]["parquet"][0]["instances"]
    rows, words = parquet_rows(output_dir, 1), vocab(output_dir)
    names = [name for name, _, _ in schema.features("nsp")]
    code, out, _ = run_tool(inspect.main, output_dir, capsys, "--json", "--shard", "1",
                            "--record", "3", "--record", "0", "--format", "parquet")
    assert code == 0
    shown = json_lines(out)
    assert [s["index"] for s in shown] == [offset, offset + 3]
    for s, row in zip(shown, (rows[0], rows[3])):
        assert list(s) == names + ["tokens", "index"]
        assert {k: s[k] for k in names} == row
        assert s["tokens"] == [words[i] for i in row["input_ids"]]
    code, out, _ = run_tool(inspect.main, output_dir, capsys, "--json", "--shard", "1",
                            "--record", "3")
    (s,) = json_lines(out)
    row, seq, pred = rows[3], m["max_seq_length"], m["max_predictions_per_seq"]
    assert s["index"] == offset + 3 and list(s) == names + ["tokens", "index"]
    for name in ("input_ids", "input_mask", "segment_ids"):
        assert s[name] == padded(row, name, seq)
    for name in ("masked_lm_positions", "masked_lm_ids"):
        assert s[name] == padded(row, name, pred)
    assert s["masked_lm_weights"] == padded(row, "masked_lm_weights", pred, 0.0)
    assert s["next_sentence_labels"] == [row["next_sentence_labels"]]
    assert s["tokens"][:len(row["input_ids"])] == [words[i] for i in row["input_ids"]]
    assert set(s["tokens"][len(row["input_ids"]):]) == {"[PAD]"}


def test_epoch_is_refused_on_static_data(output_dir, capsys):
    code, out, err = run_tool(inspect.main, output_dir, capsys, "--epoch", "0")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "static data" in err


def test_json_shows_dynamic_instances_unmasked_with_their_word_starts(dynamic_dir, capsys):
    rows, words = parquet_rows(dynamic_dir, 0), vocab(dynamic_dir)
    names = [name for name, _, _ in schema.features("nsp", "dynamic")]
    assert schema.WORD_STARTS in names and "masked_lm_ids" not in names
    for fmt in ("parquet", "tfrecord"):
        code, out, _ = run_tool(inspect.main, dynamic_dir, capsys, "--json", "--n", "3",
                                "--format", fmt)
        assert code == 0
        for k, s in enumerate(json_lines(out)):
            assert list(s) == names + ["tokens", "index"] and s["index"] == k
            length = len(rows[k]["input_ids"])
            for name in names:
                if name == schema.LABEL_FEATURE:
                    label = rows[k][name]
                    assert s[name] == ([label] if fmt == "tfrecord" else label)
                elif fmt == "tfrecord":
                    assert s[name] == padded(rows[k], name, 128)
                else:
                    assert s[name] == rows[k][name]
            assert s["tokens"][:length] == [words[i] for i in rows[k]["input_ids"]]


def trainers_masks(out, shard, records, *, epoch, seed):
    """mask_dynamic on the records as pyarrow reads them, padded as the trainers pad them."""
    m = manifest(out)
    rows = parquet_rows(out, shard)
    seq = m["max_seq_length"]
    grid = {n: np.array([padded(rows[r], n, seq) for r in records], dtype=np.int64)
            for n in ("input_ids", "input_mask", "segment_ids", schema.WORD_STARTS)}
    offset = sum(e["instances"] for e in m["shards"]["parquet"][:shard])
    config = MaskingConfig.from_manifest(m["masking"], m["vocab_size"])
    return mask_dynamic(grid["input_ids"], grid["input_mask"], grid["segment_ids"],
                        grid[schema.WORD_STARTS], np.array(records) + offset, epoch=epoch,
                        seed=seed, config=config)


def test_epoch_masks_exactly_as_the_trainers_do(dynamic_dir, capsys):
    records = [0, 5, 9]
    flags = ["--json", "--shard", "1"] + [f for r in records for f in ("--record", str(r))]
    shown = {}
    for fmt in ("tfrecord", "parquet"):
        for epoch, seed in ((0, None), (1, None), (0, 7)):
            extra = ["--epoch", str(epoch)] + ([] if seed is None else ["--train_seed", str(seed)])
            code, out, _ = run_tool(inspect.main, dynamic_dir, capsys, *flags, *extra,
                                    "--format", fmt)
            assert code == 0
            shown[fmt, epoch, seed] = json_lines(out)
    for epoch, seed in ((0, None), (1, None), (0, 7)):
        want = trainers_masks(dynamic_dir, 1, records, epoch=epoch,
                              seed=12345 if seed is None else seed)
        for i, s in enumerate(shown["tfrecord", epoch, seed]):
            for name in ("input_ids", "masked_lm_positions", "masked_lm_ids",
                         "masked_lm_weights"):
                assert s[name] == want[name][i].tolist(), name
        for i, s in enumerate(shown["parquet", epoch, seed]):
            count = int(want["masked_lm_weights"][i].sum())
            assert s["masked_lm_positions"] == want["masked_lm_positions"][i, :count].tolist()
            assert s["input_ids"] == want["input_ids"][i, :len(s["input_ids"])].tolist()
            assert s["tokens"].count("[MASK]") >= 1
    positions = {key: [s["masked_lm_positions"] for s in v] for key, v in shown.items()}
    assert positions["tfrecord", 0, None] != positions["tfrecord", 1, None]
    assert positions["tfrecord", 0, None] != positions["tfrecord", 0, 7]


def test_text_view_shows_words_unmasked_and_masks_with_epoch(dynamic_dir, capsys, tmp_path):
    row = parquet_rows(dynamic_dir, 0)[2]
    code, out, _ = run_tool(inspect.main, dynamic_dir, capsys, "--record", "2")
    assert code == 0 and "masking dynamic (shown unmasked)" in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("── "))
    assert lines[start].startswith(f"── {SHARD0}, record 2 (index 2) ")
    words = sum(row[schema.WORD_STARTS])
    assert f"masking dynamic, no masks stored: {words} words" in lines[start + 3]
    a, b = lines[start + 4], lines[start + 5]
    assert a.startswith("A:     [CLS] ") and b.startswith("B:     ")
    assert a.count("|") + b.count("|") == words - 2  # one between each two words of a segment
    assert "«" not in a + b and "group" not in out
    code, out, _ = run_tool(inspect.main, dynamic_dir, capsys, "--record", "2", "--epoch", "1",
                            "--html", str(tmp_path / "p.html"))
    (want,) = trainers_masks(dynamic_dir, 0, [2], epoch=1, seed=12345)["masked_lm_weights"]
    assert code == 0 and "masking dynamic: epoch 1's masks as the trainers draw them" in out
    assert f"masked {int(want.sum())} of at most 20 in " in out
    assert "  group  positions  target        input" in out
    page = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert page.count("<ruby class=") == int(want.sum())
    run_tool(inspect.main, dynamic_dir, capsys, "--record", "2", "--html",
             str(tmp_path / "w.html"))
    assert (tmp_path / "w.html").read_text(encoding="utf-8").count('class="word"') == words


def test_bad_epoch_flags_are_usage_errors(dynamic_dir, capsys):
    for flags in (["--epoch", "-1"], ["--train_seed", "3"]):
        with pytest.raises(SystemExit) as e:
            inspect.main(["--output_dir", str(dynamic_dir), *flags])
        assert e.value.code == 2
    capsys.readouterr()


def test_dynamic_output_verifies(dynamic_dir, capsys):
    code, out, _ = run_tool(verify.main, dynamic_dir, capsys, "--quiet", "--workers", "1")
    assert code == 0, out
    assert out.startswith("OK: ") and "masking dynamic: word_starts checked" in out


def edit_word_starts(path, edits):
    """Set word_starts values of TFRecord records in place: ``edits`` {record: {position:
    value}}; records are re-framed with valid CRCs."""
    with open(path, "rb") as f:
        records = [bytearray(frame.data) for frame in iter_frames(f)]
    for record, changes in edits.items():
        data = records[record]
        key = data.index(schema.WORD_STARTS.encode()) + len(schema.WORD_STARTS)
        values = data.index(b"\x0a\x80\x01", key) + 3  # Int64List.value, 128 packed bytes
        for position, value in changes.items():
            data[values + position] = value
    path.write_bytes(b"".join(frame_record(bytes(r)) for r in records))


def problems(text):
    found = {}
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("  ..."):
            where, rest = line.strip().split(": ", 1)
            found.setdefault(where, []).append(rest)
    return found


def test_damaged_word_starts_are_found(dynamic_copy, capsys):
    rows = parquet_rows(dynamic_copy, 0)
    padding = next(k for k, r in enumerate(rows) if len(r["input_ids"]) < 128)
    assert padding not in (0, 1, 2, 3)
    num_a = rows[3]["segment_ids"].count(0)
    edit_word_starts(dynamic_copy / SHARD0, {0: {0: 1}, 1: {1: 0}, 2: {5: 2}, 3: {num_a - 1: 1},
                                             padding: {127: 1}})
    # A valid-looking change in Parquet only: the two formats no longer agree.
    table = pq.read_table(dynamic_copy / PARQUET0)
    starts = table.column(schema.WORD_STARTS).to_pylist()
    inside = next(i for i, v in enumerate(starts[6]) if v == 0 and i > 1
                  and i < rows[6]["segment_ids"].count(0) - 1)
    starts[6][inside] = 1
    column = table.schema.get_field_index(schema.WORD_STARTS)
    table = table.set_column(column, table.schema.field(column),
                             [pa_array(starts, table.schema.field(column).type)])
    pq.write_table(table, dynamic_copy / PARQUET0)
    refresh_checksums(dynamic_copy)
    code, out, _ = run_tool(verify.main, dynamic_copy, capsys, "--quiet", "--workers", "1")
    found = problems(out)
    assert code == 1
    assert found[f"{SHARD0}, record 0"] == [
        "word_starts: not 0 on [CLS] or a [SEP] (no word starts there)"]
    assert found[f"{SHARD0}, record 1"] == [
        "word_starts: 0 right after [CLS] or segment 0's [SEP] (a word always starts there)"]
    assert found[f"{SHARD0}, record 2"] == ["word_starts: 2 at 5: word starts are 0 or 1"]
    assert found[f"{SHARD0}, record 3"] == [
        "word_starts: not 0 on [CLS] or a [SEP] (no word starts there)"]
    assert found[f"{SHARD0}, record {padding}"] == ["word_starts: non-zero padding"]
    assert found[f"{PARQUET0}, record 6"] == [f"word_starts: differs from record 6 of {SHARD0}"]
    assert len(found) == 6


def pa_array(values, kind):
    import pyarrow as pa

    return pa.array(values, type=kind)


def test_dynamic_settings_that_disagree_with_the_vocabulary_are_found(dynamic_copy, capsys):
    rewrite_manifest(dynamic_copy, lambda m: m["masking"].update(mask_id=100))
    code, out, _ = run_tool(verify.main, dynamic_copy, capsys, "--quiet", "--workers", "1")
    assert code == 1
    assert problems(out) == {"manifest.json": [
        "masking: mask_id 100 is not [MASK] (id 103 in the vocabulary)"]}
    rewrite_manifest(dynamic_copy, lambda m: m["masking"].pop("ngram_weights"))
    code, _, err = run_tool(inspect.main, dynamic_copy, capsys, "--epoch", "0")
    assert code == 1 and "masking lacks ngram_weights" in err


def test_report_says_the_masking_and_counts_the_trainers_masks(dynamic_dir, tmp_path,
                                                                 capsys):
    path = tmp_path / "report.html"
    code, out, _ = run_tool(report.main, dynamic_dir, capsys, "--out", str(path), "--quiet")
    assert code == 0 and out.startswith("wrote ")
    page = path.read_text(encoding="utf-8")
    assert "masking dynamic" in page and "<h2>Masking</h2>" in page
    assert "<code>ngram_lengths</code></td><td>1, 2, 3</td>" in page
    assert "<code>ngram_weights</code></td><td>0.5, 0.3, 0.2</td>" in page
    assert "the masking figures count the masks the trainers draw in epoch 0" in page
    assert page.count('class="word"') > 0 and "Masked spans by length" not in page


def test_report_shows_the_share_of_spans_by_length(dynamic_dir):
    section = report_page._masking(open_output(str(dynamic_dir)),
                                   {"masked_spans:1": 60, "masked_spans:3": 10,
                                    "masked_spans:2": 30, "masked_tokens": 7})
    assert "Masked spans by length" in section and "100 spans masked" in section
    shares = [cells[:4] for cells in
              (row.split("</td><td>") for row in section.split("<tr><td>")[1:]) if
              cells[0].endswith(("word", "words"))]
    assert shares == [["1 word", "60", "60.0%", "50.0%"], ["2 words", "30", "30.0%", "30.0%"],
                      ["3 words", "10", "10.0%", "20.0%"]]
