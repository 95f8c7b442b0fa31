"""Instances in Google's draw order (``--exact_google_draws``): truncation and masking.

With the chunking of ``pairs.plan_document``, the draws from ``rng`` happen in exactly the
order Google's ``create_pretraining_data.py`` makes them, so for the same token lists and
generator state the output is Google's (``tests/core/test_google_order.py`` checks this against
the ``bert-tensorflow`` package). About 4x slower at this step than ``vectorized``, the default.
Departures from Google's script, each a known defect of the original (besides those of
``pairs``):

* A masking group never spans [SEP]: a piece that starts B (or follows [SEP]) after truncation
  starts a new group instead of joining A's last word.
* Groups come from word flags (``wordpiece.WORD_START``), so Chinese words segmented by LTP are
  masked whole, not only ``##`` pieces.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence

from pipeline.core.instance import Instance, InstanceBatch, InstanceConfig
from pipeline.core.pairs import FlatPool, count_labels, flatten_documents, plan_document
from pipeline.core.seeds import rng_for
from pipeline.core.wordpiece import CJK, SPECIAL, WORD_START, Sentence

Document = Sequence[Sentence]


def truncate_seq_pair(a: list, b: list, fa: bytearray, fb: bytearray, max_num_tokens: int,
                      rng: random.Random) -> None:
    """Trim the longer side (B on ties) one token at a time, front or back with p=1/2 each.

    Removing from both ends, at random, keeps the model from learning that sequences are
    always cut at one end. The draws are Google's, one per removed token; the lists are cut
    once at the end. Flags are trimmed alongside their tokens.
    """
    la, lb = len(a), len(b)
    cut = [0, 0, 0, 0]  # a front, a back, b front, b back
    rand = rng.random
    while la + lb > max_num_tokens:
        if la > lb:
            la -= 1
            cut[0 if rand() < 0.5 else 1] += 1
        else:
            lb -= 1
            cut[2 if rand() < 0.5 else 3] += 1
    for tokens, flags, front, back in ((a, fa, cut[0], cut[1]), (b, fb, cut[2], cut[3])):
        if back:
            del tokens[len(tokens) - back:]
            del flags[len(flags) - back:]
        if front:
            del tokens[:front]
            del flags[:front]


def num_to_predict(num_tokens: int, config: InstanceConfig) -> int:
    """min(max_predictions, max(1, round(n * p))) with Python's round (half to even)."""
    return min(config.max_predictions_per_seq,
               max(1, int(round(num_tokens * config.masked_lm_prob))))


# Flags → one letter per position, so groups are found by a regex (a C loop; measured 14 µs
# against numpy's 18 µs on a 123-position instance): X special ([CLS]/[SEP]), S word start,
# c continuation.
_LETTERS = bytes(ord("X") if f & SPECIAL else ord("S") if f & WORD_START else ord("c")
                 for f in range(256))
# A group starts at a word start, or at a continuation right after [CLS]/[SEP] (so a piece cut
# loose by truncation never joins a word across [SEP]), and runs over the continuations.
_WORD_GROUP = re.compile(rb"(?:S|(?<=X)c)c*")
_TOKEN_GROUP = re.compile(rb"[Sc]")


def group_bounds(flags: bytes, whole_word: bool) -> tuple[list[int], list[int]]:
    """(starts, ends) of the candidate masking groups, in position order.

    One group per word with ``whole_word`` (a word start and its continuations), else one per
    token. ``flags`` has ``SPECIAL`` at [CLS]/[SEP]: never candidates, and they end any open
    group. Runs once per instance.
    """
    pattern = _WORD_GROUP if whole_word else _TOKEN_GROUP
    spans = [m.span() for m in pattern.finditer(bytes(flags).translate(_LETTERS))]
    return [s for s, _ in spans], [e for _, e in spans]


def create_masked_lm_predictions(tokens: list[int], flags: bytes, config: InstanceConfig,
                                 rng: random.Random, stats: Counter | None = None
                                 ) -> tuple[list[int], list[int], list[int]]:
    """Mask whole groups; decide [MASK]/keep/random per token. Returns (tokens, pos, labels).

    Google shuffles the list of groups; shuffling their indexes draws exactly the same numbers
    (a shuffle's draws depend only on the length) without building every group.
    """
    starts, ends = group_bounds(flags, config.do_whole_word_mask)
    order = list(range(len(starts)))
    rng.shuffle(order)
    output = list(tokens)
    budget = num_to_predict(len(tokens), config)
    chosen: list[int] = []
    rand, mask_id, top = rng.random, config.mask_id, config.vocab_size - 1
    for g in order:
        if len(chosen) >= budget:
            break
        start, end = starts[g], ends[g]
        # Skip a group that would overshoot; a later, shorter one may still fit.
        if len(chosen) + end - start > budget:
            continue
        for index in range(start, end):
            chosen.append(index)
            if rand() < 0.8:
                output[index] = mask_id
            elif rand() < 0.5:
                pass  # keep the original: the model must not assume unmasked means correct
            else:
                output[index] = rng.randint(0, top)
        if stats is not None and end - start > 1 and all(flags[i] & CJK
                                                         for i in range(start, end)):
            stats["masked_cjk_multichar_words"] += 1
            stats["masked_cjk_tokens_in_multichar_words"] += end - start
    chosen.sort()
    if stats is not None:
        stats["masked_tokens"] += len(chosen)
        stats["masked_cjk_tokens"] += sum(1 for i in chosen if flags[i] & CJK)
    return output, chosen, [tokens[i] for i in chosen]


_SPECIAL_FLAG = bytes([SPECIAL])


def _build_instance(a, b, fa, fb, label, config, rng, stats) -> Instance:
    tokens = [config.cls_id] + a + [config.sep_id]
    flags = _SPECIAL_FLAG + fa + _SPECIAL_FLAG
    if config.has_pair:
        tokens += b + [config.sep_id]
        flags += fb + _SPECIAL_FLAG
    masked, positions, labels = create_masked_lm_predictions(tokens, flags, config, rng, stats)
    if stats is not None:
        stats["instances"] += 1
        count_labels(stats, config, [label])
        stats[f"seq_length:{len(tokens)}"] += 1
    return Instance(input_ids=masked, num_a=len(a) + 2, masked_lm_positions=positions,
                    masked_lm_ids=labels, next_sentence_label=label)


def create_instances_from_document(pool: FlatPool | Sequence[Document], index: int,
                                   config: InstanceConfig, rng: random.Random,
                                   stats: Counter | None = None) -> list[Instance]:
    """All instances of document ``index`` of ``pool`` for one dupe pass, Google's draws in
    Google's order: each pair of ``pairs.plan_document`` is truncated and masked before the
    next chunk is drawn. ``pool`` is the set of documents random next segments come from; pass
    it flattened (``pairs.flatten_documents``) when calling this for many of its documents."""
    if not isinstance(pool, FlatPool):
        pool = flatten_documents(pool)
    stats = Counter() if stats is None else stats
    tokens, flags = pool.tokens, pool.flags
    instances: list[Instance] = []
    for pair in plan_document(pool, index, config, rng, stats):
        a, b = tokens[pair.a_start:pair.a_end].tolist(), tokens[pair.b_start:pair.b_end].tolist()
        fa = bytearray(flags[pair.a_start:pair.a_end].tobytes())
        fb = bytearray(flags[pair.b_start:pair.b_end].tobytes())
        truncate_seq_pair(a, b, fa, fb, config.max_num_tokens, rng)
        instances.append(_build_instance(a, b, fa, fb, pair.label, config, rng, stats))
    return instances


def make_instances(docs: Sequence[tuple[str, Document]], config: InstanceConfig, *,
                   dupe_factor: int, seed: int, key: object,
                   stats: Counter | None = None) -> InstanceBatch:
    """Every instance of every dupe pass over ``docs`` ((doc id, sentences), one pool), rows in
    a random order: a generator per document and pass, seeded by (seed, doc id, pass), as
    Google's script would use one per run; the order from (seed, ``key``)."""
    stats = Counter() if stats is None else stats
    pool = flatten_documents([sentences for _, sentences in docs])
    made: list[Instance] = []
    for dupe in range(dupe_factor):
        for index, (doc_id, _) in enumerate(docs):
            rng = rng_for(seed, "instances", doc_id, dupe)
            made += create_instances_from_document(pool, index, config, rng, stats)
    batch = InstanceBatch.from_instances(made, config.vocab_size)
    order = rng_for(seed, "order", *key).sample(range(len(batch)), len(batch))
    return batch.take(order)
