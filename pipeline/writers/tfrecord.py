"""TFRecord shards of ``tf.train.Example`` in Google's exact feature layout, without TensorFlow.

The Example protobuf is encoded directly (it is a small, stable wire format: a map from feature
name to a packed Int64List or FloatList), so Beam workers never import TensorFlow (seconds of
start-up and hundreds of MB per process) and bytes are identical everywhere. Tests parse the
output with TensorFlow's own ``tf.io.parse_single_example`` and Google's FixedLenFeature spec.

TFRecord framing: uint64 length, masked CRC32C of the length, data, masked CRC32C of the data.
"""
from __future__ import annotations

import struct
import zlib
from typing import BinaryIO, Iterable, List

import google_crc32c
import numpy as np

from pipeline import schema

_WIRE_LEN = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | _WIRE_LEN) + _varint(len(payload)) + payload


def _int64_feature(packed: bytes) -> bytes:
    return _field(3, _field(1, packed))  # Feature.int64_list = 3; Int64List.value = 1 (packed)


def _float_feature(packed: bytes) -> bytes:
    return _field(2, _field(1, packed))  # Feature.float_list = 2; FloatList.value = 1 (packed)


# Pre-encoded map-entry keys: field 1 of the entry is the feature name.
_KEYS = {name: _field(1, name.encode()) for name in schema.FEATURE_NAMES}


def _entry(name: str, feature: bytes) -> bytes:
    return _field(1, _KEYS[name] + _field(2, feature))  # a Features.feature map entry


def _varint_rows(values: np.ndarray) -> tuple:
    """Packed varints of each row of a non-negative [rows, k] int array, all rows in one buffer:
    (bytes, row offsets). Values below 2**28 (any vocabulary) take at most 4 bytes."""
    rows, k = values.shape
    top = int(values.max()) if values.size else 0
    if top < 1 << 7:  # one byte per value (masks, segments, positions): the values themselves
        return values.astype(np.uint8).tobytes(), list(range(0, rows * k + 1, k))
    if top >= 1 << 28:
        raise ValueError("id too large for this encoder (>= 2**28)")
    flat = values.reshape(-1).astype(np.int64)
    size = np.ones(len(flat), dtype=np.int64)
    for bits in (7, 14, 21):
        size += flat >= 1 << bits
    start = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(size, out=start[1:])
    out = np.empty(int(start[-1]), dtype=np.uint8)
    # Byte j of a value: its 7-bit group j, with the continuation bit unless it is the last.
    out[start[:-1]] = (flat & 0x7F) | ((size > 1) << 7)
    for j in (1, 2, 3):
        has = np.nonzero(size > j)[0]
        if not len(has):
            break
        out[start[has] + j] = ((flat[has] >> (7 * j)) & 0x7F) | ((size[has] > j + 1) << 7)
    return out.tobytes(), start[::k].tolist()


class _Prefixes(dict):
    """Everything of one int64 feature's map entry before its payload, per payload length."""

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    def __missing__(self, length: int) -> bytes:
        probe = _entry(self._name, _int64_feature(b"\0" * length))
        self[length] = prefix = probe[:len(probe) - length]
        return prefix


def serialize_batch(batch: schema.InstanceBatch, max_seq_length: int,
                    max_predictions_per_seq: int) -> List[bytes]:
    """The serialized ``tf.train.Example`` of every row of ``batch``, padded to fixed lengths.

    Features come in ``schema.FEATURES`` order with the values of ``InstanceBatch.padded``
    (tests parse the bytes with TensorFlow). Varints are encoded for the whole batch with
    numpy; each record is then a join of slices.
    """
    padded = batch.padded(max_seq_length, max_predictions_per_seq)
    varint_features = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions",
                       "masked_lm_ids")
    encoded = [_varint_rows(padded[name]) for name in varint_features]
    prefixes = [_Prefixes(name) for name in varint_features]
    weights = padded["masked_lm_weights"].astype("<f4")
    width = 4 * max_predictions_per_seq
    weight_prefix = _entry("masked_lm_weights", _float_feature(b"\0" * width))[:-width]
    weight_bytes = weights.tobytes()
    label_entries = [_entry("next_sentence_labels", _int64_feature(bytes((v,))))
                     for v in (0, 1)]
    labels = batch.nsp.tolist()
    example_head = {}
    records = []
    for row in range(len(batch)):
        parts = []
        for (data, offsets), prefix in zip(encoded, prefixes):
            start, end = offsets[row], offsets[row + 1]
            parts.append(prefix[end - start])
            parts.append(data[start:end])
        parts.append(weight_prefix)
        parts.append(weight_bytes[row * width:(row + 1) * width])
        parts.append(label_entries[labels[row]])
        body = b"".join(parts)
        head = example_head.get(len(body))
        if head is None:
            head = example_head[len(body)] = _field(1, b"\0" * len(body))[:-len(body)]
        records.append(head + body)  # Example.features = 1
    return records


def serialize_example(inst: schema.Instance, max_seq_length: int,
                      max_predictions_per_seq: int) -> bytes:
    """The serialized ``tf.train.Example`` of one instance (``serialize_batch`` of one row)."""
    return serialize_batch(schema.InstanceBatch.from_instances([inst]), max_seq_length,
                           max_predictions_per_seq)[0]


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", _masked_crc(header)) + data
            + struct.pack("<I", _masked_crc(data)))


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


def write_tfrecords(sink: BinaryIO, records: Iterable[bytes], *, gzip: bool = False) -> None:
    """All ``records`` to ``sink`` at once (a ``TFRecordSink`` written and closed)."""
    out = TFRecordSink(sink, gzip=gzip)
    out.write_all(records)
    out.close()
