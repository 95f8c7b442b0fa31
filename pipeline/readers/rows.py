"""Chunks of a shard → checked, unpadded instances, and the problems of the rest.

What makes an instance valid (the schema's contract, ``pipeline/schema.py``, and Google's
layout): every feature present at its fixed length (TFRecord) or with consistent list
lengths (Parquet); ``input_mask`` 1 over the tokens and 0 over the padding; ids inside the
vocabulary and 0 in the padding; ``[CLS] A [SEP] B [SEP]`` (``[CLS] A [SEP]`` for
next_sentence "none") with ``segment_ids`` 0 over ``[CLS] A [SEP]`` and 1 over ``B [SEP]``;
masked positions inside the tokens, strictly increasing and never 0 (0 is padding), their
targets real tokens (never [CLS], [SEP] or [PAD]); ``masked_lm_weights`` exactly 1.0 where a
prediction is and 0.0 elsewhere; the label 0 or 1 (absent for "none"). Dynamic data
(manifest masking mode "dynamic") has no masked_lm_* features but ``word_starts``: 0 or 1,
0 over the padding and on [CLS] and every [SEP], 1 on the token right after [CLS] and after
segment 0's [SEP] (a masking group always starts there: ``pipeline.core.masking.group_starts``).
A shard of a length bin (binned output) is checked at its bin's lengths (``shard_spec``), and
every row's length must be inside the bin: more than the bound before it, at most its own.

Every check runs on whole chunks with numpy; a problem names the record and the field.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline import schema
from pipeline.readers.output import LengthBin, Output
from pipeline.readers.shards import Chunk

Problem = tuple[int, str, str]  # (record in the shard, field, message)


@dataclasses.dataclass(frozen=True)
class Spec:
    """What the instances of one output must satisfy."""
    max_seq_length: int
    max_predictions_per_seq: int
    vocab_size: int
    cls_id: int
    sep_id: int
    pad_id: int
    task: str
    masking: str = "static"
    # A shard of a length bin (binned output): its instances have ``low`` + 1 to
    # ``max_seq_length`` (the bin's bound) tokens; ``bin_name`` its directory (len-0064).
    low: int = 0
    bin_name: str = ""

    @property
    def dynamic(self) -> bool:
        return self.masking == "dynamic"

    @property
    def binned(self) -> bool:
        return bool(self.bin_name)

    def in_bin(self, length_bin: LengthBin | None) -> "Spec":
        """This spec for the shards of ``length_bin``: padded to its bound and its
        max_predictions_per_seq, lengths above the bound before it (None: unchanged)."""
        if length_bin is None:
            return self
        return dataclasses.replace(self, max_seq_length=length_bin.bound,
                                   max_predictions_per_seq=length_bin.max_predictions_per_seq,
                                   low=length_bin.low, bin_name=length_bin.name)

    def bin_range(self) -> str:
        """``bin len-0064 (33 to 64 tokens)`` for messages."""
        return f"bin {self.bin_name} ({self.low + 1} to {self.max_seq_length} tokens)"

    @classmethod
    def of(cls, output: Output) -> "Spec":
        """From the manifest and the data's vocab.txt (without it: the manifest's vocab_size,
        and the special tokens unknown, so their places go unchecked)."""
        m = output.manifest
        has_vocab = m.get("vocab_file", schema.VOCAB_FILE) in output.files
        vocab = output.vocab if has_vocab else []
        ids = {token: i for i, token in enumerate(vocab)}
        return cls(max_seq_length=m["max_seq_length"],
                   max_predictions_per_seq=m["max_predictions_per_seq"],
                   vocab_size=len(vocab) if has_vocab else m["vocab_size"],
                   cls_id=ids.get(schema.CLS, -1),
                   sep_id=ids.get(schema.SEP, -1), pad_id=ids.get(schema.PAD, 0),
                   task=output.task, masking=output.masking)


def shard_spec(output: Output, fmt: str, index: int, base: Spec | None = None) -> Spec:
    """What shard ``index`` of the manifest's ``fmt`` list must satisfy: ``base`` (default
    :meth:`Spec.of`), at its length bin's lengths in a binned output."""
    return (base or Spec.of(output)).in_bin(output.shard_bin(fmt, index))


@dataclasses.dataclass
class Rows:
    """Valid instances, unpadded and column-wise: row k is record ``records[k]`` of the shard,
    with ``lengths[k]`` tokens (``num_a[k]`` of them in segment 0: [CLS] A [SEP]) and
    ``num_pred[k]`` predictions (none in dynamic data); ``label`` is None for next_sentence
    "none"; ``word_starts`` (dynamic data only, else None) is per token, like ``tokens``."""
    records: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray
    num_a: np.ndarray
    positions: np.ndarray
    targets: np.ndarray
    num_pred: np.ndarray
    label: np.ndarray | None
    word_starts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.records)

    def token_offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def prediction_offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.num_pred)]).astype(np.int64)

    def row(self, k: int) -> dict:
        """Row k as plain lists: record, input_ids, num_a, positions, targets, label,
        word_starts (None for static data)."""
        t, p = self.token_offsets(), self.prediction_offsets()
        return {"record": int(self.records[k]),
                "input_ids": self.tokens[t[k]:t[k + 1]].tolist(), "num_a": int(self.num_a[k]),
                "positions": self.positions[p[k]:p[k + 1]].tolist(),
                "targets": self.targets[p[k]:p[k + 1]].tolist(),
                "label": None if self.label is None else int(self.label[k]),
                "word_starts": None if self.word_starts is None else
                self.word_starts[t[k]:t[k + 1]].tolist()}


class _Report:
    """Problems of one chunk, and which of its records are bad."""

    def __init__(self, chunk: Chunk):
        self.first = chunk.first
        self.bad = np.zeros(chunk.size, dtype=bool)
        self.problems: list[Problem] = list(chunk.problems)
        for record, _, _ in chunk.problems:
            self.bad[record - chunk.first] = True

    def rows(self, rows: np.ndarray, field: str, message: str) -> None:
        """``rows`` (chunk positions) all have the same problem."""
        for r in np.asarray(rows).tolist():
            self.problems.append((self.first + r, field, message))
            self.bad[r] = True

    def values(self, rows: np.ndarray, bad: np.ndarray, values: np.ndarray, field: str,
               message: str) -> None:
        """Per-value check: ``bad[i]`` marks value i (of row ``rows[i]``); the message shows
        the row's first bad value and where it is (``{value}``, ``{at}``)."""
        if not bad.any():
            return
        where = np.flatnonzero(bad)
        first_rows, first = np.unique(rows[where], return_index=True)
        starts = np.searchsorted(rows, first_rows)  # rows are ascending: each row's start
        for r, i, start in zip(first_rows.tolist(), where[first].tolist(), starts.tolist()):
            value = values[i].item()
            self.problems.append((self.first + r, field,
                                  message.format(value=value, at=i - start)))
            self.bad[r] = True


def check_chunk(chunk: Chunk, spec: Spec) -> tuple[Rows, list[Problem]]:
    """The chunk's valid instances, and the problems of the others (each bad record is left
    out of the rows)."""
    report = _Report(chunk)
    if chunk.padded:
        flat = _unpad(chunk, spec, report)
    else:
        flat = _unpadded(chunk, spec, report)
    rows = _check_instances(flat, spec, report)
    return rows, sorted(report.problems, key=lambda p: p[0])


def _unpad(chunk: Chunk, spec: Spec, report: _Report) -> dict[str, np.ndarray]:
    """TFRecord: fixed lengths, padding and weights checked; the real values extracted."""
    seq, pred = spec.max_seq_length, spec.max_predictions_per_seq
    lengths = {name: schema.feature_length(kind, seq, pred)
               for name, _, kind in schema.features(spec.task, spec.masking)}
    kinds = {name: kind for name, _, kind in schema.features(spec.task, spec.masking)}
    for name, length in lengths.items():
        counts = chunk.columns[name].counts
        wrong = np.flatnonzero((counts != length) & ~report.bad)
        why = "" if not spec.binned else {
            "seq": f" (bin {spec.bin_name} is padded to {seq})",
            "pred": f" (bin {spec.bin_name}'s max_predictions_per_seq)"}.get(kinds[name], "")
        for r in wrong.tolist():
            report.rows([r], name, f"{counts[r]} values, the schema says {length}{why}")
    good = np.flatnonzero(~report.bad)
    grid = {}
    for name, length in lengths.items():
        column = chunk.columns[name]
        offsets = np.concatenate([[0], np.cumsum(column.counts)])
        grid[name] = column.values[offsets[good][:, None] + np.arange(length)]
    mask, ids, segments = grid["input_mask"], grid["input_ids"], grid["segment_ids"]
    n = (mask == 1).sum(axis=1)
    real = np.arange(seq) < n[:, None]
    report.rows(good[~(mask == real).all(axis=1)], "input_mask",
                "not 1 over the tokens then 0 over the padding")
    report.rows(good[((ids != 0) & ~real).any(axis=1)], "input_ids", "non-zero padding")
    report.rows(good[((segments != 0) & ~real).any(axis=1)], "segment_ids", "non-zero padding")
    if spec.dynamic:
        starts = grid[schema.WORD_STARTS]
        report.rows(good[((starts != 0) & ~real).any(axis=1)], schema.WORD_STARTS,
                    "non-zero padding")
        keep = ~report.bad[good]
        flat = {"rows": good[keep], "lengths": n[keep],
                "num_pred": np.zeros(int(keep.sum()), dtype=np.int64),
                "input_ids": ids[keep][real[keep]], "segment_ids": segments[keep][real[keep]],
                schema.WORD_STARTS: starts[keep][real[keep]],
                "masked_lm_positions": np.zeros(0, np.int64),
                "masked_lm_ids": np.zeros(0, np.int64)}
        if schema.LABEL_FEATURE in grid:
            flat["label"] = grid[schema.LABEL_FEATURE][keep, 0]
        return flat
    positions, targets = grid["masked_lm_positions"], grid["masked_lm_ids"]
    weights = grid["masked_lm_weights"]
    m = (positions != 0).sum(axis=1)
    predicted = np.arange(pred) < m[:, None]
    report.rows(good[~((positions != 0) == predicted).all(axis=1)], "masked_lm_positions",
                "a 0 before a prediction (0 is padding and never a prediction)")
    report.rows(good[((targets != 0) & ~predicted).any(axis=1)], "masked_lm_ids",
                "non-zero padding")
    report.rows(good[~(weights == predicted.astype(np.float32)).all(axis=1)],
                "masked_lm_weights", "not exactly 1.0 where a prediction is and 0.0 elsewhere")
    keep = ~report.bad[good]
    good, real, predicted = good[keep], real[keep], predicted[keep]
    flat = {"rows": good, "lengths": n[keep], "num_pred": m[keep],
            "input_ids": ids[keep][real], "segment_ids": segments[keep][real],
            "masked_lm_positions": positions[keep][predicted],
            "masked_lm_ids": targets[keep][predicted]}
    if schema.LABEL_FEATURE in grid:
        flat["label"] = grid[schema.LABEL_FEATURE][keep, 0]
    return flat


def _unpadded(chunk: Chunk, spec: Spec, report: _Report) -> dict[str, np.ndarray]:
    """Parquet: list lengths consistent and within the limits, masks and weights all 1."""
    cols = chunk.columns
    n = cols["input_ids"].counts
    if spec.dynamic:  # no predictions stored: word_starts per token instead
        m = np.zeros(chunk.size, dtype=np.int64)
        lists = (("input_mask", n), ("segment_ids", n), (schema.WORD_STARTS, n))
        limits = (("input_ids", n, spec.max_seq_length),)
        ones = (("input_mask", 1),)
        kept = ("input_ids", "segment_ids", schema.WORD_STARTS)
    else:
        m = cols["masked_lm_positions"].counts
        lists = (("input_mask", n), ("segment_ids", n), ("masked_lm_ids", m),
                 ("masked_lm_weights", m))
        limits = (("input_ids", n, spec.max_seq_length),
                  ("masked_lm_positions", m, spec.max_predictions_per_seq))
        ones = (("input_mask", 1), ("masked_lm_weights", 1.0))
        kept = ("input_ids", "segment_ids", "masked_lm_positions", "masked_lm_ids")
    for name, want in lists:
        for r in np.flatnonzero((cols[name].counts != want) & ~report.bad).tolist():
            report.rows([r], name, f"{cols[name].counts[r]} values for "
                                   f"{want[r]} {'tokens' if want is n else 'predictions'}")
    for name, counts, limit in limits:
        for r in np.flatnonzero((counts > limit) & ~report.bad).tolist():
            if not spec.binned:
                message = f"{counts[r]} values, more than the limit {limit}"
            elif name == "input_ids":
                message = (f"{counts[r]} tokens, more than its {spec.bin_range()} holds: it "
                           f"belongs in a later bin")
            else:
                message = (f"{counts[r]} predictions, more than bin {spec.bin_name}'s "
                           f"max_predictions_per_seq {limit}")
            report.rows([r], name, message)
    for name, want in ones:
        column = cols[name]
        rows = np.repeat(np.arange(chunk.size), column.counts)
        report.values(rows, column.values != want, column.values, name,
                      f"{{value}} at {{at}}; every value must be {want}")
    good = np.flatnonzero(~report.bad)
    flat = {"rows": good, "lengths": n[good], "num_pred": m[good],
            "masked_lm_positions": np.zeros(0, np.int64), "masked_lm_ids": np.zeros(0, np.int64)}
    for name in kept:
        column = cols[name]
        flat[name] = column.values[np.repeat(~report.bad, column.counts)]
    if schema.LABEL_FEATURE in cols:
        flat["label"] = cols[schema.LABEL_FEATURE].values[good]
    return flat


def _check_instances(flat: dict[str, np.ndarray], spec: Spec, report: _Report) -> Rows:
    """Checks on unpadded rows (both formats): vocabulary, layout, predictions, label."""
    good, n, m = flat["rows"], flat["lengths"].astype(np.int64), flat["num_pred"].astype(
        np.int64)
    ids = flat["input_ids"].astype(np.int64)
    segments = flat["segment_ids"].astype(np.int64)
    positions = flat["masked_lm_positions"].astype(np.int64)
    targets = flat["masked_lm_ids"].astype(np.int64)
    token_row, pred_row = np.repeat(good, n), np.repeat(good, m)
    starts = np.concatenate([[0], np.cumsum(n)])[:-1]
    pred_starts = np.concatenate([[0], np.cumsum(m)])[:-1]
    v = spec.vocab_size
    report.values(token_row, (ids < 0) | (ids >= v), ids, "input_ids",
                  f"id {{value}} at {{at}} is outside the vocabulary ({v} tokens)")
    report.values(token_row, (segments != 0) & (segments != 1), segments, "segment_ids",
                  "{value} at {at}: segments are 0 or 1")
    step = np.diff(segments, prepend=0)
    step[starts[n > 0]] = 0
    report.values(token_row, step < 0, segments, "segment_ids",
                  "back to {value} at {at}: segment 0 must come first, then 1")
    running = np.concatenate([[0], np.cumsum(segments)])
    ones = running[starts + n] - running[starts]
    num_a = n - ones
    last = np.maximum(starts + n - 1, 0)
    if spec.low:
        report.values(good, n <= spec.low, n, "input_ids",
                      f"{{value}} tokens, fewer than its {spec.bin_range()} holds: it belongs "
                      f"in an earlier bin")
    short = n < (3 if spec.task == "none" else 5)
    report.rows(good[short], "input_ids",
                "too short to hold [CLS] A [SEP]" + ("" if spec.task == "none" else " B [SEP]"))
    ok = ~short
    known = spec.cls_id >= 0 and spec.sep_id >= 0  # without the vocabulary: not checked
    report.rows(good[ok & known & (ids[np.minimum(starts, len(ids) - 1)] != spec.cls_id)],
                "input_ids", "does not start with [CLS]")
    report.rows(good[ok & known & (ids[np.minimum(last, len(ids) - 1)] != spec.sep_id)],
                "input_ids", "does not end with [SEP]")
    split = None  # rows with two valid segments (None for single-segment data)
    if spec.task == "none":
        report.rows(good[ok & (ones > 0)], "segment_ids",
                    "segment 1 in single-segment data (next_sentence none)")
    else:
        split = ok & (num_a >= 3) & (num_a <= n - 2)
        report.rows(good[ok & ~split], "segment_ids",
                    "segment 0 must be [CLS] A [SEP] and segment 1 B [SEP], both non-empty")
        a_end = np.minimum(starts + np.maximum(num_a, 1) - 1, len(ids) - 1)
        report.rows(good[split & known & (ids[a_end] != spec.sep_id)], "input_ids",
                    "segment 0 does not end with [SEP]")
    in_row = np.repeat(n, m)
    report.values(pred_row, (positions < 1) | (positions >= in_row), positions,
                  "masked_lm_positions",
                  "position {value} (prediction {at}) is not inside the tokens")
    rise = np.diff(positions, prepend=-1)
    rise[pred_starts[m > 0]] = 1
    report.values(pred_row, rise <= 0, positions, "masked_lm_positions",
                  "position {value} (prediction {at}) is not after the one before it")
    special = np.isin(targets, [spec.cls_id, spec.sep_id, spec.pad_id])
    report.values(pred_row, (targets < 0) | (targets >= v) | special, targets, "masked_lm_ids",
                  "target {value} (prediction {at}) is outside the vocabulary or a special "
                  "token ([CLS], [SEP], [PAD] are never predicted)")
    word_starts = flat.get(schema.WORD_STARTS)
    if word_starts is not None and len(word_starts):
        _check_word_starts(word_starts.astype(np.int64), token_row,
                           (good, starts, n, num_a, ok, split),
                           report)
    label = flat.get("label")
    if label is not None:
        report.values(good, (label != 0) & (label != 1), label, schema.LABEL_FEATURE,
                      "label {value}: must be 0 or 1")
    keep = ~report.bad[good]
    return Rows(records=good[keep] + report.first, tokens=ids[np.repeat(keep, n)],
                lengths=n[keep], num_a=num_a[keep], positions=positions[np.repeat(keep, m)],
                targets=targets[np.repeat(keep, m)], num_pred=m[keep],
                label=None if label is None else label[keep].astype(np.int64),
                word_starts=None if word_starts is None else
                word_starts.astype(np.int64)[np.repeat(keep, n)])


def _check_word_starts(word_starts: np.ndarray, token_row: np.ndarray, layout: tuple,
                       report: _Report) -> None:
    """Dynamic data's ``word_starts``: 0 or 1; 0 on [CLS] and every [SEP]; 1 right after
    [CLS] and after segment 0's [SEP] (``split``: the rows whose two segments are valid;
    None for single-segment data)."""
    good, starts, n, num_a, ok, split = layout
    report.values(token_row, (word_starts != 0) & (word_starts != 1), word_starts,
                  schema.WORD_STARTS, "{value} at {at}: word starts are 0 or 1")
    top = len(word_starts) - 1
    at = lambda offsets: word_starts[np.clip(offsets, 0, top)]  # noqa: E731
    special = (at(starts) != 0) | (at(starts + n - 1) != 0)
    after = at(starts + 1) != 1
    if split is not None:
        special |= split & (at(starts + num_a - 1) != 0)
        after |= split & (at(starts + num_a) != 1)
    report.rows(good[ok & special], schema.WORD_STARTS,
                "not 0 on [CLS] or a [SEP] (no word starts there)")
    report.rows(good[ok & after], schema.WORD_STARTS,
                "0 right after [CLS] or segment 0's [SEP] (a word always starts there)")


_FIELDS = ("input_ids", "segments", "masked_lm_positions", "masked_lm_ids", "label",
           schema.WORD_STARTS)  # the last: dynamic data only


def fingerprints(rows: Rows) -> dict[str, np.ndarray]:
    """A 64-bit fingerprint of each row, per field (names as in ``_FIELDS``): equal rows have
    equal fingerprints, different ones almost surely not. Computed for whole chunks."""
    out = {}
    t, p = rows.token_offsets(), rows.prediction_offsets()
    out["input_ids"] = _row_hash(rows.tokens, t, 1)
    out["segments"] = _mix(rows.num_a.astype(np.uint64) + np.uint64(2 << 40))
    out["masked_lm_positions"] = _row_hash(rows.positions, p, 3)
    out["masked_lm_ids"] = _row_hash(rows.targets, p, 4)
    label = rows.label if rows.label is not None else np.full(len(rows), -1)
    out["label"] = _mix(label.astype(np.int64).view(np.uint64) + np.uint64(5 << 40))
    if rows.word_starts is not None:
        out[schema.WORD_STARTS] = _row_hash(rows.word_starts, t, 6)
    return out


def _row_hash(values: np.ndarray, offsets: np.ndarray, salt: int) -> np.ndarray:
    """Order-sensitive hash of each row's values: the sum of mix(value, place, salt)."""
    place = np.arange(len(values), dtype=np.int64) - np.repeat(offsets[:-1], np.diff(offsets))
    keyed = (values.astype(np.int64).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             + place.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F) + np.uint64(salt))
    sums = np.concatenate([[np.uint64(0)], np.cumsum(_mix(keyed), dtype=np.uint64)])
    with np.errstate(over="ignore"):
        return _mix(sums[offsets[1:]] - sums[offsets[:-1]] + np.diff(offsets).astype(np.uint64))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (wrapping uint64 arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
