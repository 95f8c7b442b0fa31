"""The pipeline's Parquet shards for the Hugging Face ``Trainer``, accelerate or any PyTorch loop:
a map-style ``Dataset``, a collator that pads (and masks dynamic data) into what
``transformers.BertForPreTraining``/``BertForMaskedLM`` take, and a ``TrainerCallback`` that
tells the collator the epoch. Frameworks: torch and transformers only.

Dataset. Item i is the instance of stable index i (shards in manifest order, rows in file
order: ``DataSpec.index_offsets``), unpadded: 1-D numpy arrays ``input_ids``,
``attention_mask``, ``token_type_ids``, and ``word_starts`` (dynamic data) or the stored
``masked_lm_positions``/``masked_lm_ids``/``masked_lm_weights`` (static data); the int
``next_sentence_label`` (unless the sentence task is "none") and ``index``. A shard is read
whole on first use and kept, per process (about 7 bytes per token): meant for data that fits
in memory; the PyTorch trainer (``trainer/pt/data.py``) streams data of any size.

Masks. Static data: the labels are the stored masks. Dynamic data: the collator masks each
batch with ``pipeline.core.masking.mask_dynamic`` for (seed, epoch, index): the mask of an
instance is the one the PyTorch trainer's stream gives it for the same seed and epoch,
whatever the batch, sampler, process or worker. A held-out dataset built with
``mask_epoch=0`` carries that epoch in its items and is masked with it whatever the
collator's epoch: every evaluation scores the same masks (the Trainer evaluates with the
training collator).

Epochs. ``MaskingEpochCallback`` calls ``collator.set_epoch`` in ``on_epoch_begin``, which the
Trainer (transformers 5) calls before it creates the epoch's DataLoader iterator: with
``dataloader_num_workers=0`` the collator runs in the training process and sees the epoch at
once; with workers (not persistent: the default) each epoch's workers are started by that
iterator, after the call, with a copy of the collator that holds the epoch. Persistent workers
would keep the first epoch's copy, so the callback refuses them. The epoch is
``floor(state.epoch)``: the epoch the Trainer runs, also on resume from a checkpoint. The
Trainer must keep the items' extra keys: ``TrainingArguments(remove_unused_columns=False)``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
import transformers

from pipeline import schema
from pipeline.core.masking import mask_dynamic
from trainer import data_contract
from trainer.pt.data import IGNORE_INDEX, mlm_labels
from trainer.storage import is_remote, local_path, open_binary

# Parquet column -> item key (the names BERT's forward takes where it takes them).
COLUMNS = {"input_ids": "input_ids", "input_mask": "attention_mask",
           "segment_ids": "token_type_ids", schema.WORD_STARTS: schema.WORD_STARTS,
           "masked_lm_positions": "masked_lm_positions", "masked_lm_ids": "masked_lm_ids",
           "masked_lm_weights": "masked_lm_weights", schema.LABEL_FEATURE: "next_sentence_label"}
NO_COLUMNS_HINT = ("the Trainer removed the columns the model's forward does not name: pass "
                   "TrainingArguments(remove_unused_columns=False)")


class PretrainingDataset(torch.utils.data.Dataset):
    """The instances of a pipeline output dir (module doc); ``data_dir`` local or a URL.

    mask_epoch: for held-out dynamic data, the epoch whose masks the collator draws for these
    items whatever its own epoch (0: every evaluation scores the same masks); None for
    training data (the collator's epoch). Ignored for static data.
    """

    def __init__(self, data_dir: str, *, mask_epoch: int | None = None):
        self.data_dir = data_dir
        self.manifest = data_contract.read_manifest(data_dir)
        self.max_seq_length = int(self.manifest["max_seq_length"])
        self.max_predictions_per_seq = int(self.manifest["max_predictions_per_seq"])
        self.next_sentence = schema.sentence_task(self.manifest)
        self.masking = data_contract.masking_config(self.manifest)
        self.mask_epoch = mask_epoch
        self.paths = data_contract.shard_paths(data_dir, self.manifest, schema.PARQUET_DIR)
        sizes = data_contract.shard_sizes(self.manifest, schema.PARQUET_DIR)
        self.offsets = np.cumsum([0, *sizes])  # stable index of each shard's first row; total
        mode = "dynamic" if self.masking is not None else "static"
        self.columns = [name for name, _, _ in schema.features(self.next_sentence, mode)]
        self._shards: dict[int, dict[str, tuple[np.ndarray, np.ndarray] | np.ndarray]] = {}

    @property
    def dynamic(self) -> bool:
        return self.masking is not None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self):  # DataLoader workers (spawn) read their own shards
        return {**self.__dict__, "_shards": {}}

    def _shard(self, s: int) -> dict:
        if s not in self._shards:
            path = self.paths[s]
            table = pq.read_table(open_binary(path) if is_remote(path) else local_path(path),
                                  columns=self.columns).combine_chunks()
            expected = int(self.offsets[s + 1] - self.offsets[s])
            if table.num_rows != expected:
                raise ValueError(f"{path}: {table.num_rows} rows, its manifest says {expected}")
            shard = {}
            for name in self.columns:
                column = table.column(name)
                column = column.chunk(0) if column.num_chunks else column.combine_chunks()
                if name == schema.LABEL_FEATURE:
                    shard[name] = column.to_numpy(zero_copy_only=False)
                else:
                    shard[name] = (column.offsets.to_numpy().astype(np.int64),
                                   column.values.to_numpy(zero_copy_only=False))
            self._shards[s] = shard
        return self._shards[s]

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} instances")
        s = int(np.searchsorted(self.offsets, index, side="right")) - 1
        row = index - int(self.offsets[s])
        item = {}
        for name, values in self._shard(s).items():
            if name == schema.LABEL_FEATURE:
                item[COLUMNS[name]] = int(values[row])
            else:
                offsets, flat = values
                item[COLUMNS[name]] = flat[offsets[row]:offsets[row + 1]]
        item["index"] = index
        if self.dynamic and self.mask_epoch is not None:
            item["mask_epoch"] = int(self.mask_epoch)
        return item


def pad(rows: Sequence, width: int, dtype) -> np.ndarray:
    """Unpadded 1-D rows -> [n, width], zero padded."""
    out = np.zeros((len(rows), width), dtype=dtype)
    for r, values in enumerate(rows):
        if len(values) > width:
            raise ValueError(f"row of length {len(values)} exceeds padded width {width}")
        out[r, :len(values)] = values
    return out


class PretrainingCollator:
    """Examples of a ``PretrainingDataset`` -> a batch of torch tensors for BERT's forward:
    ``input_ids`` (masked), ``attention_mask``, ``token_type_ids`` [n, max_seq_length],
    ``labels`` [n, max_seq_length] (-100 but at masked positions, which hold the original id)
    and ``next_sentence_label`` [n] when the data has it and ``next_sentence_label`` is True
    (False for ``BertForMaskedLM``, whose forward does not take it).

    Dynamic data is masked for (``seed``, the epoch, each example's ``index``): the epoch is
    ``set_epoch``'s (``MaskingEpochCallback``), or an example's ``mask_epoch`` when it has one
    (held-out data). Static data keeps its stored masks.
    """

    def __init__(self, dataset: PretrainingDataset, *, seed: int,
                 next_sentence_label: bool = True):
        self.max_seq_length = dataset.max_seq_length
        self.max_predictions_per_seq = dataset.max_predictions_per_seq
        self.masking = dataset.masking
        self.seed = int(seed)
        self.next_sentence_label = next_sentence_label and dataset.next_sentence != "none"
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _column(self, examples: Sequence[dict], key: str) -> list:
        try:
            return [e[key] for e in examples]
        except KeyError:
            raise KeyError(f"examples lack {key!r}: {NO_COLUMNS_HINT}") from None

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        s = self.max_seq_length
        ids = pad(self._column(examples, "input_ids"), s, np.int64)
        mask = pad(self._column(examples, "attention_mask"), s, np.int64)
        types = pad(self._column(examples, "token_type_ids"), s, np.int64)
        if self.masking is not None:
            labels = self._mask(examples, ids, mask, types)
        else:
            p = self.max_predictions_per_seq
            labels = mlm_labels(pad(self._column(examples, "masked_lm_positions"), p, np.int64),
                                pad(self._column(examples, "masked_lm_ids"), p, np.int64),
                                pad(self._column(examples, "masked_lm_weights"), p, np.float32),
                                max_seq_length=s)
        batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                 "token_type_ids": torch.from_numpy(types), "labels": torch.from_numpy(labels)}
        if self.next_sentence_label:
            batch["next_sentence_label"] = torch.tensor(
                self._column(examples, "next_sentence_label"), dtype=torch.int64)
        return batch

    def _mask(self, examples, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        """Mask ``ids`` in place; return the labels."""
        starts = pad(self._column(examples, schema.WORD_STARTS), self.max_seq_length, np.int8)
        index = np.asarray(self._column(examples, "index"), dtype=np.int64)
        epochs = np.asarray([e.get("mask_epoch", self.epoch) for e in examples], dtype=np.int64)
        labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
        for epoch in np.unique(epochs):
            rows = np.flatnonzero(epochs == epoch)
            masked = mask_dynamic(ids[rows], mask[rows], types[rows], starts[rows], index[rows],
                                  epoch=int(epoch), seed=self.seed, config=self.masking)
            ids[rows] = masked["input_ids"]
            labels[rows] = mlm_labels(masked["masked_lm_positions"], masked["masked_lm_ids"],
                                      masked["masked_lm_weights"],
                                      max_seq_length=self.max_seq_length)
        return labels


class MaskingEpochCallback(transformers.TrainerCallback):
    """Sets ``collator``'s epoch to the Trainer's at each epoch's start (module doc), and
    refuses, at the start of training, settings under which the collator would not see it
    (persistent DataLoader workers) or would not get its examples' keys."""

    def __init__(self, collator: PretrainingCollator):
        self.collator = collator

    def on_train_begin(self, args, state, control, **kwargs):
        if args.remove_unused_columns:
            raise ValueError(f"PretrainingDataset items: {NO_COLUMNS_HINT}")
        if args.dataloader_num_workers > 0 and args.dataloader_persistent_workers:
            raise ValueError("dynamic masking needs each epoch's DataLoader workers to start "
                             "after the collator's set_epoch: "
                             "dataloader_persistent_workers=False")

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_epoch(math.floor(state.epoch + 1e-9))
