"""Decoding, cleaning, documents and sentences: every repair defined and counted."""
import bz2
import gzip
import io
import json
import random
from collections import Counter

import pytest

from pipeline.core.text import (
    CorruptInputError,
    RangeReader,
    cap_sentence,
    clean_text,
    decompressed,
    document_boundary,
    iter_documents,
    split_sentences,
)
from tests import realdata


def docs(data: bytes, fmt="google", **kw):
    stats = Counter()
    out = list(iter_documents(io.BytesIO(data), source="mem", input_format=fmt, stats=stats,
                              **kw))
    return out, stats


def test_google_format_documents_and_ids():
    out, stats = docs("第一句。\n第二句。\n\n\n\n第三句。\r\n".encode())
    assert out == [("mem:0", ["第一句。", "第二句。"]), ("mem:1", ["第三句。"])]
    assert stats["documents"] == 2 and stats["sentences"] == 3


def test_bom_crlf_controls_invalid_bytes_are_cleaned_and_counted():
    data = b"\xef\xbb\xbfab\x00c\r\nd\xff\xfee\x07f\r\n"
    out, stats = docs(data)
    assert out == [("mem:0", ["abc", "def"])]
    assert stats["chars_removed"] == 4  # NUL, two invalid bytes, BEL


def test_binary_garbage_line_inside_text_is_skipped_whole_and_counted():
    reviews = realdata.reviews("pos")[:200]
    text = "\n".join(reviews).encode()  # > 8 KB of real text first
    noise = bytes(b for b in range(256) if b not in (10, 13)) * 4  # no line breaks
    out, stats = docs(text + b"\n" + noise + b"\n" + "正常的一句话。".encode() + b"\n")
    sentences = out[0][1]
    assert sentences[-1] == "正常的一句话。"
    assert "".join(sentences[:-1]).replace(" ", "") == "".join(reviews).replace(" ", "")
    assert stats["binary_lines_skipped"] == 1 and stats["binary_files_skipped"] == 0


def test_binary_and_utf16_files_are_skipped_whole():
    out, stats = docs(bytes(range(256)) * 40)
    assert out == [] and stats["binary_files_skipped"] == 1
    out, stats = docs("中文。\n".encode("utf-16"))
    assert out == [] and stats["binary_files_skipped"] == 1


def test_empty_whitespace_only_and_empty_file():
    out, stats = docs(b"")
    assert out == [] and stats["files"] == 1
    out, stats = docs("   \n\u3000\n".encode(), fmt="lines")
    assert out == [] and stats["empty_documents"] == 2


def test_lines_format_splits_sentences_chinese_and_english():
    text = "今天天气很好！我们去公园吧？好的。\nIt works. Really? Yes! 3.14 stays whole.\n"
    out, _ = docs(text.encode(), fmt="lines")
    assert out[0] == ("mem:1", ["今天天气很好！", "我们去公园吧？", "好的。"])
    assert out[1] == ("mem:2", ["It works.", "Really?", "Yes!", "3.14 stays whole."])


def test_sentence_split_keeps_closing_quotes():
    assert split_sentences("他说：“走吧。”然后走了……真的") == [
        "他说：“走吧。”", "然后走了……", "真的"]


def test_jsonl_bad_lines_and_missing_fields_are_counted():
    lines = [json.dumps({"text": "一。二。"}), "{not json", json.dumps({"body": "x"}),
             json.dumps(["list"]), json.dumps({"content": "三。"})]
    out, stats = docs("\n".join(lines).encode(), fmt="jsonl")
    assert out == [("mem:1", ["一。", "二。"])]
    assert stats["jsonl_bad_lines"] == 1 and stats["jsonl_missing_text_field"] == 3
    out, _ = docs("\n".join(lines).encode(), fmt="jsonl", text_field="content")
    assert out == [("mem:5", ["三。"])]


def test_overlong_sentences_are_cut_at_soft_breaks():
    s = "甲" * 30 + "，" + "乙" * 30
    pieces = cap_sentence(s, 40)
    assert pieces == ["甲" * 30 + "，", "乙" * 30]
    assert all(len(p) <= 40 for p in cap_sentence("丙" * 100, 40))
    out, stats = docs(("丁" * 2000 + "\n").encode(), max_sentence_chars=500)
    assert [len(s) for s in out[0][1]] == [500] * 4 and stats["sentences_cut"] == 1


def test_very_long_line_is_read_in_bounded_pieces():
    line = ("戊" * 250_000).encode()
    out, stats = docs(line + b"\n\n" + "己。".encode(), max_line_chars=100_000,
                      max_sentence_chars=50_000)
    assert [len(s) for s in out[0][1]] == [50_000] * 5
    assert out[1] == ("mem:1", ["己。"])
    assert stats["lines_cut"] == 2


def test_line_of_exactly_max_chars_is_not_a_document_break():
    out, _ = docs(b"abcd\nef\n", max_line_chars=4, max_sentence_chars=16)
    assert out == [("mem:0", ["abcd", "ef"])]


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress])
def test_compressed_streams_and_corrupt_ones(compress, tmp_path):
    suffix = ".gz" if compress is gzip.compress else ".bz2"
    good = tmp_path / f"good.txt{suffix}"
    good.write_bytes(compress("一句。\n\n二句。\n".encode()))
    with open(good, "rb") as raw:
        f = decompressed(raw, str(good))
        stats = Counter()
        assert len(list(iter_documents(f, source=str(good), input_format="google",
                                       stats=stats))) == 2
    bad = tmp_path / f"bad.txt{suffix}"
    whole = compress("\n".join(realdata.reviews("neg")[:3000]).encode())  # real, incompressible
    for broken in (whole[:200] + b"\x00garbage" * 50, whole[:len(whole) // 2]):
        bad.write_bytes(broken)  # corrupt, then truncated: both named errors, no silent loss
        with pytest.raises(CorruptInputError, match="bad.txt"):
            with open(bad, "rb") as raw:
                list(iter_documents(decompressed(raw, str(bad)), source=str(bad),
                                    input_format="google", stats=Counter()))


def test_real_reviews_round_trip_as_lines():
    reviews = realdata.reviews("neg")[:500]
    out, stats = docs("\n".join(reviews).encode(), fmt="lines")
    assert stats["documents"] == len(out) == len(reviews)
    # Sentence splitting loses no non-space character.
    for (_, sentences), review in zip(out, reviews):
        assert "".join(sentences).replace(" ", "") == clean_text(review, Counter()).replace(" ", "")


def _ranges(data: bytes, fmt: str, step: int):
    """Cut ``data`` where ``document_boundary`` says, near every ``step`` bytes."""
    stream = io.BytesIO(data)
    cuts = [0]
    for nominal in range(step, len(data), step):
        if nominal <= cuts[-1]:
            continue
        cut = document_boundary(stream, nominal, fmt, block=7)  # tiny blocks: carries matter
        if cut is None or cut >= len(data):
            break
        assert cut >= nominal
        cuts.append(cut)
    return list(zip(cuts, cuts[1:] + [len(data)]))


@pytest.mark.parametrize("fmt", ["google", "lines", "jsonl"])
def test_document_ranges_read_every_document_once(fmt):
    rng = random.Random(fmt)
    docs = []
    for d in range(60):
        sentences = ["".join(rng.choice("中文字词abc，。 ") for _ in range(rng.randint(1, 40)))
                     .strip() or "x" for _ in range(rng.randint(1, 4))]
        docs.append(sentences)
    if fmt == "google":
        seps = ["\n\n", "\r\n\r\n", "\n  \n", "\n\n\n", "\n\r\n"]
        text = "".join("\n".join(d) + rng.choice(seps) for d in docs)
    elif fmt == "lines":
        text = "".join(" ".join(d) + rng.choice(["\n", "\r\n"]) for d in docs)
    else:
        text = "".join(json.dumps({"text": " ".join(d)}, ensure_ascii=False) + "\n" for d in docs)
    data = text.encode("utf-8")

    def read(stream, source, whole):
        return [s for _, doc in iter_documents(stream, source=source, input_format=fmt,
                                                whole_file=whole, stats=Counter())
                for s in doc]

    whole = read(io.BytesIO(data), "f", True)
    for step in (1, 13, 100, 1000, 10 ** 6):
        got = []
        ranges = _ranges(data, fmt, step)
        for start, end in ranges:
            raw = io.BytesIO(data)
            raw.seek(start)
            got += read(RangeReader(raw, end - start), f"f@{start}", start == 0)
        assert got == whole, step
        if step == 100:
            assert len(ranges) > 10


def test_document_boundary_needs_an_empty_line_in_google_format():
    data = "a\n  \nb\n\nc\n".encode()  # a whitespace-only line ends a document but is no cut
    assert document_boundary(io.BytesIO(data), 1, "google") == data.index(b"c")
    assert document_boundary(io.BytesIO(b"abc\ndef\n"), 2, "google") is None
    assert document_boundary(io.BytesIO(b"abc\ndef\n"), 2, "lines") == 4
    assert document_boundary(io.BytesIO(b"abc\ndef\n"), 0, "google") == 0
