"""Parquet shards: the same fields as the TFRecords, unpadded, one row per instance.

Columns are built as Arrow list arrays from flat values and offsets (no per-row dicts), and
written in row groups of ``row_group_size`` so readers can stream a shard group by group.
"""
from __future__ import annotations

from typing import BinaryIO, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema

ROW_GROUP_SIZE = 8192


def _list_array(rows: Sequence[Sequence[float]], value_type: pa.DataType) -> pa.Array:
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int32, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((v for r in rows for v in r), dtype=value_type.to_pandas_dtype(),
                       count=int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=value_type))


def instances_to_table(instances: Sequence[schema.Instance]) -> pa.Table:
    arrow = schema.arrow_schema()
    n = [len(i.input_ids) for i in instances]
    m = [len(i.masked_lm_positions) for i in instances]
    columns = {
        "input_ids": [i.input_ids for i in instances],
        "input_mask": [[1] * k for k in n],
        "segment_ids": [i.segment_ids for i in instances],
        "masked_lm_positions": [i.masked_lm_positions for i in instances],
        "masked_lm_ids": [i.masked_lm_ids for i in instances],
        "masked_lm_weights": [[1.0] * k for k in m],
    }
    arrays = [_list_array(columns[f.name], f.type.value_type) for f in arrow
              if f.name in columns]
    arrays.append(pa.array([i.next_sentence_label for i in instances], type=pa.int64()))
    return pa.Table.from_arrays(arrays, schema=arrow)


def write_parquet(sink: BinaryIO, instances: Sequence[schema.Instance], *,
                  compression: str = "snappy", row_group_size: int = ROW_GROUP_SIZE) -> None:
    table = instances_to_table(instances)
    pq.write_table(table, sink, compression=compression, row_group_size=row_group_size)
