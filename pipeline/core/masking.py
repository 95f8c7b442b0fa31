"""Masked-LM masking: the one function the pipeline's static masking and both trainers'
dynamic masking call, so the two can never drift.

Rules (SPEC section 1, step 7, with whole words from LTP or ``##`` pieces):

* Candidates are the real tokens but [CLS] and [SEP]. A *group* is a whole word (its first
  token and its continuations), or a single token without whole-word masking; a candidate
  right after [CLS]/[SEP] always starts a group, so no group crosses [SEP].
* The budget is ``min(max_predictions_per_seq, max(1, round(n * masked_lm_prob)))``, n the
  row's real tokens with [CLS]/[SEP], rounded half to even (Python's ``round``).
* Groups are visited in a uniformly random order (uniform keys, sorted).
* Unigram masking (``ngram_lengths == (1,)``, the default): a group is taken while it fits
  the budget; one that would overshoot is skipped and a later, shorter one may still fit:
  Google's loop.
* N-gram masking (``--ngram_masking``, MacBERT's 1-4 words at 40/30/20/10%): the words of
  each segment are cut, from its first word on, into consecutive spans of n whole words, n
  drawn from the weights for each span (the last span of a segment is cut at its end: spans
  never cross [SEP], and never overlap). Spans are visited in a uniformly random order and
  taken while they fit the budget; the first span that would overshoot is *shortened* to
  its longest prefix of whole words that fits (dropped if not even its first word fits),
  and the choice ends there. Stopping there, rather than skipping it and filling the rest
  with later short spans as the unigram loop does, keeps the shares of span lengths close
  to the weights (measured in bench/README.md).
* Each chosen token separately: [MASK] with p 0.8, kept with 0.1, a uniformly random
  vocabulary id with 0.1. Positions come out ascending per row.

Where the random numbers come from is the caller's (a ``Draws``): the pipeline's static
masking draws from a sequential ``numpy`` generator seeded per range (``SequentialDraws``:
the draws of the pipeline's output before this module existed, so its bytes are unchanged);
dynamic masking draws from a counter-based hash of (seed, epoch, instance index, what,
where) (``CounterDraws``): an instance's mask in an epoch is the same however the data is
batched, split between ranks, DataLoader workers or TPU hosts, or resumed.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Protocol

import numpy as np

from pipeline.core.seeds import stable_hash64

# Span-length weights users name instead of listing them (``--ngram_weights``).
NGRAM_WEIGHT_NAMES = ("harmonic",)  # Model Garden's: weight of n proportional to 1/n
MASK_P, KEEP_P = 0.8, 0.1  # the rest (0.1): a random id


def harmonic_weights(lengths) -> tuple[float, ...]:
    inv = [1.0 / n for n in lengths]
    return tuple(w / sum(inv) for w in inv)


def parse_ngram(lengths: str | None, weights: str | None) -> tuple[tuple[int, ...],
                                                                    tuple[float, ...]]:
    """``--ngram_masking``/``--ngram_weights`` → (lengths, weights); ValueError when they do
    not make a distribution. No lengths: (1,) (unigram, Google's); no weights: harmonic."""
    try:
        ns = tuple(int(v) for v in str(lengths or "1").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--ngram_masking {lengths!r}: expected span lengths in words, "
                         "e.g. 1,2,3,4") from None
    if not ns or min(ns) < 1 or len(set(ns)) != len(ns) or list(ns) != sorted(ns):
        raise ValueError(f"--ngram_masking {lengths!r}: span lengths must be distinct "
                         "integers >= 1 in increasing order, e.g. 1,2,3,4")
    if weights is None or str(weights).strip() in ("", "harmonic"):
        return ns, harmonic_weights(ns)
    try:
        ws = tuple(float(v) for v in str(weights).split(","))
    except ValueError:
        raise ValueError(f"--ngram_weights {weights!r}: expected numbers (e.g. "
                         "0.4,0.3,0.2,0.1) or one of {NGRAM_WEIGHT_NAMES}") from None
    if len(ws) != len(ns):
        raise ValueError(f"--ngram_weights {weights!r} has {len(ws)} weights for the "
                         f"{len(ns)} span lengths {','.join(map(str, ns))}")
    if min(ws) < 0 or abs(sum(ws) - 1.0) > 1e-6:
        raise ValueError(f"--ngram_weights {weights!r}: weights must be >= 0 and sum to 1 "
                         f"(they sum to {sum(ws):g})")
    return ns, ws


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """What masking needs to know; the same for the pipeline and the trainers (the manifest's
    ``masking`` entry holds it for dynamic data: ``to_manifest``/``from_manifest``)."""

    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    vocab_size: int = 0
    mask_id: int = 103
    whole_word: bool = True
    ngram_lengths: tuple[int, ...] = (1,)
    ngram_weights: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        if self.max_predictions_per_seq < 1:
            raise ValueError("max_predictions_per_seq must be at least 1")
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ValueError("masked_lm_prob must be in (0, 1)")
        if self.vocab_size <= 0:
            raise ValueError("vocab_size must be positive")
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(f"mask_id {self.mask_id} is not an id of a vocabulary of "
                             f"{self.vocab_size}")
        parse_ngram(",".join(map(str, self.ngram_lengths)),
                    ",".join(map(repr, self.ngram_weights)))

    @property
    def unigram(self) -> bool:
        return self.ngram_lengths == (1,)

    def to_manifest(self) -> dict:
        return {"masked_lm_prob": self.masked_lm_prob,
                "max_predictions_per_seq": self.max_predictions_per_seq,
                "whole_word": self.whole_word, "mask_id": self.mask_id,
                "ngram_lengths": list(self.ngram_lengths),
                "ngram_weights": list(self.ngram_weights)}

    @classmethod
    def from_manifest(cls, masking: dict, vocab_size: int) -> "MaskingConfig":
        return cls(max_predictions_per_seq=int(masking["max_predictions_per_seq"]),
                   masked_lm_prob=float(masking["masked_lm_prob"]), vocab_size=int(vocab_size),
                   mask_id=int(masking["mask_id"]), whole_word=bool(masking["whole_word"]),
                   ngram_lengths=tuple(int(n) for n in masking["ngram_lengths"]),
                   ngram_weights=tuple(float(w) for w in masking["ngram_weights"]))


class Draws(Protocol):
    """Uniform numbers in [0, 1) (and ids) for one batch of rows."""

    def group_keys(self, rows: int, groups: int) -> np.ndarray: ...  # [rows, groups]

    def span_draws(self, rows: int, groups: int) -> np.ndarray: ...  # [rows, groups]

    def token_draws(self, row: np.ndarray, col: np.ndarray) -> np.ndarray: ...

    def random_ids(self, row: np.ndarray, col: np.ndarray, vocab_size: int) -> np.ndarray: ...


class SequentialDraws:
    """Draws in call order from one numpy generator (the pipeline's static masking)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def group_keys(self, rows, groups):
        return self.rng.random((rows, groups))

    def span_draws(self, rows, groups):
        return self.rng.random((rows, groups))

    def token_draws(self, row, col):
        return self.rng.random(len(row))

    def random_ids(self, row, col, vocab_size):
        return self.rng.integers(0, vocab_size, size=len(row))


_M1, _M2, _GOLDEN = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB),
                     np.uint64(0x9E3779B97F4A7C15))


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer over uint64 arrays (wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


class CounterDraws:
    """Each number a hash of (row key, stream, index): independent of batching and order.

    ``row_keys`` are per-row uint64 keys (``dynamic_row_keys``); the stream tells the four
    uses apart; the index is the group (keys, spans) or the position (80/10/10, random ids).
    """

    def __init__(self, row_keys: np.ndarray):
        self.keys = np.asarray(row_keys, dtype=np.uint64)

    def _bits(self, stream: int, row: np.ndarray, index: np.ndarray) -> np.ndarray:
        salt = _mix((np.uint64(stream) << np.uint64(32)) | index.astype(np.uint64))
        return _mix(self.keys[row] ^ salt)

    def _uniform(self, stream, row, index):
        return (self._bits(stream, row, index) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def _grid(self, stream, rows, width):
        r = np.repeat(np.arange(rows), width).reshape(rows, width)
        c = np.broadcast_to(np.arange(width), (rows, width))
        return self._uniform(stream, r, c)

    def group_keys(self, rows, groups):
        return self._grid(1, rows, groups)

    def span_draws(self, rows, groups):
        return self._grid(2, rows, groups)

    def token_draws(self, row, col):
        return self._uniform(3, row, col)

    def random_ids(self, row, col, vocab_size):
        return np.minimum((self._uniform(4, row, col) * vocab_size).astype(np.int64),
                          vocab_size - 1)


def dynamic_row_keys(seed: int, epoch: int, index: np.ndarray) -> np.ndarray:
    """The uint64 key of each instance's dynamic mask: (run seed, epoch, stable index)."""
    base = np.uint64(stable_hash64("dynamic_mask", int(seed), int(epoch)))
    return _mix(base ^ _mix(np.asarray(index, dtype=np.uint64)))


class Rows(NamedTuple):
    """[rows, width] layout of instances, as masking sees it."""
    ids: np.ndarray  # token ids (anything past a row's end)
    candidate: np.ndarray  # bool: may be masked (real tokens but [CLS]/[SEP])
    word_start: np.ndarray  # bool: a whole word begins here (ignored without whole_word)
    segment: np.ndarray  # segment of each position (n-gram spans stay inside one)
    length: np.ndarray  # [rows]: real tokens, [CLS] and [SEP]s included


class Groups(NamedTuple):
    of_token: np.ndarray  # [rows, width]: the group of each candidate token (-1 before any)
    count: np.ndarray  # [rows]: groups per row
    size: np.ndarray  # [rows, max groups]: tokens per group (0: no such group)
    start: np.ndarray  # [rows, max groups]: position of the group's first token


class Masked(NamedTuple):
    ids: np.ndarray  # [rows, width] the masked ids (the input's array, changed in place)
    chosen: np.ndarray  # [rows, width] bool: masked positions
    groups: Groups
    chosen_groups: np.ndarray  # [rows, max groups] bool
    spans: np.ndarray  # words per masked span, flat (unigram: all 1)
    positions: tuple[np.ndarray, np.ndarray]  # (row, col) of chosen tokens, row-major
    labels: np.ndarray  # the original ids there


def group_starts(rows: Rows) -> np.ndarray:
    """[rows, width] bool: where a whole word starts, and any candidate right after a
    non-candidate ([CLS]/[SEP]; a piece cut loose by truncation never joins a word across
    them). This is the ``word_starts`` feature of dynamic data."""
    after_special = np.ones_like(rows.candidate)
    after_special[:, 1:] = ~rows.candidate[:, :-1]
    return rows.candidate & (rows.word_start | after_special)


def find_groups(rows: Rows, whole_word: bool) -> Groups:
    """Candidate groups: a group starts at a word start (whole words) or at every candidate,
    and at any candidate right after a non-candidate ([CLS]/[SEP]), so it never crosses one."""
    candidate = rows.candidate
    starts = group_starts(rows) if whole_word else candidate
    of_token = np.cumsum(starts, axis=1) - 1
    count = starts.sum(axis=1)
    n = len(count)
    width = max(int(count.max()) if n else 0, 1)
    flat = (np.arange(n)[:, None] * width + of_token)[candidate]
    size = np.bincount(flat, minlength=n * width).reshape(n, width)
    # Each group's first position: the starts in row-major order, a row's groups in order.
    at = np.flatnonzero(starts)
    row, col = np.divmod(at, starts.shape[1])
    first_group = np.zeros(n, dtype=np.int64)
    np.cumsum(count[:-1], out=first_group[1:])
    start = np.zeros(n * width, dtype=np.int64)
    start[row * width + np.arange(len(at)) - first_group[row]] = col
    return Groups(of_token, count, size, start.reshape(n, width))


def budget(length: np.ndarray, config: MaskingConfig) -> np.ndarray:
    """min(max_predictions, max(1, round(n * masked_lm_prob))), half to even as Python."""
    return np.minimum(config.max_predictions_per_seq,
                      np.maximum(1, np.rint(length * config.masked_lm_prob).astype(np.int64)))


# The key of a group or span a row does not have: after every real key (those are in [0, 1)).
NO_KEY = 2.0


def _key_order(keys: np.ndarray) -> np.ndarray:
    """Each row's columns in ascending key order, as a stable sort gives them wherever it
    matters. Only the order of a row's real keys (below NO_KEY) matters to masking: the
    NO_KEY columns come after them in any order, and their groups or spans hold no tokens.
    numpy's default sort (about 2.5x faster than the stable one on these rows) orders distinct
    keys as the stable sort does; where two real keys of a row are equal (about 2**-53 per
    pair of draws), the stable sort is used instead."""
    order = np.argsort(keys, axis=1)
    ordered = np.take_along_axis(keys, order, axis=1)
    if ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] < NO_KEY)).any():
        return np.argsort(keys, axis=1, kind="stable")
    return order


def _order(groups: Groups, draws: Draws) -> np.ndarray:
    rows, width = groups.size.shape
    keys = draws.group_keys(rows, width)
    keys[np.arange(width)[None, :] >= groups.count[:, None]] = NO_KEY  # no such group: last
    return _key_order(keys)


def _choose_unigram(groups: Groups, limit: np.ndarray, draws: Draws) -> np.ndarray:
    """[rows, max groups] bool: groups in key order, each taken while it fits the budget,
    one that would overshoot skipped (Google's loop)."""
    rows, width = groups.size.shape
    order = _order(groups, draws)
    sorted_size = np.take_along_axis(groups.size, order, axis=1)
    count = np.zeros(rows, dtype=np.int64)
    taken = np.zeros((rows, width), dtype=bool)
    for t in range(width):
        size = sorted_size[:, t]
        fits = (size > 0) & (count + size <= limit)
        count += np.where(fits, size, 0)
        taken[:, t] = fits
        if t % 8 == 7 and not ((count < limit) & (groups.count > t + 1)).any():
            break
    chosen = np.zeros((rows, width), dtype=bool)
    np.put_along_axis(chosen, order, taken, axis=1)
    return chosen


def _choose_spans(groups: Groups, segment: np.ndarray, limit: np.ndarray,
                  config: MaskingConfig, draws: Draws) -> tuple[np.ndarray, np.ndarray]:
    """N-gram spans (module doc): ([rows, max groups] bool chosen groups, words per span).

    The words of each segment are cut into consecutive spans from its first word on, each of
    n words with n drawn from the weights (cut at the segment's end); the spans are taken in
    the order of uniform keys while they fit the budget, and the first that does not fit is
    shortened to its longest whole-word prefix that fits, which ends the choice.
    """
    rows, width = groups.size.shape
    r = np.arange(rows)
    g = np.arange(width)[None, :]
    real = g < groups.count[:, None]
    keys = draws.group_keys(rows, width)
    cumulative = np.cumsum(config.ngram_weights)
    cumulative[-1] = 1.0
    lengths = np.asarray(config.ngram_lengths, dtype=np.int64)
    drawn = lengths[np.minimum(np.searchsorted(cumulative, draws.span_draws(rows, width),
                                               side="right"), len(lengths) - 1)]
    # Each word's segment end: the first word of the next segment (or the row's word count).
    group_segment = np.where(real, segment[r[:, None], groups.start], np.iinfo(np.int64).max)
    first_of_b = ((group_segment == 0) & real).sum(axis=1)
    seg_end = np.where(group_segment == 0, first_of_b[:, None], groups.count[:, None])
    # Span starts: follow the chain start -> start + n (cut at the segment end) in every row.
    is_start = np.zeros((rows, width), dtype=bool)
    cur = np.zeros(rows, dtype=np.int64)
    while True:
        alive = cur < groups.count
        if not alive.any():
            break
        is_start[r[alive], cur[alive]] = True
        c = np.minimum(cur, width - 1)
        cur = np.where(alive, np.minimum(cur + drawn[r, c], seg_end[r, c]), cur)
    span_of = np.cumsum(is_start, axis=1) - 1  # the span of each word
    flat = (r[:, None] * width + span_of)[real]
    span_tokens = np.bincount(flat, weights=groups.size[real],
                              minlength=rows * width).reshape(rows, width).astype(np.int64)
    span_words = np.bincount(flat, minlength=rows * width).reshape(rows, width)
    spans = is_start.sum(axis=1)
    # The spans in the order of their first word's key; a prefix of them fits the budget.
    span_keys = np.full((rows, width), NO_KEY)
    sr, sc = np.nonzero(is_start)
    span_keys[sr, span_of[sr, sc]] = keys[sr, sc]
    order = _key_order(span_keys)
    sorted_tokens = np.take_along_axis(span_tokens, order, axis=1)
    taken_sorted = np.cumsum(sorted_tokens, axis=1) <= limit[:, None]
    taken_sorted &= np.arange(width)[None, :] < spans[:, None]
    taken = np.zeros((rows, width), dtype=bool)
    np.put_along_axis(taken, order, taken_sorted, axis=1)
    chosen = real & taken[r[:, None], np.maximum(span_of, 0)]
    # The first span that does not fit: its longest whole-word prefix that fits.
    first_out = taken_sorted.sum(axis=1)
    room = limit - np.where(taken_sorted, sorted_tokens, 0).sum(axis=1)
    has_next = first_out < spans
    cut_span = np.where(has_next, order[r, np.minimum(first_out, width - 1)], -1)
    in_cut = real & (span_of == cut_span[:, None])
    prefix_tokens = np.cumsum(np.where(in_cut, groups.size, 0), axis=1)
    partial = in_cut & (prefix_tokens <= room[:, None])
    chosen |= partial
    cut_words = partial.sum(axis=1)
    words = np.concatenate([span_words[taken], cut_words[cut_words > 0]])
    return chosen, words


def mask_rows(rows: Rows, config: MaskingConfig, draws: Draws) -> Masked:
    """Choose and replace the masked tokens of ``rows`` (module doc); ``rows.ids`` is changed
    in place. The draws come in this order: group keys, span lengths (n-gram only), the
    80/10/10 choice of each chosen token, random ids."""
    groups = find_groups(rows, config.whole_word)
    limit = budget(rows.length, config)
    if config.unigram:
        chosen_groups = _choose_unigram(groups, limit, draws)
        spans = None
    else:
        chosen_groups, spans = _choose_spans(groups, rows.segment, limit, config, draws)
    n = len(limit)
    chosen = rows.candidate & chosen_groups[np.arange(n)[:, None],
                                            np.maximum(groups.of_token, 0)]
    if spans is None:
        spans = np.ones(int(chosen_groups.sum()), dtype=np.int64)
    pos_row, pos_col = np.nonzero(chosen)  # row-major: positions ascending within a row
    ids = rows.ids
    labels = ids[pos_row, pos_col]
    draw = draws.token_draws(pos_row, pos_col)
    replaced = np.where(draw < MASK_P, config.mask_id, labels)
    random_ids = draws.random_ids(pos_row, pos_col, config.vocab_size)
    ids[pos_row, pos_col] = np.where(draw >= MASK_P + KEEP_P, random_ids, replaced)
    return Masked(ids, chosen, groups, chosen_groups, spans, (pos_row, pos_col), labels)


def padded_rows(input_ids: np.ndarray, input_mask: np.ndarray, segment_ids: np.ndarray,
                word_starts: np.ndarray) -> Rows:
    """Rows of fixed-length features (Google's layout plus ``word_starts``): [CLS] at 0, a
    [SEP] ending each segment (the last token of segment 0 and the last real token)."""
    input_mask = np.asarray(input_mask) != 0
    segment = np.asarray(segment_ids)
    length = input_mask.sum(axis=1)
    num_a = (input_mask & (segment == 0)).sum(axis=1)
    n, width = input_mask.shape
    candidate = input_mask.copy()
    r = np.arange(n)
    candidate[:, 0] = False
    candidate[r, np.maximum(num_a - 1, 0)] = False
    candidate[r, np.maximum(length - 1, 0)] = False
    return Rows(np.array(input_ids, dtype=np.int64, copy=True), candidate,
                np.asarray(word_starts) != 0, segment, length)


def mask_dynamic(input_ids: np.ndarray, input_mask: np.ndarray, segment_ids: np.ndarray,
                 word_starts: np.ndarray, index: np.ndarray, *, epoch: int, seed: int,
                 config: MaskingConfig) -> dict[str, np.ndarray]:
    """The trainers' dynamic masking of a batch of fixed-length rows: the mask of row i is a
    function of (``seed``, ``epoch``, ``index[i]``) alone. Returns Google's masked features:
    ``input_ids`` [n, seq] (masked) and ``masked_lm_positions``/``masked_lm_ids`` (int64) and
    ``masked_lm_weights`` (float32), [n, max_predictions_per_seq], zero padded."""
    rows = padded_rows(input_ids, input_mask, segment_ids, word_starts)
    draws = CounterDraws(dynamic_row_keys(seed, epoch, index))
    masked = mask_rows(rows, config, draws)
    n, p = len(rows.length), config.max_predictions_per_seq
    pos_row, pos_col = masked.positions
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(pos_row, minlength=n), out=starts[1:])
    slot = np.arange(len(pos_row)) - starts[pos_row]
    positions = np.zeros((n, p), dtype=np.int64)
    ids = np.zeros((n, p), dtype=np.int64)
    weights = np.zeros((n, p), dtype=np.float32)
    positions[pos_row, slot] = pos_col
    ids[pos_row, slot] = masked.labels
    weights[pos_row, slot] = 1.0
    return {"input_ids": masked.ids, "masked_lm_positions": positions,
            "masked_lm_ids": ids, "masked_lm_weights": weights}
