"""TFRecord shards of ``tf.train.Example`` in Google's exact feature layout, without TensorFlow.

The Example protobuf is encoded directly (it is a small, stable wire format: a map from feature
name to a packed Int64List or FloatList), so Beam workers never import TensorFlow (seconds of
start-up and hundreds of MB per process) and bytes are identical everywhere. Tests parse the
output with TensorFlow's own ``tf.io.parse_single_example`` and Google's FixedLenFeature spec.

TFRecord framing (uint64 length, masked CRC32C of the length, data, masked CRC32C of the data)
is ``pipeline.common.tfrecord``'s, the one definition the readers check too.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import BinaryIO

import numpy as np

from pipeline import schema
from pipeline.common.protowire import length_delimited as _field
from pipeline.common.tfrecord import frame_record
from pipeline.core.instance import InstanceBatch

_FLOAT_ONE, _FLOAT_ZERO = struct.pack("<f", 1.0), struct.pack("<f", 0.0)


def _int64_feature(packed: bytes) -> bytes:
    return _field(3, _field(1, packed))  # Feature.int64_list = 3; Int64List.value = 1 (packed)


def _float_feature(packed: bytes) -> bytes:
    return _field(2, _field(1, packed))  # Feature.float_list = 2; FloatList.value = 1 (packed)


# Pre-encoded map-entry keys: field 1 of the entry is the feature name.
_KEYS = {name: _field(1, name.encode()) for name in schema.FEATURE_NAMES + (schema.WORD_STARTS,)}


def _entry(name: str, feature: bytes) -> bytes:
    return _field(1, _KEYS[name] + _field(2, feature))  # a Features.feature map entry


def _varints(values: np.ndarray) -> tuple:
    """Varint encodings of a flat array of non-negative ints, concatenated: (bytes, starts),
    ``starts[i]`` the byte offset of value ``i`` (and ``starts[-1]`` the total). Values below
    2**28 (any vocabulary) take at most 4 bytes."""
    flat = values.astype(np.int64)
    if len(flat) and int(flat.max()) >= 1 << 28:
        raise ValueError("id too large for this encoder (>= 2**28)")
    size = np.ones(len(flat), dtype=np.int64)
    for bits in (7, 14, 21):
        size += flat >= 1 << bits
    starts = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(size, out=starts[1:])
    out = np.empty(int(starts[-1]), dtype=np.uint8)
    # Byte j of a value: its 7-bit group j, with the continuation bit unless it is the last.
    out[starts[:-1]] = (flat & 0x7F) | ((size > 1) << 7)
    for j in (1, 2, 3):
        has = np.flatnonzero(size > j)
        if not len(has):
            break
        out[starts[has] + j] = ((flat[has] >> (7 * j)) & 0x7F) | ((size[has] > j + 1) << 7)
    return out.tobytes(), starts


class _Prefixes(dict):
    """Everything of one feature's map entry before its payload, per payload length."""

    def __init__(self, name: str, floats: bool = False):
        super().__init__()
        self._name, self._floats = name, floats

    def __missing__(self, length: int) -> bytes:
        payload = b"\0" * length
        probe = _entry(self._name, _float_feature(payload) if self._floats
                       else _int64_feature(payload))
        self[length] = prefix = probe[:len(probe) - length]
        return prefix


def serialize_batch(batch: InstanceBatch, max_seq_length: int,
                    max_predictions_per_seq: int, *, with_label: bool = True,
                    dynamic: bool = False) -> list[bytes]:
    """The serialized ``tf.train.Example`` of every row of ``batch``, padded to fixed lengths.

    Features come in ``schema.FEATURES`` order with the values of ``Instance.padded_features``
    (``next_sentence_labels`` only ``with_label``: data without sentence pairs has none)
    (tests parse the bytes with TensorFlow). Ids and labels are varint-encoded for the whole
    batch with numpy; masks, segments, weights and padding are slices of prepared strings, so
    a record is one join of a dozen byte strings. ``dynamic``: the features of
    ``schema.features(..., "dynamic")`` (``word_starts`` for masked_lm_*).
    """
    if dynamic:
        return _serialize_dynamic(batch, max_seq_length, with_label=with_label)
    seq, pred = max_seq_length, max_predictions_per_seq
    if len(batch) and (batch.lengths.max() > seq or batch.num_pred.max() > pred):
        raise ValueError(f"an instance exceeds max_seq_length={seq} / "
                         f"max_predictions_per_seq={pred}")
    ids, id_starts = _varints(batch.tokens)
    id_at = id_starts[batch.token_offsets()].tolist()
    labels, label_starts = _varints(batch.labels)
    pred_offsets = batch.prediction_offsets()
    label_at = label_starts[pred_offsets].tolist()
    positions, position_starts = _varints(batch.positions)
    position_at = position_starts[pred_offsets].tolist()
    zeros, ones = b"\0" * max(seq, pred), b"\1" * seq
    ids_prefix, pos_prefix, labels_prefix = (_Prefixes(n) for n in (
        "input_ids", "masked_lm_positions", "masked_lm_ids"))
    mask_prefix = _Prefixes("input_mask")[seq]
    segment_prefix = _Prefixes("segment_ids")[seq]
    weights = _Prefixes("masked_lm_weights", floats=True)[4 * pred]
    weight_payload = [_FLOAT_ONE * m + _FLOAT_ZERO * (pred - m) for m in range(pred + 1)]
    label_entries = ([_entry(schema.LABEL_FEATURE, _int64_feature(bytes((v,)))) for v in (0, 1)]
                     if with_label else [b"", b""])
    example_head = {}
    records = []
    rows = zip(batch.lengths.tolist(), batch.num_a.tolist(), batch.num_pred.tolist(),
               batch.pair_label.tolist())
    for row, (n, num_a, m, nsp) in enumerate(rows):
        a, b = id_at[row], id_at[row + 1]
        c, d = position_at[row], position_at[row + 1]
        e, f = label_at[row], label_at[row + 1]
        pad_s, pad_p = zeros[:seq - n], zeros[:pred - m]
        body = b"".join((
            ids_prefix[b - a + seq - n], ids[a:b], pad_s,
            mask_prefix, ones[:n], pad_s,
            segment_prefix, zeros[:num_a], ones[:n - num_a], pad_s,
            pos_prefix[d - c + pred - m], positions[c:d], pad_p,
            labels_prefix[f - e + pred - m], labels[e:f], pad_p,
            weights, weight_payload[m], label_entries[nsp]))
        head = example_head.get(len(body))
        if head is None:
            head = example_head[len(body)] = _field(1, b"\0" * len(body))[:-len(body)]
        records.append(head + body)  # Example.features = 1
    return records


def _serialize_dynamic(batch: InstanceBatch, max_seq_length: int, *,
                       with_label: bool) -> list[bytes]:
    """Dynamic data's Examples: input_ids, input_mask, segment_ids, word_starts (one byte per
    value: each is 0 or 1), next_sentence_labels."""
    seq = max_seq_length
    if len(batch) and batch.lengths.max() > seq:
        raise ValueError(f"an instance exceeds max_seq_length={seq}")
    if len(batch.word_starts) != len(batch.tokens):
        raise ValueError("dynamic data needs the word starts of every token")
    ids, id_starts = _varints(batch.tokens)
    id_at = id_starts[batch.token_offsets()].tolist()
    starts = batch.word_starts.tobytes()
    token_at = batch.token_offsets().tolist()
    zeros, ones = b"\0" * seq, b"\1" * seq
    ids_prefix = _Prefixes("input_ids")
    mask_prefix = _Prefixes("input_mask")[seq]
    segment_prefix = _Prefixes("segment_ids")[seq]
    starts_prefix = _Prefixes(schema.WORD_STARTS)[seq]
    label_entries = ([_entry(schema.LABEL_FEATURE, _int64_feature(bytes((v,)))) for v in (0, 1)]
                     if with_label else [b"", b""])
    example_head = {}
    records = []
    rows = zip(batch.lengths.tolist(), batch.num_a.tolist(), batch.pair_label.tolist())
    for row, (n, num_a, nsp) in enumerate(rows):
        a, b = id_at[row], id_at[row + 1]
        pad_s = zeros[:seq - n]
        body = b"".join((
            ids_prefix[b - a + seq - n], ids[a:b], pad_s,
            mask_prefix, ones[:n], pad_s,
            segment_prefix, zeros[:num_a], ones[:n - num_a], pad_s,
            starts_prefix, starts[token_at[row]:token_at[row + 1]], pad_s,
            label_entries[nsp]))
        head = example_head.get(len(body))
        if head is None:
            head = example_head[len(body)] = _field(1, b"\0" * len(body))[:-len(body)]
        records.append(head + body)
    return records


class TFRecordSink:
    """Framed records to ``sink``, with ``gzip`` as one gzip member (tf.data 'GZIP').

    zlib's gzip header carries no timestamp, so compressed output is deterministic too.
    """

    def __init__(self, sink: BinaryIO, *, gzip: bool = False):
        self._sink = sink
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None

    def write_all(self, records: Iterable[bytes]) -> None:
        data = b"".join(frame_record(r) for r in records)
        self._sink.write(self._compressor.compress(data) if self._compressor else data)

    def close(self) -> None:
        if self._compressor:
            self._sink.write(self._compressor.flush())
            self._compressor = None
