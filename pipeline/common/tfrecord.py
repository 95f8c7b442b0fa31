"""TFRecord framing, defined once: the writers frame records with it, the readers check it
(both are checked against TensorFlow's own reader in the tests).

A record is a uint64 length (little-endian), the uint32 masked CRC32C of those 8 bytes, the
data, and the uint32 masked CRC32C of the data. TFRecord masks a CRC (rotated right by 15
bits, plus a constant) because a CRC computed over data that holds CRCs is poorly spread.
"""
from __future__ import annotations

import struct

import google_crc32c

LENGTH = struct.Struct("<Q")
CRC = struct.Struct("<I")
HEADER = struct.Struct("<QI")  # the length and its masked CRC: the first 12 bytes of a record


def masked_crc32c(data) -> int:
    """TFRecord's CRC of ``data`` (bytes-like): CRC32C rotated right by 15 bits plus a
    constant, modulo 2**32."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """``data`` framed as one TFRecord record."""
    length = LENGTH.pack(len(data))
    return length + CRC.pack(masked_crc32c(length)) + data + CRC.pack(masked_crc32c(data))
