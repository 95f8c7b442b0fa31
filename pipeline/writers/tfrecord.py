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
from typing import BinaryIO, Iterable

import google_crc32c

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


def _int64_feature(values) -> bytes:
    packed = b"".join(_varint(v) if v >= 0 else _varint(v & 0xFFFFFFFFFFFFFFFF) for v in values)
    return _field(3, _field(1, packed))  # Feature.int64_list = 3; Int64List.value = 1 (packed)


def _float_feature(values) -> bytes:
    packed = struct.pack(f"<{len(values)}f", *values)
    return _field(2, _field(1, packed))  # Feature.float_list = 2; FloatList.value = 1 (packed)


# Pre-encoded map-entry keys: field 1 of the entry is the feature name.
_KEYS = {name: _field(1, name.encode()) for name in schema.FEATURE_NAMES}
_DTYPES = {name: dtype for name, dtype, _ in schema.FEATURES}


def serialize_example(inst: schema.Instance, max_seq_length: int,
                      max_predictions_per_seq: int) -> bytes:
    """The serialized ``tf.train.Example`` of one instance, padded to fixed lengths."""
    entries = []
    for name, values in inst.padded_features(max_seq_length, max_predictions_per_seq).items():
        feature = _float_feature(values) if _DTYPES[name] == "float32" else _int64_feature(values)
        entries.append(_field(1, _KEYS[name] + _field(2, feature)))  # Features.feature map entry
    return _field(1, b"".join(entries))  # Example.features = 1


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", _masked_crc(header)) + data
            + struct.pack("<I", _masked_crc(data)))


def write_tfrecords(sink: BinaryIO, records: Iterable[bytes], *, gzip: bool = False) -> None:
    """Write framed records to ``sink``; with ``gzip`` as one gzip member (tf.data 'GZIP').

    zlib's gzip header carries no timestamp, so compressed output is deterministic too.
    """
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None
    for record in records:
        framed = frame_record(record)
        sink.write(compressor.compress(framed) if compressor else framed)
    if compressor:
        sink.write(compressor.flush())
