"""The data of instance making: its settings, one instance, and many instances as columns.

``Instance`` is one unpadded pretraining example (tests and small outputs use it);
``InstanceBatch`` holds many as flat numpy columns, which is how instances travel between the
stages of the job and reach the writers. ``pipeline.schema`` says how both are written.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from pipeline import schema
from pipeline.core.masking import MaskingConfig


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
    # What the second segment and the label are: schema.SENTENCE_TASKS ("nsp", "sop", "none").
    next_sentence: str = "nsp"
    # schema.MASKING_MODES: "static" masks here; "dynamic" writes word starts, trainers mask.
    masking_mode: str = "static"
    # N-gram whole-word masking (core.masking): span lengths in words and their weights.
    ngram_lengths: tuple[int, ...] = (1,)
    ngram_weights: tuple[float, ...] = (1.0,)

    @property
    def dynamic(self) -> bool:
        return self.masking_mode == "dynamic"

    @property
    def masking(self) -> MaskingConfig:
        return MaskingConfig(
            max_predictions_per_seq=self.max_predictions_per_seq,
            masked_lm_prob=self.masked_lm_prob, vocab_size=self.vocab_size,
            mask_id=self.mask_id, whole_word=self.do_whole_word_mask,
            ngram_lengths=self.ngram_lengths, ngram_weights=self.ngram_weights)

    @property
    def has_pair(self) -> bool:
        """Two segments, [CLS] A [SEP] B [SEP] (nsp, sop); else one, [CLS] A [SEP] (none)."""
        return self.next_sentence != "none"

    @property
    def max_num_tokens(self) -> int:
        """Tokens of the segments: all but [CLS] and the [SEP] after each segment."""
        return self.max_seq_length - (3 if self.has_pair else 2)

    def __post_init__(self):
        if self.next_sentence not in schema.SENTENCE_TASKS:
            raise ValueError(f"next_sentence must be one of {schema.SENTENCE_TASKS}")
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
        if self.masking_mode not in schema.MASKING_MODES:
            raise ValueError(f"masking_mode must be one of {schema.MASKING_MODES}")
        self.masking  # noqa: B018  validates the masking settings



@dataclasses.dataclass(frozen=True)
class Instance:
    """One pretraining example, unpadded.

    input_ids: [CLS] A [SEP] B [SEP] (or [CLS] A [SEP] without a pair) as vocabulary ids,
      length n <= max_seq_length.
    num_a: number of leading tokens in segment 0, i.e. len(A) + 2 ([CLS] and the first [SEP]);
      n without a pair.
    masked_lm_positions: ascending positions in input_ids, never 0 (position 0 is [CLS]);
      NVIDIA's HDF5 readers stop at the first 0, so 0 must never be a real prediction.
    masked_lm_ids: the original ids at those positions (the labels).
    next_sentence_label: schema.NSP_* or schema.SOP_* (0 without a pair).
    """

    input_ids: Sequence[int]
    num_a: int
    masked_lm_positions: Sequence[int]
    masked_lm_ids: Sequence[int]
    next_sentence_label: int

    @property
    def segment_ids(self) -> list[int]:
        n = len(self.input_ids)
        return [0] * self.num_a + [1] * (n - self.num_a)

    def padded_features(self, max_seq_length: int, max_predictions_per_seq: int) -> dict[str, list]:
        """Google's fixed-length features (values as Python lists, in FEATURES order)."""
        n = len(self.input_ids)
        m = len(self.masked_lm_positions)
        if n > max_seq_length or m > max_predictions_per_seq:
            raise ValueError(
                f"instance of {n} tokens / {m} predictions exceeds max_seq_length="
                f"{max_seq_length} / max_predictions_per_seq={max_predictions_per_seq}")
        pad_s = [0] * (max_seq_length - n)
        pad_p = max_predictions_per_seq - m
        return {
            "input_ids": list(self.input_ids) + pad_s,
            "input_mask": [1] * n + pad_s,
            "segment_ids": self.segment_ids + pad_s,
            "masked_lm_positions": list(self.masked_lm_positions) + [0] * pad_p,
            "masked_lm_ids": list(self.masked_lm_ids) + [0] * pad_p,
            "masked_lm_weights": [1.0] * m + [0.0] * pad_p,
            "next_sentence_labels": [self.next_sentence_label],
        }

    def row(self) -> dict:
        """The unpadded Parquet row."""
        n = len(self.input_ids)
        m = len(self.masked_lm_positions)
        return {
            "input_ids": list(self.input_ids),
            "input_mask": [1] * n,
            "segment_ids": self.segment_ids,
            "masked_lm_positions": list(self.masked_lm_positions),
            "masked_lm_ids": list(self.masked_lm_ids),
            "masked_lm_weights": [1.0] * m,
            "next_sentence_labels": self.next_sentence_label,
        }


class InstanceBatch:
    """Many instances as flat columns: how instances travel between stages and reach writers.

    Row ``i`` has ``lengths[i]`` tokens (its slice of ``tokens``), ``num_a[i]`` of them in
    segment 0, ``num_pred[i]`` predictions (its slices of ``positions`` and ``labels``) and the
    sentence-pair label ``pair_label[i]`` (NSP or SOP; 0 for single segments): the unpadded
    ``Instance`` fields, column-wise. Token ids are stored as uint16 when the vocabulary fits,
    else int32; positions as uint16.
    """

    __slots__ = ("tokens", "lengths", "num_a", "positions", "labels", "num_pred", "pair_label",
                 "word_starts")

    def __init__(self, tokens, lengths, num_a, positions, labels, num_pred, pair_label,
                 word_starts=()):
        self.tokens, self.labels = np.asarray(tokens), np.asarray(labels)
        self.lengths = np.asarray(lengths, dtype=np.int32)
        self.num_a = np.asarray(num_a, dtype=np.int32)
        self.positions = np.asarray(positions, dtype=np.uint16)
        self.num_pred = np.asarray(num_pred, dtype=np.int32)
        self.pair_label = np.asarray(pair_label, dtype=np.int8)
        # Dynamic data (no masks): 1 where a whole word starts, per token; else empty.
        self.word_starts = np.asarray(word_starts, dtype=np.uint8)
        predictions = int(self.num_pred.sum())
        if (int(self.lengths.sum()) != len(self.tokens) or len(self.positions) != predictions
                or len(self.labels) != predictions
                or len(self.word_starts) not in (0, len(self.tokens))):
            raise ValueError("InstanceBatch columns disagree in length")

    def __len__(self) -> int:
        return len(self.lengths)

    def __getstate__(self):
        return tuple(getattr(self, k) for k in self.__slots__)

    def __setstate__(self, state):
        for k, v in zip(self.__slots__, state):
            setattr(self, k, v)

    @staticmethod
    def id_dtype(vocab_size: int):
        return np.uint16 if vocab_size <= 1 << 16 else np.int32

    @classmethod
    def from_instances(cls, instances: Sequence["Instance"], vocab_size: int | None = None
                       ) -> "InstanceBatch":
        """Rows → columns; ids as uint16 if ``vocab_size`` (default: the largest id + 1) fits."""
        if vocab_size is None:
            vocab_size = 1 + max((max(max(i.input_ids, default=0), max(i.masked_lm_ids,
                                                                        default=0))
                                  for i in instances), default=0)
        dtype = cls.id_dtype(vocab_size)
        flat = lambda rows: np.array([v for r in rows for v in r], dtype=dtype)  # noqa: E731
        return cls(tokens=flat(i.input_ids for i in instances),
                   lengths=[len(i.input_ids) for i in instances],
                   num_a=[i.num_a for i in instances],
                   positions=[p for i in instances for p in i.masked_lm_positions],
                   labels=flat(i.masked_lm_ids for i in instances),
                   num_pred=[len(i.masked_lm_positions) for i in instances],
                   pair_label=[i.next_sentence_label for i in instances])

    @staticmethod
    def _offsets(lengths):
        out = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=out[1:])
        return out

    def token_offsets(self):
        return self._offsets(self.lengths)

    def prediction_offsets(self):
        return self._offsets(self.num_pred)

    def take(self, rows) -> "InstanceBatch":
        """The rows ``rows`` (indices, in that order) as a new batch."""
        rows = np.asarray(rows, dtype=np.int64)
        predictions = ragged_index(self.prediction_offsets(), rows)
        tokens = ragged_index(self.token_offsets(), rows)
        return InstanceBatch(
            tokens=self.tokens[tokens],
            lengths=self.lengths[rows], num_a=self.num_a[rows],
            positions=self.positions[predictions], labels=self.labels[predictions],
            num_pred=self.num_pred[rows], pair_label=self.pair_label[rows],
            word_starts=self.word_starts[tokens] if len(self.word_starts) else ())

    def slice(self, start: int, stop: int) -> "InstanceBatch":
        """Rows ``start`` to ``stop - 1`` as a new batch of views (no copy)."""
        t, p = self.token_offsets(), self.prediction_offsets()
        t0, t1, p0, p1 = int(t[start]), int(t[stop]), int(p[start]), int(p[stop])
        return InstanceBatch(
            tokens=self.tokens[t0:t1], lengths=self.lengths[start:stop],
            num_a=self.num_a[start:stop], positions=self.positions[p0:p1],
            labels=self.labels[p0:p1], num_pred=self.num_pred[start:stop],
            pair_label=self.pair_label[start:stop],
            word_starts=self.word_starts[t0:t1] if len(self.word_starts) else ())

    @staticmethod
    def concat(batches: Sequence["InstanceBatch"]) -> "InstanceBatch":
        if not batches:
            raise ValueError("nothing to concatenate")
        dtype = np.result_type(*[b.tokens.dtype for b in batches])
        return InstanceBatch(*(np.concatenate([getattr(b, k) for b in batches]).astype(
            dtype if k in ("tokens", "labels") else getattr(batches[0], k).dtype, copy=False)
            for k in InstanceBatch.__slots__))

    def instances(self) -> list["Instance"]:
        """Row objects (for tests and small outputs; writers use the columns)."""
        t, p = self.token_offsets().tolist(), self.prediction_offsets().tolist()
        tokens, positions, labels = (self.tokens.tolist(), self.positions.tolist(),
                                     self.labels.tolist())
        return [Instance(input_ids=tokens[t[i]:t[i + 1]], num_a=int(self.num_a[i]),
                         masked_lm_positions=positions[p[i]:p[i + 1]],
                         masked_lm_ids=labels[p[i]:p[i + 1]],
                         next_sentence_label=int(self.pair_label[i]))
                for i in range(len(self))]


def ragged_index(offsets, rows):
    """Flat indexes of the values of ``rows`` (in that order) in a column with ``offsets``."""
    starts, ends = offsets[rows], offsets[rows + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    # For every output value: its row's start, plus its rank inside the row.
    out_starts = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(lengths[:-1], out=out_starts[1:])
    return np.repeat(starts - out_starts, lengths) + np.arange(total, dtype=np.int64)
