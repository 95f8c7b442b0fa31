"""Curation's pure steps: flag parsing, filters, conversion, shingles, the duplicate rule, and
weights; near-duplicate similarity on real People's Daily text."""
import random
from collections import Counter

import numpy as np
import pytest

from pipeline.core import curation
from pipeline.core.curation import (
    CurationConfig,
    CurationError,
    failed_filter,
    find_duplicates,
    parse_filters,
    parse_weight,
)
from pipeline.default_segmenter.peoples_daily import iter_paragraphs


def test_filters_parse_with_defaults_values_and_all():
    assert parse_filters(None) == () and parse_filters("none") == ()
    assert parse_filters("min_chars") == (("min_chars", 20.0),)
    assert parse_filters("other_chars=0.1,min_chars=5") == (("min_chars", 5.0),
                                                            ("other_chars", 0.1))
    assert parse_filters("all") == (("min_chars", 20.0), ("repeated_lines", 0.3),
                                    ("other_chars", 0.25))


@pytest.mark.parametrize("spec, message", [
    ("min_char", "did you mean min_chars"),
    ("bogus", "unknown filter 'bogus'"),
    ("repeated_lines=abc", "not a number"),
    ("repeated_lines=1.5", "out of range"),
    ("min_chars=-1", "out of range"),
    ("other_chars=nan", "out of range"),
])
def test_bad_filters_are_refused(spec, message):
    with pytest.raises(CurationError, match=message):
        parse_filters(spec)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "inf", "nan", ""])
def test_bad_weights_are_refused(value):
    with pytest.raises(CurationError, match="weight"):
        parse_weight(value)


@pytest.mark.parametrize("threshold", [0, -0.1, 1.01])
def test_threshold_outside_zero_one_is_refused(threshold):
    with pytest.raises(CurationError, match="near_dup_threshold"):
        CurationConfig(dedup="near", near_dup_threshold=threshold)
    assert CurationConfig(near_dup_threshold=1.0).near_dup_threshold == 1.0


def test_each_filter_on_hand_checkable_documents():
    filters = parse_filters("all")
    chinese = ["国务院总理李鹏今天上午在人民大会堂会见了来访的客人。", "双方进行了友好的交谈。"]
    assert failed_filter(chinese, filters) is None
    assert failed_filter(["This is plain English text, with digits 123 and punctuation!"] * 1,
                         filters) is None
    assert failed_filter(["太短了。"], filters) == "min_chars"  # 4 characters < 20
    # 4 of 5 lines repeat an earlier line: 0.8 > 0.3
    assert failed_filter(["点击这里下载全文的链接地址吧"] * 5, filters) == "repeated_lines"
    # UTF-8 Chinese read as Latin-1 and saved again (double-encoded): mojibake
    mojibake = "国务院总理李鹏今天上午在人民大会堂".encode("utf-8").decode("latin-1")
    assert failed_filter([mojibake], filters) == "other_chars"
    # The thresholds are the values given: 3 of 8 symbol characters.
    assert failed_filter(["★★★abcdeabcdeabcdeabcde"], parse_filters("other_chars=0.1")) == \
        "other_chars"
    assert failed_filter(["★★★abcdeabcdeabcdeabcde"], parse_filters("other_chars=0.2")) is None


def test_character_classes():
    assert curation.char_classes("中文 abc，123！") == (10, 0)
    assert curation.char_classes("ＡＢＣ１２３") == (6, 0)  # full-width letters and digits
    assert curation.char_classes("😀 ♥ é") == (3, 3)   # emoji, symbol, accented letter
    assert curation.char_classes("𠀀") == (1, 0)        # CJK extension B (astral)


def test_t2s_conversion_is_counted():
    convert = curation.converter_for("t2s")
    stats = Counter()
    assert convert(["漢字簡體轉換。", "中文"], stats) == ["汉字简体转换。", "中文"]
    assert stats == Counter(convert_documents_changed=1, convert_chars_changed=5)
    assert curation.converter_for("tw2sp")(["軟體"], Counter()) == ["软件"]
    assert curation.converter_for("none") is None


def test_shingle_ids_are_exact():
    ids = curation.shingle_ids("abcabd", 3)
    assert len(ids) == 4 and len(set(ids.tolist())) == 4
    assert curation.shingle_ids("abcab", 3)[0] == curation.shingle_ids("abc", 3)[0]
    assert len(curation.shingle_ids("a", 3)) == 1 and len(curation.shingle_ids("", 2)) == 1
    assert curation.shingle_ids("𠀀中", 2)[0] == (0x20000 << 21) | ord("中")


def _fetch(exact, sigs):
    def fetch(keys):
        return exact[keys.astype(np.int64)], sigs[keys.astype(np.int64)]
    return fetch


def _entries(bands: dict[int, list[int]]) -> np.ndarray:
    return np.array([(band, doc) for band, docs in bands.items() for doc in docs],
                    dtype=np.uint64)


def test_duplicate_rule_on_a_chain():
    """A~B and B~C but not A~C: B goes because of A, C because of B (dropped or not, an
    earlier similar document drops a later one); A stays. D shares a band but is not
    similar: it stays. E is an exact copy of A."""
    perm = 10
    a = np.arange(perm, dtype=np.uint32)
    b = a.copy()
    b[8:] += 100                       # 8/10 equal to A
    c = b.copy()
    c[6:8] += 200                      # C: 8/10 equal to B, 6/10 equal to A
    d = a.copy()
    d[2:] += 500                       # D: 2/10 equal to A
    sigs = np.stack([a, b, c, d, a])
    exact = np.array([[1, 1], [2, 2], [3, 3], [4, 4], [1, 1]], dtype=np.uint64)
    exact_band = (1 << 63) | 1  # the exact hash's band: A and its exact copy E
    entries = _entries({7: [0, 1, 2, 3, 4], exact_band: [0, 4]})
    stats = Counter()
    drops = find_duplicates(entries, _fetch(exact, sigs), threshold=0.8, stats=stats)
    assert drops == {1: "near", 2: "near", 4: "exact"}
    assert stats["dedup_buckets"] == 2
    # Threshold 0.9: nothing is near enough; the exact copy still goes.
    assert find_duplicates(entries, _fetch(exact, sigs), threshold=0.9, stats=Counter()) == \
        {4: "exact"}


def test_decisions_do_not_depend_on_partitions_or_entry_order():
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 4, size=(60, 16), dtype=np.uint32)  # many accidental near pairs
    exact = np.stack([np.arange(60), np.arange(60)], axis=1).astype(np.uint64)
    exact[50:] = exact[:10]                                       # 10 exact copies
    sigs[50:] = sigs[:10]
    keys = curation.band_keys(np.tile(sigs, (1, 8)))[:, :4] % np.uint64(5)  # collide often;
    # the band index is 0 for all, so no band defers to a lower one
    entries = np.array([(keys[d, b], d) for d in range(60) for b in range(4)]
                       + [((1 << 63) | int(exact[d, 0]), d) for d in range(60)],
                       dtype=np.uint64)
    whole = find_duplicates(entries, _fetch(exact, sigs), threshold=0.5, stats=Counter())
    assert {k for k, v in whole.items() if v == "exact"} >= set(range(50, 60))
    for parts in (2, 3):
        split: dict[int, str] = {}
        shuffled = entries[rng.permutation(len(entries))]
        for p in range(parts):
            mine = shuffled[shuffled[:, 0] % np.uint64(parts) == p]
            for k, v in find_duplicates(mine, _fetch(exact, sigs), threshold=0.5,
                                        stats=Counter()).items():
                if split.get(k) != "exact":
                    split[k] = v
        assert split == whole


def _pd_documents(n: int) -> list[str]:
    texts = []
    for paragraph in iter_paragraphs():
        text = "".join(paragraph.words)
        if len(text) >= 200:
            texts.append(text)
        if len(texts) == n:
            return texts
    return texts


def _edit(text: str, share: float, rng: random.Random) -> str:
    """``text`` with ``share`` of its characters replaced by other Chinese characters."""
    chars = list(text)
    for i in rng.sample(range(len(chars)), max(1, int(len(chars) * share))):
        chars[i] = chr(0x4E00 + rng.randrange(0x5000))
    return "".join(chars)


def test_near_duplicate_sketches_on_real_text():
    """People's Daily paragraphs with 2% of characters replaced stay above the default
    threshold (estimated Jaccard of 3-character shingles) and share a band; different
    paragraphs, even with a shared boilerplate line, are far below."""
    rng = random.Random(7)
    texts = _pd_documents(200)
    config = CurationConfig(dedup="near")
    edited = [_edit(t, 0.02, rng) for t in texts]
    sigs = curation.signatures(texts + edited, shingle=3, seed=config.seed)
    orig, copy = sigs[:200], sigs[200:]
    similarity = (orig == copy).mean(axis=1)
    assert np.median(similarity) > 0.85 and (similarity >= 0.8).mean() >= 0.95
    keys = curation.band_keys(sigs)
    assert (keys[:200] == keys[200:]).any(axis=1).mean() >= 0.97
    # The same boilerplate around 120 characters of different paragraphs (some paragraphs of
    # People's Daily quote one another: only pairs that are not similar to begin with count).
    boilerplate = "本报讯（记者）：欢迎订阅本报，订阅热线请见第二版。"
    bodies = [t[:120] for t in texts[:50]]
    plain = curation.signatures(bodies, shingle=3, seed=config.seed)
    framed = curation.signatures([boilerplate + b + boilerplate for b in bodies], shingle=3,
                                 seed=config.seed)
    pairs = [(framed[i] == framed[j]).mean() for i in range(50) for j in range(i)
             if (plain[i] == plain[j]).mean() < 0.3]
    assert len(pairs) > 1000 and max(pairs) < 0.6


def test_weights_repeat_and_sample_deterministically():
    docs = [(f"s:{i}", [f"句子{i}。"]) for i in range(1000)]
    stats = Counter()
    doubled = list(curation.weighted(docs, weight=2, seed=1, key=("s", 0), stats=stats))
    assert len(doubled) == 2000 and doubled[1] == ("s:0~2", ["句子0。"])
    assert stats["weight_copies"] == 1000
    stats = Counter()
    half = list(curation.weighted(docs, weight=0.5, seed=1, key=("s", 0), stats=stats))
    assert 430 < len(half) < 570 and stats["dropped_documents:weight"] == 1000 - len(half)
    again = list(curation.weighted(docs, weight=0.5, seed=1, key=("s", 0), stats=Counter()))
    other = list(curation.weighted(docs, weight=0.5, seed=2, key=("s", 0), stats=Counter()))
    assert again == half and other != half
    one_and_half = list(curation.weighted(docs, weight=1.5, seed=1, key=("s", 0),
                                          stats=Counter()))
    assert 1430 < len(one_and_half) < 1570


def test_curate_applies_filters_then_duplicate_rows_then_weight():
    docs = [("s:0", ["太短。"]), ("s:1", ["这是一篇足够长的文档，内容完整而且没有问题。"]),
            ("s:2", ["这是另一篇足够长的文档，它在去重时会被删掉。"])]
    stats = Counter()
    out = list(curation.curate(docs, config=CurationConfig(filters=parse_filters("min_chars")),
                               converter=None, drops={1: "near"}, weight=1, key=("s", 0),
                               stats=stats))
    # Row 1 is the second document that passed the filters ("s:2").
    assert out == [docs[1]]
    assert stats["dropped_documents:min_chars"] == 1 and stats["dropped_chars:min_chars"] == 3
    assert stats["dropped_documents:dedup_near"] == 1


def test_the_writers_know_every_drop_reason():
    from pipeline.writers import manifest

    assert manifest.DROP_REASONS == curation.DROP_REASONS


def test_each_dropped_document_is_reported_by_about_one_band():
    """Exact copies only by the exact band, near copies by the lowest band they are found in;
    the union over bands is the same decision as all bands at once."""
    rng = random.Random(11)
    texts = _pd_documents(120)
    rows = [[t] for t in texts] + [[_edit(t, 0.01, rng)] for t in texts[:40]] + \
        [[t] for t in texts[40:60]]
    sketch = curation.sketch_range(rows, range_no=0, config=CurationConfig(dedup="near"),
                                   partitions=1)
    entries = sketch.parts[0]

    def fetch(keys):
        return sketch.exact[keys.astype(np.int64)], sketch.sigs[keys.astype(np.int64)]

    whole = find_duplicates(entries, fetch, threshold=0.8, stats=Counter())
    assert {k for k, v in whole.items() if v == "exact"} == set(range(160, 180))
    assert len({k for k, v in whole.items() if v == "near"} & set(range(120, 160))) >= 38
    band_of = np.where(entries[:, 0] >> np.uint64(63), 99, entries[:, 0] >> np.uint64(58))
    reports: Counter = Counter()
    union: dict[int, str] = {}
    for band in np.unique(band_of):
        got = find_duplicates(entries[band_of == band], fetch, threshold=0.8, stats=Counter())
        reports.update(got.keys())
        union.update(got)
    assert union == whole
    assert sum(reports.values()) <= 1.1 * len(whole)
