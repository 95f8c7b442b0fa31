"""Bad input through the whole job: defined behaviour, counted in stats.json, never a crash."""
import hashlib
import json
import os

import pytest

from pipeline.run import run
from tests import realdata


@pytest.fixture
def run_job(small_ltp_model_dir):
    """The job with the throw-away LTP model (what is tested here does not need a good one)."""
    return lambda flags: run(flags + [f"--ltp_model={small_ltp_model_dir}"])


def stats_of(out):
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as f:
        return json.load(f)["counts"]


def noise(n):
    """Deterministic binary garbage."""
    out = b""
    while len(out) < n:
        out += hashlib.sha256(out[-32:] or b"seed").digest()
    return out[:n]


def test_messy_corpus(tmp_path, run_job):
    src = tmp_path / "in"
    src.mkdir()
    (src / "empty.txt").write_bytes(b"")
    (src / "blank.txt").write_text(" \n\n\u3000\n\t\n")
    (src / "garbage.txt").write_bytes(noise(20_000))
    reviews = realdata.reviews("pos")
    # One-sentence documents (each review's first sentence on its own).
    (src / "one_sentence_docs.txt").write_text("\n\n".join(reviews[:40]), encoding="utf-8")
    mixed = ["微软Windows 11于2021年10月5日发布，售价¥1,088元😀。",
             "繁體中文的句子也要能處理。", "Ⅻ㊣𠀋 are rare characters.", "\x00\x07控制字符\x1b。",
             "ＦＵＬＬ　ＷＩＤＴＨ　ｔｅｘｔ　１２３。"]
    (src / "mixed.txt").write_text("\n".join(mixed) + "\n\n" + "\n".join(reviews[40:60]),
                                   encoding="utf-8")
    out = tmp_path / "out"
    manifest = run_job([f"--input={src}/*", f"--output_dir={out}", "--dupe_factor=1",
                    "--num_shards=2"])
    c = stats_of(out)
    assert c["files"] == 5 and c["files_without_documents"] == 2
    assert c["binary_files_skipped"] == 1 and c["chars_removed"] > 0
    assert c["empty_documents"] == 0  # google format: blank lines only separate documents
    assert c["unk_tokens"] > 0
    assert c["documents"] == 42 and manifest["total_instances"] > 40


def test_single_document_corpus_has_only_true_next_pairs(tmp_path, run_job):
    with open(realdata.SAMPLE_CORPUS, encoding="utf-8") as f:
        doc = max(f.read().split("\n\n"), key=len)
    path = tmp_path / "one.txt"
    path.write_text(doc, encoding="utf-8")
    out = tmp_path / "out"
    manifest = run_job([f"--input={path}", f"--output_dir={out}", "--dupe_factor=3",
                    "--num_shards=1"])
    c = stats_of(out)
    # No other document exists to draw a random B from: nothing is mislabelled "random".
    assert c["nsp_random"] == 0 and c["nsp_next"] == manifest["total_instances"] > 0
    assert c["random_next_without_pool"] > 0 or c["chunks_without_random_document"] > 0


def test_corpus_without_any_text_writes_empty_shards_and_says_so(tmp_path, run_job):
    (tmp_path / "e.txt").write_bytes(b"\n\n  \n")
    out = tmp_path / "out"
    manifest = run_job([f"--input={tmp_path}/e.txt", f"--output_dir={out}", "--num_shards=2"])
    assert manifest["total_instances"] == 0
    assert [s["instances"] for s in manifest["shards"]["parquet"]] == [0, 0]
    import pyarrow.parquet as pq
    assert pq.read_table(out / manifest["shards"]["parquet"][0]["path"]).num_rows == 0


def test_corrupt_gzip_names_the_file(tmp_path, run_job):
    import gzip
    bad = tmp_path / "broken.txt.gz"
    bad.write_bytes(gzip.compress(("一句。\n" * 20000).encode())[:300])
    with pytest.raises(Exception, match="broken.txt.gz"):
        run_job([f"--input={bad}", f"--output_dir={tmp_path / 'out'}"])
