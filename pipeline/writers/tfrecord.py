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


# Varint encodings of small non-negative ints (ids, positions, 0/1), looked up instead of
# computed: serialization is a hot path (one Example per instance).
_VARINT = ([bytes((v,)) for v in range(1 << 7)]
           + [bytes((v & 0x7F | 0x80, v >> 7)) for v in range(1 << 7, 1 << 14)]
           + [bytes((v & 0x7F | 0x80, (v >> 7) & 0x7F | 0x80, v >> 14))
              for v in range(1 << 14, 1 << 18)])
_FLOAT_ONE, _FLOAT_ZERO = struct.pack("<f", 1.0), struct.pack("<f", 0.0)


def _packed_varints(values) -> bytes:
    table = _VARINT
    try:
        return b"".join([table[v] for v in values])
    except IndexError:  # an id beyond the table (huge vocabularies): encode directly
        return b"".join(_varint(v) for v in values)


def _int64_feature(packed: bytes) -> bytes:
    return _field(3, _field(1, packed))  # Feature.int64_list = 3; Int64List.value = 1 (packed)


def _float_feature(packed: bytes) -> bytes:
    return _field(2, _field(1, packed))  # Feature.float_list = 2; FloatList.value = 1 (packed)


# Pre-encoded map-entry keys: field 1 of the entry is the feature name.
_KEYS = {name: _field(1, name.encode()) for name in schema.FEATURE_NAMES}


def _entry(name: str, feature: bytes) -> bytes:
    return _field(1, _KEYS[name] + _field(2, feature))  # a Features.feature map entry


def serialize_example(inst: schema.Instance, max_seq_length: int,
                      max_predictions_per_seq: int) -> bytes:
    """The serialized ``tf.train.Example`` of one instance, padded to fixed lengths.

    Features come in ``schema.FEATURES`` order; values are those of
    ``Instance.padded_features`` (a test checks both against TensorFlow's parser).
    """
    n, m = len(inst.input_ids), len(inst.masked_lm_positions)
    if n > max_seq_length or m > max_predictions_per_seq:
        raise ValueError(f"instance of {n} tokens / {m} predictions exceeds "
                         f"{max_seq_length} / {max_predictions_per_seq}")
    pad_s, pad_p = b"\x00" * (max_seq_length - n), b"\x00" * (max_predictions_per_seq - m)
    label = inst.next_sentence_label
    features = (
        ("input_ids", _int64_feature(_packed_varints(inst.input_ids) + pad_s)),
        ("input_mask", _int64_feature(b"\x01" * n + pad_s)),
        ("segment_ids", _int64_feature(b"\x00" * inst.num_a + b"\x01" * (n - inst.num_a)
                                       + pad_s)),
        ("masked_lm_positions",
         _int64_feature(_packed_varints(inst.masked_lm_positions) + pad_p)),
        ("masked_lm_ids", _int64_feature(_packed_varints(inst.masked_lm_ids) + pad_p)),
        ("masked_lm_weights", _float_feature(
            _FLOAT_ONE * m + _FLOAT_ZERO * (max_predictions_per_seq - m))),
        ("next_sentence_labels", _int64_feature(_VARINT[label])),
    )
    return _field(1, b"".join(_entry(name, f) for name, f in features))  # Example.features


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
