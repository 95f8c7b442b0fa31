"""What the report counts in the shards themselves (stats.json has the corpus side).

One pass over the instances of one format, chunk by chunk, accumulating fixed-size arrays:
sequence, A and B lengths; labels; predictions per instance; sizes of masked groups (adjacent
masked positions); what the input holds at masked positions ([MASK], kept, random); and the
frequency of every vocabulary id in the original text (masked positions counted as their
targets). Dynamic data stores no masks: its instances are counted masked as the trainers mask
them in epoch 0 of a run with the trainers' default seed (``pipeline.core.masking``). Binned
output (``--length_bins``): every shard is read at its bin's lengths, and the instances and
real tokens of each bin are counted too.
"""
from __future__ import annotations

import dataclasses
import sys

import numpy as np

from pipeline import schema
from pipeline.core.masking import MaskingConfig, mask_dynamic
from pipeline.readers.output import Output
from pipeline.readers.rows import Rows, Spec, check_chunk
from pipeline.readers.shards import ShardError, read_shard
from pipeline.tools import progress


@dataclasses.dataclass
class Tally:
    fmt: str
    instances: int
    seq_lengths: np.ndarray  # count per length 0..max_seq_length
    a_lengths: np.ndarray  # tokens of A (without [CLS]/[SEP]), per length
    b_lengths: np.ndarray
    labels: np.ndarray  # count per label value 0, 1 (empty for "none")
    predictions: np.ndarray  # count per number of predictions 0..max_predictions_per_seq
    group_sizes: np.ndarray  # count per masked-group size (index = size)
    input_at_masked: dict[str, int]  # mask / kept / random
    token_counts: np.ndarray  # per vocabulary id, original text
    sampled: bool  # True when --max_instances cut the reading short
    invalid: int  # records that failed the checks (not counted above)
    unreadable: list[str]  # "path: why" for shards that could not be read to the end
    epoch: int | None = None  # dynamic data: the masks counted are this epoch's ...
    train_seed: int | None = None  # ... in a run with this --seed (None: static data)
    # Binned output: instances and real tokens ([CLS]/[SEP] included) counted per length bin
    # (manifest order); empty arrays when unbinned.
    bin_instances: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    bin_tokens: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


# Dynamic data's masks in the report: epoch 0 of a run with the trainers' default --seed.
DYNAMIC_EPOCH, DYNAMIC_SEED = 0, 12345


def tally(output: Output, *, fmt: str | None = None, max_instances: int | None = None,
          quiet: bool = False) -> Tally:
    """Count over the shards of ``fmt`` (default: Parquet if written, it reads faster). With
    ``max_instances``, about that many: the first records of every shard, an even sample
    since each shard is a uniform shuffle."""
    fmt = fmt or ("parquet" if "parquet" in output.formats else "tfrecord")
    spec = Spec.of(output)
    seq, pred, vocab = spec.max_seq_length, spec.max_predictions_per_seq, spec.vocab_size
    t = Tally(fmt=fmt, instances=0, seq_lengths=np.zeros(seq + 1, np.int64),
              a_lengths=np.zeros(seq + 1, np.int64), b_lengths=np.zeros(seq + 1, np.int64),
              labels=np.zeros(0 if spec.task == "none" else 2, np.int64),
              predictions=np.zeros(pred + 1, np.int64),
              group_sizes=np.zeros(pred + 1, np.int64),
              input_at_masked={"mask": 0, "kept": 0, "random": 0},
              token_counts=np.zeros(vocab, np.int64), sampled=False, invalid=0, unreadable=[],
              bin_instances=np.zeros(len(output.bins), np.int64),
              bin_tokens=np.zeros(len(output.bins), np.int64))
    config = None
    if spec.dynamic:
        m = output.manifest
        config = MaskingConfig.from_manifest(m["masking"], m["vocab_size"])
        t.epoch, t.train_seed = DYNAMIC_EPOCH, DYNAMIC_SEED
    entries = output.shards(fmt)
    offsets = output.index_offsets(fmt)
    per_shard = None if not max_instances else -(-max_instances // max(1, len(entries)))
    mask_id = output.vocab.index(schema.MASK) if schema.MASK in output.vocab else -1
    total = sum(output.files.get(e["path"], 0) for e in entries)
    meter = progress.Progress(total, emit=lambda line: print(f"report: {line}",
                                                             file=sys.stderr, flush=True))
    done = [0]

    def on_bytes(n: int) -> None:
        done[0] += n
        if not quiet:
            meter.update(done[0])

    for index, (entry, offset) in enumerate(zip(entries, offsets)):
        if entry["path"] not in output.files:
            t.unreadable.append(f"{entry['path']}: missing")
            continue
        length_bin = output.shard_bin(fmt, index)
        shard = spec.in_bin(length_bin)  # a binned output's shards: at their bin's lengths
        shard_config = config if config is None or not shard.binned else dataclasses.replace(
            config, max_predictions_per_seq=shard.max_predictions_per_seq)
        chunks = read_shard(output, fmt, entry["path"], on_bytes=on_bytes)
        try:
            for chunk in chunks:
                rows, problems = check_chunk(chunk, shard)
                t.invalid += len({p[0] for p in problems})
                if per_shard is not None and chunk.first + chunk.size > per_shard:
                    keep = rows.records < per_shard
                    rows = _subset(rows, keep)
                    t.sampled = True
                if config is not None:
                    rows = masked(rows, shard, shard_config, offset, epoch=t.epoch,
                                  seed=t.train_seed)
                _add(t, rows, mask_id)
                if length_bin is not None:
                    t.bin_instances[length_bin.index] += len(rows)
                    t.bin_tokens[length_bin.index] += int(rows.lengths.sum())
                if per_shard is not None and chunk.first + chunk.size >= per_shard:
                    break
        except ShardError as e:
            t.unreadable.append(f"{entry['path']}: {e.message}")
        except Exception as e:  # damage no check foresaw: counted as unreadable, not a crash
            t.unreadable.append(f"{entry['path']}: {type(e).__name__}: {e}")
        finally:
            chunks.close()
    return t


def masked(rows: Rows, spec: Spec, config: MaskingConfig, offset: int, *, epoch: int,
           seed: int) -> Rows:
    """Dynamic data's rows masked as the trainers mask them in ``epoch`` (``mask_dynamic`` on
    the rows padded to ``spec``'s max_seq_length, a bin's bound in binned output; the stable
    index of a record is ``offset`` + its record number)."""
    if not len(rows):
        return rows
    real = np.arange(spec.max_seq_length)[None, :] < rows.lengths[:, None]
    grid = lambda flat: _padded(flat, real)  # noqa: E731
    segments = real & (np.arange(spec.max_seq_length)[None, :] >= rows.num_a[:, None])
    out = mask_dynamic(grid(rows.tokens), real.astype(np.int64), segments.astype(np.int64),
                       grid(rows.word_starts), offset + rows.records, epoch=epoch, seed=seed,
                       config=config)
    predicted = out["masked_lm_weights"] != 0
    return dataclasses.replace(rows, tokens=out["input_ids"][real],
                               positions=out["masked_lm_positions"][predicted],
                               targets=out["masked_lm_ids"][predicted],
                               num_pred=predicted.sum(axis=1))


def _padded(flat: np.ndarray, real: np.ndarray) -> np.ndarray:
    grid = np.zeros(real.shape, dtype=np.int64)
    grid[real] = flat
    return grid


def _subset(rows: Rows, keep: np.ndarray) -> Rows:
    return Rows(records=rows.records[keep], tokens=rows.tokens[np.repeat(keep, rows.lengths)],
                lengths=rows.lengths[keep], num_a=rows.num_a[keep],
                positions=rows.positions[np.repeat(keep, rows.num_pred)],
                targets=rows.targets[np.repeat(keep, rows.num_pred)],
                num_pred=rows.num_pred[keep],
                label=None if rows.label is None else rows.label[keep],
                word_starts=None if rows.word_starts is None else
                rows.word_starts[np.repeat(keep, rows.lengths)])


def _add(t: Tally, rows: Rows, mask_id: int) -> None:
    if not len(rows):
        return
    t.instances += len(rows)
    t.seq_lengths += np.bincount(rows.lengths, minlength=len(t.seq_lengths))
    if rows.label is not None:
        t.a_lengths += np.bincount(rows.num_a - 2, minlength=len(t.a_lengths))
        t.b_lengths += np.bincount(rows.lengths - rows.num_a - 1, minlength=len(t.b_lengths))
        t.labels += np.bincount(rows.label, minlength=2)[:2]
    else:
        t.a_lengths += np.bincount(rows.lengths - 2, minlength=len(t.a_lengths))
    t.predictions += np.bincount(rows.num_pred, minlength=len(t.predictions))
    # Groups: a masked position starts one unless it follows the previous one in its row.
    starts = rows.prediction_offsets()[:-1][rows.num_pred > 0]
    new = np.diff(rows.positions, prepend=-2) != 1
    new[starts] = True
    group_of = np.cumsum(new) - 1
    if len(group_of):
        sizes = np.bincount(group_of)
        t.group_sizes += np.bincount(sizes, minlength=len(t.group_sizes))[:len(t.group_sizes)]
    # What the input holds at each masked position, and the original text.
    at = np.repeat(rows.token_offsets()[:-1], rows.num_pred) + rows.positions
    held = rows.tokens[at]
    t.input_at_masked["mask"] += int((held == mask_id).sum())
    t.input_at_masked["kept"] += int(((held == rows.targets) & (held != mask_id)).sum())
    t.input_at_masked["random"] += int(((held != rows.targets) & (held != mask_id)).sum())
    original = rows.tokens.copy()
    original[at] = rows.targets
    t.token_counts += np.bincount(original, minlength=len(t.token_counts))
