"""--normalize nfkc_punct: NFKC, then the table's characters the vocabulary lacks."""
from collections import Counter

from pipeline.core.normalize import PUNCT_TABLE, Normalizer, normalizer_for
from pipeline.core.ranges import tokenize_documents
from pipeline.core.wordpiece import CJK, WORD_START, WordPieceTokenizer
from tests import realdata


def test_table_characters_missing_from_the_vocabulary_are_mapped():
    norm = Normalizer(realdata.vocab(), "nfkc_punct")  # bert-base-chinese: no “ ” ‘ ’ — …
    assert norm("他说：“走吧……”——‘好’。") == "他说:\"走吧......\"--'好'。"
    assert norm("ＡＢＣ１２３，") == "ABC123,"  # NFKC: full-width forms
    # The vocabulary has ┌ ─ │ but not ┐ ┘ ┼: only those become ASCII.
    assert norm("┌─┐│┘┼") == "┌─+│++"


def test_characters_the_vocabulary_has_are_left_alone():
    vocab = list(realdata.vocab()) + ["“", "”"]
    norm = Normalizer(vocab, "nfkc_punct")
    assert norm("“好”—") == "“好”-"
    assert normalizer_for(vocab, "none") is None
    assert Normalizer(vocab, "none")("“ＡＢ”") == "“ＡＢ”"


def test_every_table_entry_maps_to_what_bert_base_chinese_has():
    vocab = set(realdata.vocab())
    for target in set(PUNCT_TABLE.values()):
        assert all(ch in vocab for ch in target), target


def test_normalized_text_keeps_ltp_groups_aligned(small_ltp_model_dir):
    """Segmentation and WordPiece both see the normalized text: every multi-character CJK group
    is exactly one LTP word of it."""
    from pipeline.core.segment import LtpSegmenter

    vocab = realdata.vocab()
    norm = Normalizer(vocab, "nfkc_punct")
    segmenter = LtpSegmenter(small_ltp_model_dir)
    text = "“中华人民共和国”成立于１９４９年……国务院总理——周恩来。"
    stats = Counter()
    (doc_id, (sentence,)), = tokenize_documents(
        [("d", [text])], tokenizer=WordPieceTokenizer(vocab), segmenter=segmenter,
        batch_size=4, stats=stats, normalizer=norm)
    normalized = norm(text)
    words = [normalized[s:e] for s, e in segmenter.word_spans([normalized])[0]]
    tokens = [vocab[i] for i in sentence.ids]
    groups, current = [], ""
    for token, flag in zip(tokens, sentence.flags):
        if flag & WORD_START and current:
            groups.append(current)
            current = ""
        current += token if flag & CJK else ""
    groups.append(current)
    assert [g for g in groups if len(g) > 1] == [w for w in words if len(w) > 1 and all(
        "\u4e00" <= c <= "\u9fff" for c in w)]
    assert stats["unk_tokens"] == 0 and "[UNK]" not in tokens
