"""Which sentences become an instance's segments, written once for both instance makers.

``plan_document`` walks one document of a pool for one dupe pass and yields each instance's
segments as token offsets into the pool. Three tasks (``InstanceConfig.next_sentence``):

* ``nsp`` (Google's BERT): exactly the draws Google's ``create_instances_from_document`` makes,
  in its order (below).
* ``sop`` (ALBERT's sentence-order prediction): the same chunking and A/B split, but B is
  always A's true continuation; then with probability 1/2 the two are swapped (label
  ``SOP_SWAPPED``). A one-sentence chunk has no pair and makes no instance
  (``sop_single_sentence_chunks``).
* ``none`` (RoBERTa's DOC-SENTENCES, for masked-LM only): one segment of whole consecutive
  sentences of the document, as many as fit the target length (``max_seq_length - 2``, or
  with ``short_seq_prob`` a shorter uniform target drawn as Google draws it); a sentence longer
  than that on its own is one segment, truncated later. Never crosses a document; the last
  segment of a document may be short.

Google's draws for ``nsp``:

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
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from pipeline.core.instance import InstanceConfig
from pipeline.core.wordpiece import Sentence
from pipeline.schema import NSP_IS_NEXT, NSP_IS_RANDOM, SOP_IN_ORDER, SOP_SWAPPED


class FlatPool(NamedTuple):
    """A pool of documents as one token sequence.

    Sentence ``s`` is ``tokens[ends[s]:ends[s + 1]]`` (``flags`` alike); document ``d`` holds
    sentences ``doc_first[d]`` to ``doc_first[d + 1] - 1``.
    """
    tokens: np.ndarray  # int32
    flags: np.ndarray  # uint8, wordpiece's token flags
    ends: list[int]
    doc_first: list[int]

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
    """One instance's segments as token offsets into the pool, in output order: the first
    segment is [a_start, a_end), the second [b_start, b_end) (empty for ``none``); ``label`` is
    the pair's label (NSP_IS_RANDOM, SOP_SWAPPED, ... ; 0 for ``none``)."""
    a_start: int
    a_end: int
    b_start: int
    b_end: int
    label: int


def plan_document(pool: FlatPool, d: int, config: InstanceConfig, rng: random.Random,
                  stats: Counter) -> Iterator[Pair]:
    """The instances of document ``d`` for one dupe pass (see the module docstring)."""
    target = config.max_num_tokens
    # Mostly fill the sequence; sometimes (short_seq_prob) aim shorter, so that fine-tuning on
    # short inputs is not a distribution shift. Drawn once per document per pass, like Google.
    if rng.random() < config.short_seq_prob:
        target = rng.randint(2, config.max_num_tokens)
    planner = {"nsp": _plan_nsp, "sop": _plan_sop, "none": _plan_single}[config.next_sentence]
    return planner(pool, d, target, rng, stats)


def below(getrandbits, n: int) -> int:
    """``randrange(n)`` of the ``random.Random`` whose ``getrandbits`` this is, draw for draw
    (n >= 1): n's bit length in bits, drawn again while not below n (CPython's
    ``_randbelow_with_getrandbits``, which ``randint`` and ``randrange`` end in), in one Python
    call where ``randint`` takes three."""
    k = n.bit_length()
    r = getrandbits(k)
    while r >= n:
        r = getrandbits(k)
    return r


def _plan_nsp(pool: FlatPool, d: int, target: int, rng: random.Random,
              stats: Counter) -> Iterator[Pair]:
    ends, doc_first, num_docs = pool.ends, pool.doc_first, pool.num_docs
    rand, bits = rng.random, rng.getrandbits
    first, stop = doc_first[d], doc_first[d + 1]
    i = first
    while i < stop:
        # The chunk: sentences from i until their tokens reach target, or the document ends.
        end = bisect_left(ends, ends[i] + target, i + 1, stop)
        size = end - i
        a_end = 1 + below(bits, size - 1) if size >= 2 else 1  # randint(1, size - 1)
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
                other = below(bits, num_docs)  # randint(0, num_docs - 1)
                if other != d:
                    break
            else:
                stats["random_next_same_document_avoided"] += 1
                other = (d + 1) % num_docs
            o_first, o_stop = doc_first[other], doc_first[other + 1]
            # randint(o_first, o_stop - 1): the same draw as Google's randint(0, len - 1)
            start = o_first + below(bits, o_stop - o_first)
            b_end = bisect_left(ends, ends[start] + target_b, start + 1, o_stop)
            i += a_end  # the chunk's unused sentences go back to the queue
            yield Pair(a_s, a_e, ends[start], ends[b_end], NSP_IS_RANDOM)
        else:
            i = end
            yield Pair(a_s, a_e, a_e, ends[end], NSP_IS_NEXT)


def _plan_sop(pool: FlatPool, d: int, target: int, rng: random.Random,
              stats: Counter) -> Iterator[Pair]:
    ends = pool.ends
    i, stop = pool.doc_first[d], pool.doc_first[d + 1]
    while i < stop:
        end = bisect_left(ends, ends[i] + target, i + 1, stop)
        size = end - i
        if size == 1:
            stats["sop_single_sentence_chunks"] += 1  # no second segment to order
            i = end
            continue
        a_end = rng.randint(1, size - 1)
        a_s, a_e, b_e = ends[i], ends[i + a_end], ends[end]
        if rng.random() < 0.5:
            yield Pair(a_e, b_e, a_s, a_e, SOP_SWAPPED)
        else:
            yield Pair(a_s, a_e, a_e, b_e, SOP_IN_ORDER)
        i = end


def _plan_single(pool: FlatPool, d: int, target: int, rng: random.Random,
                 stats: Counter) -> Iterator[Pair]:
    ends = pool.ends
    i, stop = pool.doc_first[d], pool.doc_first[d + 1]
    while i < stop:
        # The most whole sentences from i whose tokens fit the target; at least one.
        end = max(i + 1, bisect_right(ends, ends[i] + target, i + 1, stop + 1) - 1)
        yield Pair(ends[i], ends[end], ends[end], ends[end], 0)
        i = end


# stats counters of the label, per task.
LABEL_STATS = {"nsp": ("nsp_next", "nsp_random"), "sop": ("sop_in_order", "sop_swapped")}


def count_labels(stats: Counter, config: InstanceConfig, labels) -> None:
    """Count instances per label value (0, 1) under the task's names; nothing for ``none``."""
    names = LABEL_STATS.get(config.next_sentence)
    if names:
        ones = int(np.count_nonzero(labels))
        stats[names[1]] += ones
        stats[names[0]] += len(labels) - ones
