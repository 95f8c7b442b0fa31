"""python -m pipeline.report: the page's numbers against the output's own files (manifest,
stats.json, and the shards read with pyarrow), and that the page stands alone, Chinese
included (its glyphs embedded, or a notice saying which font to install)."""
import json
import os
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest

from pipeline.readers.output import open_output
from pipeline.tools.report import __main__ as report
from pipeline.tools.report import fonts
from pipeline.tools.report.tally import tally
from tests.tools.conftest import manifest


@pytest.fixture(scope="module")
def page(output_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    assert report.main(["--output_dir", str(output_dir), "--out", str(path), "--quiet"]) == 0
    return path.read_text(encoding="utf-8")


def all_rows(out):
    rows = []
    for entry in manifest(out)["shards"]["parquet"]:
        rows += pq.read_table(os.path.join(out, entry["path"])).to_pylist()
    return rows


def test_the_page_is_self_contained(page):
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 7 and all(len(i) > 2000 for i in images)


def test_sections_and_counts_come_from_the_output(page, output_dir):
    m = manifest(output_dir)
    with open(os.path.join(output_dir, "stats.json"), encoding="utf-8") as f:
        counts = json.load(f)["counts"]
    for heading in ("At a glance", "Instances", "Whole-word masking", "Vocabulary",
                    "Input files", "Repairs made to the input", "Shards", "Configuration",
                    "Examples"):
        assert f"<h2>{heading}</h2>" in page
    for key in ("documents", "sentences", "tokens", "masked_tokens"):
        assert f"<b>{counts[key]:,}</b>" in page
    assert f"<b>{m['total_instances']:,}</b><span>instances</span>" in page
    assert f"<code>unk_tokens</code></td><td><span class='nz'>{counts['unk_tokens']:,}" in page
    for entry in m["shards"]["tfrecord"] + m["shards"]["parquet"]:
        assert entry["path"] in page and entry["sha256"][:16] in page
    assert "<code>--dupe_factor</code></td><td>2</td>" in page
    with open(os.path.join(output_dir, "stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    # What each --input gave the data (stats.json's curation.inputs); no Curation section
    # without curation flags.
    row = stats["curation"]["inputs"][0]
    assert "What each --input gave the data" in page and "<h2>Curation</h2>" not in page
    assert f"<td>{row['documents']:,}</td><td>{row['chars']:,}</td>" \
           f"<td>{row['instances']:,}</td>" in page
    assert row["instances"] == m["total_instances"]
    unk = stats["unk_top_chars"]
    assert unk and all(f"<td>{ch}</td><td>{n:,}</td>" in page for ch, n in unk[:30])


def test_shard_counts_match_pyarrow(output_dir):
    out = open_output(str(output_dir))
    t = tally(out, quiet=True)
    rows = all_rows(output_dir)
    assert t.instances == len(rows) and t.invalid == 0 and not t.unreadable
    lengths = Counter(len(r["input_ids"]) for r in rows)
    assert {k: int(v) for k, v in enumerate(t.seq_lengths) if v} == dict(lengths)
    a = Counter(r["segment_ids"].count(0) - 2 for r in rows)
    assert {k: int(v) for k, v in enumerate(t.a_lengths) if v} == dict(a)
    labels = Counter(r["next_sentence_labels"] for r in rows)
    assert t.labels.tolist() == [labels[0], labels[1]]
    assert t.predictions.tolist()[:21] == [
        sum(len(r["masked_lm_positions"]) == k for r in rows) for k in range(21)]
    vocab = out.vocab
    mask = vocab.index("[MASK]")
    held = Counter()
    for r in rows:
        for p, target in zip(r["masked_lm_positions"], r["masked_lm_ids"]):
            token = r["input_ids"][p]
            held["mask" if token == mask else "kept" if token == target else "random"] += 1
    assert t.input_at_masked == dict(held)
    # The instances agree with the job's own count of masked tokens.
    with open(os.path.join(output_dir, "stats.json"), encoding="utf-8") as f:
        assert sum(held.values()) == json.load(f)["counts"]["masked_tokens"]


def test_a_sample_reads_the_first_records_of_every_shard(output_dir):
    t = tally(open_output(str(output_dir)), max_instances=100, quiet=True)
    assert t.sampled and t.instances == 100


def test_what_stats_json_does_not_record_is_said_and_what_it_does_is_shown(damaged, tmp_path):
    path = damaged / "stats.json"
    stats = json.loads(path.read_text(encoding="utf-8"))
    del stats["unk_top_chars"]  # as written before the job recorded them
    stats["per_file"] = {"zh.txt": {"documents": 24}, "en.txt": {"documents": 8}}
    path.write_text(json.dumps(stats, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "r.html"
    assert report.main(["--output_dir", str(damaged), "--out", str(out), "--quiet",
                        "--examples", "0"]) == 0
    page = out.read_text(encoding="utf-8")
    assert "no <code>unk_top_chars</code>" in page
    assert "<td>zh.txt</td><td>24</td>" in page and "per input file are not" not in page
    assert "<h2>Examples</h2>" not in page


def test_an_unfinished_output_is_refused(damaged, tmp_path, capsys):
    os.remove(damaged / "manifest.json")
    assert report.main(["--output_dir", str(damaged), "--out", str(tmp_path / "r.html")]) == 1
    assert "has no manifest.json" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def _font_in(page):
    """(the page's styles, its text without them, the embedded font or None)."""
    import base64
    import io

    from fontTools.ttLib import TTFont

    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    text = page.replace(style, "")
    urls = re.findall(r"url\(data:font/woff;base64,([A-Za-z0-9+/=]+)\)", style)
    assert len(urls) <= 1
    return style, text, TTFont(io.BytesIO(base64.b64decode(urls[0]))) if urls else None


def test_the_page_embeds_the_glyphs_of_exactly_the_chinese_it_shows(page):
    """A reader without a CJK font sees Chinese, not boxes: the page carries a subset of Noto
    Sans CJK SC (the report extra's noto-cjk-sans-otc) with every CJK character it shows."""
    style, text, font = _font_in(page)
    assert font is not None, "no font embedded: pip install noto-cjk-sans-otc (report extra)"
    shown = set(fonts.cjk_chars(text))
    assert len(shown) > 100 and {"的", "，"} <= shown | set(text)
    assert {chr(c) for c in font.getBestCmap()} == shown
    # First in the stacks: as a fallback, Chromium draws the first Chinese text as boxes.
    assert f'body{{font-family:"{fonts.FAMILY}",' in style
    assert f'code{{font-family:"{fonts.FAMILY}",monospace' in style
    assert "Open Font License" in font["name"].getDebugName(13)
    assert font["hhea"].ascent - font["hhea"].descent == 1000  # lines as tall as before
    assert fonts.NOTICE_START not in page


def test_without_a_cjk_font_the_page_says_what_to_install(output_dir, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.setattr(fonts, "open_font", lambda: None)
    out = tmp_path / "r.html"
    assert report.main(["--output_dir", str(output_dir), "--out", str(out), "--quiet",
                        "--examples", "1"]) == 0
    page = out.read_text(encoding="utf-8")
    assert _font_in(page)[2] is None and "@font-face" not in page
    top = page[:page.index("<h2>")]
    assert fonts.NOTICE_START in top and "fonts-noto-cjk" in top and fonts.PIP_NAME in top
    assert fonts.PIP_NAME in capsys.readouterr().err


def test_a_page_without_chinese_needs_no_font():
    assert fonts.embed("<p>English only · – “quotes”</p>") == ("", "")
    assert fonts.cjk_chars("a的，。ア한𠀀") == sorted("的，。ア한𠀀")


def test_a_damaged_font_file_gives_the_notice_not_a_traceback(monkeypatch):
    import io

    monkeypatch.setattr(fonts, "open_font", lambda: io.BytesIO(b"not a font"))
    assert fonts.embed("<p>的</p>") == ("", fonts.notice())
