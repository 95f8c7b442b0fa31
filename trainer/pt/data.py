"""Stream the pipeline's Parquet shards as fixed-shape PyTorch batches, resumably.

Readers. A run has ``world_size * W`` readers (W = DataLoader workers, at least 1). Every epoch
the file list is permuted identically on every rank (seeded by seed, epoch); reader r reads
``order[r :: num_readers]`` with r = rank * W + worker, as NVIDIA LDDL's loaders do, so ranks
never read the same file and no coordination is needed.

Shuffling. Within a file, row groups are visited in a permuted order and each row group is cut
into blocks of ``shuffle_buffer`` rows whose rows are permuted. Every permutation is a pure
function of (seed, epoch, file, row group, block), never of arrival order or worker timing; the
memory bound is one block. The pipeline already shuffles instances globally across shards, so
this per-epoch re-mixing only has to vary batches between epochs.

Exact resume. A reader's stream is then a pure function of (seed, epoch, reader, num_readers),
so its position is two integers: ``(epoch, consumed)`` = examples already *delivered to the
training loop* in that epoch (prefetched batches don't count). Every batch carries its reader's
cursor after the batch; the loop keeps the last one per reader (``CursorTracker``) and saves it.
On resume a reader skips whole row groups from Parquet metadata (no decoding) and decodes at
most one row group to reach the offset. DataLoader hands out worker batches round-robin, so the
worker->reader mapping is rotated by ``batches_consumed % W`` to make the first batch after a
resume come from the reader that was next. "Exact" thus means: with the same shards, seed,
batch_size, shuffle_buffer, world size and worker count, the resumed run sees the same examples
in the same batches in the same order as an uninterrupted run (``tests/trainer`` checks this).

Dynamic masking. Dynamic data (``DataSpec.masking`` set: the shards hold ``word_starts``, no
masks) is masked here, block by block, with ``pipeline.core.masking.mask_dynamic``: the mask of
an instance is a function of (seed, epoch, its stable index) alone, the index being its shard's
``DataSpec.index_offsets`` entry plus its row in the file (computed before any permutation).
So an instance gets the same mask in an epoch whatever the world size, the DataLoader workers,
the batch it lands in or a resume, and a new mask in the next epoch; the batches have the
static data's keys and shapes. Held-out streams (``StreamConfig.mask_epoch`` 0) always draw the
masks of epoch 0: every evaluation scores the same masks.

Length bins. Binned data (``DataSpec.bins``) is read as one stream per bin, each exactly the
stream above over that bin's shards, padded to its bound, with its own readers, cursors and
epochs (``BinnedCursorTracker``). ``trainer.bins.BinSchedule`` says which bin every optimizer
update reads, the same on every rank: per schedule epoch a random permutation of the bins'
batches (LDDL's rule); ``binned_batches`` pulls each update's micro-batches from that bin's
stream. A bin's stream is endless and does not restart at a schedule epoch's end: what it has
not delivered by then is delivered later, so no instance is dropped (docs/training.md,
"Length bins").
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline import schema
from pipeline.core.masking import MaskingConfig, mask_dynamic
from trainer.bins import BinSchedule
from trainer.storage import is_remote, local_path, open_binary

IGNORE_INDEX = -100  # torch CrossEntropyLoss / transformers: position carries no MLM label


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """Static facts of one stream. Lengths, the sentence task and the masking come from the
    manifest (``DataSpec``): "none" data has no ``next_sentence_labels`` column to read.

    masking: dynamic data's settings (``DataSpec.masking``), None for static data (masks read
    from the shards). index_offsets: with masking, the stable index of each path's first row
    (``DataSpec.index_offsets``). mask_epoch: the epoch whose masks are drawn; None = the epoch
    being read (training), 0 for held-out data (every evaluation scores the same masks).
    """

    paths: tuple[str, ...]
    batch_size: int
    max_seq_length: int
    max_predictions_per_seq: int
    seed: int = 12345
    shuffle_buffer: int = 1000
    repeat: bool = True   # training: endless epochs; eval: one pass, partial last batch kept
    shuffle: bool = True
    next_sentence: str = "nsp"
    masking: MaskingConfig | None = None
    index_offsets: tuple[int, ...] = ()
    mask_epoch: int | None = None

    def __post_init__(self):
        if self.masking is None:
            return
        if len(self.index_offsets) != len(self.paths):
            raise ValueError(f"dynamic data needs one index offset per shard: "
                             f"{len(self.index_offsets)} for {len(self.paths)} paths")
        if self.masking.max_predictions_per_seq != self.max_predictions_per_seq:
            raise ValueError(f"masking max_predictions_per_seq "
                             f"{self.masking.max_predictions_per_seq} != stream "
                             f"max_predictions_per_seq {self.max_predictions_per_seq}")

    @property
    def masking_mode(self) -> str:
        return "static" if self.masking is None else "dynamic"


def epoch_file_order(num_files: int, *, seed: int, epoch: int) -> list[int]:
    """File indices in this epoch's order; identical on every rank (no rank in the seed)."""
    return np.random.default_rng([seed, epoch]).permutation(num_files).tolist()


def reader_files(order: Sequence[int], *, reader: int, num_readers: int) -> list[int]:
    return list(order[reader::num_readers])


def check_reader_coverage(num_files: int, num_readers: int, *, strict: bool) -> None:
    """Refuse (strict, training) or warn (eval) when some reader would get no file at all.

    In training an idle reader would starve its rank and hang DDP; uneven counts only skew
    how often files are seen, so they get a warning.
    """
    if num_files < num_readers:
        msg = (f"{num_files} shard files for {num_readers} readers (ranks x DataLoader workers):"
               " some readers would get no data. Write more shards (--num_shards) or use fewer"
               " workers/ranks.")
        if strict:
            raise ValueError(msg)
        warnings.warn(msg)
    elif num_files % num_readers:
        warnings.warn(f"{num_files} shard files do not divide evenly over {num_readers} "
                      "readers: some files are read more often than others per epoch")


def block_permutation(n: int, *, seed: int, keys: Sequence[int], shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, *keys]).permutation(n)


def pad_lists(column: pa.ListArray, width: int, dtype) -> np.ndarray:
    """[n] Arrow list column -> [n, width] numpy, zero padded (vectorised scatter)."""
    lengths = column.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    values = column.flatten().to_numpy(zero_copy_only=False)
    if lengths.size and lengths.max() > width:
        raise ValueError(f"row of length {lengths.max()} exceeds padded width {width}")
    out = np.zeros((len(lengths), width), dtype=dtype)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, np.arange(len(values)) - starts] = values
    return out


def decode_block(table: pa.Table, *, max_seq_length: int,
                 max_predictions: int) -> dict[str, np.ndarray]:
    """Arrow rows (schema.arrow_schema) -> padded numpy arrays, BERT and metric names.

    Shapes: [n, max_seq_length] for input_ids/attention_mask/token_type_ids/labels,
    [n, max_predictions] for masked_lm_*, [n] for next_sentence_label (only when the table
    has the label column: not for next_sentence "none" data). Dynamic data (a
    ``word_starts`` column, no masks): input_ids/attention_mask/token_type_ids, word_starts
    [n, max_seq_length] and the label; ``mask_block`` makes the rest.
    """
    table = table.combine_chunks()
    def col(name):
        if not table.num_rows:
            return pa.array([], pa.list_(pa.int64()))
        return table.column(name).chunk(0)

    s, p = max_seq_length, max_predictions
    out = {
        "input_ids": pad_lists(col("input_ids"), s, np.int64),
        "attention_mask": pad_lists(col("input_mask"), s, np.int64),
        "token_type_ids": pad_lists(col("segment_ids"), s, np.int64),
    }
    dynamic = schema.WORD_STARTS in table.column_names
    if dynamic:
        out[schema.WORD_STARTS] = pad_lists(col(schema.WORD_STARTS), s, np.int8)
    else:
        out["masked_lm_positions"] = pad_lists(col("masked_lm_positions"), p, np.int64)
        out["masked_lm_ids"] = pad_lists(col("masked_lm_ids"), p, np.int64)
        out["masked_lm_weights"] = pad_lists(col("masked_lm_weights"), p, np.float32)
    if schema.LABEL_FEATURE in table.column_names:
        out["next_sentence_label"] = table.column(schema.LABEL_FEATURE).to_numpy().astype(np.int64)
    if not dynamic:
        out["labels"] = mlm_labels(out["masked_lm_positions"], out["masked_lm_ids"],
                                   out["masked_lm_weights"], max_seq_length=s)
    return out


def mask_block(block: dict[str, np.ndarray], index: np.ndarray, *, epoch: int, seed: int,
               config: MaskingConfig) -> dict[str, np.ndarray]:
    """A decoded dynamic block (rows with ``word_starts``) masked for ``epoch``: the features
    and shapes of a static block. ``index``: each row's stable index (``mask_dynamic``)."""
    masked = mask_dynamic(block["input_ids"], block["attention_mask"], block["token_type_ids"],
                          block[schema.WORD_STARTS], index, epoch=epoch, seed=seed,
                          config=config)
    out = {"input_ids": masked["input_ids"], "attention_mask": block["attention_mask"],
           "token_type_ids": block["token_type_ids"]}
    for name in ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights"):
        out[name] = masked[name]
    if "next_sentence_label" in block:
        out["next_sentence_label"] = block["next_sentence_label"]
    out["labels"] = mlm_labels(out["masked_lm_positions"], out["masked_lm_ids"],
                               out["masked_lm_weights"],
                               max_seq_length=block["input_ids"].shape[1])
    return out


def mlm_labels(positions: np.ndarray, ids: np.ndarray, weights: np.ndarray, *,
               max_seq_length: int) -> np.ndarray:
    """[n, S] labels: -100 everywhere but real masked positions (weight > 0), which hold the
    original id. Padded predictions (weight 0, position 0) must not label [CLS]."""
    labels = np.full((positions.shape[0], max_seq_length), IGNORE_INDEX, dtype=np.int64)
    rows, cols = np.nonzero(weights > 0)
    labels[rows, positions[rows, cols]] = ids[rows, cols]
    return labels


class ShardReader:
    """One reader's deterministic stream of decoded blocks over its files, epoch by epoch."""

    def __init__(self, config: StreamConfig, *, reader: int, num_readers: int):
        self.config = config
        self.reader = reader
        self.num_readers = num_readers
        self._row_groups: dict[int, list[int]] = {}  # file index -> rows per row group

    def _open(self, file_index: int) -> pq.ParquetFile:
        path = self.config.paths[file_index]
        return pq.ParquetFile(open_binary(path) if is_remote(path) else local_path(path))

    def row_group_sizes(self, file_index: int) -> list[int]:
        if file_index not in self._row_groups:
            with self._open(file_index) as pf:
                md = pf.metadata
            self._row_groups[file_index] = [md.row_group(g).num_rows
                                            for g in range(md.num_row_groups)]
        return self._row_groups[file_index]

    def epoch_files(self, epoch: int) -> list[int]:
        c = self.config
        order = (epoch_file_order(len(c.paths), seed=c.seed, epoch=epoch) if c.shuffle
                 else list(range(len(c.paths))))
        return reader_files(order, reader=self.reader, num_readers=self.num_readers)

    def blocks(self, epoch: int, skip: int) -> Iterator[dict[str, np.ndarray]]:
        """Decoded, permuted blocks of ``epoch``, starting after ``skip`` examples; dynamic
        data masked for ``epoch`` (or ``mask_epoch``), each row by its stable index."""
        c = self.config
        block_rows = c.shuffle_buffer if c.shuffle and c.shuffle_buffer > 0 else 1024
        mask_epoch = epoch if c.mask_epoch is None else c.mask_epoch
        for f in self.epoch_files(epoch):
            sizes = self.row_group_sizes(f)
            group_start = np.cumsum([0, *sizes[:-1]])  # row of each row group's first row
            for g in block_permutation(len(sizes), seed=c.seed, keys=(epoch, f), shuffle=c.shuffle):
                if skip >= sizes[g]:  # skip whole row groups from metadata alone
                    skip -= sizes[g]
                    continue
                for k, table in enumerate(self._row_group_blocks(f, int(g), block_rows)):
                    if skip >= table.num_rows:
                        skip -= table.num_rows
                        continue
                    block = decode_block(table, max_seq_length=c.max_seq_length,
                                         max_predictions=c.max_predictions_per_seq)
                    perm = block_permutation(table.num_rows, seed=c.seed,
                                             keys=(epoch, f, int(g), k), shuffle=c.shuffle)
                    rows = perm[skip:]
                    block = {name: a[rows] for name, a in block.items()}
                    if c.masking is not None:
                        # Rows of the file before the permutation: the stable index.
                        index = c.index_offsets[f] + int(group_start[g]) + k * block_rows + rows
                        block = mask_block(block, index, epoch=mask_epoch, seed=c.seed,
                                           config=c.masking)
                    yield block
                    skip = 0

    def _row_group_blocks(self, file_index: int, group: int, block_rows: int) -> Iterator[pa.Table]:
        """Exactly ``block_rows``-row tables (last one shorter), whatever pyarrow's batching."""
        pending: list[pa.RecordBatch] = []
        have = 0
        columns = [name for name, _, _ in schema.features(self.config.next_sentence,
                                                          self.config.masking_mode)]
        with self._open(file_index) as pf:
            for batch in pf.iter_batches(batch_size=block_rows, row_groups=[group],
                                         columns=columns):
                pending.append(batch)
                have += batch.num_rows
                while have >= block_rows:
                    table = pa.Table.from_batches(pending)
                    yield table.slice(0, block_rows)
                    rest = table.slice(block_rows)
                    pending, have = rest.to_batches(), rest.num_rows
        if have:
            yield pa.Table.from_batches(pending)

    def batches(self, epoch: int, consumed: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ``batch_size`` across block/epoch boundaries, each with its cursor."""
        c = self.config
        pieces: list[dict[str, np.ndarray]] = []
        have = 0
        while True:
            for block in self.blocks(epoch, consumed):
                n = len(block["input_ids"])
                start = 0
                while start < n:
                    take = min(c.batch_size - have, n - start)
                    pieces.append({k: v[start:start + take] for k, v in block.items()})
                    have, start, consumed = have + take, start + take, consumed + take
                    if have == c.batch_size:
                        yield self._emit(pieces, epoch, consumed)
                        pieces, have = [], 0
            if not c.repeat:
                break
            epoch, consumed = epoch + 1, 0
        if pieces:
            yield self._emit(pieces, epoch, consumed)

    def _emit(self, pieces, epoch: int, consumed: int) -> dict[str, torch.Tensor]:
        batch = {k: torch.from_numpy(np.concatenate([p[k] for p in pieces])) for k in pieces[0]}
        batch["cursor_reader"] = torch.tensor(self.reader)
        batch["cursor_epoch"] = torch.tensor(epoch)
        batch["cursor_consumed"] = torch.tensor(consumed)
        return batch


class ShardDataset(IterableDataset):
    """IterableDataset of ready batches (use ``DataLoader(ds, batch_size=None)``).

    cursors: {reader: (epoch, consumed)} from a checkpoint, {} to start fresh.
    batches_consumed: batches this rank delivered so far (rotates worker->reader, see module doc).
    """

    def __init__(self, config: StreamConfig, *, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, cursors: dict[int, tuple[int, int]] | None = None,
                 batches_consumed: int = 0):
        super().__init__()
        self.config = config
        self.rank, self.world_size = rank, world_size
        self.workers = max(1, num_workers)
        self.cursors = dict(cursors or {})
        self.batches_consumed = batches_consumed
        check_reader_coverage(len(config.paths), self.num_readers, strict=config.repeat)

    @property
    def num_readers(self) -> int:
        return self.world_size * self.workers

    def reader_for_worker(self, worker: int) -> int:
        return self.rank * self.workers + (worker + self.batches_consumed) % self.workers

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != self.workers:
            raise ValueError(f"dataset built for {self.workers} workers, DataLoader has "
                             f"{info.num_workers}")
        reader = self.reader_for_worker(worker)
        epoch, consumed = self.cursors.get(reader, (0, 0))
        yield from ShardReader(self.config, reader=reader,
                               num_readers=self.num_readers).batches(epoch, consumed)


class CursorTracker:
    """The data position of what the loop actually consumed: {reader: (epoch, consumed)}.

    batches: batches delivered so far (rotates worker->reader on resume, ``ShardDataset``).
    """

    def __init__(self, cursors: dict[int, tuple[int, int]] | None = None, batches: int = 0):
        self.cursors = dict(cursors or {})
        self.batches = batches

    def update(self, batch: dict[str, torch.Tensor]) -> None:
        reader = int(batch["cursor_reader"])
        self.cursors[reader] = (int(batch["cursor_epoch"]), int(batch["cursor_consumed"]))
        self.batches += 1

    def state_dict(self) -> dict:
        return {"cursors": {str(k): list(v) for k, v in self.cursors.items()},
                "batches": self.batches}

    @classmethod
    def from_state_dict(cls, state: dict) -> "CursorTracker":
        cursors = {int(k): (int(v[0]), int(v[1])) for k, v in state["cursors"].items()}
        return cls(cursors, int(state["batches"]))


class BinnedCursorTracker:
    """The data position of binned data: one ``CursorTracker`` per bin (its bound), fed by
    each batch's ``cursor_bin`` (``binned_batches`` sets it)."""

    def __init__(self, bins: dict[int, CursorTracker] | None = None):
        self.bins = dict(bins or {})

    def tracker(self, bound: int) -> CursorTracker:
        return self.bins.setdefault(int(bound), CursorTracker())

    def update(self, batch: dict[str, torch.Tensor]) -> None:
        self.tracker(int(batch["cursor_bin"])).update(batch)

    def state_dict(self) -> dict:
        return {"bins": {str(b): self.bins[b].state_dict() for b in sorted(self.bins)}}

    @classmethod
    def from_state_dict(cls, state: dict) -> "BinnedCursorTracker":
        return cls({int(b): CursorTracker.from_state_dict(s) for b, s in state["bins"].items()})


def tracker_from_state(state: dict) -> CursorTracker | BinnedCursorTracker:
    """The tracker a checkpoint's data state describes: binned (``{"bins": ...}``) or one
    stream (``{"cursors", "batches"}``, as every checkpoint before length bins)."""
    if "bins" in state:
        return BinnedCursorTracker.from_state_dict(state)
    return CursorTracker.from_state_dict(state)


def binned_batches(streams: dict[int, Iterator[dict[str, torch.Tensor]]],
                   schedule: BinSchedule, *, start_step: int,
                   micro_batches: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless micro-batches: for update t = start_step, start_step + 1, ..., the
    ``micro_batches`` next batches of bin ``schedule.bin_at(t)``'s stream, each tagged with
    ``cursor_bin`` (for ``BinnedCursorTracker``). streams: bound -> that bin's batches."""
    step = start_step
    while True:
        bound = schedule.bin_at(step)
        stream = streams[bound]
        for _ in range(micro_batches):
            batch = next(stream)
            batch["cursor_bin"] = torch.tensor(bound)
            yield batch
        step += 1
