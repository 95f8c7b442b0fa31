"""Google's chunking and next-segment choice: which sentences become A and B, written once.

``plan_document`` walks one document of a pool for one dupe pass and yields each instance's
A and B as token offsets into the pool, making exactly the draws Google's
``create_instances_from_document`` makes, in its order:

1. the target length: ``max_seq_length - 3``, or with ``short_seq_prob`` a uniform int in
   ``[2, max_seq_length - 3]`` (short inputs at pretraining, so fine-tuning on them is no
   distribution shift);
2. per chunk (whole sentences until their tokens reach the target or the document ends): A's
   sentence count ``a_end`` uniform in ``[1, len - 1]`` (1 for a one-sentence chunk), so NSP
   sees real sentence boundaries;
3. B random for a one-sentence chunk, else with probability 1/2; a random B comes from another
   document (up to ten uniform draws), from a uniform start sentence until ``target - len(A)``
   tokens; the chunk's sentences not used as A go back to the queue.

It is a generator on purpose: ``google_order`` truncates and masks each pair with the same
generator before the next chunk is drawn, which is Google's draw order; ``vectorized`` collects
every pair first and does the per-token work in numpy.

Departures from Google's script (each a known defect there): a random B never comes from the
current document (after ten failed draws the next document of the pool is used, counted as
``random_next_same_document_avoided``); in a pool of one document there is no random B, so a
several-sentence chunk keeps its true continuation (``random_next_without_pool``) and a
one-sentence chunk makes no instance (``chunks_without_random_document``).
"""
from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter
from typing import Iterator, List, NamedTuple, Sequence

import numpy as np

from pipeline.core.instance import InstanceConfig
from pipeline.core.wordpiece import Sentence


class FlatPool(NamedTuple):
    """A pool of documents as one token sequence.

    Sentence ``s`` is ``tokens[ends[s]:ends[s + 1]]`` (``flags`` alike); document ``d`` holds
    sentences ``doc_first[d]`` to ``doc_first[d + 1] - 1``.
    """
    tokens: np.ndarray  # int32
    flags: np.ndarray  # uint8, wordpiece's token flags
    ends: List[int]
    doc_first: List[int]

    @property
    def num_docs(self) -> int:
        return len(self.doc_first) - 1


def flatten_documents(docs: Sequence[Sequence[Sentence]]) -> FlatPool:
    sentences = [s for doc in docs for s in doc]
    tokens = np.frombuffer(b"".join(s.ids.tobytes() for s in sentences), dtype=np.int32)
    flags = np.frombuffer(b"".join(bytes(s.flags) for s in sentences), dtype=np.uint8)
    ends = [0]
    for s in sentences:
        ends.append(ends[-1] + len(s.ids))
    doc_first = [0]
    for doc in docs:
        doc_first.append(doc_first[-1] + len(doc))
    return FlatPool(tokens, flags, ends, doc_first)


class Pair(NamedTuple):
    """One instance's segments as token offsets into the pool: A = [a_start, a_end), B alike."""
    a_start: int
    a_end: int
    b_start: int
    b_end: int
    is_random: bool


def plan_document(pool: FlatPool, d: int, config: InstanceConfig, rng: random.Random,
                  stats: Counter) -> Iterator[Pair]:
    """The pairs of document ``d`` for one dupe pass (see the module docstring)."""
    ends, doc_first, num_docs = pool.ends, pool.doc_first, pool.num_docs
    max_num_tokens = config.max_seq_length - 3
    rand, randint = rng.random, rng.randint
    first, stop = doc_first[d], doc_first[d + 1]
    target = max_num_tokens
    if rand() < config.short_seq_prob:
        target = randint(2, max_num_tokens)
    i = first
    while i < stop:
        # The chunk: sentences from i until their tokens reach target, or the document ends.
        end = bisect_left(ends, ends[i] + target, i + 1, stop)
        size = end - i
        a_end = randint(1, size - 1) if size >= 2 else 1
        is_random = size == 1 or rand() < 0.5
        if is_random and num_docs == 1:
            if size == 1:
                stats["chunks_without_random_document"] += 1
                i = end
                continue
            is_random = False  # no other document to draw from: keep the true next
            stats["random_next_without_pool"] += 1
        a_s, a_e = ends[i], ends[i + a_end]
        if is_random:
            target_b = target - (a_e - a_s)
            other = d
            for _ in range(10):
                other = randint(0, num_docs - 1)
                if other != d:
                    break
            else:
                stats["random_next_same_document_avoided"] += 1
                other = (d + 1) % num_docs
            o_first, o_stop = doc_first[other], doc_first[other + 1]
            start = randint(o_first, o_stop - 1)  # same draw as Google's randint(0, len - 1)
            b_end = bisect_left(ends, ends[start] + target_b, start + 1, o_stop)
            i += a_end  # the chunk's unused sentences go back to the queue
            yield Pair(a_s, a_e, ends[start], ends[b_end], True)
        else:
            i = end
            yield Pair(a_s, a_e, a_e, ends[end], False)
