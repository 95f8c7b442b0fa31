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
from typing import BinaryIO

import numpy as np

from pipeline import schema
from pipeline.common.protowire import length_delimited as _field
from pipeline.common.tfrecord import CRC, HEADER, frame_record, masked_crc32c
from pipeline.core.instance import InstanceBatch

_FLOAT_ONE = struct.pack("<f", 1.0)  # a weight of 1; a weight of 0 is 4 zero bytes


def _int64_feature(packed: bytes) -> bytes:
    return _field(3, _field(1, packed))  # Feature.int64_list = 3; Int64List.value = 1 (packed)


def _float_feature(packed: bytes) -> bytes:
    return _field(2, _field(1, packed))  # Feature.float_list = 2; FloatList.value = 1 (packed)


# Pre-encoded map-entry keys: field 1 of the entry is the feature name.
_KEYS = {name: _field(1, name.encode()) for name in schema.FEATURE_NAMES + (schema.WORD_STARTS,)}


def _entry(name: str, feature: bytes) -> bytes:
    return _field(1, _KEYS[name] + _field(2, feature))  # a Features.feature map entry


# Values encoded at a time: the work arrays of one chunk stay in the CPU's cache.
VARINT_CHUNK = 1 << 16


def _varints(values: np.ndarray) -> tuple:
    """Varint encodings of a flat array of non-negative ints, concatenated: (bytes, starts),
    ``starts[i]`` the byte offset of value ``i`` (and ``starts[-1]`` the total). Values below
    2**28 (any vocabulary) take at most 4 bytes."""
    flat = np.asarray(values)
    if len(flat) and (int(flat.max()) >= 1 << 28 or int(flat.min()) < 0):
        raise ValueError("id out of range for this encoder (negative or >= 2**28)")
    flat = flat.astype(np.uint32, copy=False)
    parts, sizes = [], []
    for i in range(0, len(flat), VARINT_CHUNK):
        data, size = _varint_chunk(flat[i:i + VARINT_CHUNK])
        parts.append(data)
        sizes.append(size)
    starts = np.zeros(len(flat) + 1, dtype=np.int64)
    if len(flat):
        np.cumsum(np.concatenate(sizes), out=starts[1:])
    return b"".join(parts), starts


def _varint_chunk(v: np.ndarray) -> tuple[bytes, np.ndarray]:
    size = np.ones(len(v), dtype=np.uint8)
    for bits in (7, 14, 21):
        size += v >= 1 << bits
    ends = np.cumsum(size, dtype=np.int64)
    starts = ends - size
    out = np.empty(int(ends[-1]), dtype=np.uint8)
    # Byte j of a value: its 7-bit group j, with the continuation bit unless it is the last.
    for j in range(4):
        has = np.flatnonzero(size > j) if j else slice(None)
        group = ((v[has] >> (7 * j)) & 0x7F).astype(np.uint8)
        out[starts[has] + j] = group | ((size[has] > j + 1).view(np.uint8) << 7)
        if j and not len(has):
            break
    return out.tobytes(), size


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


class _ExampleHead(dict):
    """The bytes of an Example before its body (``Example.features = 1``), per body length."""

    def __missing__(self, length: int) -> bytes:
        self[length] = head = _field(1, b"\0" * length)[:-length]
        return head


class _FrameHead(dict):
    """A TFRecord record's first 12 bytes (length, masked CRC of the length), per length."""

    def __missing__(self, length: int) -> bytes:
        self[length] = head = frame_record(b"\0" * length)[:HEADER.size]
        return head


class _Pool:
    """Byte strings laid end to end in one array; a record is gathered from pieces of it."""

    def __init__(self):
        self._parts: list[bytes] = []
        self._size = 0
        self._at: dict[bytes, int] = {}

    def add(self, data: bytes, *, shared: bool = True) -> int:
        """The offset of ``data`` in the pool (a small string already there is reused)."""
        at = self._at.get(data) if shared else None
        if at is None:
            at, self._size = self._size, self._size + len(data)
            self._parts.append(data)
            if shared:
                self._at[data] = at
        return at

    def lookup(self, table: dict, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(offset, length) per element of ``keys`` of the string ``table[key]``."""
        unique, inverse = np.unique(keys, return_inverse=True)
        blobs = [table[int(k)] for k in unique.tolist()]
        offsets = np.array([self.add(b) for b in blobs], dtype=np.int64)
        lengths = np.array([len(b) for b in blobs], dtype=np.int64)
        return offsets[inverse], lengths[inverse]

    def array(self) -> np.ndarray:
        return np.frombuffer(b"".join(self._parts), dtype=np.uint8)


class _Records:
    """Rows as pieces of a pool: ``add`` appends each row's next piece (offset, length; a
    scalar is the same for every row); ``encode`` gathers them, Example heads and, framed,
    TFRecord's length, CRCs of both."""

    def __init__(self, rows: int):
        self.pool, self.rows = _Pool(), rows
        self._offsets: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []

    def add(self, offset, length) -> None:
        self._offsets.append(np.broadcast_to(np.asarray(offset, dtype=np.int64), (self.rows,)))
        self._lengths.append(np.broadcast_to(np.asarray(length, dtype=np.int64), (self.rows,)))

    def add_string(self, data: bytes) -> None:
        self.add(self.pool.add(data), len(data))

    def encode(self, *, framed: bool) -> tuple[bytes, np.ndarray, np.ndarray]:
        """(all rows' bytes end to end, each row's start, each Example's length)."""
        body = np.sum(self._lengths, axis=0)
        pieces = [self.pool.lookup(_ExampleHead(), body)]
        record = body + pieces[0][1]
        if framed:
            pieces.insert(0, self.pool.lookup(_FrameHead(), record))
        pieces += zip(self._offsets, self._lengths)
        if framed:  # the data CRC's place: 4 zero bytes, filled in after the gather
            pieces.append((np.full(self.rows, self.pool.add(b"\0" * CRC.size)),
                           np.full(self.rows, CRC.size)))
        offsets = np.stack([o for o, _ in pieces], axis=1)
        lengths = np.stack([n for _, n in pieces], axis=1)
        pool = self.pool.array()
        row_bytes = lengths.sum(axis=1)
        starts = np.zeros(self.rows + 1, dtype=np.int64)
        np.cumsum(row_bytes, out=starts[1:])
        chunks = []
        for first in range(0, self.rows, ROWS_PER_GATHER):
            last = min(first + ROWS_PER_GATHER, self.rows)
            out = _gather(pool, offsets[first:last].ravel(), lengths[first:last].ravel())
            if framed:
                _fill_crcs(out, starts[first:last + 1] - starts[first], record[first:last])
            chunks.append(out.tobytes())
        return b"".join(chunks), starts, record


ROWS_PER_GATHER = 2048


def _gather(pool: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The pieces ``pool[offsets[i]:offsets[i] + lengths[i]]`` end to end."""
    out_starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=out_starts[1:])
    total = int(out_starts[-1] + lengths[-1]) if len(lengths) else 0
    return pool[np.repeat(offsets - out_starts, lengths) + np.arange(total, dtype=np.int64)]


def _fill_crcs(out: np.ndarray, starts: np.ndarray, record: np.ndarray) -> None:
    """Write each framed record's data CRC into its last 4 bytes (``starts``: the records'
    starts in ``out`` and its end)."""
    data = out.tobytes()
    begin = (starts[:-1] + HEADER.size).tolist()
    crcs = np.array([masked_crc32c(data[b:b + n]) for b, n in zip(begin, record.tolist())],
                    dtype="<u4")
    at = starts[1:] - CRC.size
    out[at[:, None] + np.arange(CRC.size)] = crcs.view(np.uint8).reshape(-1, CRC.size)


def _check(batch: InstanceBatch, seq: int, pred: int | None) -> None:
    if len(batch) and (batch.lengths.max() > seq
                       or (pred is not None and batch.num_pred.max() > pred)):
        limits = f"max_seq_length={seq}" + ("" if pred is None else
                                             f" / max_predictions_per_seq={pred}")
        raise ValueError(f"an instance exceeds {limits}")


def _layout(batch: InstanceBatch, max_seq_length: int, max_predictions_per_seq: int, *,
            with_label: bool, dynamic: bool) -> _Records:
    """Every row's Example body as pieces: features in ``schema.FEATURES`` order with the
    values of ``Instance.padded_features`` (``next_sentence_labels`` only ``with_label``:
    data without sentence pairs has none); ``dynamic``: the features of
    ``schema.features(..., "dynamic")`` (``word_starts`` for masked_lm_*)."""
    seq, pred = max_seq_length, max_predictions_per_seq
    if dynamic:
        _check(batch, seq, None)
        if len(batch.word_starts) != len(batch.tokens):
            raise ValueError("dynamic data needs the word starts of every token")
    else:
        _check(batch, seq, pred)
    out = _Records(len(batch))
    pool = out.pool
    zeros = pool.add(b"\0" * max(seq, 4 * pred))
    ones = pool.add(b"\1" * seq)
    n, num_a = batch.lengths.astype(np.int64), batch.num_a.astype(np.int64)
    pad_s = seq - n

    def values(name: str, data: bytes, starts: np.ndarray, pad: np.ndarray) -> None:
        # a packed int64 feature: its entry's head, the row's varints, zero padding
        size = starts[1:] - starts[:-1]
        out.add(*pool.lookup(_Prefixes(name), size + pad))
        out.add(pool.add(data, shared=False) + starts[:-1], size)
        out.add(zeros, pad)

    ids, id_starts = _varints(batch.tokens)
    values("input_ids", ids, id_starts[batch.token_offsets()], pad_s)
    out.add_string(_Prefixes("input_mask")[seq])
    out.add(ones, n)
    out.add(zeros, pad_s)
    out.add_string(_Prefixes("segment_ids")[seq])
    out.add(zeros, num_a)
    out.add(ones, n - num_a)
    out.add(zeros, pad_s)
    if dynamic:
        token_at = batch.token_offsets()
        out.add_string(_Prefixes(schema.WORD_STARTS)[seq])
        out.add(pool.add(batch.word_starts.tobytes(), shared=False) + token_at[:-1], n)
        out.add(zeros, pad_s)
    else:
        m = batch.num_pred.astype(np.int64)
        pred_offsets = batch.prediction_offsets()
        positions, position_starts = _varints(batch.positions)
        values("masked_lm_positions", positions, position_starts[pred_offsets], pred - m)
        labels, label_starts = _varints(batch.labels)
        values("masked_lm_ids", labels, label_starts[pred_offsets], pred - m)
        out.add_string(_Prefixes("masked_lm_weights", floats=True)[4 * pred])
        out.add(pool.add(_FLOAT_ONE * pred), 4 * m)
        out.add(zeros, 4 * (pred - m))
    if with_label:
        entries = [_entry(schema.LABEL_FEATURE, _int64_feature(bytes((v,)))) for v in (0, 1)]
        label = batch.pair_label.astype(np.int64)
        at = np.array([pool.add(e) for e in entries], dtype=np.int64)
        out.add(at[label], np.array([len(e) for e in entries], dtype=np.int64)[label])
    return out


def serialize_batch(batch: InstanceBatch, max_seq_length: int,
                    max_predictions_per_seq: int, *, with_label: bool = True,
                    dynamic: bool = False) -> list[bytes]:
    """The serialized ``tf.train.Example`` of every row of ``batch``, padded to fixed lengths
    (tests parse the bytes with TensorFlow). ``dynamic``: the features of
    ``schema.features(..., "dynamic")`` (``word_starts`` for masked_lm_*)."""
    if not len(batch):
        return []
    data, starts, _ = _layout(batch, max_seq_length, max_predictions_per_seq,
                              with_label=with_label, dynamic=dynamic).encode(framed=False)
    at = starts.tolist()
    return [data[a:b] for a, b in zip(at, at[1:])]


def framed_batch(batch: InstanceBatch, max_seq_length: int, max_predictions_per_seq: int, *,
                 with_label: bool = True, dynamic: bool = False) -> bytes:
    """The rows of ``batch`` as TFRecord records end to end: the bytes of
    ``frame_record(r) for r in serialize_batch(...)``, made with numpy for the whole batch
    (the ids, labels and positions varint-encoded at once, every record gathered from
    pieces of one pool of byte strings) and one CRC call per record."""
    if not len(batch):
        return b""
    data, _, _ = _layout(batch, max_seq_length, max_predictions_per_seq,
                         with_label=with_label, dynamic=dynamic).encode(framed=True)
    return data


class TFRecordSink:
    """Framed records to ``sink``, with ``gzip`` as one gzip member (tf.data 'GZIP').

    zlib's gzip header carries no timestamp, so compressed output is deterministic too.
    """

    def __init__(self, sink: BinaryIO, *, gzip: bool = False):
        self._sink = sink
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None

    def write_framed(self, data: bytes) -> None:
        """Records already framed (``framed_batch``)."""
        self._sink.write(self._compressor.compress(data) if self._compressor else data)

    def close(self) -> None:
        if self._compressor:
            self._sink.write(self._compressor.flush())
            self._compressor = None
