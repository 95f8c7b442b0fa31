"""Memoized WordPiece (the default) gives exactly what tokenizing whole sentences gives.

Every test compares ``WordPieceTokenizer`` (memoized) with ``memoize=False`` (each sentence
through ``tokenizers`` whole), sentence by sentence, ids and flags, plus the stats: on real
Chinese and English text with and without LTP spans, and on hand-made and random strings made
of the characters where normalization is subtle.
"""
import functools
import pickle
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.core.wordpiece import PADDED_CJK_RANGES, WordPieceTokenizer
from tests import realdata

VOCABS = {"zh": realdata.CHINESE_VOCAB, "en": realdata.ENGLISH_VOCAB}
CONFIGS = [(v, lower) for v in VOCABS for lower in (True, False)]


@functools.lru_cache(maxsize=None)
def pair(vocab: str, lower: bool):
    """(memoized, reference) tokenizers; the memoized one keeps its caches across tests."""
    words = realdata.vocab(VOCABS[vocab])
    return (WordPieceTokenizer(words, do_lower_case=lower),
            WordPieceTokenizer(words, do_lower_case=lower, memoize=False))


def assert_same(fast, ref, sentences, spans=None, batch=1024):
    """Both tokenizers, batch by batch: identical sentences and identical stats."""
    fast_stats, ref_stats = Counter(), Counter()
    for b in range(0, len(sentences), batch):
        texts = sentences[b:b + batch]
        batch_spans = None if spans is None else spans[b:b + batch]
        got = fast.encode(texts, batch_spans, stats=fast_stats)
        want = ref.encode(texts, batch_spans, stats=ref_stats)
        assert len(got) == len(want) == len(texts)
        for text, g, w in zip(texts, got, want):
            assert g == w, (text, [fast.vocab[i] for i in w.ids])
    assert fast_stats == ref_stats


def cut_spans(rng, text):
    """Spans of 1-4 characters tiling the text: segmentation that may cut anything."""
    spans, start = [], 0
    while start < len(text):
        end = min(len(text), start + rng.randint(1, 4))
        spans.append((start, end))
        start = end
    return spans


@pytest.fixture(scope="module")
def seg(small_ltp_model_dir):
    from pipeline.core.segment import LtpSegmenter

    return LtpSegmenter(small_ltp_model_dir)


@pytest.fixture(scope="module")
def peoples_daily():
    with open(realdata.SAMPLE_CORPUS, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


@pytest.fixture(scope="module")
def reviews():
    return list(realdata.reviews("pos")[:5000]) + list(realdata.reviews("neg")[:5000])


@pytest.fixture(scope="module")
def english():
    with open(realdata.REPO + "/pipeline/resources/sample/english_sample.txt",
              encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def test_every_code_point_taken_as_an_ideograph_is_padded_by_the_normalizer():
    """The split into units is exact only if each such character is a word by itself."""
    from tokenizers import normalizers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                            strip_accents=False, lowercase=False)
    chars = [chr(p) for lo, hi in PADDED_CJK_RANGES for p in range(lo, hi + 1)]
    assert normalizer.normalize_str("".join(chars)) == "".join(f" {c} " for c in chars)


@pytest.mark.parametrize("corpus", ["peoples_daily", "reviews"])
def test_chinese_corpora_with_ltp_spans(request, seg, corpus):
    sentences = request.getfixturevalue(corpus)
    spans = seg.word_spans(sentences)
    assert sum(map(len, spans)) > 100_000
    assert_same(*pair("zh", True), sentences, spans)


@pytest.mark.parametrize("vocab,lower", CONFIGS)
def test_chinese_corpora_without_spans(peoples_daily, reviews, vocab, lower):
    assert_same(*pair(vocab, lower), peoples_daily + reviews)


@pytest.mark.parametrize("vocab,lower", CONFIGS)
def test_english_sample(english, vocab, lower):
    fast, ref = pair(vocab, lower)
    assert_same(fast, ref, english)
    assert sum(len(s.ids) for s in fast.encode(english)) > 50_000


TRICKY = [
    "", " ", " \t\r\n ", "\u3000", " \u3000 \xa0\u2003 ", "\x00", "\x1c", "\ufeff", "\u200b",
    "a\x1cb", "a\x00b", "a\x0bb c\x0cd", "a\x85b", "a\u200bb", "a\ufeffb", "x\u3000y", "x\xa0y",
    "a\u2028b\u2029c", "café", "cafe\u0301", "CAFE\u0301 Ångström naïve", "\u0301", "a \u0301b",
    "中\u0301", "中\u0301a", "\u0301中", "中\u0308\u0323文", "e\u0323\u0302", "İstanbul",
    "ΑΣ ὈΔΥΣΣΕΎΣ σς", "Straße ﬁne", "ǅemal", "Ｈｅｌｌｏ，Ｗｏｒｌｄ！１２３", "ｶﾀｶﾅ",
    "\uf900\ufa0e\uf91d\ufa6d", "a\uf900b", "\U0002f800\U0002fa1d", "\U00020000\U0002a6d6",
    "a\U00020000b", "\U0002b820\U0002b91f", "a\U0002b820b", "😀", "a😀b", "👍🏽 👨\u200d👩\u200d👧",
    "ひらがなカタカナ", "한국어 ㄱㄴ \u1100\u1161", "नमस्ते", "ภาษาไทย", "مرحبا", "שָׁלוֹם",
    "a" * 100, "a" * 101, "中" + "b" * 101 + "中", "x" * 150 + " y", "é" * 101,
    "中文abc，123def中", "我在IBM工作playing 1998年", "（新华社北京１２月３１日电）",
    "“引号”《书名》…—", "2024-01-01T12:00:00Z", "http://example.com/a?b=c&d=e",
    "unaffordable tokenization!!!", "don't", "\ud7ff\ue000\uffff", "\U0010fffd",
    "中\n文", "中\r\n文", "中\t文",
]

ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    ".,;:!?'\"()[]{}-_/\\@#$%^&*+=<>~`|",
    "    \t\n\r",
    "\x00\x01\x0b\x0c\x1c\x1f\x7f\x85\x9f\u200b\u200d\ufeff\ufffd",
    "\u3000\xa0\u2002\u2003\u2028\u202f\u205f",
    "\u0300\u0301\u0308\u0323\u0327\u0345\u20dd\u093f\u0903",
    "éÅİıßﬁǅÆøĳŉ",
    "ΑΣσςΩωДЖжЁё",
    "ＡＢｃｄ０１２，。！？（）",
    "中文北京学習人的一是不了我们有在他这为之大来以个",
    "\uf900\ufa0e\uf91d\ufa6d\U0002f800\U0002fa1d",
    "\U00020000\U0002a6d6\U0002a700\U0002b81f\U0002b820\U0002b91f\U0002b920\u3400\u4dbf",
    "😀👍🏽\U0001f3fb\u2764\ufe0f",
    "あいうカキクｶｷｸー",
    "한국어ㄱㄴ\u1100\u1161\u11a8",
]


def random_strings(n, seed=20240601):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        alphabets = rng.sample(ALPHABETS, rng.randint(1, 4))
        chars = [rng.choice(rng.choice(alphabets)) for _ in range(rng.randint(0, 40))]
        if rng.random() < 0.02:  # an overlong word (WordPiece gives [UNK])
            chars.insert(rng.randint(0, len(chars)), "z" * rng.randint(99, 102))
        out.append("".join(chars))
    return out


@pytest.mark.parametrize("vocab,lower", CONFIGS)
def test_tricky_strings(vocab, lower):
    fast, ref = pair(vocab, lower)
    rng = random.Random(7)
    spans = [cut_spans(rng, t) for t in TRICKY]
    assert_same(fast, ref, TRICKY)
    assert_same(fast, ref, TRICKY, spans)
    for text, text_spans in zip(TRICKY, spans):  # alone, too: no neighbour to lean on
        assert_same(fast, ref, [text], [text_spans])


@pytest.mark.parametrize("vocab,lower", CONFIGS)
def test_random_strings(vocab, lower):
    texts = random_strings(3000)
    rng = random.Random(11)
    spans = [cut_spans(rng, t) for t in texts]
    fast, ref = pair(vocab, lower)
    assert_same(fast, ref, texts, batch=256)
    assert_same(fast, ref, texts, spans, batch=97)


@pytest.mark.parametrize("limit", ["max_runs", "max_run_chars"])
def test_run_cache_is_bounded_and_refills_exactly(limit):
    words = realdata.vocab()
    fast = WordPieceTokenizer(words, do_lower_case=True)
    ref = WordPieceTokenizer(words, do_lower_case=True, memoize=False)
    setattr(fast._units, limit, 1000)
    texts = random_strings(2000, seed=3)
    assert_same(fast, ref, texts, batch=50)
    cached = fast._units._run_index
    assert 0 < (len(cached) if limit == "max_runs" else sum(map(len, cached))) <= 1000
    assert fast._units._run_chars == sum(map(len, cached))


def test_ideographs_that_are_not_one_token_are_runs_of_their_own():
    """BERT vocabularies give every ideograph one token; were one not to, it would be
    tokenized as a run of its own (here forced for a few characters)."""
    from pipeline.core import wordpiece

    words = realdata.vocab()
    fast = WordPieceTokenizer(words, do_lower_case=True)
    ref = WordPieceTokenizer(words, do_lower_case=True, memoize=False)
    fast._units._code[[ord(c) for c in "中文北\uf900\U00020000"]] = wordpiece._ALONE
    texts = TRICKY + random_strings(1000, seed=9)
    assert_same(fast, ref, texts)
    assert "中" in fast._units._run_index and "中文" not in fast._units._run_index


def test_lone_surrogate_fails_as_without_the_cache():
    fast, ref = pair("zh", True)
    for tokenizer in (fast, ref):
        with pytest.raises(TypeError):
            tokenizer.encode(["中文", "a\ud800b"])
    assert_same(fast, ref, ["中文", "ab"])


def test_threads_share_one_tokenizer(reviews):
    """A Beam worker shares the tokenizer between threads (a small cache: clears while busy)."""
    words = realdata.vocab()
    fast = WordPieceTokenizer(words, do_lower_case=True)
    ref = WordPieceTokenizer(words, do_lower_case=True, memoize=False)
    fast._units.max_runs = 500
    texts = reviews[:4000] + random_strings(2000, seed=5)
    batches = [texts[b:b + 100] for b in range(0, len(texts), 100)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(fast.encode, batches))
    assert got == [ref.encode(b) for b in batches]


def test_pickled_tokenizer_starts_with_empty_caches_and_agrees(reviews):
    fast, ref = pair("zh", True)
    fast.encode(reviews[:100])
    copy = pickle.loads(pickle.dumps(fast))
    assert not copy._units._run_index
    assert_same(copy, ref, reviews[:500])
