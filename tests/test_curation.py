"""Curation in the job, on real text: planted duplicates (an exact copy, a copy with a few
characters changed, a traditional-character copy, an earlier copy with other whitespace) among
People's Daily articles, and unique reviews that share boilerplate lines; filters, weights,
refusals, a corpus curation empties, and the same bytes whatever the workers and partitions."""
import filecmp
import json
import os
import random

import opencc
import pytest

from pipeline import schema
from pipeline.beam.sinks import CurationEmptiedError
from pipeline.run import run
from tests import realdata

HEADER = "本店郑重声明：所有商品均以实物为准，图片仅供参考。"
FOOTER = "感谢您的光临，欢迎再次购买，祝您生活愉快！"


def _articles():
    with open(realdata.SAMPLE_CORPUS, encoding="utf-8") as f:
        return [d.strip("\n") for d in f.read().split("\n\n") if d.strip()]


def _edit(doc: str, share: float, seed: int) -> str:
    rng = random.Random(seed)
    chars = list(doc)
    cjk = [i for i, c in enumerate(chars) if "\u4e00" <= c <= "\u9fff"]
    for i in rng.sample(cjk, max(1, int(len(cjk) * share))):
        chars[i] = "国" if chars[i] != "国" else "家"
    return "".join(chars)


def _chars(doc: str) -> int:
    """Characters of a google-format document as the job counts them (stripped lines)."""
    return sum(len(line.strip()) for line in doc.splitlines() if line.strip())


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(corpus directory, {what: later copy's character count}) of the planted duplicates."""
    root = tmp_path_factory.mktemp("planted")
    docs = _articles()
    a, b = docs[:30], docs[30:60]
    # b.txt's 11th article ends its first line with "…"; an earlier copy in a.txt has "...":
    # the same text after NFKC, 2 characters longer.
    first, rest = b[10].split("\n", 1)
    b[10] = f"{first}…\n{rest}"
    a.append(f"{first}...\n{rest}")
    later = {"exact": docs[3], "near": _edit(docs[5], 0.01, 1),
             "traditional": opencc.OpenCC("s2t").convert(docs[7]), "variant": b[10]}
    b += [later["exact"], later["near"], later["traditional"]]
    reviews = sorted({r for r in realdata.reviews("pos") if 60 <= len(r) <= 200})[:40]
    framed = [f"{HEADER}\n{r}\n{FOOTER}" for r in reviews]
    (root / "a.txt").write_text("\n\n".join(a) + "\n", encoding="utf-8")
    (root / "b.txt").write_text("\n\n".join(b) + "\n", encoding="utf-8")
    (root / "c.txt").write_text("\n\n".join(framed) + "\n", encoding="utf-8")
    return root, {k: _chars(v) for k, v in later.items()}


def job(out, *flags, ltp):
    return run([f"--output_dir={out}", "--dupe_factor=1", "--num_shards=2", f"--ltp_model={ltp}",
                "--range_mb=0.01", "--quiet", *flags])


def stats_of(out):
    return json.loads((out / schema.STATS_FILE).read_text(encoding="utf-8"))


def shards(out):
    return sorted(os.path.relpath(os.path.join(d, f), out)
                  for d, _, files in os.walk(out) for f in files
                  if f.endswith((".tfrecord", ".parquet")))


def same_shards(a, b):
    names = shards(a)
    assert names and names == shards(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors


def test_planted_duplicates_go_and_the_earliest_copy_stays(planted, tmp_path,
                                                           small_ltp_model_dir):
    root, later = planted
    out = tmp_path / "near"
    manifest = job(out, f"--input={root}/*.txt", "--dedup=near", "--convert=t2s",
                   ltp=small_ltp_model_dir)
    stats = stats_of(out)
    dropped, counts = stats["curation"]["dropped"], stats["counts"]
    # exact: the plain copy, the "…" variant (the later copy: the earlier one, in a.txt,
    # stays) and the traditional copy once converted; near: the edited copy.
    assert dropped["dedup_near"]["documents"] == 1
    assert dropped["dedup_near"]["chars"] == later["near"]
    assert dropped["dedup_exact"]["documents"] == 3
    assert dropped["dedup_exact"]["chars"] == \
        later["exact"] + later["variant"] + later["traditional"]
    # Every framed review stays: boilerplate shared by unique documents is not duplication.
    assert counts["documents"] == 31 + 33 + 40
    assert counts["documents_kept"] == counts["documents"] - 4
    assert counts["convert_documents_changed"] >= 1
    assert stats["curation"]["inputs"] == [{"input": f"{root}/*.txt", "documents": 100,
                                            "chars": counts["chars_kept"],
                                            "instances": manifest["total_instances"]}]
    assert manifest["config"]["dedup"] == "near"
    assert not (out / schema.PIECES_DIR).exists()  # sketches removed with the pieces
    # Exact dedup alone: the copies whose text is equal after NFKC and whitespace collapsing
    # (the traditional one only once converted).
    exact = tmp_path / "exact"
    job(exact, f"--input={root}/*.txt", "--dedup=exact", ltp=small_ltp_model_dir)
    dropped = stats_of(exact)["curation"]["dropped"]
    assert dropped["dedup_exact"]["documents"] == 2 and dropped["dedup_near"]["documents"] == 0
    assert dropped["dedup_exact"]["chars"] == later["exact"] + later["variant"]


def test_curated_output_is_the_same_for_any_workers_and_partitions(planted, tmp_path,
                                                                   small_ltp_model_dir):
    root, _ = planted
    flags = [f"--input={root}/a.txt;weight=1.5", f"--input={root}/[bc].txt", "--dedup=near",
             "--convert=t2s", "--filters=all", "--tokenize_batch_size=7"]
    job(tmp_path / "one", *flags, "--direct_running_mode=in_memory",
        ltp=small_ltp_model_dir)
    job(tmp_path / "two", *flags, "--direct_running_mode=multi_processing",
        "--direct_num_workers=2", "--dedup_partitions=3", ltp=small_ltp_model_dir)
    assert same_shards(tmp_path / "one", tmp_path / "two")
    assert stats_of(tmp_path / "one") == stats_of(tmp_path / "two")


def test_dedup_of_a_corpus_without_duplicates_changes_nothing(tmp_path, small_ltp_model_dir):
    corpus = realdata.write_corpus(tmp_path)
    job(tmp_path / "plain", f"--input={corpus}", ltp=small_ltp_model_dir)
    job(tmp_path / "dedup", f"--input={corpus}", "--dedup=near", ltp=small_ltp_model_dir)
    assert same_shards(tmp_path / "plain", tmp_path / "dedup")
    assert stats_of(tmp_path / "dedup")["counts"]["dedup_buckets"] == 0


def test_filters_drop_and_count_per_reason(tmp_path, small_ltp_model_dir):
    docs = _articles()[:6]
    mojibake = docs[0].encode("utf-8").decode("latin-1")
    spam = "\n".join(["点击这里领取优惠券，机会难得不要错过！"] * 4 + ["联系我们。"])
    corpus = tmp_path / "mixed.txt"
    corpus.write_text("\n\n".join(docs[1:] + [mojibake, spam, "短文。"]) + "\n",
                      encoding="utf-8")
    job(tmp_path / "out", f"--input={corpus}", "--filters=all", ltp=small_ltp_model_dir)
    dropped = stats_of(tmp_path / "out")["curation"]["dropped"]
    assert {r: d["documents"] for r, d in dropped.items() if d["documents"]} == \
        {"other_chars": 1, "repeated_lines": 1, "min_chars": 1}
    assert dropped["min_chars"]["chars"] == 3
    assert dropped["repeated_lines"]["chars"] == _chars(spam)


def test_weights_repeat_and_sample_each_input(planted, tmp_path, small_ltp_model_dir):
    root, _ = planted
    manifest = job(tmp_path / "w", f"--input={root}/a.txt;weight=2",
                   f"--input={root}/c.txt;weight=0.5", ltp=small_ltp_model_dir)
    stats = stats_of(tmp_path / "w")
    rows = stats["curation"]["inputs"]
    assert [r["input"] for r in rows] == [f"{root}/a.txt;weight=2", f"{root}/c.txt;weight=0.5"]
    assert rows[0]["documents"] == 62 and 10 <= rows[1]["documents"] <= 30
    assert stats["counts"]["weight_copies"] == 31
    assert stats["curation"]["dropped"]["weight"]["documents"] == 40 - rows[1]["documents"]
    assert sum(r["instances"] for r in rows) == manifest["total_instances"]
    assert rows[0]["instances"] > 0 and rows[1]["instances"] > 0
    assert manifest["config"]["input"] == [f"{root}/a.txt;weight=2", f"{root}/c.txt;weight=0.5"]


@pytest.mark.parametrize("flags, message", [
    (["--filters=min_chars,bogus"], "unknown filter 'bogus'"),
    (["--filters=other_char"], "did you mean other_chars"),
    (["--input={corpus};weight=0"], "weight=0 must be a finite number > 0"),
    (["--input={corpus};weight=two"], "weight='two' is not a number"),
    (["--dedup=near", "--near_dup_threshold=0"], "near_dup_threshold"),
    (["--dedup=near", "--near_dup_threshold=1.2"], "near_dup_threshold"),
    (["--dedup=near", "--near_dup_shingle=5"], "near_dup_shingle"),
])
def test_bad_curation_settings_are_refused_before_anything_runs(flags, message, tmp_path):
    corpus = realdata.write_corpus(tmp_path)
    flags = [f.format(corpus=corpus) for f in flags]
    if not any(f.startswith("--input") for f in flags):
        flags.append(f"--input={corpus}")
    out = tmp_path / "out"
    with pytest.raises((ValueError, SystemExit)) as raised:
        run([f"--output_dir={out}", *flags])
    assert message in str(raised.value)
    assert not out.exists()


def test_a_corpus_curation_empties_fails_naming_why(planted, tmp_path, small_ltp_model_dir):
    root, _ = planted
    out = tmp_path / "out"
    job(out, f"--input={root}/a.txt", ltp=small_ltp_model_dir)
    before = (out / schema.MANIFEST_FILE).read_bytes()
    with pytest.raises(CurationEmptiedError, match=r"every one of the 31 documents.*"
                                                   r"min_chars: 31"):
        job(out, f"--input={root}/a.txt", "--filters=min_chars=100000", "--overwrite",
            ltp=small_ltp_model_dir)
    assert (out / schema.MANIFEST_FILE).read_bytes() == before  # the previous output stays
    assert not (out / schema.STAGING_DIR).exists() and not (out / schema.PIECES_DIR).exists()
    fresh = tmp_path / "fresh"
    with pytest.raises(CurationEmptiedError):
        job(fresh, f"--input={root}/a.txt", "--filters=min_chars=100000",
            ltp=small_ltp_model_dir)
    assert not fresh.exists() or not any(fresh.iterdir())


def test_verify_and_the_report_show_curation(planted, tmp_path, small_ltp_model_dir):
    from pipeline.tools import verify
    from pipeline.tools.report.__main__ import main as report_main

    root, _ = planted
    out = tmp_path / "out"
    job(out, f"--input={root}/*.txt", "--dedup=near", "--filters=all", ltp=small_ltp_model_dir)
    assert verify.main(["--output_dir", str(out), "--quiet", "--workers", "1"]) == 0
    page = tmp_path / "report.html"
    report_main(["--output_dir", str(out), "--out", str(page)])
    html = page.read_text(encoding="utf-8")
    assert "Curation" in html and "dedup_near" in html and "dedup_exact" in html
