"""All instances of one bucket (a pool of documents: the job passes one input range) at once:
Google's algorithm with numpy doing the per-token work.

``create_instances_from_document`` (``instances.py``) follows Google's script draw for draw,
one Python call per token decision; at dupe_factor 5 that was a third of the whole job. Here
the same algorithm is split where its cost lies:

* **Plan** (Python, per chunk, not per token): the chunking of every document into A/B pairs
  with the same draws as Google's (target length, A's sentence count, random or real B, the
  random document and its start sentence), found by ``bisect`` over cumulative sentence
  lengths. An instance is four offsets into the bucket's concatenated tokens.
* **Truncate** (numpy): Google removes one token at a time from the longer side (B on ties),
  front or back with probability 1/2. How many tokens leave each side follows from the two
  lengths alone; the front share of each is Binomial(removed, 1/2): the same distribution.
* **Mask** (numpy, thousands of rows at once): every candidate group (a whole word with whole
  word masking, else a token) gets a uniform random key; taking groups in key order is a
  uniformly random permutation, as Google's shuffle. Groups are accepted greedily while they
  fit the budget ``min(max_predictions, max(1, round(n * masked_lm_prob)))``, a group that
  would overshoot is skipped and later shorter ones may still fit, exactly Google's loop. Each
  chosen token is [MASK] with p 0.8, kept with 0.1, a uniformly random vocabulary id with 0.1.

The departures from Google's script listed in ``instances.py`` hold here too (random B never
from the same document, no group across [SEP], LTP words as groups). What differs from
``create_instances_from_document`` is only which random numbers are drawn: the distribution of
every output is the same (``tests/core/test_batched.py`` compares the two on real text), and
``--exact_google_draws`` still selects the draw-for-draw path.
"""
from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter
from typing import List, Optional, Sequence

import numpy as np

from pipeline import schema
from pipeline.core.instances import InstanceConfig
from pipeline.core.seeds import stable_seed
from pipeline.core.wordpiece import CJK, WORD_START, Sentence

# Rows assembled at a time: bounds the [rows, max_seq_length] work arrays (a few MB each).
ROWS_PER_STEP = 4096


class _Plan:
    """Instances as offsets into the bucket's tokens: A = [a_s, a_e), B = [b_s, b_e)."""

    def __init__(self):
        self.a_s, self.a_e, self.b_s, self.b_e, self.random = [], [], [], [], []

    def add(self, a_s: int, a_e: int, b_s: int, b_e: int, is_random: bool) -> None:
        self.a_s.append(a_s)
        self.a_e.append(a_e)
        self.b_s.append(b_s)
        self.b_e.append(b_e)
        self.random.append(is_random)

    def arrays(self):
        return (np.array(self.a_s, dtype=np.int64), np.array(self.a_e, dtype=np.int64),
                np.array(self.b_s, dtype=np.int64), np.array(self.b_e, dtype=np.int64),
                np.array(self.random, dtype=bool))


def _plan_pass(doc_first: Sequence[int], ends: Sequence[int], config: InstanceConfig,
               rng: random.Random, plan: _Plan, stats: Counter) -> None:
    """One dupe pass over every document of the bucket (Google's chunking, see module doc).

    Sentence ``s`` spans tokens ``[ends[s], ends[s + 1])``; document ``d`` holds sentences
    ``[doc_first[d], doc_first[d + 1])``.
    """
    max_num_tokens = config.max_seq_length - 3
    num_docs = len(doc_first) - 1
    rand, randint = rng.random, rng.randint
    for d in range(num_docs):
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
                start = randint(o_first, o_stop - 1)
                b_end = bisect_left(ends, ends[start] + target_b, start + 1, o_stop)
                plan.add(a_s, a_e, ends[start], ends[b_end], True)
                i += a_end  # the chunk's unused sentences go back to the queue
            else:
                plan.add(a_s, a_e, a_e, ends[end], False)
                i = end


def _truncate(la: np.ndarray, lb: np.ndarray, max_num_tokens: int, rng: np.random.Generator):
    """Tokens removed from (A front, A back, B front, B back), as Google's one-by-one loop."""
    over = np.maximum(la + lb - max_num_tokens, 0)
    first = np.minimum(over, np.abs(la - lb))  # the longer side shrinks to the shorter's length
    rest = over - first  # then B, A, B, ... (B on ties)
    a_longer = la > lb
    rem_a = np.where(a_longer, first, 0) + rest // 2
    rem_b = np.where(a_longer, 0, first) + rest - rest // 2
    front_a, front_b = rng.binomial(rem_a, 0.5), rng.binomial(rem_b, 0.5)
    return front_a, rem_a - front_a, front_b, rem_b - front_b


def _assemble(tokens: np.ndarray, flags: np.ndarray, plan_rows, config: InstanceConfig,
              rng: np.random.Generator, stats: Counter) -> schema.InstanceBatch:
    a_s, a_e, b_s, b_e, is_random = plan_rows
    rows, width = len(a_s), config.max_seq_length
    fa, ba, fb, bb = _truncate(a_e - a_s, b_e - b_s, width - 3, rng)
    a0, na = a_s + fa, a_e - ba - a_s - fa
    b0, nb = b_s + fb, b_e - bb - b_s - fb
    n = na + nb + 3
    col = np.arange(width)[None, :]
    in_a = (col >= 1) & (col <= na[:, None])
    b_col = col - (na[:, None] + 2)
    in_b = (b_col >= 0) & (b_col < nb[:, None])
    src = np.where(in_a, a0[:, None] + col - 1, b0[:, None] + b_col)
    cand = in_a | in_b
    src[~cand] = 0
    valid = col < n[:, None]
    ids = np.where(cand, tokens[src], 0)
    ids[:, 0] = config.cls_id
    r = np.arange(rows)
    ids[r, na + 1] = config.sep_id
    ids[r, n - 1] = config.sep_id
    tok_flags = np.where(cand, flags[src], 0)

    # Candidate groups: whole words, or single tokens. A group never continues across [SEP]:
    # the first token after [CLS]/[SEP] starts one whatever its flag.
    if config.do_whole_word_mask:
        starts = cand & (((tok_flags & WORD_START) != 0) | (col == 1)
                         | (b_col == 0))
    else:
        starts = cand
    group = np.cumsum(starts, axis=1) - 1
    num_groups = starts.sum(axis=1)
    g_max = max(int(num_groups.max()) if rows else 0, 1)
    flat_group = (r[:, None] * g_max + group)[cand]
    group_len = np.bincount(flat_group, minlength=rows * g_max).reshape(rows, g_max)
    keys = rng.random((rows, g_max))
    keys[np.arange(g_max)[None, :] >= num_groups[:, None]] = 2.0  # no such group: last
    order = np.argsort(keys, axis=1, kind="stable")
    sorted_len = np.take_along_axis(group_len, order, axis=1)
    budget = np.minimum(config.max_predictions_per_seq,
                        np.maximum(1, np.rint(n * config.masked_lm_prob).astype(np.int64)))
    count = np.zeros(rows, dtype=np.int64)
    taken = np.zeros((rows, g_max), dtype=bool)
    for t in range(g_max):
        length = sorted_len[:, t]
        ok = (length > 0) & (count + length <= budget)
        count += np.where(ok, length, 0)
        taken[:, t] = ok
        if t % 8 == 7 and not ((count < budget) & (num_groups > t + 1)).any():
            break
    chosen_group = np.zeros((rows, g_max), dtype=bool)
    np.put_along_axis(chosen_group, order, taken, axis=1)
    chosen = cand & chosen_group[r[:, None], np.maximum(group, 0)]

    pos_row, pos_col = np.nonzero(chosen)  # row-major: positions ascending within a row
    labels = ids[pos_row, pos_col]
    draw = rng.random(len(pos_row))
    replaced = np.where(draw < 0.8, config.mask_id, labels)
    random_ids = rng.integers(0, config.vocab_size, size=len(pos_row))
    replaced = np.where(draw >= 0.9, random_ids, replaced)
    ids[pos_row, pos_col] = replaced

    cjk = (tok_flags & CJK) != 0
    chosen_cjk = chosen & cjk
    stats["masked_tokens"] += len(pos_row)
    stats["masked_cjk_tokens"] += int(chosen_cjk.sum())
    group_cjk = np.bincount((r[:, None] * g_max + group)[chosen_cjk],
                            minlength=rows * g_max).reshape(rows, g_max)
    multichar = chosen_group & (group_len > 1) & (group_cjk == group_len)
    stats["masked_cjk_multichar_words"] += int(multichar.sum())
    stats["masked_cjk_tokens_in_multichar_words"] += int(group_len[multichar].sum())
    stats["instances"] += rows
    stats["nsp_random"] += int(is_random.sum())
    stats["nsp_next"] += int(rows - is_random.sum())
    for length, times in zip(*np.unique(n, return_counts=True)):
        stats[f"seq_length:{int(length)}"] += int(times)
    id_dtype = schema.InstanceBatch.id_dtype(config.vocab_size)
    return schema.InstanceBatch(
        tokens=ids[valid].astype(id_dtype), lengths=n, num_a=na + 2,
        positions=pos_col, labels=labels.astype(id_dtype),
        num_pred=chosen.sum(axis=1), nsp=np.where(is_random, schema.NSP_IS_RANDOM,
                                                  schema.NSP_IS_NEXT))


def flatten_documents(docs: Sequence[Sequence[Sentence]]):
    """A bucket's documents as (tokens, flags, sentence ends, first sentence per document)."""
    sentences = [s for doc in docs for s in doc]
    tokens = np.frombuffer(b"".join(s.ids.tobytes() for s in sentences), dtype=np.int32)
    flags = np.frombuffer(b"".join(bytes(s.flags) for s in sentences), dtype=np.uint8)
    ends = [0]
    for s in sentences:
        ends.append(ends[-1] + len(s.ids))
    doc_first = [0]
    for doc in docs:
        doc_first.append(doc_first[-1] + len(doc))
    return tokens, flags, ends, doc_first


def create_bucket_instances(docs: Sequence[Sequence[Sentence]], config: InstanceConfig, *,
                            dupe_factor: int, seed: int, bucket: object,
                            stats: Optional[Counter] = None) -> schema.InstanceBatch:
    """Every instance of every dupe pass over ``docs`` (one bucket, in a stable order), rows in
    a random order. Draws come from generators seeded by (``seed``, ``bucket``, pass) only."""
    stats = Counter() if stats is None else stats
    tokens, flags, ends, doc_first = flatten_documents(docs)
    plan = _Plan()
    for dupe in range(dupe_factor):
        _plan_pass(doc_first, ends, config, random.Random(stable_seed(seed, "plan", bucket,
                                                                      dupe)), plan, stats)
    rng = np.random.default_rng(stable_seed(seed, "mask", bucket))
    rows = plan.arrays()
    parts: List[schema.InstanceBatch] = []
    for step in range(0, len(rows[0]), ROWS_PER_STEP):
        parts.append(_assemble(tokens, flags, tuple(a[step:step + ROWS_PER_STEP] for a in rows),
                               config, rng, stats))
    if not parts:
        return schema.InstanceBatch.from_instances([], config.vocab_size)
    batch = schema.InstanceBatch.concat(parts)
    return batch.take(rng.permutation(len(batch)))
