"""Google's algorithm: exact small cases, and equality with Google's own code on real text."""
import random
from array import array
from collections import Counter

from pipeline import schema
from pipeline.core.google_order import (
    create_instances_from_document,
    create_masked_lm_predictions,
    group_bounds,
    num_to_predict,
    truncate_seq_pair,
)
from pipeline.core.instance import InstanceConfig
from pipeline.core.pairs import flatten_documents
from pipeline.core.text import split_sentences
from pipeline.core.wordpiece import CJK, SPECIAL, WORD_START, Sentence, WordPieceTokenizer
from tests import realdata
from tests.google_reference import load_google_module

VOCAB = 1000
CFG = InstanceConfig(max_seq_length=16, max_predictions_per_seq=5, vocab_size=VOCAB,
                     cls_id=1, sep_id=2, mask_id=3)


def sent(ids, flags=None):
    return Sentence(array("i", ids), bytes(flags or [WORD_START] * len(ids)))


class ScriptedRandom(random.Random):
    """random() returns scripted values: checks which branch each draw selects."""

    def __init__(self, values):
        super().__init__(0)
        self._values = list(values)

    def random(self):
        return self._values.pop(0)


def test_num_to_predict_rounds_half_to_even_and_caps():
    cfg = InstanceConfig(max_seq_length=512, max_predictions_per_seq=20, vocab_size=VOCAB)
    assert num_to_predict(10, cfg) == 2  # round(1.5) == 2
    assert num_to_predict(30, cfg) == 4  # round(4.5) == 4: half to even, as Python rounds
    assert num_to_predict(3, cfg) == 1  # at least one
    assert num_to_predict(2, cfg) == 1  # round(0.3) == 0, floor of one
    assert num_to_predict(512, cfg) == 20  # capped by max_predictions_per_seq


def test_truncation_takes_longer_side_b_on_ties_front_or_back():
    a, b = [1, 2, 3, 4], [5, 6, 7, 8]
    fa, fb = bytearray(b"abcd"), bytearray(b"efgh")
    # tie → B; 0.3 < 0.5 → front. then A longer → A; 0.7 → back.
    truncate_seq_pair(a, b, fa, fb, 6, ScriptedRandom([0.3, 0.7]))
    assert (a, b) == ([1, 2, 3], [6, 7, 8])
    assert (fa, fb) == (bytearray(b"abc"), bytearray(b"fgh"))


def mask_groups(flags, whole_word):
    """Groups as lists of positions, read off group_bounds."""
    starts, ends = group_bounds(flags, whole_word)
    return [list(range(s, e)) for s, e in zip(starts, ends)]


def test_groups_follow_words_and_never_cross_sep():
    # [CLS] w1 w1' [SEP] (continuation!) w2 w2' [SEP]: the piece after [SEP] starts a group.
    flags = bytes([SPECIAL, WORD_START, CJK, SPECIAL, 0, WORD_START | CJK, CJK, SPECIAL])
    assert mask_groups(flags, True) == [[1, 2], [4], [5, 6]]
    assert mask_groups(flags, False) == [[1], [2], [4], [5], [6]]


def test_80_10_10_per_token_over_many_draws():
    cfg = InstanceConfig(max_seq_length=128, max_predictions_per_seq=128, masked_lm_prob=0.5,
                         vocab_size=VOCAB, cls_id=1, sep_id=2, mask_id=3)
    tokens = [1] + list(range(500, 600)) + [2]
    flags = bytes([SPECIAL] + [WORD_START] * 100 + [SPECIAL])
    outcome = Counter()
    rng = random.Random(7)
    for _ in range(300):
        out, pos, labels = create_masked_lm_predictions(tokens, flags, cfg, rng)
        assert labels == [tokens[p] for p in pos] and pos == sorted(pos) and 0 not in pos
        for p in pos:
            outcome["mask" if out[p] == 3 else "keep" if out[p] == tokens[p] else "random"] += 1
    total = sum(outcome.values())
    assert abs(outcome["mask"] / total - 0.8) < 0.01
    # "random" may hit the original id by chance (1/1000): negligible at this tolerance.
    assert abs(outcome["keep"] / total - 0.1) < 0.01
    assert abs(outcome["random"] / total - 0.1) < 0.01


def test_whole_words_are_masked_together_and_budget_is_never_overshot():
    # One 3-piece word and singles; budget 2 → the 3-piece word can never be chosen.
    cfg = InstanceConfig(max_seq_length=128, max_predictions_per_seq=2, masked_lm_prob=0.15,
                         vocab_size=VOCAB, cls_id=1, sep_id=2, mask_id=3)
    tokens = [1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 2]
    flags = bytes([SPECIAL, WORD_START, 0, 0] + [WORD_START] * 9 + [SPECIAL])
    for seed in range(50):
        _, pos, _ = create_masked_lm_predictions(tokens, flags, cfg, random.Random(seed))
        assert len(pos) == 2 and not set(pos) & {1, 2, 3}


def _original_ids(inst):
    ids = list(inst.input_ids)
    for p, label in zip(inst.masked_lm_positions, inst.masked_lm_ids):
        ids[p] = label
    return ids


def test_put_back_reuses_unused_sentences():
    # Sentence k of the document is five tokens of id 10+k; the other document is all 90s.
    # Target 13 tokens (short_seq_prob 0): every chunk closes at three sentences.
    doc = [sent([10 + k] * 5) for k in range(9)]
    other = [sent([90] * 5)]
    cfg = InstanceConfig(max_seq_length=16, max_predictions_per_seq=5, short_seq_prob=0.0,
                         vocab_size=VOCAB, cls_id=1, sep_id=2, mask_id=3)
    put_back = 0
    for seed in range(30):
        made = create_instances_from_document([doc, other], 0, cfg, random.Random(seed))
        cursor = 0
        for inst in made:
            ids = _original_ids(inst)
            a = sorted({t - 10 for t in ids[1:inst.num_a - 1]})
            b = ids[inst.num_a:-1]
            assert a[0] == cursor, "each A starts where the previous chunk's sentences ended"
            if inst.next_sentence_label == schema.NSP_IS_RANDOM:
                assert set(b) == {90}
                chunk_end = min(cursor + 3, len(doc))
                put_back += chunk_end - (a[-1] + 1)
                cursor = a[-1] + 1  # the unused sentences go back to the queue
            else:
                cursor = max(t - 10 for t in b) + 1
    assert put_back > 0


def test_single_document_pool_never_labels_same_document_random():
    doc = [sent([10 + i] * 5) for i in range(6)]
    stats = Counter()
    cfg = InstanceConfig(max_seq_length=16, max_predictions_per_seq=5, short_seq_prob=0.0,
                         vocab_size=VOCAB, cls_id=1, sep_id=2, mask_id=3)
    made = []
    for seed in range(20):
        made += create_instances_from_document([doc], 0, cfg, random.Random(seed), stats)
    assert made and all(i.next_sentence_label == schema.NSP_IS_NEXT for i in made)
    assert stats["random_next_without_pool"] > 0
    # A one-sentence document alone in its pool yields nothing, counted.
    stats = Counter()
    assert create_instances_from_document([[sent([5, 6, 7])]], 0, cfg, random.Random(0),
                                          stats) == []
    assert stats["chunks_without_random_document"] == 1


def test_random_b_avoids_current_document_after_ten_failed_draws():
    class SameDraws(random.Random):
        def getrandbits(self, k):  # every draw of an index is 0: the current document
            return 0

    docs = [[sent([10] * 5)], [sent([20] * 5)]]
    stats = Counter()
    made = create_instances_from_document(docs, 0, CFG, SameDraws(1), stats)
    assert stats["random_next_same_document_avoided"] == 1
    assert made[0].next_sentence_label == schema.NSP_IS_RANDOM
    assert _original_ids(made[0])[made[0].num_a:-1] == [20] * 5


def _real_documents(tokenizer, n_docs, per_doc=8):
    lines = realdata.reviews("pos")[:n_docs * per_doc]
    docs = []
    for k in range(0, len(lines), per_doc):
        sentences = [s for line in lines[k:k + per_doc] for s in split_sentences(line)]
        encoded = [e for e in tokenizer.encode(sentences) if len(e.ids)]
        if encoded:
            docs.append(encoded)
    return docs


def test_identical_to_googles_create_instances_on_real_text():
    """Token-level masking: the same draws, the same instances as bert-tensorflow 1.0.4."""
    google = load_google_module()
    vocab = list(realdata.vocab())
    tokenizer = WordPieceTokenizer(vocab)
    docs = _real_documents(tokenizer, 60)
    cfg = InstanceConfig(max_seq_length=64, max_predictions_per_seq=10, vocab_size=len(vocab),
                         do_whole_word_mask=False, cls_id=vocab.index("[CLS]"),
                         sep_id=vocab.index("[SEP]"), mask_id=vocab.index("[MASK]"))
    google_docs = [[[vocab[i] for i in s.ids] for s in d] for d in docs]
    compared = 0
    pool = flatten_documents(docs)
    for index in range(len(docs)):
        ours = create_instances_from_document(pool, index, cfg, random.Random(index))
        theirs = google.create_instances_from_document(
            google_docs, index, 64, 0.1, 0.15, 10, vocab, random.Random(index))
        assert len(ours) == len(theirs)
        for o, t in zip(ours, theirs):
            assert [vocab[i] for i in o.input_ids] == t.tokens
            assert o.segment_ids == t.segment_ids
            assert list(o.masked_lm_positions) == t.masked_lm_positions
            assert [vocab[i] for i in o.masked_lm_ids] == t.masked_lm_labels
            assert (o.next_sentence_label == schema.NSP_IS_RANDOM) == t.is_random_next
            compared += 1
    assert compared > 200


def test_chinese_words_masked_whole_on_real_text():
    vocab = list(realdata.vocab())
    tokenizer = WordPieceTokenizer(vocab)
    lines = realdata.reviews("neg")[:200]
    # Word spans from a simple, exact rule: every pair of CJK characters is one "word".
    spans = [[(i, i + 2) for i in range(0, len(t) - 1, 2)] for t in lines]
    docs = [[s] for s in tokenizer.encode(list(lines), spans) if len(s.ids)]
    cfg = InstanceConfig(max_seq_length=64, max_predictions_per_seq=10, vocab_size=len(vocab),
                         cls_id=vocab.index("[CLS]"), sep_id=vocab.index("[SEP]"),
                         mask_id=vocab.index("[MASK]"))
    stats, pool = Counter(), flatten_documents(docs)
    for index in range(len(docs)):
        create_instances_from_document(pool, index, cfg, random.Random(index), stats)
    assert stats["masked_cjk_multichar_words"] > 100
    share = stats["masked_cjk_tokens_in_multichar_words"] / stats["masked_cjk_tokens"]
    assert share > 0.8  # most masked characters belong to a two-character word masked whole


def test_regex_groups_match_the_plain_definition():
    """group_bounds against a token-by-token loop, on many random flag strings."""
    def plain(flags, whole_word):
        groups, open_group = [], False
        for i, f in enumerate(flags):
            if f & SPECIAL:
                open_group = False
            elif whole_word and open_group and not f & WORD_START:
                groups[-1].append(i)
            else:
                groups.append([i])
                open_group = True
        return groups

    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(3, 40)
        flags = bytes([SPECIAL] + [rng.choice([0, WORD_START, CJK, WORD_START | CJK, SPECIAL])
                                   for _ in range(n - 2)] + [SPECIAL])
        for whole_word in (True, False):
            assert mask_groups(flags, whole_word) == plain(flags, whole_word)
