"""The planner of pairs (Google's chunking and next-segment choice), shared by both makers."""
import random
from array import array
from collections import Counter

import numpy as np

from pipeline.core.instance import InstanceConfig
from pipeline.core.pairs import FlatPool, below, flatten_documents, plan_document
from pipeline.core.wordpiece import Sentence


def config(**kw):
    base = dict(max_seq_length=32, max_predictions_per_seq=6, vocab_size=5000, cls_id=1,
                sep_id=2, mask_id=3)
    base.update(kw)
    return InstanceConfig(**base)


def test_chunks_put_back_unused_sentences():
    # Nine sentences of five tokens, target 13 (short_seq_prob 0): chunks close at three
    # sentences; after a random B, the chunk's sentences not used as A come back.
    ends = list(range(0, 55, 5))  # document 0: sentences 0-8; document 1: sentence 9
    cfg = config(max_seq_length=16, short_seq_prob=0.0)
    put_back = 0
    for seed in range(30):
        pool = FlatPool(np.zeros(50, np.int32), np.zeros(50, np.uint8), ends, [0, 9, 10])
        rng = random.Random(seed)
        pairs = [pair for d in range(pool.num_docs)
                 for pair in plan_document(pool, d, cfg, rng, Counter())]
        cursor = 0
        for a_s, a_e, b_s, b_e, rnd in pairs:
            if a_s >= 45:
                continue  # document 1's own instances
            assert a_s == cursor, "each A starts where the previous chunk's sentences ended"
            if rnd:
                assert (b_s, b_e) == (45, 50)
                put_back += min(cursor + 15, 45) - a_e
                cursor = a_e
            else:
                assert b_s == a_e and b_e <= min(cursor + 15, 45)
                cursor = b_e
    assert put_back > 0


def test_flatten_documents_offsets():
    docs = [[Sentence(array("i", [5, 6]), b"\x01\x00")], [Sentence(array("i", [7]), b"\x01"),
                                                       Sentence(array("i", [8, 9]), b"\x01\x01")]]
    tokens, flags, ends, first = flatten_documents(docs)
    assert tokens.tolist() == [5, 6, 7, 8, 9] and flags.tolist() == [1, 0, 1, 1, 1]
    assert ends == [0, 2, 3, 5] and first == [0, 1, 3]


def test_below_draws_what_randint_draws():
    # The planner's draws are Google's: below(n) must leave a generator exactly where
    # randint(0, n - 1) does, whatever n (powers of two, one, past 32 bits).
    for seed in range(20):
        ours, theirs = random.Random(seed), random.Random(seed)
        for n in (1, 2, 3, 7, 8, 9, 100, 1000, 4096, 2**31 - 1, 2**32 + 5, 2**40):
            for _ in range(50):
                assert below(ours.getrandbits, n) == theirs.randint(0, n - 1)
        assert ours.random() == theirs.random()
