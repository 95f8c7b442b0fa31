"""A shard of either format, read in chunks of records as columns.

Both readers yield :class:`Chunk`: every feature as flat values and a count per record (padded
to fixed length in TFRecord, unpadded lists in Parquet), and the structural problems found.
``pipeline.readers.rows`` turns chunks into checked, unpadded rows. A shard that cannot be
read on (lost TFRecord framing, a Parquet file without its footer, a damaged row group) raises
:class:`ShardError`, naming the record where reading stopped.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

from pipeline import schema
from pipeline.common.paths import is_remote
from pipeline.readers.example import Column, decode_examples
from pipeline.readers.output import HashingReader, Output, open_read
from pipeline.readers.tfrecord import FramingError, iter_frames

CHUNK_RECORDS = 4096


@dataclasses.dataclass
class Chunk:
    """Records ``first`` .. ``first + size - 1`` of a shard. ``problems``: (record, field,
    message) with the record's index in the shard."""
    fmt: str
    first: int
    size: int
    columns: dict[str, Column]
    problems: list[tuple[int, str, str]]

    @property
    def padded(self) -> bool:
        return self.fmt == "tfrecord"


class ShardError(Exception):
    """Reading stopped at ``record`` (None: before any record) of the shard."""

    def __init__(self, record: int | None, message: str):
        super().__init__(message)
        self.record, self.message = record, message


def read_shard(output: Output, fmt: str, relative: str, *, chunk_records: int = CHUNK_RECORDS,
               hasher: HashingReader | None = None,
               on_bytes: Callable[[int], None] | None = None) -> Iterator[Chunk]:
    """The chunks of one shard (``relative`` to the output). With ``hasher`` (a HashingReader
    over the shard's file) the TFRecord bytes are hashed as they are read."""
    if fmt == "tfrecord":
        return _tfrecord_chunks(output, relative, chunk_records, hasher, on_bytes)
    if fmt == "parquet":
        return _parquet_chunks(output, relative, chunk_records, on_bytes)
    raise ValueError(f"unknown shard format {fmt!r}")


def _tfrecord_chunks(output, relative, chunk_records, hasher, on_bytes) -> Iterator[Chunk]:
    dtypes = output.dtypes()
    stream = hasher or HashingReader(open_read(output.resolve(relative)))
    records, first, problems = [], 0, []
    seen = 0
    try:  # a generator: the finally runs when it is exhausted or closed
        frames = iter_frames(stream, compressed=output.compressed)
        index = 0
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except FramingError as e:
                raise ShardError(e.index if e.index >= 0 else index, e.message) from e
            index = frame.index + 1
            if frame.data is None:  # a bad data CRC: an empty slot keeps the numbering
                problems.append((frame.index, "", frame.problem))
            records.append(frame.data)
            if len(records) == chunk_records:
                yield _decoded(records, first, problems, dtypes)
                first, records, problems = first + len(records), [], []
            if on_bytes and stream.bytes - seen >= 1 << 20:
                on_bytes(stream.bytes - seen)
                seen = stream.bytes
        if records or not first:
            yield _decoded(records, first, problems, dtypes)
    finally:
        if on_bytes:
            on_bytes(stream.bytes - seen)
        if hasher is None:
            stream.close()


def _decoded(records: list[bytes | None], first: int, problems, dtypes) -> Chunk:
    """Decode a chunk; records lost to a CRC error are decoded as empty and then dropped."""
    lost = {i - first for i, _, _ in problems}
    batch = decode_examples([r if r is not None else b"" for r in records], dtypes)
    found = [(first + i, field, message) for i, field, message in batch.problems
             if i not in lost]
    return Chunk("tfrecord", first, len(records), batch.columns, problems + found)


def _parquet_chunks(output, relative, chunk_records, on_bytes) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = output.resolve(relative)
    source = open_read(path) if is_remote(path) else path
    try:
        try:
            parquet = pq.ParquetFile(source)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise ShardError(None, f"not a readable Parquet file: {e}") from e
        wanted = schema.arrow_schema(output.task, output.masking)
        found = parquet.schema_arrow
        missing = [f.name for f in wanted if f.name not in found.names]
        if missing:
            raise ShardError(None, f"columns missing: {', '.join(missing)} (the file has "
                                   f"{', '.join(found.names)})")
        schema_problems = [
            (0, f.name, f"column type {found.field(f.name).type}, the schema says {f.type}")
            for f in wanted if found.field(f.name).type != f.type]
        schema_problems += [(0, name, "column not in the schema") for name in found.names
                            if name not in wanted.names]
        first = 0
        for group in range(parquet.num_row_groups):
            try:
                table = parquet.read_row_group(group, columns=wanted.names)
            except (pa.ArrowException, OSError, ValueError) as e:
                raise ShardError(first, f"row group {group} (from record {first}) cannot be "
                                        f"read: {e}") from e
            if on_bytes:
                on_bytes(parquet.metadata.row_group(group).total_byte_size)
            for start in range(0, table.num_rows, chunk_records):
                part = table.slice(start, chunk_records)
                columns, problems = _arrow_columns(part, first)
                yield Chunk("parquet", first, part.num_rows, columns,
                            schema_problems + problems)
                schema_problems = []
                first += part.num_rows
        if not first:
            yield Chunk("parquet", 0, 0, {f.name: Column(np.zeros(0), np.zeros(0, np.int64))
                                          for f in wanted}, schema_problems)
    finally:
        if source is not path:
            source.close()


def _arrow_columns(table, first: int) -> tuple[dict[str, Column], list[tuple[int, str, str]]]:
    """Arrow list columns (and the scalar label) → flat values and counts per record."""
    import pyarrow.compute as pc

    columns, problems = {}, []
    for name in table.column_names:
        array = table.column(name).combine_chunks()
        null = array.is_null().to_numpy(zero_copy_only=False)
        nulls = np.flatnonzero(null)
        problems.extend((first + int(r), name, "null") for r in nulls)
        if hasattr(array, "flatten"):  # a list column
            counts = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
            values = pc.list_flatten(array).to_numpy(zero_copy_only=False)
        else:
            counts = (~null).astype(np.int64)
            values = array.drop_null().to_numpy(zero_copy_only=False)
        columns[name] = Column(values, counts.astype(np.int64))
    return columns, problems
