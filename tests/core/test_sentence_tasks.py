"""The other recipes: sentence-order prediction (ALBERT/MacBERT) and single segments without a
label (RoBERTa's DOC-SENTENCES), in both instance makers (default and Google's draw order)."""
import random
from collections import Counter

import pytest

from pipeline import schema
from pipeline.core import google_order, vectorized
from pipeline.core.instance import InstanceBatch, InstanceConfig
from tests.core.test_vectorized import VOCAB, _unique_docs


def config(task, **kw):
    base = dict(max_seq_length=32, max_predictions_per_seq=6, vocab_size=VOCAB, cls_id=1,
                sep_id=2, mask_id=3, next_sentence=task)
    base.update(kw)
    return InstanceConfig(**base)


def make(maker, docs, cfg, stats):
    if maker == "vectorized":
        return vectorized.make_instances(docs, cfg, dupe_factor=4, seed=11, key=0, stats=stats)
    return google_order.make_instances([(f"d{i}", d) for i, d in enumerate(docs)], cfg,
                                       dupe_factor=4, seed=11, key=("s", 0), stats=stats)


def unmasked(inst):
    ids = list(inst.input_ids)
    for p, label in zip(inst.masked_lm_positions, inst.masked_lm_ids):
        ids[p] = label
    return ids


def is_slice(side):
    return side == list(range(side[0], side[0] + len(side)))


@pytest.mark.parametrize("maker", ["vectorized", "google_order"])
def test_sop_pairs_are_consecutive_segments_of_one_document_half_swapped(maker):
    docs, word_of = _unique_docs(random.Random(7), 60)
    stats = Counter()
    batch = make(maker, docs, config("sop"), stats)
    labels = Counter()
    for inst in batch.instances():
        ids = unmasked(inst)
        assert ids[0] == 1 and ids[inst.num_a - 1] == 2 and ids[-1] == 2
        first, second = ids[1:inst.num_a - 1], ids[inst.num_a:-1]
        assert first and second and is_slice(first) and is_slice(second)
        assert word_of[first[0]][0] == word_of[second[0]][0]  # never another document
        if inst.next_sentence_label == schema.SOP_IN_ORDER:
            assert first[-1] < second[0]  # A, then what follows it
        else:
            assert inst.next_sentence_label == schema.SOP_SWAPPED and second[-1] < first[0]
        labels[inst.next_sentence_label] += 1
    assert len(batch) > 100
    assert 0.4 < labels[schema.SOP_SWAPPED] / len(batch) < 0.6
    assert (stats["sop_swapped"], stats["sop_in_order"]) == (labels[1], labels[0])
    assert stats["sop_single_sentence_chunks"] > 0  # one-sentence chunks make no pair
    assert stats["nsp_random"] == stats["nsp_next"] == 0


@pytest.mark.parametrize("maker", ["vectorized", "google_order"])
def test_single_segments_are_whole_sentences_of_one_document_without_a_label(maker):
    docs, word_of = _unique_docs(random.Random(8), 60)
    sentence_of = {t: (d, k) for d, doc in enumerate(docs) for k, s in enumerate(doc)
                   for t in s.ids}
    cfg = config("none", short_seq_prob=0.0)
    stats = Counter()
    batch = make(maker, docs, cfg, stats)
    covered = Counter()
    for inst in batch.instances():
        ids = unmasked(inst)
        assert inst.num_a == len(ids)  # one segment: segment_ids all 0
        assert ids[0] == 1 and ids[-1] == 2 and ids.count(2) == 1
        body = ids[1:-1]
        assert body and is_slice(body) and len({word_of[t][0] for t in body}) == 1
        assert inst.next_sentence_label == 0
        # Whole sentences, unless one sentence alone is longer than the limit (then cut).
        first, last = sentence_of[body[0]], sentence_of[body[-1]]
        doc = docs[first[0]]
        if len(body) < cfg.max_num_tokens:
            assert body[0] == doc[first[1]].ids[0] and body[-1] == doc[last[1]].ids[-1]
        covered.update((first[0], k) for k in range(first[1], last[1] + 1))
    # Each pass covers every sentence of every document once: 4 passes.
    assert set(covered.values()) == {4}
    assert len(covered) == sum(len(d) for d in docs)
    assert stats["instances"] == len(batch) and not stats["nsp_next"] + stats["sop_in_order"]


def test_single_segments_fill_up_to_the_limit():
    docs, _ = _unique_docs(random.Random(9), 40)
    cfg = config("none", short_seq_prob=0.0, max_seq_length=64)
    batch = vectorized.make_instances(docs, cfg, dupe_factor=1, seed=1, key=0)
    assert max(batch.lengths) <= 64
    # Documents longer than the limit give segments close to it (whole sentences only).
    assert sum(batch.lengths > 40) > len(batch) // 4


def test_pair_label_column_round_trips():
    batch = vectorized.make_instances(_unique_docs(random.Random(1), 20)[0], config("sop"),
                                      dupe_factor=2, seed=3, key=0)
    again = InstanceBatch.from_instances(batch.instances(), VOCAB)
    assert again.pair_label.tolist() == batch.pair_label.tolist()
