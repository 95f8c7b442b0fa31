"""The vectorized (default) instance maker: hand-checkable invariants, and Google's distributions
on real text (against the draw-for-draw path, itself proven equal to Google's code in
test_google_order.py)."""
import random
from array import array
from collections import Counter

import numpy as np
import pytest

from pipeline import schema
from pipeline.core.google_order import create_instances_from_document, num_to_predict
from pipeline.core.instance import InstanceConfig
from pipeline.core.pairs import flatten_documents
from pipeline.core.seeds import rng_for
from pipeline.core.text import split_sentences
from pipeline.core.vectorized import make_instances, truncate
from pipeline.core.wordpiece import CJK, WORD_START, Sentence, WordPieceTokenizer
from tests import realdata

VOCAB = 5000


def config(**kw):
    base = dict(max_seq_length=32, max_predictions_per_seq=6, vocab_size=VOCAB, cls_id=1,
                sep_id=2, mask_id=3)
    base.update(kw)
    return InstanceConfig(**base)


def test_truncation_removes_what_googles_loop_removes():
    rng = np.random.default_rng(0)
    pyrng = random.Random(0)
    la = np.array([pyrng.randint(1, 90) for _ in range(3000)])
    lb = np.array([pyrng.randint(1, 90) for _ in range(3000)])
    fa, ba, fb, bb = truncate(la, lb, 61, rng)
    for k in range(len(la)):
        a, b = la[k], lb[k]
        while a + b > 61:  # Google's truncate_seq_pair: the longer side, B on ties
            if a > b:
                a -= 1
            else:
                b -= 1
        assert (la[k] - fa[k] - ba[k], lb[k] - fb[k] - bb[k]) == (a, b)
    removed = (fa + ba + fb + bb).sum()
    assert abs((fa + fb).sum() / removed - 0.5) < 0.02  # front or back with p = 1/2 each


def _unique_docs(rng, n_docs, words_per_doc=(3, 30)):
    """Documents whose every token id is unique (so an instance's source is recoverable);
    words of 1-3 tokens, some marked CJK."""
    docs, next_id, word_of = [], 10, {}
    for d in range(n_docs):
        doc = []
        for _ in range(rng.randint(1, 6)):
            ids, flags = [], []
            for _ in range(rng.randint(*words_per_doc) // 3 + 1):
                size = rng.choice([1, 1, 2, 3])
                cjk = CJK if rng.random() < 0.5 else 0
                for k in range(size):
                    word_of[next_id] = (d, next_id - k)
                    ids.append(next_id)
                    flags.append((WORD_START if k == 0 else 0) | cjk)
                    next_id += 1
            doc.append(Sentence(array("i", ids), bytes(flags)))
        docs.append(doc)
    return docs, word_of


@pytest.mark.parametrize("whole_word", [True, False])
def test_every_instance_is_made_of_document_slices_and_masks_whole_words(whole_word):
    rng = random.Random(1)
    docs, word_of = _unique_docs(rng, 40)
    cfg = config(do_whole_word_mask=whole_word)
    stats = Counter()
    batch = make_instances(docs, cfg, dupe_factor=3, seed=5, key=0, stats=stats)
    assert len(batch) == stats["instances"] > 100
    for inst in batch.instances():
        ids = list(inst.input_ids)
        assert ids[0] == 1 and ids[inst.num_a - 1] == 2 and ids[-1] == 2
        assert len(ids) <= 32
        pos = list(inst.masked_lm_positions)
        assert pos == sorted(set(pos)) and 0 not in pos and inst.num_a - 1 not in pos
        assert len(pos) <= num_to_predict(len(ids), cfg)
        for p, label in zip(pos, inst.masked_lm_ids):
            assert ids[p] in (3, label) or 0 <= ids[p] < VOCAB
            ids[p] = label
        a, b = ids[1:inst.num_a - 1], ids[inst.num_a:-1]
        assert a and b
        for side in (a, b):  # a contiguous slice of one document
            assert side == list(range(side[0], side[0] + len(side)))
            assert len({word_of[t][0] for t in side}) == 1
        same_doc = word_of[a[0]][0] == word_of[b[0]][0]
        if inst.next_sentence_label == schema.NSP_IS_NEXT:
            assert same_doc and b[0] > a[-1]
        else:
            assert not same_doc
        if whole_word:  # every word with a masked token is masked whole (within its side)
            masked = set(pos)
            for side_start, side in ((1, a), (inst.num_a, b)):
                words = Counter(word_of[t][1] for t in side)
                for w in words:
                    where = {side_start + k for k, t in enumerate(side) if word_of[t][1] == w}
                    assert where <= masked or not where & masked
    assert stats["nsp_random"] + stats["nsp_next"] == len(batch)


def test_budget_is_filled_when_single_tokens_allow_it():
    rng = random.Random(2)
    docs, _ = _unique_docs(rng, 20)
    cfg = config(do_whole_word_mask=False)
    batch = make_instances(docs, cfg, dupe_factor=2, seed=1, key=3)
    budget = [num_to_predict(int(n), cfg) for n in batch.lengths]
    assert batch.num_pred.tolist() == budget


def test_seeded_by_seed_and_key_only():
    docs, _ = _unique_docs(random.Random(3), 30)
    cfg = config()
    one = make_instances(docs, cfg, dupe_factor=2, seed=9, key=4)
    two = make_instances(docs, cfg, dupe_factor=2, seed=9, key=4)
    other = make_instances(docs, cfg, dupe_factor=2, seed=9, key=5)
    assert one.instances() == two.instances()
    assert one.instances() != other.instances()


def test_single_document_pool_never_labels_random():
    docs, _ = _unique_docs(random.Random(4), 1)
    doc = docs[0] * 3  # several sentences
    stats = Counter()
    batch = make_instances([doc], config(), dupe_factor=5, seed=0, key=0, stats=stats)
    assert not batch.pair_label.any()
    assert stats["random_next_without_pool"] + stats["chunks_without_random_document"] > 0


def _summary(instances, cfg):
    n = np.array([len(i.input_ids) for i in instances])
    m = np.array([len(i.masked_lm_positions) for i in instances])
    masked = kept = 0
    for i in instances:
        for p, label in zip(i.masked_lm_positions, i.masked_lm_ids):
            masked += i.input_ids[p] == cfg.mask_id
            kept += i.input_ids[p] == label
    return dict(count=len(instances), length=n.mean(), full=(n == cfg.max_seq_length).mean(),
                predictions=m.mean(), mask=masked / m.sum(), keep=kept / m.sum(),
                num_a=np.mean([i.num_a for i in instances]),
                random=np.mean([i.next_sentence_label for i in instances]))


def test_same_distributions_as_googles_draws_on_real_text():
    vocab = list(realdata.vocab())
    tokenizer = WordPieceTokenizer(vocab)
    lines = realdata.reviews("pos")[:2400]
    # Word spans from a simple, exact rule: every pair of characters is one "word".
    docs = []
    for k in range(0, len(lines), 8):
        sentences = [s for line in lines[k:k + 8] for s in split_sentences(line)]
        spans = [[(i, i + 2) for i in range(0, len(t) - 1, 2)] for t in sentences]
        encoded = [e for e in tokenizer.encode(sentences, spans) if len(e.ids)]
        if encoded:
            docs.append(encoded)
    cfg = InstanceConfig(max_seq_length=64, max_predictions_per_seq=10, vocab_size=len(vocab),
                         cls_id=vocab.index("[CLS]"), sep_id=vocab.index("[SEP]"),
                         mask_id=vocab.index("[MASK]"))
    ref_stats, fast_stats = Counter(), Counter()
    pool = flatten_documents(docs)
    reference = [inst for dupe in range(5) for index in range(len(docs))
                 for inst in create_instances_from_document(pool, index, cfg,
                                                            rng_for(7, index, dupe), ref_stats)]
    fast = make_instances(docs, cfg, dupe_factor=5, seed=7, key=0,
                                   stats=fast_stats).instances()
    ref, got = _summary(reference, cfg), _summary(fast, cfg)
    assert ref["count"] > 5000
    assert abs(got["count"] / ref["count"] - 1) < 0.03
    for key, tolerance in (("length", 0.5), ("full", 0.02), ("predictions", 0.1),
                           ("mask", 0.01), ("keep", 0.01), ("num_a", 0.6), ("random", 0.02)):
        assert abs(got[key] - ref[key]) < tolerance, (key, got[key], ref[key])
    ref_share = ref_stats["masked_cjk_tokens_in_multichar_words"] / ref_stats["masked_cjk_tokens"]
    fast_share = (fast_stats["masked_cjk_tokens_in_multichar_words"]
                  / fast_stats["masked_cjk_tokens"])
    assert fast_share > 0.8 and abs(fast_share - ref_share) < 0.02
