"""The default instance maker: all instances of one pool (the job passes one input range) at
once, Google's algorithm with numpy doing the per-token work.

``google_order`` follows Google's script draw for draw, one Python call per token decision; at
dupe_factor 5 that was a third of the whole job. Here the same algorithm is split where its
cost lies:

* **Plan** (Python, per chunk, not per token): ``pairs.plan_document`` for every document and
  pass, the same chunking and draws as the draw-for-draw path. An instance is four offsets
  into the pool's concatenated tokens.
* **Truncate** (numpy): Google removes one token at a time from the longer side (B on ties),
  front or back with probability 1/2. How many tokens leave each side follows from the two
  lengths alone; the front share of each is Binomial(removed, 1/2): the same distribution.
* **Mask** (numpy, thousands of rows at once): every candidate group (a whole word with whole
  word masking, else a token) gets a uniform random key; taking groups in key order is a
  uniformly random permutation, as Google's shuffle. Groups are accepted greedily while they
  fit the budget ``min(max_predictions, max(1, round(n * masked_lm_prob)))``, a group that
  would overshoot is skipped and later shorter ones may still fit, exactly Google's loop. Each
  chosen token is [MASK] with p 0.8, kept with 0.1, a uniformly random vocabulary id with 0.1.

The departures from Google's script listed in ``pairs`` and ``google_order`` hold here too
(random B never from the same document, no group across [SEP], LTP words as groups). What
differs from ``google_order`` is only which random numbers truncation and masking draw: the
distribution of every output is the same (``tests/core/test_vectorized.py`` compares the two
on real text), and ``--exact_google_draws`` still selects the draw-for-draw path.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from itertools import chain
from typing import NamedTuple

import numpy as np

from pipeline.core import masking
from pipeline.core.instance import InstanceBatch, InstanceConfig
from pipeline.core.pairs import Pair, count_labels, flatten_documents, plan_document
from pipeline.core.seeds import stable_seed
from pipeline.core.wordpiece import CJK, WORD_START, Sentence

# Rows assembled at a time: bounds the [rows, max_seq_length] work arrays (a few MB each).
ROWS_PER_STEP = 4096


def plan_pairs(pairs: Sequence[Pair]):
    """Pairs → five columns (first segment start/end, second start/end, label)."""
    if not pairs:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(4)) + (np.zeros(0, np.int8),)
    columns = np.fromiter(chain.from_iterable(pairs), dtype=np.int64,
                          count=len(pairs) * len(Pair._fields)).reshape(len(pairs), -1)
    return (columns[:, 0], columns[:, 1], columns[:, 2], columns[:, 3],
            columns[:, 4].astype(np.int8))


def truncate(la: np.ndarray, lb: np.ndarray, max_num_tokens: int, rng: np.random.Generator):
    """Tokens removed from (A front, A back, B front, B back), as Google's one-by-one loop."""
    over = np.maximum(la + lb - max_num_tokens, 0)
    first = np.minimum(over, np.abs(la - lb))  # the longer side shrinks to the shorter's length
    rest = over - first  # then B, A, B, ... (B on ties)
    a_longer = la > lb
    rem_a = np.where(a_longer, first, 0) + rest // 2
    rem_b = np.where(a_longer, 0, first) + rest - rest // 2
    front_a, front_b = rng.binomial(rem_a, 0.5), rng.binomial(rem_b, 0.5)
    return front_a, rem_a - front_a, front_b, rem_b - front_b


class _Layout(NamedTuple):
    """Rows of ``[CLS] A [SEP] B [SEP]`` (``[CLS] A [SEP]`` without a pair) as
    [rows, max_seq_length] matrices."""
    ids: np.ndarray  # token ids, 0 past the end
    flags: np.ndarray  # wordpiece flags of A and B tokens, 0 elsewhere
    candidate: np.ndarray  # bool: an A or B token (may be masked)
    length: np.ndarray  # tokens per row, [CLS] and both [SEP] included
    num_a: np.ndarray  # tokens of A
    b_col: np.ndarray  # column minus the column of B's first token (0 there)


def _lay_out(tokens: np.ndarray, flags: np.ndarray, pairs, config: InstanceConfig,
             rng: np.random.Generator) -> _Layout:
    """Truncate each pair and write it out as ``[CLS] A [SEP] B [SEP]`` (B empty and its [SEP]
    left out without a pair)."""
    a_start, a_end, b_start, b_end, _ = pairs
    rows, width = len(a_start), config.max_seq_length
    cut_a_front, cut_a_back, cut_b_front, cut_b_back = truncate(
        a_end - a_start, b_end - b_start, config.max_num_tokens, rng)
    a_first, num_a = a_start + cut_a_front, a_end - cut_a_back - a_start - cut_a_front
    b_first, num_b = b_start + cut_b_front, b_end - cut_b_back - b_start - cut_b_front
    length = num_a + num_b + (3 if config.has_pair else 2)
    col = np.arange(width)[None, :]
    in_a = (col >= 1) & (col <= num_a[:, None])
    b_col = col - (num_a[:, None] + 2)
    in_b = (b_col >= 0) & (b_col < num_b[:, None])
    source = np.where(in_a, a_first[:, None] + col - 1, b_first[:, None] + b_col)
    candidate = in_a | in_b
    source[~candidate] = 0
    ids = np.where(candidate, tokens[source], 0)
    ids[:, 0] = config.cls_id
    r = np.arange(rows)
    ids[r, num_a + 1] = config.sep_id
    ids[r, length - 1] = config.sep_id
    return _Layout(ids, np.where(candidate, flags[source], 0), candidate, length, num_a, b_col)


def _count_instances(stats: Counter, config: InstanceConfig, layout: _Layout,
                     label: np.ndarray) -> None:
    stats["instances"] += len(label)
    count_labels(stats, config, label)
    for length, times in zip(*np.unique(layout.length, return_counts=True)):
        stats[f"seq_length:{int(length)}"] += int(times)


def _count_masks(stats: Counter, config: InstanceConfig, layout: _Layout,
                 masked: masking.Masked) -> None:
    groups, chosen = masked.groups, masked.chosen
    rows, width = groups.size.shape
    r = np.arange(rows)[:, None]
    chosen_cjk = chosen & ((layout.flags & CJK) != 0)
    stats["masked_tokens"] += int(chosen.sum())
    stats["masked_cjk_tokens"] += int(chosen_cjk.sum())
    group_cjk = np.bincount((r * width + groups.of_token)[chosen_cjk],
                            minlength=rows * width).reshape(rows, width)
    multichar = masked.chosen_groups & (groups.size > 1) & (group_cjk == groups.size)
    stats["masked_cjk_multichar_words"] += int(multichar.sum())
    stats["masked_cjk_tokens_in_multichar_words"] += int(groups.size[multichar].sum())
    if not config.masking.unigram:
        for words, times in zip(*np.unique(masked.spans, return_counts=True)):
            stats[f"masked_spans:{int(words)}"] += int(times)


def _rows(layout: _Layout) -> masking.Rows:
    """The laid-out pairs as masking sees them (segment 1 from B's first token on)."""
    return masking.Rows(ids=layout.ids, candidate=layout.candidate,
                        word_start=(layout.flags & WORD_START) != 0,
                        segment=(layout.b_col >= 0).astype(np.int8), length=layout.length)


def _assemble(tokens: np.ndarray, flags: np.ndarray, pairs, config: InstanceConfig,
              rng: np.random.Generator, stats: Counter) -> InstanceBatch:
    """Pairs → truncated, laid out instances, masked (static) or with their word starts
    (dynamic). The draws: truncation, then masking's (``masking.mask_rows``)."""
    label = pairs[4]
    layout = _lay_out(tokens, flags, pairs, config, rng)
    rows = _rows(layout)
    id_dtype = InstanceBatch.id_dtype(config.vocab_size)
    valid = np.arange(config.max_seq_length)[None, :] < layout.length[:, None]
    _count_instances(stats, config, layout, label)
    if config.dynamic:
        starts = masking.group_starts(rows)
        empty = np.zeros(0, dtype=np.int64)
        return InstanceBatch(
            tokens=layout.ids[valid].astype(id_dtype), lengths=layout.length,
            num_a=layout.num_a + 2, positions=empty, labels=empty.astype(id_dtype),
            num_pred=np.zeros(len(label), dtype=np.int32), pair_label=label,
            word_starts=starts[valid].astype(np.uint8))
    masked = masking.mask_rows(rows, config.masking, masking.SequentialDraws(rng))
    _count_masks(stats, config, layout, masked)
    return InstanceBatch(
        tokens=layout.ids[valid].astype(id_dtype), lengths=layout.length,
        num_a=layout.num_a + 2, positions=masked.positions[1],
        labels=masked.labels.astype(id_dtype), num_pred=masked.chosen.sum(axis=1),
        pair_label=label)


def make_instances(docs: Sequence[Sequence[Sentence]], config: InstanceConfig, *,
                   dupe_factor: int, seed: int, key: object,
                   stats: Counter | None = None) -> InstanceBatch:
    """Every instance of every dupe pass over ``docs`` (one pool, in a stable order), rows in
    a random order. Draws come from generators seeded by (``seed``, ``key``, pass) only."""
    stats = Counter() if stats is None else stats
    pool = flatten_documents(docs)
    pairs: list[Pair] = []
    for dupe in range(dupe_factor):
        rng = random.Random(stable_seed(seed, "plan", key, dupe))
        for d in range(pool.num_docs):
            pairs.extend(plan_document(pool, d, config, rng, stats))
    rng = np.random.default_rng(stable_seed(seed, "mask", key))
    columns = plan_pairs(pairs)
    parts: list[InstanceBatch] = []
    for step in range(0, len(pairs), ROWS_PER_STEP):
        parts.append(_assemble(pool.tokens, pool.flags,
                               tuple(c[step:step + ROWS_PER_STEP] for c in columns),
                               config, rng, stats))
    if not parts:
        return InstanceBatch.from_instances([], config.vocab_size)
    batch = InstanceBatch.concat(parts)
    return batch.take(rng.permutation(len(batch)))
