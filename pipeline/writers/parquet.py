"""Parquet shards: the same fields as the TFRecords, unpadded, one row per instance.

Columns are built as Arrow list arrays from flat values and offsets (no per-row dicts), and
written in row groups of ``row_group_size`` so readers can stream a shard group by group.
"""
from __future__ import annotations

import itertools
from typing import BinaryIO, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema

ROW_GROUP_SIZE = 8192


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _list_array(offsets: np.ndarray, flat: np.ndarray, value_type: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=value_type))


def _flat(rows, count: int, dtype) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype, count=count)


def instances_to_table(instances: Sequence[schema.Instance]) -> pa.Table:
    """Columns from flat value arrays and offsets: no per-row Python lists are built."""
    arrow = schema.arrow_schema()
    types = {f.name: f.type for f in arrow}
    n = np.fromiter((len(i.input_ids) for i in instances), dtype=np.int32,
                    count=len(instances))
    m = np.fromiter((len(i.masked_lm_positions) for i in instances), dtype=np.int32,
                    count=len(instances))
    num_a = np.fromiter((i.num_a for i in instances), dtype=np.int32, count=len(instances))
    seq_off, pred_off = _offsets(n), _offsets(m)
    total_n, total_m = int(seq_off[-1]), int(pred_off[-1])
    # Position of every token inside its row; segment 1 from num_a on.
    in_row = np.arange(total_n, dtype=np.int32) - np.repeat(seq_off[:-1], n)
    segment = (in_row >= np.repeat(num_a, n)).astype(np.int8)
    columns = {
        "input_ids": (seq_off, _flat((i.input_ids for i in instances), total_n, np.int32)),
        "input_mask": (seq_off, np.ones(total_n, dtype=np.int8)),
        "segment_ids": (seq_off, segment),
        "masked_lm_positions": (pred_off, _flat((i.masked_lm_positions for i in instances),
                                                total_m, np.int32)),
        "masked_lm_ids": (pred_off, _flat((i.masked_lm_ids for i in instances), total_m,
                                          np.int32)),
        "masked_lm_weights": (pred_off, np.ones(total_m, dtype=np.float32)),
    }
    arrays = [_list_array(*columns[name], types[name].value_type) for name in columns]
    arrays.append(pa.array(np.fromiter((i.next_sentence_label for i in instances),
                                       dtype=np.int64, count=len(instances))))
    return pa.Table.from_arrays(arrays, schema=arrow)


def write_parquet(sink: BinaryIO, instances: Sequence[schema.Instance], *,
                  compression: str = "snappy", row_group_size: int = ROW_GROUP_SIZE) -> None:
    table = instances_to_table(instances)
    pq.write_table(table, sink, compression=compression, row_group_size=row_group_size)
