"""Piece files: one input range's instances, parked on disk until the shards are written. The
format in one place: the name (:func:`piece_name`, :func:`parse_piece_name`, ``NAME``), the
bytes (:func:`encode_piece`) and reading them back (:func:`read_blocks`).

Instances never cross a Beam shuffle (on DirectRunner a shuffle holds everything in memory): a
range writes its instances here, and only this small index travels on. The rows of a piece are
already in random order; row ``i`` belongs to class ``i % num_shards`` (with length bins: the
``i``-th row of its bin, in its bin's classes), and each class is stored
contiguously in blocks of at most ``BLOCK_ROWS`` rows, so a shard reads exactly its class of
every piece, one block at a time. The format is private to one job (written and read by the same
code): each block is an ``InstanceBatch`` pickled with the highest protocol.

Name: ``piece-<id, 16 hex digits>-<input bytes>b-<instances>r.bin``. The id is the piece's
stable integer id (:func:`piece_id`); the counts let the launcher follow a running job by
listing the pieces, and the output directory's rules recognise a piece by this name alone
(``output_dir``: a file is deleted only if its name is the pipeline's).
"""
from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from pipeline.core.bins import bin_of
from pipeline.core.instance import InstanceBatch
from pipeline.core.seeds import stable_hash64

BLOCK_ROWS = 256
# (byte offset, byte length, rows) of one block.
Block = tuple[int, int, int]
# A piece's file name, as a regular expression (input bytes and instances in groups).
NAME = r"piece-[0-9a-f]{16}-(?P<bytes>\d+)b-(?P<rows>\d+)r\.bin"
_NAME = re.compile(NAME)
# A range's duplicate sketch (--dedup: core.curation.encode_sketch), beside the pieces.
SKETCH_NAME = r"sketch-[0-9a-f]{16}-\d+d\.bin"


def sketch_name(key: tuple[str, int], rows: int) -> str:
    """The file name of the duplicate sketch of range ``key`` with ``rows`` documents."""
    return f"sketch-{piece_id(key):016x}-{rows}d.bin"


def is_sketch(name: str) -> bool:
    """Whether ``name`` (or a path) is a sketch file's (not its temporary name)."""
    return re.fullmatch(SKETCH_NAME, name.rsplit("/", 1)[-1]) is not None


def piece_id(key: tuple[str, int]) -> int:
    """A piece's stable integer id, from its range's key (source name, start byte): Beam
    shuffles are keyed by it (an int hashes the same in every process, which a Dask shuffle
    needs)."""
    return stable_hash64(*key)


def piece_name(key: tuple[str, int], size: int, rows: int) -> str:
    """The file name of the piece of range ``key``, which read ``size`` input bytes and made
    ``rows`` instances."""
    return f"piece-{piece_id(key):016x}-{size}b-{rows}r.bin"


def parse_piece_name(name: str) -> tuple[int, int] | None:
    """(input bytes, instances) of a piece's file name (or path); None for any other name,
    a piece's temporary name while it is written among them."""
    match = _NAME.fullmatch(name.rsplit("/", 1)[-1])
    return (int(match.group("bytes")), int(match.group("rows"))) if match else None


def encode_piece(batch: InstanceBatch, num_shards: int, block_rows: int = BLOCK_ROWS,
                 bounds: tuple[int, ...] = ()) -> tuple[bytes, list[list[list[Block]]]]:
    """The piece's bytes and, per length bin (one without ``bounds``) and class, its blocks.
    The rows of a bin keep their order; the ``j``-th of them is in class ``j % num_shards``."""
    sink = io.BytesIO()
    if bounds:
        of_row = bin_of(batch.lengths, bounds)
        bins = [np.flatnonzero(of_row == b) for b in range(len(bounds))]
    else:
        bins = [np.arange(len(batch))]
    classes: list[list[list[Block]]] = []
    for rows_of_bin in bins:
        per_class: list[list[Block]] = []
        for c in range(num_shards):
            rows = batch.take(rows_of_bin[c::num_shards])
            blocks: list[Block] = []
            for start in range(0, len(rows), block_rows):
                part = rows.slice(start, min(start + block_rows, len(rows)))
                data = pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)
                blocks.append((sink.tell(), len(data), len(part)))
                sink.write(data)
            per_class.append(blocks)
        classes.append(per_class)
    return sink.getvalue(), classes


def read_blocks(stream: BinaryIO, blocks: list[Block]) -> Iterator[InstanceBatch]:
    """The blocks of one class, in order, read one at a time from a seekable ``stream``."""
    for offset, length, rows in blocks:
        stream.seek(offset)
        data = stream.read(length)
        if len(data) != length:
            raise IOError(f"piece file truncated: wanted {length} bytes at {offset}")
        part = pickle.loads(data)
        if len(part) != rows:
            raise IOError(f"piece block holds {len(part)} rows, the index says {rows}")
        yield part
