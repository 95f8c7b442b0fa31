"""``tf.train.Example`` records decoded from the protobuf wire format into numpy columns.

Records laid out as every encoder writes them (the pipeline's writers, TensorFlow's own) are
walked for a whole chunk of records at once with numpy; any other layout by a general walker,
one record at a time. The values (hundreds of varints per record) are always decoded for the
whole chunk at once. Checked against TensorFlow's parser in the tests.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

# Wire types of protobuf.
_VARINT, _LEN, _FIXED32 = 0, 2, 5
# Feature's oneof: field number → list kind.
_KINDS = {1: "bytes", 2: "float", 3: "int64"}
_PAST_END = "a field runs past the end of its message"


@dataclasses.dataclass
class Column:
    """One feature of a batch of records: ``values`` flat, ``counts[i]`` of them in record i."""
    values: np.ndarray
    counts: np.ndarray


@dataclasses.dataclass
class DecodedBatch:
    """Examples as columns; ``problems`` lists (record in batch, feature, message) for records
    whose structure is broken (their columns hold nothing usable)."""
    size: int
    columns: dict[str, Column]
    problems: list[tuple[int, str, str]]


def decode_examples(records: Sequence[bytes], dtypes: dict[str, str]) -> DecodedBatch:
    """Decode serialized ``tf.train.Example`` records. ``dtypes``: the expected features,
    name → "int64" | "float32"; an absent, unexpected or wrongly typed feature is a problem.

    Records laid out as every encoder writes them (each feature once, values packed) are
    walked for all records at once (:func:`_walk_regular`); any other record, valid or not,
    by the general walker, one at a time."""
    buf = b"".join(records)
    data = np.frombuffer(buf, dtype=np.uint8)
    lengths = np.array([len(r) for r in records], dtype=np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    expected = {name.encode(): (name, "float" if dtype == "float32" else "int64")
                for name, dtype in dtypes.items()}
    regular, fast = _walk_regular(data, starts, ends, expected)
    spans: dict[str, tuple[list, list, list]] = {name: ([], [], []) for name in dtypes}
    problems: list[tuple[int, str, str]] = []
    for i in np.flatnonzero(~regular).tolist():
        _walk_one(buf, i, int(starts[i]), int(ends[i]), expected, dtypes, spans, problems)
    data_columns = {}
    for name, dtype in dtypes.items():
        rows, s, e = (np.asarray(c, dtype=np.int64) for c in spans[name])
        f_rows, f_s, f_e = fast[name]
        rows, s, e = (np.concatenate(pair) for pair in ((f_rows, rows), (f_s, s), (f_e, e)))
        order = np.argsort(rows, kind="stable")  # values in record order
        bad_rows, column = _decode_spans(data, (rows[order], s[order], e[order]), len(records),
                                         dtype == "float32")
        problems.extend((int(r), name, "malformed packed values") for r in bad_rows)
        data_columns[name] = column
    bad = {r for r, _, _ in problems}
    for column in data_columns.values():  # a broken record contributes nothing anywhere
        _drop_rows(column, bad)
    return DecodedBatch(len(records), data_columns, problems)


def _walk_one(buf: bytes, i: int, start: int, end: int, expected, dtypes, spans,
              problems) -> None:
    """The general walker on record ``i``: its spans into ``spans``, its problems."""
    try:
        found = _walk_example(buf, start, end)
    except (ValueError, IndexError) as e:
        problems.append((i, "(example)", str(e) if isinstance(e, ValueError)
                         else "the record ends inside a field"))
        return
    for key, (kind, pieces) in found.items():
        name, want = expected.get(key, (None, None))
        if name is None:
            problems.append((i, key.decode("utf-8", "replace"), "feature not in the schema"))
        elif kind != want:
            problems.append((i, name, f"{kind} list, the schema says {dtypes[name]}"))
        else:
            rows, starts, stops = spans[name]
            for s, e in pieces:
                rows.append(i)
                starts.append(s)
                stops.append(e)
    problems.extend((i, name, "feature missing") for key, (name, _) in expected.items()
                    if key not in found)


def _walk_regular(data: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                  expected: dict[bytes, tuple[str, str]]):
    """Walk every record at once, assuming the regular layout: Example = one Features field;
    exactly the expected features, once each, in any order; each feature's list one packed
    field. Returns (regular: which records had it, {name: (rows, starts, ends)} of their
    values); the others are left to the general walker."""
    n = len(starts)
    ok = ends - starts > 2
    last = max(len(data) - 1, 0)
    names = list(expected)
    tags = np.array([0x12 if expected[k][1] == "float" else 0x1A for k in names])
    pos = starts.copy()

    def field(tag: int | None):  # tag byte at pos, a length: (start, end) of the payload
        nonlocal ok
        if tag is not None:
            ok &= data[np.minimum(pos, last)] == tag
        size, begin = _lengths_at(data, pos + 1, ok)
        return begin, begin + size

    outer, features_end = field(0x0A)
    ok &= features_end == ends
    pos = outer
    value_start = np.full((len(names), n), -1, dtype=np.int64)
    value_end = np.full((len(names), n), -1, dtype=np.int64)
    for _ in names:
        ok &= pos < features_end
        entry, entry_end = field(0x0A)
        pos = entry
        key, key_end = field(0x0A)
        pos = key_end
        feature, feature_end = field(0x12)
        ok &= feature_end == entry_end
        which = _match_names(data, key, key_end - key, names, ok)
        ok &= which >= 0
        kind_tag = tags[np.maximum(which, 0)]
        pos = feature
        values_list, list_end = field(None)  # its tag depends on the name: checked here
        ok &= (data[np.minimum(feature, last)] == kind_tag) & (list_end == entry_end)
        pos = values_list
        packed, packed_end = field(0x0A)
        ok &= packed_end == entry_end
        rows = np.flatnonzero(ok)
        slot = which[rows]
        ok[rows[value_start[slot, rows] >= 0]] = False  # a feature twice
        value_start[slot, rows], value_end[slot, rows] = packed[rows], packed_end[rows]
        pos = entry_end
    ok &= pos == features_end
    fast = {}
    for j, key in enumerate(names):
        rows = np.flatnonzero(ok)
        fast[expected[key][0]] = (rows, value_start[j, rows], value_end[j, rows])
    return ok, fast


def _lengths_at(data: np.ndarray, pos: np.ndarray, ok: np.ndarray):
    """The varints (at most 5 bytes) at each ``pos``: (values, positions after them);
    ``ok`` is cleared where there is none."""
    last = max(len(data) - 1, 0)
    raw = data[np.minimum(pos[:, None] + np.arange(5), last)].astype(np.int64)
    final = raw < 0x80
    ok &= final.any(axis=1) & (pos + 1 <= len(data))
    size = np.argmax(final, axis=1) + 1
    used = np.arange(5) < size[:, None]
    values = (((raw & 0x7F) << (7 * np.arange(5))) * used).sum(axis=1)
    return values, pos + size


def _match_names(data: np.ndarray, key: np.ndarray, size: np.ndarray, names: list[bytes],
                 ok: np.ndarray) -> np.ndarray:
    """Index in ``names`` of the key at (key, size) of each record, -1 for none."""
    which = np.full(len(key), -1, dtype=np.int64)
    last = max(len(data) - 1, 0)
    for j, name in enumerate(names):
        same = ok & (size == len(name))
        rows = np.flatnonzero(same)
        if len(rows):
            got = data[np.minimum(key[rows, None] + np.arange(len(name)), last)]
            hit = (got == np.frombuffer(name, dtype=np.uint8)).all(axis=1)
            which[rows[hit]] = j
    return which


def _length(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (IndexError past the buffer's end)."""
    result = shift = 0
    while shift < 64:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise ValueError("malformed varint")


def _walk_example(buf: bytes, pos: int, end: int) -> dict[bytes, tuple[str, list]]:
    """name → (list kind, byte spans of its values) of one Example in ``buf[pos:end]``, any
    valid layout. Packed and unpacked values alike are spans of back-to-back varints (int64)
    or 4-byte floats. Field tags are one byte: field numbers below 16, as encoders write
    them."""
    found: dict[bytes, tuple[str, list]] = {}
    while pos < end:
        tag, pos, features_end = _field(buf, pos, end)
        _expect(tag, 0x0A, "Example")  # Example: features = 1
        while pos < features_end:
            tag, pos, entry_end = _field(buf, pos, features_end)
            _expect(tag, 0x0A, "Features")  # Features: repeated map entry feature = 1
            name, kind, pieces = None, "empty", []
            while pos < entry_end:  # map entry: key = 1, value = 2
                tag, pos, stop = _field(buf, pos, entry_end)
                if tag == 0x0A:
                    name = buf[pos:stop]
                else:
                    _expect(tag, 0x12, "a feature map entry")
                    kind = _walk_feature(buf, pos, stop, pieces)
                pos = stop
            if name is None:
                raise ValueError("a feature without a name")
            found[name] = (kind, pieces)
    return found


def _field(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, start, end) of the length-delimited field at ``pos``."""
    tag = buf[pos]
    if tag & 7 != _LEN:
        raise ValueError(f"unexpected tag {tag:#x}")
    size, start = _length(buf, pos + 1)
    if start + size > end:
        raise ValueError(_PAST_END)
    return tag, start, start + size


def _expect(tag: int, wanted: int, where: str) -> None:
    if tag != wanted:
        raise ValueError(f"unexpected tag {tag:#x} in {where}")


def _walk_feature(buf: bytes, pos: int, end: int, pieces: list) -> str:
    """Append the value spans of one Feature to ``pieces``; returns its list kind."""
    kind = "empty"
    while pos < end:  # Feature: oneof bytes_list = 1, float_list = 2, int64_list = 3
        tag, pos, list_end = _field(buf, pos, end)
        kind = _KINDS.get(tag >> 3)
        if kind is None:
            raise ValueError(f"unexpected tag {tag:#x} in Feature")
        while pos < list_end:  # the list: value = 1, packed, or one value per field
            tag = buf[pos]
            if tag == 0x0A:
                _, pos, stop = _field(buf, pos, list_end)
            elif tag == 0x08 and kind != "float":
                pos, stop = pos + 1, _length(buf, pos + 1)[1]
            elif tag == 0x0D and kind == "float":
                pos, stop = pos + 1, pos + 5
            else:
                raise ValueError(f"unexpected tag {tag:#x} in a {kind} list")
            if stop > list_end:
                raise ValueError(_PAST_END)
            pieces.append((pos, stop))
            pos = stop
    return kind


def _decode_spans(data: np.ndarray, spans: tuple[list, list, list], size: int,
                  floats: bool) -> tuple[np.ndarray, Column]:
    """(records whose spans are malformed, the column) from spans as (records, starts, ends)."""
    if not len(spans[0]):
        empty = np.zeros(0, dtype=np.float32 if floats else np.int64)
        return np.zeros(0, dtype=np.int64), Column(empty, np.zeros(size, dtype=np.int64))
    rows, s, e = (np.asarray(c, dtype=np.int64) for c in spans)
    lengths = e - s
    if floats:
        ok = lengths % 4 == 0
    else:  # every span must end on a varint's last byte
        ok = (lengths == 0) | (data[np.maximum(e - 1, 0)] < 0x80)
    bad_rows = np.unique(rows[~ok])
    rows, s, lengths = rows[ok], s[ok], lengths[ok]
    index = np.repeat(s - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) \
        + np.arange(int(lengths.sum()), dtype=np.int64)
    raw = data[index]
    if floats:
        values = raw.view("<f4").astype(np.float32)
        per_span = lengths // 4
    else:
        values, ends = _varints(raw)
        # values per span: the varints ending inside it
        per_span = np.diff(np.searchsorted(ends, np.concatenate([[0], np.cumsum(lengths)]),
                                           side="right"))
    # Spans come in record order, so the values do too.
    counts = np.bincount(rows, weights=per_span, minlength=size).astype(np.int64)
    return bad_rows, Column(values, counts)


def _varints(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Back-to-back varints → (int64 values, index of each value's last byte + 1). Values are
    assembled 7 bits at a time over the few byte places their sizes need."""
    last = raw < 0x80
    if last.all():  # one byte each (masks, segments, small ids)
        return raw.astype(np.int64), np.arange(1, len(raw) + 1, dtype=np.int64)
    ends = np.flatnonzero(last) + 1
    starts = np.concatenate([[0], ends[:-1]])
    sizes = ends - starts
    values = (raw[starts] & 0x7F).astype(np.uint64)
    for place in range(1, min(int(sizes.max()), 10)):
        longer = np.flatnonzero(sizes > place)
        values[longer] |= (raw[starts[longer] + place] & 0x7F).astype(np.uint64) \
            << np.uint64(7 * place)
    return values.view(np.int64), ends


def _drop_rows(column: Column, rows) -> None:
    if not rows:
        return
    offsets = np.concatenate([[0], np.cumsum(column.counts)])
    keep = np.ones(len(column.values), dtype=bool)
    for r in rows:
        keep[offsets[r]:offsets[r + 1]] = False
        column.counts[r] = 0
    column.values = column.values[keep]
