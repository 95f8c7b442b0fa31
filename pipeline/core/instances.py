"""Google's instance generation (create_pretraining_data.py), with whole-word groups.

The draws from ``rng`` happen in exactly the order Google's script makes them, so for the same
token lists and generator state the output is Google's (a test checks this against the
``bert-tensorflow`` package). Deliberate departures, each a known defect of the original:

* A random B is never taken from the current document. Google tries 10 draws and then uses the
  current document anyway, labelled "random"; we then take the next document of the pool. With a
  pool of one document no random B exists: a chunk of several sentences keeps its real
  continuation (label 0) and a one-sentence chunk yields no instance (both counted).
* A masking group never spans [SEP]: a piece that starts B (or follows [SEP]) after truncation
  starts a new group instead of joining A's last word.
* Groups come from word flags (``wordpiece.WORD_START``), so Chinese words segmented by LTP are
  masked whole, not only ``##`` pieces.
"""
from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import List, Optional, Sequence, Tuple

from pipeline import schema
from pipeline.core.wordpiece import CJK, WORD_START, Sentence

Document = Sequence[Sentence]


@dataclasses.dataclass(frozen=True)
class InstanceConfig:
    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    do_whole_word_mask: bool = True
    vocab_size: int = 0
    cls_id: int = 101
    sep_id: int = 102
    mask_id: int = 103

    def __post_init__(self):
        if self.max_seq_length < 5:
            raise ValueError("max_seq_length must be at least 5 ([CLS] a [SEP] b [SEP])")
        if self.max_predictions_per_seq < 1:
            raise ValueError("max_predictions_per_seq must be at least 1")
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ValueError("masked_lm_prob must be in (0, 1)")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError("short_seq_prob must be in [0, 1]")
        if self.vocab_size <= 0:
            raise ValueError("vocab_size must be positive")


def truncate_seq_pair(a: list, b: list, fa: bytearray, fb: bytearray, max_num_tokens: int,
                      rng: random.Random) -> None:
    """Trim the longer side (B on ties) one token at a time, front or back with p=1/2 each.

    Removing from both ends, at random, keeps the model from learning that sequences are
    always cut at one end. Flags are trimmed alongside their tokens.
    """
    while len(a) + len(b) > max_num_tokens:
        tokens, flags = (a, fa) if len(a) > len(b) else (b, fb)
        if rng.random() < 0.5:
            del tokens[0]
            del flags[0]
        else:
            tokens.pop()
            flags.pop()


def num_to_predict(num_tokens: int, config: InstanceConfig) -> int:
    """min(max_predictions, max(1, round(n * p))) with Python's round (half to even)."""
    return min(config.max_predictions_per_seq,
               max(1, int(round(num_tokens * config.masked_lm_prob))))


def mask_groups(flags: Sequence[int], special: Sequence[bool], whole_word: bool) -> List[List[int]]:
    """Candidate groups of positions: one per word with ``whole_word``, else one per token.

    Special positions ([CLS], [SEP]) are never candidates and end any open group, so no group
    crosses from A into B.
    """
    groups: List[List[int]] = []
    open_group = False
    for i, flag in enumerate(flags):
        if special[i]:
            open_group = False
            continue
        if whole_word and open_group and not flag & WORD_START:
            groups[-1].append(i)
        else:
            groups.append([i])
            open_group = True
    return groups


def create_masked_lm_predictions(tokens: List[int], flags: Sequence[int],
                                 special: Sequence[bool], config: InstanceConfig,
                                 rng: random.Random, stats: Optional[Counter] = None
                                 ) -> Tuple[List[int], List[int], List[int]]:
    """Mask whole groups; decide [MASK]/keep/random per token. Returns (tokens, pos, labels)."""
    groups = mask_groups(flags, special, config.do_whole_word_mask)
    rng.shuffle(groups)
    output = list(tokens)
    budget = num_to_predict(len(tokens), config)
    chosen: List[int] = []
    for group in groups:
        if len(chosen) >= budget:
            break
        # Skip a group that would overshoot; a later, shorter one may still fit.
        if len(chosen) + len(group) > budget:
            continue
        for index in group:
            chosen.append(index)
            if rng.random() < 0.8:
                output[index] = config.mask_id
            elif rng.random() < 0.5:
                pass  # keep the original: the model must not assume unmasked means correct
            else:
                output[index] = rng.randint(0, config.vocab_size - 1)
        if stats is not None and len(group) > 1 and all(flags[i] & CJK for i in group):
            stats["masked_cjk_multichar_words"] += 1
            stats["masked_cjk_tokens_in_multichar_words"] += len(group)
    chosen.sort()
    if stats is not None:
        stats["masked_tokens"] += len(chosen)
        stats["masked_cjk_tokens"] += sum(1 for i in chosen if flags[i] & CJK)
    return output, chosen, [tokens[i] for i in chosen]


def _build_instance(a, b, fa, fb, is_random, config, rng, stats) -> schema.Instance:
    tokens = [config.cls_id] + a + [config.sep_id] + b + [config.sep_id]
    flags = [0] + list(fa) + [0] + list(fb) + [0]
    special = [False] * len(tokens)
    special[0] = special[len(a) + 1] = special[-1] = True
    masked, positions, labels = create_masked_lm_predictions(tokens, flags, special, config,
                                                             rng, stats)
    label = schema.NSP_IS_RANDOM if is_random else schema.NSP_IS_NEXT
    if stats is not None:
        stats["instances"] += 1
        stats["nsp_random" if is_random else "nsp_next"] += 1
        stats[f"seq_length:{len(tokens)}"] += 1
    return schema.Instance(input_ids=masked, num_a=len(a) + 2, masked_lm_positions=positions,
                           masked_lm_ids=labels, next_sentence_label=label)


def _random_document(pool: Sequence[Document], index: int, rng: random.Random,
                     stats: Optional[Counter]) -> int:
    """Google's 10 draws for another document; then the next one in the pool, never ours."""
    other = index
    for _ in range(10):
        other = rng.randint(0, len(pool) - 1)
        if other != index:
            return other
    if stats is not None:
        stats["random_next_same_document_avoided"] += 1
    return (index + 1) % len(pool)


def create_instances_from_document(pool: Sequence[Document], index: int,
                                   config: InstanceConfig, rng: random.Random,
                                   stats: Optional[Counter] = None) -> List[schema.Instance]:
    """All instances of ``pool[index]`` for one dupe pass (Google's algorithm, see module doc).

    ``pool`` is the set of documents random next segments are drawn from (one bucket).
    """
    document = pool[index]
    max_num_tokens = config.max_seq_length - 3
    # Mostly fill the sequence; sometimes (short_seq_prob) aim shorter, so that fine-tuning on
    # short inputs is not a distribution shift. Drawn once per document per pass, like Google.
    target = max_num_tokens
    if rng.random() < config.short_seq_prob:
        target = rng.randint(2, max_num_tokens)
    instances: List[schema.Instance] = []
    chunk: List[Sentence] = []
    length = 0
    i = 0
    while i < len(document):
        sentence = document[i]
        chunk.append(sentence)
        length += len(sentence.ids)
        if i == len(document) - 1 or length >= target:
            # A is a random number of whole sentences, so NSP sees real sentence boundaries.
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a, fa = [], bytearray()
            for s in chunk[:a_end]:
                a.extend(s.ids)
                fa.extend(s.flags)
            b, fb = [], bytearray()
            is_random = len(chunk) == 1 or rng.random() < 0.5
            if is_random and len(pool) == 1:
                if len(chunk) == 1:
                    if stats is not None:
                        stats["chunks_without_random_document"] += 1
                    chunk, length = [], 0
                    i += 1
                    continue
                is_random = False  # no other document to draw from: keep the true next
                if stats is not None:
                    stats["random_next_without_pool"] += 1
            if is_random:
                target_b = target - len(a)
                other = pool[_random_document(pool, index, rng, stats)]
                start = rng.randint(0, len(other) - 1)
                for s in other[start:]:
                    b.extend(s.ids)
                    fb.extend(s.flags)
                    if len(b) >= target_b:
                        break
                # The sentences of the chunk not used as A go back to the queue: not wasted.
                i -= len(chunk) - a_end
            else:
                for s in chunk[a_end:]:
                    b.extend(s.ids)
                    fb.extend(s.flags)
            truncate_seq_pair(a, b, fa, fb, max_num_tokens, rng)
            instances.append(_build_instance(a, b, fa, fb, is_random, config, rng, stats))
            chunk, length = [], 0
        i += 1
    return instances
