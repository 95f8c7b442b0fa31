"""TFRecord framing read back without TensorFlow, every CRC checked.

Why not TensorFlow: importing it takes seconds and hundreds of MB, and ``tf.data`` stops at the
first bad record without saying which record of which file it was. The framing (uint64
length, masked CRC32C of those 8 bytes, the data, masked CRC32C of the data) is defined once,
in ``pipeline.common.tfrecord``, which the writers frame with; this reader is checked against
TensorFlow's reader in the tests. ``pipeline.readers.example`` decodes the records.

A bad length CRC or a file that ends inside a record loses the framing: nothing
after it can be located, so reading stops there. A bad data CRC spoils one record only.
"""
from __future__ import annotations

import dataclasses
import gzip
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from pipeline.common.tfrecord import CRC, HEADER, masked_crc32c


@dataclasses.dataclass
class Frame:
    """One record as framed in the file: ``data`` is None when its data CRC is wrong."""
    index: int
    offset: int  # byte offset of the record's header in the (uncompressed) stream
    data: bytes | None
    problem: str | None = None


class FramingError(Exception):
    """The framing is lost at record ``index`` (byte ``offset``): nothing further can be read."""

    def __init__(self, index: int, offset: int, message: str):
        super().__init__(message)
        self.index, self.offset, self.message = index, offset, message


def iter_frames(stream: BinaryIO, *, compressed: bool = False,
                block_bytes: int = 8 << 20) -> Iterator[Frame]:
    """Every record of a TFRecord stream, CRCs checked; raises :class:`FramingError` where the
    framing breaks. ``compressed``: the stream is gzip (tf.data's "GZIP")."""
    source = gzip.GzipFile(fileobj=stream, mode="rb") if compressed else stream
    buffer, at, offset, index = b"", 0, 0, 0
    while True:
        # Every complete record in the buffer, then read on.
        size = len(buffer)
        while size - at >= HEADER.size:
            length, length_crc = HEADER.unpack_from(buffer, at)
            if masked_crc32c(buffer[at:at + 8]) != length_crc:
                raise FramingError(index, offset, f"record {index}: length CRC mismatch (its "
                                                  f"length field or that CRC is corrupt)")
            start = at + HEADER.size
            stop = start + length
            if stop + CRC.size > size:
                break
            data = buffer[start:stop]
            if masked_crc32c(data) == CRC.unpack_from(buffer, stop)[0]:
                yield Frame(index, offset, data)
            else:
                yield Frame(index, offset, None, "data CRC mismatch (the record's bytes are "
                                                 "corrupt)")
            offset += stop + CRC.size - at
            at = stop + CRC.size
            index += 1
        rest = buffer[at:]
        need = HEADER.size if len(rest) < HEADER.size else \
            HEADER.size + HEADER.unpack_from(rest)[0] + CRC.size
        parts, have = [rest], len(rest)
        while have < max(need, block_bytes // 2):
            more = _read(source, max(block_bytes, need - have))
            if not more:
                break
            parts.append(more)
            have += len(more)
        if have == len(rest):  # the end of the stream
            if not rest:
                return
            if len(rest) < HEADER.size:
                raise FramingError(index, offset, f"the file ends inside the header of record "
                                                  f"{index} ({len(rest)} of 12 bytes)")
            raise FramingError(index, offset, f"the file ends inside record {index}: it needs "
                                              f"{need} bytes, {len(rest)} are left")
        buffer, at = b"".join(parts), 0


def _read(source: BinaryIO, size: int) -> bytes:
    try:
        return source.read(size)
    except (OSError, EOFError, zlib.error) as e:  # a damaged or truncated gzip stream
        raise FramingError(-1, -1, f"gzip stream unreadable: {e}") from e
