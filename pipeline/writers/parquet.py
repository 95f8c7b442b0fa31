"""Parquet shards: the same fields as the TFRecords, unpadded, one row per instance.

Columns are built as Arrow list arrays from an ``InstanceBatch``'s flat columns, and
written in row groups of ``row_group_size`` so readers can stream a shard group by group.
"""
from __future__ import annotations

from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.core.instance import InstanceBatch

ROW_GROUP_SIZE = 8192


def _list_array(offsets: np.ndarray, flat: np.ndarray, value_type: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=value_type))


def batch_to_table(batch: InstanceBatch, next_sentence: str = "nsp",
                   masking: str = "static") -> pa.Table:
    """The batch's columns as Arrow list arrays (offsets + flat values: no per-row objects);
    no label column for ``next_sentence="none"``; ``word_starts`` for masked_lm_* with
    ``masking="dynamic"``."""
    arrow = schema.arrow_schema(next_sentence, masking)
    types = {f.name: f.type for f in arrow}
    n = batch.lengths
    # Arrow's list offsets are int32.
    seq_off = batch.token_offsets().astype(np.int32)
    pred_off = batch.prediction_offsets().astype(np.int32)
    total_n, total_m = int(seq_off[-1]), int(pred_off[-1])
    # Position of every token inside its row; segment 1 from num_a on.
    in_row = np.arange(total_n, dtype=np.int32) - np.repeat(seq_off[:-1], n)
    segment = (in_row >= np.repeat(batch.num_a, n)).astype(np.int8)
    columns = {
        "input_ids": (seq_off, batch.tokens.astype(np.int32)),
        "input_mask": (seq_off, np.ones(total_n, dtype=np.int8)),
        "segment_ids": (seq_off, segment),
    }
    if masking == "dynamic":
        if len(batch.word_starts) != total_n:
            raise ValueError("dynamic data needs the word starts of every token")
        columns[schema.WORD_STARTS] = (seq_off, batch.word_starts.astype(np.int8))
    else:
        columns.update({
            "masked_lm_positions": (pred_off, batch.positions.astype(np.int32)),
            "masked_lm_ids": (pred_off, batch.labels.astype(np.int32)),
            "masked_lm_weights": (pred_off, np.ones(total_m, dtype=np.float32)),
        })
    arrays = [_list_array(*columns[name], types[name].value_type) for name in columns]
    if next_sentence != "none":
        arrays.append(pa.array(batch.pair_label.astype(np.int64)))
    return pa.Table.from_arrays(arrays, schema=arrow)


class ParquetSink:
    """A Parquet shard written chunk by chunk: each ``write`` adds row groups."""

    def __init__(self, sink: BinaryIO, *, compression: str | None = "snappy",
                 row_group_size: int = ROW_GROUP_SIZE, next_sentence: str = "nsp",
                 masking: str = "static"):
        self._writer = pq.ParquetWriter(sink, schema.arrow_schema(next_sentence, masking),
                                        compression=compression)
        self._rows, self._task, self._masking = row_group_size, next_sentence, masking

    def write(self, batch: InstanceBatch | None) -> None:
        if batch is not None and len(batch):
            self._writer.write_table(batch_to_table(batch, self._task, self._masking),
                                     row_group_size=self._rows)

    def close(self) -> None:
        self._writer.close()
