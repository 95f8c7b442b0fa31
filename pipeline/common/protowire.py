"""The little of protocol buffers' wire format the project encodes by hand (the shards'
``tf.train.Example`` records, the trainers' TensorBoard events): no protobuf or TensorFlow
import, and bytes that are the same everywhere.

A field is a tag (field number << 3 | wire type, as a varint) then its value: a varint, 8 or 4
little-endian bytes, or a length-delimited payload (strings, bytes, nested messages, packed
repeated numbers).
"""
from __future__ import annotations

WIRE_VARINT, WIRE_I64, WIRE_LEN, WIRE_I32 = 0, 1, 2, 5


def varint(value: int) -> bytes:
    """Base-128 varint; a negative int64 as its two's complement (ten bytes), as protobuf
    encodes int64 fields."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    """A field's key."""
    return varint(number << 3 | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field ``number`` holding ``payload`` (wire type 2)."""
    return tag(number, WIRE_LEN) + varint(len(payload)) + payload
