"""python -m pipeline.inspect on a real output: what it prints is checked against the records
as TensorFlow and pyarrow read them, decoded with the output's vocab.txt."""
import os
import re
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.tools import inspect
from tests.tools.conftest import manifest

SHARD0 = "tfrecord/part-00000-of-00002.tfrecord"


def run_inspect(out, capsys, *flags):
    code = inspect.main(["--output_dir", str(out), *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def blocks(text):
    """The printed instances: record number → its lines."""
    found, current = {}, None
    for line in text.splitlines():
        head = re.match(r"── (\S+), record (\d+) ", line)
        if head:
            current = found.setdefault(int(head.group(2)), [])
        elif current is not None and line:
            current.append(line)
    return found


def vocab(out):
    with open(os.path.join(out, "vocab.txt"), encoding="utf-8") as f:
        return f.read().rstrip("\n").split("\n")


def parquet_rows(out, shard=0):
    path = os.path.join(out, manifest(out)["shards"]["parquet"][shard]["path"])
    return pq.read_table(path).to_pylist()


def test_join_tokens_reads_like_text():
    assert inspect.join_tokens(["新", "华", "社", "电"]) == "新华社电"
    assert inspect.join_tokens(["the", "jar", "##gon", "file", "."]) == "the jargon file ."
    assert inspect.join_tokens(["[CLS]", "我", "们", "[SEP]"]) == "[CLS] 我们 [SEP]"
    assert inspect.join_tokens(["在", "web", "##site", "上"]) == "在website上"


def test_first_instances_show_the_text_groups_lengths_and_label(output_dir, capsys):
    code, out, err = run_inspect(output_dir, capsys, "--n", "3")
    assert code == 0, err
    shown = blocks(out)
    assert sorted(shown) == [0, 1, 2]
    words = vocab(output_dir)
    rows = parquet_rows(output_dir)
    for record, lines in shown.items():
        row = rows[record]
        ids, seg = row["input_ids"], row["segment_ids"]
        num_a = seg.count(0)
        assert lines[0] == (f"length {len(ids)} of 128: [CLS] + A {num_a - 2} + [SEP] + "
                            f"B {len(ids) - num_a - 1} + [SEP], {128 - len(ids)} padding")
        label = row["next_sentence_labels"]
        assert lines[1].startswith(f"label  {label} = " + ("IsNext" if label == 0 else "random"))
        a_line, b_line = lines[3], lines[4]
        assert a_line.startswith("A:     [CLS] ") and a_line.endswith("[SEP]")
        assert b_line.startswith("B:     ") and b_line.endswith("[SEP]")
        # Every masked group: adjacent positions; its targets and inputs as the data says.
        positions, targets = row["masked_lm_positions"], row["masked_lm_ids"]
        groups = []
        for p, t in zip(positions, targets):
            if groups and groups[-1][-1][0] == p - 1:
                groups[-1].append((p, t))
            else:
                groups.append([(p, t)])
        table = lines[lines.index("  group  positions  target        input") + 1:]
        assert len(table) == len(groups)
        for line, group in zip(table, groups):
            cells = line.split()
            span = f"{group[0][0]}" + (f"-{group[-1][0]}" if len(group) > 1 else "")
            assert cells[1] == span
            assert cells[2] == inspect.join_tokens([words[t] for _, t in group])
            inputs = " ".join(cells[3:]).split(", ")
            for (p, t), shown_input in zip(group, inputs):
                held = words[ids[p]]
                kind = "" if held == "[MASK]" else " (kept)" if ids[p] == t else " (random)"
                assert shown_input == held + kind
        assert lines[2].startswith(f"masked {len(positions)} of at most 20 in {len(groups)} "
                                   f"groups:")
        text = a_line + b_line
        assert text.count("«") == len(groups) == text.count("»")


def test_both_formats_show_the_same_instances(output_dir, capsys):
    _, from_tf, _ = run_inspect(output_dir, capsys, "--record", "7", "--record", "30")
    _, from_pq, _ = run_inspect(output_dir, capsys, "--record", "30", "--record", "7",
                                "--format", "parquet")
    assert blocks(from_tf) == blocks(from_pq) and sorted(blocks(from_tf)) == [7, 30]


def test_a_seed_picks_a_repeatable_sample(output_dir, capsys):
    first = blocks(run_inspect(output_dir, capsys, "--seed", "4", "--n", "4", "--shard", "1")[1])
    again = blocks(run_inspect(output_dir, capsys, "--seed", "4", "--n", "4", "--shard", "1")[1])
    other = blocks(run_inspect(output_dir, capsys, "--seed", "5", "--n", "4", "--shard", "1")[1])
    assert first == again and len(first) == 4
    assert sorted(first) != sorted(other) and sorted(first) != [0, 1, 2, 3]


def test_html_page_colours_each_masked_token(output_dir, capsys, tmp_path):
    page = tmp_path / "sample.html"
    code, out, _ = run_inspect(output_dir, capsys, "--n", "2", "--html", str(page))
    html = page.read_text(encoding="utf-8")
    assert code == 0 and html.startswith("<!DOCTYPE html>") and "http" not in html
    rows = parquet_rows(output_dir)[:2]
    masked = sum(len(r["masked_lm_positions"]) for r in rows)
    assert len(re.findall(r'<ruby class="(mask|kept|random)">', html)) == masked
    assert html.count('class="seg segA"') == 2 and html.count('class="seg segB"') == 2


def test_bad_requests_say_what_is_wrong(output_dir, damaged, capsys):
    count = manifest(output_dir)["shards"]["tfrecord"][0]["instances"]
    code, _, err = run_inspect(output_dir, capsys, "--record", str(count))
    assert code == 1 and f"has {count} records" in err
    code, _, err = run_inspect(output_dir, capsys, "--shard", "2")
    assert code == 1 and "there are 2 tfrecord shards" in err
    os.remove(damaged / "manifest.json")
    code, _, err = run_inspect(damaged, capsys)
    assert code == 1 and "has no manifest.json" in err and "tfrecord/" in err


def test_a_corrupt_record_is_named_not_a_traceback(damaged, capsys):
    from tests.tools.test_verify import flip

    flip(damaged / SHARD0, 0, 12 + 100, 0x40)  # inside record 0's data
    code, out, err = run_inspect(damaged, capsys, "--n", "2")
    assert code == 1
    assert "record 0 is not valid: data CRC mismatch" in out
    assert sorted(blocks(out)) == [1]


@pytest.mark.parametrize("task", ["sop", "none"])
def test_sentence_tasks_are_named(tmp_path, small_ltp_model_dir, capsys, task):
    from tests.tools.conftest import make_output

    out = make_output(tmp_path, small_ltp_model_dir, f"--next_sentence={task}",
                      "--output_formats=parquet")
    code, text, _ = run_inspect(out, capsys, "--n", "1")
    lines = blocks(text)[0]
    assert code == 0
    if task == "none":
        assert lines[1] == "label  none (next_sentence none: one segment, masked-LM only)"
        assert lines[3].startswith("text:  [CLS] ") and not lines[4].startswith("B:")
    else:
        assert re.match(r"label  [01] = (in order|swapped): .* \(SOP\)", lines[1])


def test_random_damage_never_crashes_inspect_or_report(output_dir, tmp_path, capsys):
    from pipeline.tools.report import __main__ as report
    from tests.tools.test_verify import PARQUET0

    rng = np.random.default_rng(11)
    for trial in range(4):
        copy = tmp_path / f"copy{trial}"
        shutil.copytree(output_dir, copy)
        fmt, rel = [("tfrecord", SHARD0), ("parquet", PARQUET0)][trial % 2]
        data = bytearray((copy / rel).read_bytes())
        for at in rng.integers(0, len(data), size=2):
            data[at] ^= 1 << int(rng.integers(0, 8))
        (copy / rel).write_bytes(bytes(data))
        code, out, err = run_inspect(copy, capsys, "--format", fmt, "--n", "400")
        assert code in (0, 1) and "Traceback" not in out + err
        assert report.main(["--output_dir", str(copy), "--out", str(copy / "r.html"),
                            "--quiet", "--format", fmt, "--examples", "0"]) == 0
