"""Dynamic masking in the PyTorch stream: the mask of an instance is a function of (seed, epoch,
stable index) alone, so ranks, DataLoader workers and resumes do not change it; whole words
and the budget hold; and a short train_torch run on dynamic data. Real pipeline shards
(``real_dynamic_shards``), rewritten with small row groups so that row groups, blocks and
skips all take part in the stable index."""
import collections
import dataclasses
import hashlib
import itertools
import json
import math
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline import schema
from pipeline.core.masking import budget, mask_dynamic
from tests.trainer.conftest import TINY_MODEL
from trainer import data_contract
from trainer.config import ModelConfig
from trainer.pt.data import IGNORE_INDEX, CursorTracker, ShardDataset, StreamConfig, pad_lists
from trainer.train_torch import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(REPO, "configs", "train", "cpu-smoke.yaml")
SEED = 7


@pytest.fixture(scope="module")
def dynamic_dir(real_dynamic_shards, tmp_path_factory) -> str:
    """``real_dynamic_shards`` with row groups of 40 rows (the pipeline writes one per shard
    at this size), its manifest's sizes and digests updated."""
    out = str(tmp_path_factory.mktemp("dynamic_rg40"))
    shutil.copytree(real_dynamic_shards, out, dirs_exist_ok=True)
    with open(os.path.join(out, schema.MANIFEST_FILE), encoding="utf-8") as f:
        manifest = json.load(f)
    for entry in manifest["shards"][schema.PARQUET_DIR]:
        path = os.path.join(out, entry["path"])
        pq.write_table(pq.read_table(path), path, row_group_size=40)
        data = open(path, "rb").read()
        entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    with open(os.path.join(out, schema.MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return out


def load_spec(data_dir) -> data_contract.DataSpec:
    manifest = data_contract.read_manifest(data_dir)
    model = data_contract.resolve_model_config(ModelConfig(**TINY_MODEL), manifest)
    return data_contract.load_data_dir(data_dir, model)


def stream(spec, **overrides) -> StreamConfig:
    values = dict(paths=tuple(spec.paths(schema.PARQUET_DIR)), batch_size=8,
                  max_seq_length=spec.max_seq_length,
                  max_predictions_per_seq=spec.max_predictions_per_seq, seed=SEED,
                  shuffle_buffer=16, next_sentence=spec.next_sentence, masking=spec.masking,
                  index_offsets=tuple(spec.index_offsets(schema.PARQUET_DIR)))
    return StreamConfig(**{**values, **overrides})


def loader(dataset, workers):
    return DataLoader(dataset, batch_size=None, num_workers=workers,
                      generator=torch.Generator().manual_seed(0))


@dataclasses.dataclass
class Instances:
    """Every instance of the data, unmasked, in stable-index order, padded."""
    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    word_starts: np.ndarray
    by_row: dict  # (input_ids, token_type_ids) of a row -> its stable indices

    def indices(self, original: np.ndarray, token_type_ids: np.ndarray) -> list[int]:
        return self.by_row[(original.tobytes(), token_type_ids.tobytes())]

    def masked(self, *, epoch: int, spec) -> np.ndarray:
        """Every instance's masked input_ids for (SEED, epoch), straight from mask_dynamic."""
        return mask_dynamic(self.input_ids, self.attention_mask, self.token_type_ids,
                            self.word_starts, np.arange(len(self.input_ids)), epoch=epoch,
                            seed=SEED, config=spec.masking)["input_ids"]


@pytest.fixture(scope="module")
def instances(dynamic_dir) -> Instances:
    spec = load_spec(dynamic_dir)
    cols = collections.defaultdict(list)
    for path in spec.paths(schema.PARQUET_DIR):
        table = pq.read_table(path).combine_chunks()
        for name, out in (("input_ids", "input_ids"), ("input_mask", "attention_mask"),
                          ("segment_ids", "token_type_ids"), (schema.WORD_STARTS, "word_starts")):
            cols[out].append(pad_lists(table.column(name).chunk(0), spec.max_seq_length, np.int64))
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    by_row = collections.defaultdict(list)
    for index, (ids, types) in enumerate(zip(arrays["input_ids"], arrays["token_type_ids"])):
        by_row[(ids.tobytes(), types.tobytes())].append(index)
    assert len(arrays["input_ids"]) == spec.manifest["total_instances"]
    return Instances(**arrays, by_row=dict(by_row))


def original_ids(batch) -> np.ndarray:
    """The unmasked input_ids of a batch: every changed position carries its original id as
    its label."""
    labels, ids = batch["labels"].numpy(), batch["input_ids"].numpy()
    return np.where(labels != IGNORE_INDEX, labels, ids)


def masks_by_index(batches, instances: Instances, *, epoch: int, spec) -> dict:
    """{stable index: (masked input_ids, labels)} of every row of ``batches``, each checked to
    be ``mask_dynamic``'s for (SEED, epoch, index)."""
    expected = instances.masked(epoch=epoch, spec=spec)
    out = {}
    for batch in batches:
        original = original_ids(batch)
        for r in range(len(original)):
            masked = batch["input_ids"][r].numpy()
            candidates = instances.indices(original[r], batch["token_type_ids"][r].numpy())
            matches = [i for i in candidates
                       if i not in out and np.array_equal(expected[i], masked)]
            assert matches, f"row {r}: no instance {candidates} has this mask in epoch {epoch}"
            out[matches[0]] = (masked.tobytes(), batch["labels"][r].numpy().tobytes())
    return out


def one_epoch(spec, *, world_size: int, workers: int, epoch: int = 0, **overrides):
    config = stream(spec, repeat=False, **overrides)
    batches = []
    for rank in range(world_size):
        readers = world_size * max(1, workers)
        cursors = {r: (epoch, 0) for r in range(readers)}
        dataset = ShardDataset(config, rank=rank, world_size=world_size, num_workers=workers,
                               cursors=cursors)
        batches += list(loader(dataset, workers))
    return batches


def test_dynamic_batches_have_the_static_keys_shapes_and_labels(dynamic_dir, train_dir):
    spec = load_spec(dynamic_dir)
    batch = next(iter(ShardDataset(stream(spec))))
    static = next(iter(ShardDataset(stream(load_spec(train_dir)))))
    assert list(batch) == list(static)  # no word_starts: the model code is the static one's
    for name, tensor in batch.items():
        assert tensor.dtype == static[name].dtype, name
    assert batch["input_ids"].shape == (8, 64) and batch["masked_lm_ids"].shape == (8, 10)
    for i in range(8):
        real = batch["masked_lm_weights"][i] > 0
        positions = batch["masked_lm_positions"][i][real]
        assert torch.equal(batch["labels"][i][positions], batch["masked_lm_ids"][i][real])
        assert int((batch["labels"][i] != IGNORE_INDEX).sum()) == int(real.sum()) > 0


@pytest.mark.parametrize("world_size, workers", [(1, 2), (2, 0), (2, 2)])
def test_an_instance_gets_one_mask_per_epoch_whatever_the_ranks_and_workers(
        dynamic_dir, instances, world_size, workers):
    spec = load_spec(dynamic_dir)
    single = masks_by_index(one_epoch(spec, world_size=1, workers=0), instances, epoch=0,
                            spec=spec)
    assert sorted(single) == list(range(spec.manifest["total_instances"]))
    split = masks_by_index(one_epoch(spec, world_size=world_size, workers=workers), instances,
                           epoch=0, spec=spec)
    assert split == single


def test_another_epoch_draws_other_masks_and_batching_does_not_matter(dynamic_dir, instances):
    spec = load_spec(dynamic_dir)
    first = masks_by_index(one_epoch(spec, world_size=1, workers=0), instances, epoch=0,
                           spec=spec)
    second = masks_by_index(one_epoch(spec, world_size=1, workers=0, epoch=1, batch_size=5,
                                      shuffle_buffer=7), instances, epoch=1, spec=spec)
    assert sorted(first) == sorted(second)
    same = sum(first[i] == second[i] for i in first)
    assert same < 0.1 * len(first)
    # Held-out streams: epoch 0's masks whatever epoch the reader is at.
    held_out = masks_by_index(one_epoch(spec, world_size=1, workers=0, epoch=3, mask_epoch=0,
                                        shuffle=False), instances, epoch=0, spec=spec)
    assert held_out == first


def test_masks_are_whole_words_within_the_budget(dynamic_dir, instances):
    spec = load_spec(dynamic_dir)
    assert spec.masking.whole_word and spec.masking.unigram
    batches = one_epoch(spec, world_size=1, workers=0)
    words = 0
    for batch in batches:
        original = original_ids(batch)
        chosen = (batch["labels"] != IGNORE_INDEX).numpy()
        mask = batch["attention_mask"].numpy()
        for r in range(len(original)):
            index = instances.indices(original[r], batch["token_type_ids"][r].numpy())[0]
            starts = instances.word_starts[index].astype(bool)
            length = int(mask[r].sum())
            assert chosen[r].sum() <= budget(np.array([length]), spec.masking)[0]
            assert 0 < chosen[r].sum() <= spec.max_predictions_per_seq
            special = original[r] == schema_id(spec, "[SEP]")
            special[0] = True
            assert not (chosen[r] & special).any()  # never [CLS] or [SEP]
            # A word: a start and the non-start candidates after it. Each is all in or all out.
            word = np.cumsum(starts[:length])
            candidate = ~special[:length]
            for w in np.unique(word[candidate]):
                members = candidate & (word == w)
                assert chosen[r][:length][members].all() or not chosen[r][:length][members].any()
                words += int(chosen[r][:length][members].all() and members.sum() > 1)
    assert words > 0  # some masked words really span several tokens


def schema_id(spec, token: str) -> int:
    with open(spec.vocab_file, encoding="utf-8") as f:
        return next(i for i, line in enumerate(f) if line.rstrip("\n") == token)


@pytest.mark.parametrize("workers, split", [(0, 11), (2, 13)])
def test_resume_from_cursor_gives_the_same_masks(dynamic_dir, workers, split):
    """Across an epoch boundary (each reader: ~577/1154 rows per epoch, batch 32)."""
    spec = load_spec(dynamic_dir)
    config = stream(spec, batch_size=32)
    per_epoch = math.ceil(spec.manifest["total_instances"] / 32)
    total = per_epoch + 4
    full = list(itertools.islice(loader(ShardDataset(config, num_workers=workers), workers),
                                 total))
    assert {int(b["cursor_epoch"]) for b in full} == {0, 1}
    tracker = CursorTracker()
    for batch in full[:split]:
        tracker.update(batch)
    state = CursorTracker.from_state_dict(tracker.state_dict())
    resumed = ShardDataset(config, num_workers=workers, cursors=state.cursors,
                           batches_consumed=state.batches)
    rest = list(itertools.islice(loader(resumed, workers), total - split))
    assert len(rest) == total - split
    for a, b in zip(full[split:], rest):
        for name in ("input_ids", "labels", "masked_lm_positions", "masked_lm_weights"):
            assert torch.equal(a[name], b[name]), name


def test_train_torch_on_dynamic_data(dynamic_dir, tiny_model_yaml, tmp_path, torch_one_thread):
    out = tmp_path / "run"
    summary = train(["--data_dir", dynamic_dir, "--model_config", tiny_model_yaml,
                     "--train_config", SMOKE, "--output_dir", str(out),
                     "--num_train_steps", "4", "--batch_size", "8", "--log_every", "2",
                     "--eval_data_dir", dynamic_dir, "--eval_every", "4", "--eval_steps", "2",
                     "--checkpoint_every", "100", "--shuffle_buffer", "16",
                     "--num_workers", "0"])
    assert summary["step"] == 4
    assert summary["eval"]["examples"] == 16
    for split in ("train", "eval"):
        assert math.isfinite(summary[split]["loss"]) and summary[split]["loss"] > 0
        assert 0 <= summary[split]["masked_lm_accuracy"] <= 1
