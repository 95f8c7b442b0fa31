"""WordPiece with word flags: Chinese words from spans, English ## groups, mixed text."""
from collections import Counter

import pytest

from pipeline.core.wordpiece import CJK, WORD_START, WordPieceTokenizer, read_vocab
from tests import realdata


@pytest.fixture(scope="module")
def zh():
    return WordPieceTokenizer(realdata.vocab(), do_lower_case=True)


def groups(tokenizer, sentence):
    """Words as lists of token strings, read off the WORD_START flags."""
    out = []
    for tid, flag in zip(sentence.ids, sentence.flags):
        token = tokenizer.vocab[tid]
        if flag & WORD_START or not out:
            out.append([token])
        else:
            out[-1].append(token)
    return out


def test_chinese_characters_of_one_segmented_word_form_one_group(zh):
    text = "我爱北京天安门"
    spans = [(0, 1), (1, 2), (2, 4), (4, 7)]
    [s] = zh.encode([text], [spans])
    assert groups(zh, s) == [["我"], ["爱"], ["北", "京"], ["天", "安", "门"]]
    assert all(f & CJK for f in s.flags)
    # Plain character ids, never the "##X" entries of the Chinese vocab.
    assert list(s.ids) == [zh.vocab.index(c) for c in text]


def test_without_spans_every_chinese_character_is_its_own_word(zh):
    [s] = zh.encode(["北京"])
    assert groups(zh, s) == [["北"], ["京"]]


def test_mixed_text_latin_and_digits_keep_their_own_words(zh):
    text = "我在IBM工作playing 1998年"
    # Segmentation that (wrongly) glues Latin and digits to Chinese must not move them.
    spans = [(0, 1), (1, 5), (5, 7), (7, 14), (15, 20)]
    [s] = zh.encode([text], [spans])
    assert groups(zh, s) == [["我"], ["在"], ["ibm"], ["工", "作"], ["play", "##ing"],
                             ["1998"], ["年"]]


def test_english_word_pieces_group_like_googles_whole_word_mask():
    en = WordPieceTokenizer(realdata.vocab(realdata.ENGLISH_VOCAB), do_lower_case=True)
    [s] = en.encode(["Tokenization isn't unaffordable!"])
    words = groups(en, s)
    assert ["token", "##ization"] in words
    assert all(len(w) == 1 or all(t.startswith("##") for t in w[1:]) for w in words)
    assert not any(f & CJK for f in s.flags)


def test_unknown_emoji_traditional_and_stats(zh):
    stats = Counter()
    [s] = zh.encode(["學習😀"], [[(0, 2)]], stats=stats)
    assert groups(zh, s) == [["學", "習"], ["[UNK]"]]
    assert stats["unk_tokens"] == 1 and stats["tokens"] == 3 and stats["words"] == 2
    assert stats["multi_piece_words"] == 1


def test_empty_and_whitespace_sentences_tokenize_to_nothing(zh):
    assert [len(s.ids) for s in zh.encode(["", " \u3000 "])] == [0, 0]


def test_vocab_without_special_tokens_is_refused():
    with pytest.raises(ValueError, match="special tokens"):
        read_vocab("a\nb\nc\n")


def test_real_reviews_every_token_is_flagged(zh):
    reviews = list(realdata.reviews("pos")[:300])
    stats = Counter()
    encoded = zh.encode(reviews, stats=stats)
    assert stats["tokens"] == sum(len(s.ids) for s in encoded) > 10_000
    assert all(s.flags[0] & WORD_START for s in encoded if len(s.ids))
    assert stats["unk_tokens"] / stats["tokens"] < 0.02
