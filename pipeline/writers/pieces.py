"""Piece files: one input range's instances, parked on disk until the shards are written.

Instances never cross a Beam shuffle (on DirectRunner a shuffle holds everything in memory): a
range writes its instances here, and only this small index travels on. The rows of a piece are
already in random order; row ``i`` belongs to class ``i % num_shards``, and each class is stored
contiguously in blocks of at most ``BLOCK_ROWS`` rows, so a shard reads exactly its class of
every piece, one block at a time. The format is private to one job (written and read by the same
code): each block is an ``InstanceBatch`` pickled with the highest protocol.
"""
from __future__ import annotations

import io
import pickle
from typing import BinaryIO, Iterator, List, Tuple

import numpy as np

from pipeline.core.instance import InstanceBatch

BLOCK_ROWS = 256
# (byte offset, byte length, rows) of one block.
Block = Tuple[int, int, int]


def encode_piece(batch: InstanceBatch, num_shards: int,
                 block_rows: int = BLOCK_ROWS) -> Tuple[bytes, List[List[Block]]]:
    """The piece's bytes and, per class, its blocks."""
    sink = io.BytesIO()
    classes: List[List[Block]] = []
    for c in range(num_shards):
        rows = np.arange(c, len(batch), num_shards)
        blocks: List[Block] = []
        for start in range(0, len(rows), block_rows):
            part = batch.take(rows[start:start + block_rows])
            data = pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)
            blocks.append((sink.tell(), len(data), len(part)))
            sink.write(data)
        classes.append(blocks)
    return sink.getvalue(), classes


def read_blocks(stream: BinaryIO, blocks: List[Block]) -> Iterator[InstanceBatch]:
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
