"""The tools on binned output (--length_bins: shards per length bin, each padded to its bin's
bound, manifest format_version 2): verify checks every shard at its bin's lengths and the bins
against the manifest, and says clearly when a shard sits in another bin's directory or a row's
length is outside its bin; inspect shows the bin (and masks dynamic data with the bin's
settings); report has a section of instances and padding per bin."""
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.core.masking import MaskingConfig, mask_dynamic
from pipeline.tools import inspect, verify
from pipeline.tools.report import __main__ as report
from tests.tools.conftest import make_output, manifest, refresh_checksums, rewrite_manifest

BINS = "--length_bins=32,64"


@pytest.fixture(scope="module")
def binned_dir(tmp_path_factory, small_ltp_model_dir):
    """Static NSP data in bins 32, 64 and 128, both formats, 2 shards per bin. Copy it to
    change it."""
    return make_output(tmp_path_factory.mktemp("tools-binned"), small_ltp_model_dir, BINS,
                       "--dupe_factor=1")


@pytest.fixture(scope="module")
def dynamic_binned_dir(tmp_path_factory, small_ltp_model_dir):
    return make_output(tmp_path_factory.mktemp("tools-binned-dynamic"), small_ltp_model_dir,
                       BINS, "--dupe_factor=1", "--masking=dynamic")


@pytest.fixture(scope="module")
def empty_bin_dir(tmp_path_factory, small_ltp_model_dir):
    """Bin 8 holds no instance: listed, empty, without shards."""
    return make_output(tmp_path_factory.mktemp("tools-binned-empty"), small_ltp_model_dir,
                       "--length_bins=8,64", "--dupe_factor=1")


@pytest.fixture
def binned_copy(tmp_path, binned_dir):
    target = tmp_path / "binned"
    shutil.copytree(binned_dir, target)
    return target


def run_tool(main, out, capsys, *flags):
    code = main(["--output_dir", str(out), *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_verify(out, capsys):
    code, text, err = run_tool(verify.main, out, capsys, "--quiet", "--workers", "1")
    return code, text + err


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


def bin_path(out, b, fmt, i=0):
    return manifest(out)["bins"][b]["shards"][fmt][i]["path"]


def parquet_rows(out, path):
    return pq.read_table(out / path).to_pylist()


def write_rows(out, path, rows):
    table = pq.read_table(out / path)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), out / path)


@pytest.mark.parametrize("fixture", ["binned_dir", "dynamic_binned_dir", "empty_bin_dir"])
def test_binned_outputs_verify(fixture, request, capsys):
    out = request.getfixturevalue(fixture)
    m = manifest(out)
    assert m["format_version"] == schema.BINNED_FORMAT_VERSION
    bins = m["bins"]
    # The small corpus fills every bin but the deliberately empty one.
    assert [b["instances"] > 0 for b in bins] == [fixture != "empty_bin_dir", True, True]
    code, text = run_verify(out, capsys)
    assert code == 0, text
    assert text.startswith("OK: ") and text.count("\n") == 1
    assert f"in {len(bins)} length bins (" in text
    assert ", ".join(f"{schema.bin_dir(b['bound'])}: {b['instances']:,}" for b in bins) in text
    assert "every shard at its bin's lengths" in text
    if fixture == "empty_bin_dir":
        assert bins[0] == {"bound": 8, "max_predictions_per_seq": 1, "instances": 0,
                           "shards": {}}
        assert "len-0008: 0" in text


def test_a_shard_moved_into_another_bins_directory_is_named(binned_copy, capsys):
    """Over a shard of the next bin (the manifest untouched), and under a new name."""
    small, large = bin_path(binned_copy, 0, "parquet"), bin_path(binned_copy, 1, "parquet")
    shutil.move(binned_copy / small, binned_copy / large)
    tf_small = bin_path(binned_copy, 0, "tfrecord")
    stray = f"tfrecord/{schema.bin_dir(64)}/part-00009-of-00002.tfrecord"
    shutil.move(binned_copy / tf_small, binned_copy / stray)
    code, text = run_verify(binned_copy, capsys)
    found = problems(text)
    assert code == 1
    assert (small, None, "missing (listed in the manifest)") in found
    assert (large, None, f"sha256 differs from the manifest's: it holds the bytes of {small}, "
                         f"a shard of bin len-0032, moved or copied into bin len-0064's "
                         f"directory") in found
    assert (tf_small, None, "missing (listed in the manifest)") in found
    assert (stray, None, f"not in the manifest: it holds the bytes of {tf_small}, a shard of "
                         f"bin len-0032, moved or copied into bin len-0064's directory") in found
    # Read at bin 64's lengths, its rows are too short for it.
    short = [rest for f, r, rest in found if f == large and r is not None]
    assert short and all(rest.startswith("input_ids: ") and rest.endswith(
        "tokens, fewer than its bin len-0064 (33 to 64 tokens) holds: it belongs in an "
        "earlier bin") for rest in short)


def test_a_shard_listed_in_another_bin_is_read_at_that_bins_lengths(binned_copy, capsys):
    """The files moved and the manifest rewritten to match, checksums and counts included:
    the rows' lengths and the TFRecords' padding still say where they belong."""
    moved = {}

    def change(m):
        for fmt in ("tfrecord", "parquet"):
            entry = m["bins"][0]["shards"][fmt].pop(0)
            old = entry["path"]
            entry["path"] = old.replace(schema.bin_dir(32), schema.bin_dir(64)).replace(
                "part-00000", "part-00002")
            shutil.move(binned_copy / old, binned_copy / entry["path"])
            moved[fmt] = entry["path"]
            m["bins"][1]["shards"][fmt].append(entry)
            m["shards"][fmt] = [e for b in m["bins"] for e in b["shards"].get(fmt, [])]
        m["bins"][0]["instances"] -= entry["instances"]
        m["bins"][1]["instances"] += entry["instances"]

    rewrite_manifest(binned_copy, change)
    code, text = run_verify(binned_copy, capsys)
    found = problems(text)
    assert code == 1
    tf_rows = [rest for f, r, rest in found if f == moved["tfrecord"] and r is not None]
    assert tf_rows and all(rest.endswith(
        "values, the schema says 64 (bin len-0064 is padded to 64)")
        or rest.endswith("the schema says 10 (bin len-0064's max_predictions_per_seq)")
        for rest in tf_rows)
    pq_rows = [rest for f, r, rest in found if f == moved["parquet"] and r is not None]
    assert pq_rows and all("fewer than its bin len-0064 (33 to 64 tokens)" in rest
                           for rest in pq_rows)


def test_a_row_longer_or_shorter_than_its_bin_is_found(binned_copy, capsys):
    small, large = bin_path(binned_copy, 0, "parquet"), bin_path(binned_copy, 1, "parquet")
    small_rows, large_rows = parquet_rows(binned_copy, small), parquet_rows(binned_copy, large)
    long_row, short_row = large_rows[0], small_rows[0]
    small_rows[0], large_rows[0] = long_row, short_row  # each in the other's bin
    write_rows(binned_copy, small, small_rows)
    write_rows(binned_copy, large, large_rows)
    refresh_checksums(binned_copy)
    code, text = run_verify(binned_copy, capsys)
    assert code == 1
    assert problems(text) == [
        (small, 0, f"input_ids: {len(long_row['input_ids'])} tokens, more than its bin "
                   f"len-0032 (1 to 32 tokens) holds: it belongs in a later bin"),
        (large, 0, f"input_ids: {len(short_row['input_ids'])} tokens, fewer than its bin "
                   f"len-0064 (33 to 64 tokens) holds: it belongs in an earlier bin")]


def test_bins_that_disagree_with_the_manifest_are_found(binned_copy, capsys):
    def change(m):
        m["bins"][0]["instances"] += 1  # no longer its shards' sum, nor total_instances's
        first, second = m["bins"][1]["shards"]["parquet"][:2]
        first["instances"] += 2  # unbalanced (and no longer the file's count)
        second["instances"] -= 2
        m["bins"][2]["shards"]["tfrecord"][0]["path"] = "tfrecord/len-0064/elsewhere.tfrecord"

    rewrite_manifest(binned_copy, change)
    m = manifest(binned_copy)
    code, text = run_verify(binned_copy, capsys)
    found = problems(text)
    assert code == 1
    said = [rest for f, _, rest in found if f == "manifest.json"]
    total = m["total_instances"]
    assert f"bins: the bins hold {total + 1} instances, total_instances says {total}" in said
    held = m["bins"][0]["instances"] - 1
    assert (f"bins: bins[0] (len-0032): its tfrecord shards hold {held} instances, the bin "
            f"says {held + 1}") in said
    sizes = [e["instances"] for e in m["bins"][1]["shards"]["parquet"]]
    assert (f"bins: bins[1] (len-0064): parquet shards unbalanced, {min(sizes)} to "
            f"{max(sizes)} instances (the job makes them differ by one at most)") in said
    elsewhere = "tfrecord/len-0064/elsewhere.tfrecord"
    assert (elsewhere, None, "listed in bins[2] (len-0128), whose shards are under "
                             "tfrecord/len-0128/") in found
    assert (elsewhere, None, "listed in bins[2] but not in the manifest's shards") in found
    top = m["shards"]["tfrecord"][-2]["path"]
    assert (top, None, "in the manifest's shards but in no bin's (its bin, and so its "
                       "lengths, is unknown)") in found


def test_an_empty_bin_must_list_no_shards(empty_bin_dir, tmp_path, capsys):
    out = tmp_path / "empty"
    shutil.copytree(empty_bin_dir, out)
    rewrite_manifest(out, lambda m: m["bins"][0].update(
        shards={"tfrecord": [dict(m["bins"][1]["shards"]["tfrecord"][0])]}))
    code, text = run_verify(out, capsys)
    assert code == 1
    assert ("manifest.json", None, "bins: bins[0] (len-0008) is empty (0 instances) but lists "
                                   "1 tfrecord shards") in problems(text)


def test_a_bin_of_the_wrong_type_is_refused_on_opening(binned_copy, capsys):
    rewrite_manifest(binned_copy, lambda m: m["bins"][1].update(bound="64"))
    for main in (verify.main, inspect.main):
        code, text, err = run_tool(main, binned_copy, capsys)
        assert code == 1
        assert "bins[1].bound is '64': it must be a whole number from 1 to" in text + err
        assert "Traceback" not in text + err


def test_inspect_shows_the_bin_and_reads_each_shard_at_its_lengths(binned_dir, capsys):
    m = manifest(binned_dir)
    bins = m["bins"]
    top = [e["path"] for e in m["shards"]["tfrecord"]]
    for b, entry in enumerate(bins):
        path = entry["shards"]["tfrecord"][1]["path"]
        index = top.index(path)
        offset = sum(e["instances"] for e in m["shards"]["tfrecord"][:index])
        code, out, _ = run_tool(inspect.main, binned_dir, capsys, "--json", "--bin",
                                str(entry["bound"]), "--shard", "1", "--record", "0")
        assert code == 0
        (shown,) = [json.loads(line) for line in out.splitlines()]
        assert shown["bin"] == entry["bound"] and shown["index"] == offset
        # TFRecord widths: the bin's bound and max_predictions_per_seq.
        assert len(shown["input_ids"]) == entry["bound"]
        assert len(shown["masked_lm_ids"]) == entry["max_predictions_per_seq"]
        low = bins[b - 1]["bound"] if b else 0
        assert low < sum(shown["input_mask"]) <= entry["bound"]
        # The same instance from Parquet: unpadded, as pyarrow reads it.
        code, out, _ = run_tool(inspect.main, binned_dir, capsys, "--json", "--format",
                                "parquet", "--shard", str(index), "--record", "0")
        (row,) = [json.loads(line) for line in out.splitlines()]
        assert row["bin"] == entry["bound"] and row["index"] == offset
        stored = parquet_rows(binned_dir, entry["shards"]["parquet"][1]["path"])[0]
        assert {k: row[k] for k in stored} == stored
    code, out, _ = run_tool(inspect.main, binned_dir, capsys, "--bin", "64", "--n", "1")
    assert code == 0
    assert "3 length bins: len-0032" in out and "shown: len-0064" in out
    assert "\nbin    len-0064: 33 to 64 tokens, padded to 64, at most 10 predictions\n" in out
    assert " of 64: [CLS]" in out


def test_inspect_refuses_a_bin_it_cannot_show(empty_bin_dir, output_dir, capsys):
    code, _, err = run_tool(inspect.main, empty_bin_dir, capsys, "--bin", "8")
    assert code == 1 and "--bin 8: bin len-0008 is empty (no shards)" in err
    code, _, err = run_tool(inspect.main, empty_bin_dir, capsys, "--bin", "32")
    assert code == 1 and "--bin 32: the bins' bounds are 8, 64, 128" in err
    code, _, err = run_tool(inspect.main, output_dir, capsys, "--bin", "64")
    assert code == 1 and "has no length bins" in err


def test_inspect_epoch_masks_a_bin_as_the_trainers_do(dynamic_binned_dir, capsys):
    """Padded to the bin's bound, with the bin's max_predictions_per_seq."""
    m = manifest(dynamic_binned_dir)
    entry = m["bins"][1]
    path = entry["shards"]["parquet"][0]["path"]
    index = [e["path"] for e in m["shards"]["parquet"]].index(path)
    offset = sum(e["instances"] for e in m["shards"]["parquet"][:index])
    code, out, _ = run_tool(inspect.main, dynamic_binned_dir, capsys, "--json", "--format",
                            "parquet", "--bin", "64", "--n", "8", "--epoch", "1")
    assert code == 0
    shown = [json.loads(line) for line in out.splitlines()]
    rows = parquet_rows(dynamic_binned_dir, path)[:8]
    bound = entry["bound"]
    grid = {name: np.zeros((len(rows), bound), np.int64)
            for name in ("input_ids", "input_mask", "segment_ids", schema.WORD_STARTS)}
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        for name in grid:
            grid[name][i, :n] = row[name]
    config = MaskingConfig.from_manifest(dict(m["masking"], max_predictions_per_seq=entry[
        "max_predictions_per_seq"]), m["vocab_size"])
    want = mask_dynamic(grid["input_ids"], grid["input_mask"], grid["segment_ids"],
                        grid[schema.WORD_STARTS], offset + np.arange(len(rows)), epoch=1,
                        seed=12345, config=config)
    for i, s in enumerate(shown):
        n = int(want["masked_lm_weights"][i].sum())
        assert s["bin"] == bound and s["index"] == offset + i
        assert 0 < n <= entry["max_predictions_per_seq"]
        assert s["input_ids"] == want["input_ids"][i, :len(rows[i]["input_ids"])].tolist()
        assert s["masked_lm_positions"] == want["masked_lm_positions"][i, :n].tolist()
        assert s["masked_lm_ids"] == want["masked_lm_ids"][i, :n].tolist()


@pytest.mark.parametrize("fixture", ["binned_dir", "dynamic_binned_dir", "empty_bin_dir"])
def test_report_has_a_section_per_bin(fixture, request, tmp_path, capsys):
    out = request.getfixturevalue(fixture)
    path = tmp_path / "report.html"
    code, said, _ = run_tool(report.main, out, capsys, "--out", str(path), "--quiet")
    assert code == 0 and said.startswith("wrote ")
    page = path.read_text(encoding="utf-8")
    section = page[page.index("<h2>Length bins</h2>"):]
    section = section[:section.index("<h2>", 5)]
    m = manifest(out)
    rows = [row.split("</td><td>") for row in section.split("<tr><td>")[1:]]
    cells = {r[0]: r for r in rows}
    low, padded, tokens, counted = 0, 0, 0, 0
    for b in m["bins"]:
        name = f"<code>{schema.bin_dir(b['bound'])}</code>"
        row = cells[name]
        assert row[1:4] == [f"{low + 1}–{b['bound']}", str(b["max_predictions_per_seq"]),
                            f"{b['instances']:,}"]
        lengths = [len(r["input_ids"]) for e in b["shards"].get("parquet", [])
                   for r in parquet_rows(out, e["path"])]
        if not lengths:
            assert row[5:8] == ["–", "–", "–"]
        else:
            mean = sum(lengths) / len(lengths)
            assert row[5:8] == [f"{mean:.1f}", f"{100 * (1 - mean / b['bound']):.1f}%",
                                f"{100 * (1 - mean / m['max_seq_length']):.1f}%"]
        low = b["bound"]
        padded += len(lengths) * b["bound"]
        tokens += sum(lengths)
        counted += len(lengths)
    binned = 1 - tokens / padded
    unbinned = 1 - tokens / (counted * m["max_seq_length"])
    assert f"Binned, <b>{100 * binned:.1f}%</b> of the padded tokens are padding" in section
    assert f"would be <b>{100 * unbinned:.1f}%</b> padding" in section
    assert binned < unbinned
    assert f"shards in tfrecord, parquet in {len(m['bins'])} length bins" in page
