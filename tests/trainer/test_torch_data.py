"""The Parquet stream: contract checks, features, rank/worker split, exact resume."""
import collections
import dataclasses
import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline import schema
from tests.trainer.conftest import TINY_MODEL
from trainer import data_contract
from trainer.config import ModelConfig
from trainer.pt.data import (
    IGNORE_INDEX,
    CursorTracker,
    ShardDataset,
    StreamConfig,
    epoch_file_order,
)

TINY = ModelConfig(**TINY_MODEL)


def stream(train_dir, **overrides) -> StreamConfig:
    spec = data_contract.load_data_dir(train_dir, dataclasses.replace(TINY, vocab_size=64))
    values = dict(paths=tuple(spec.paths(schema.PARQUET_DIR)), batch_size=8,
                  max_seq_length=spec.max_seq_length,
                  max_predictions_per_seq=spec.max_predictions_per_seq, seed=7, shuffle_buffer=10)
    return StreamConfig(**{**values, **overrides})


def loader(dataset, workers):
    return DataLoader(dataset, batch_size=None, num_workers=workers,
                      generator=torch.Generator().manual_seed(0))


def test_manifest_paths_are_absolute_and_complete(train_dir):
    manifest = data_contract.read_manifest(train_dir)
    paths = data_contract.shard_paths(train_dir, manifest, schema.PARQUET_DIR)
    assert len(paths) == 4 and all(p.startswith("/") for p in paths)
    sizes = data_contract.shard_sizes(manifest, schema.PARQUET_DIR)
    assert sum(sizes) == manifest["total_instances"]
    with pytest.raises(ValueError, match="no tfrecord shards"):
        data_contract.shard_paths(train_dir, manifest, schema.TFRECORD_DIR)


@pytest.mark.parametrize("change, message", [
    (dict(vocab_size=99), "vocab_size 64 != model vocab_size 99"),
    (dict(vocab_size=64, max_position_embeddings=16), "max_seq_length 32 > model max_position"),
])
def test_incompatible_model_is_refused(train_dir, change, message):
    manifest = data_contract.read_manifest(train_dir)
    with pytest.raises(ValueError, match=message):
        data_contract.check_compatible(manifest, dataclasses.replace(TINY, **change))


def test_wrong_phase_and_bad_manifest_are_refused(train_dir, tmp_path):
    manifest = data_contract.read_manifest(train_dir)
    model = data_contract.resolve_model_config(TINY, manifest)
    assert model.vocab_size == 64
    with pytest.raises(ValueError, match="max_seq_length 32 != training config"):
        data_contract.check_compatible(manifest, model, max_seq_length=128)
    with pytest.raises(ValueError, match="format_version"):
        schema.validate_manifest({**manifest, "format_version": 99})
    with pytest.raises(FileNotFoundError, match="has not finished"):
        data_contract.read_manifest(str(tmp_path))


def test_batches_have_bert_features_and_labels(train_dir):
    batch = next(iter(ShardDataset(stream(train_dir))))
    assert batch["input_ids"].shape == (8, 32) and batch["masked_lm_ids"].shape == (8, 5)
    assert batch["input_ids"].dtype == torch.int64
    assert batch["masked_lm_weights"].dtype == torch.float32
    assert set(batch["next_sentence_label"].tolist()) <= {0, 1}
    for i in range(8):
        real = batch["masked_lm_weights"][i] > 0
        positions = batch["masked_lm_positions"][i][real]
        labels = batch["labels"][i]
        assert torch.equal(labels[positions], batch["masked_lm_ids"][i][real])
        others = torch.ones(32, dtype=torch.bool)
        others[positions] = False
        assert (labels[others] == IGNORE_INDEX).all()  # incl. [CLS], which pads positions
        n = int(batch["attention_mask"][i].sum())
        assert (batch["input_ids"][i][n:] == 0).all() and batch["input_ids"][i][n - 1] == 3
        assert (batch["token_type_ids"][i][n:] == 0).all()


def test_two_ranks_two_workers_read_every_row_exactly_once(train_dir, shards):
    config = stream(train_dir, repeat=False)
    seen = collections.Counter()
    files_per_rank = []
    for rank in range(2):
        dataset = ShardDataset(config, rank=rank, world_size=2, num_workers=2)
        for batch in loader(dataset, workers=2):
            seen.update(shards.row_id(row, 64) for row in batch["input_ids"].tolist())
        files_per_rank.append({dataset.reader_for_worker(w) for w in range(2)})
    assert sorted(seen) == list(range(200)) and set(seen.values()) == {1}
    assert files_per_rank == [{0, 1}, {2, 3}]


def test_file_order_is_shared_by_ranks_and_changes_per_epoch():
    orders = [epoch_file_order(16, seed=3, epoch=e) for e in range(3)]
    assert orders[0] == epoch_file_order(16, seed=3, epoch=0)  # what every rank computes
    assert orders[0] != orders[1] != orders[2] and sorted(orders[1]) == list(range(16))


def test_fewer_files_than_readers_is_refused_for_training(train_dir):
    with pytest.raises(ValueError, match="4 shard files for 8 readers"):
        ShardDataset(stream(train_dir), rank=0, world_size=4, num_workers=2)
    with pytest.warns(UserWarning, match="some readers would get no data"):
        ShardDataset(stream(train_dir, repeat=False), rank=0, world_size=4, num_workers=2)


def test_epochs_repeat_every_row_in_a_new_order(train_dir, shards):
    # 1 reader over 200 rows, batch 8: epoch 0 is exactly batches 0..24.
    batches = list(itertools.islice(ShardDataset(stream(train_dir)), 50))
    ids = [shards.row_id(r, 64) for b in batches for r in b["input_ids"].tolist()]
    assert sorted(ids[:200]) == sorted(ids[200:]) == list(range(200))
    assert ids[:200] != ids[200:]
    assert [int(b["cursor_epoch"]) for b in batches[24:26]] == [0, 1]


@pytest.mark.parametrize("workers, split", [(0, 7), (2, 13)])
def test_resume_from_cursor_continues_exactly(train_dir, workers, split):
    """Stop after `split` batches (odd: the next batch belongs to the other worker), rebuild
    from the tracker's state, and get the uninterrupted run's remaining batches, across an
    epoch boundary (each reader has 100 rows per epoch = 12.5 batches)."""
    config = stream(train_dir)
    full = list(itertools.islice(loader(ShardDataset(config, num_workers=workers), workers), 30))
    tracker = CursorTracker()
    for batch in full[:split]:
        tracker.update(batch)
    state = CursorTracker.from_state_dict(tracker.state_dict())
    resumed = ShardDataset(config, num_workers=workers, cursors=state.cursors,
                           batches_consumed=state.batches)
    rest = list(itertools.islice(loader(resumed, workers), 30 - split))
    for a, b in zip(full[split:], rest):
        assert torch.equal(a["input_ids"], b["input_ids"])
        assert torch.equal(a["labels"], b["labels"])
    assert len(rest) == 30 - split


def test_row_groups_bigger_than_the_shuffle_buffer_are_cut_into_blocks(tmp_path, shards):
    """One 64-row row group, buffer 10: still every row once, and rows stay row-aligned."""
    out = shards.make_shard_dir(str(tmp_path), num_instances=64, num_shards=1, seed=5,
                                row_group_size=64)
    config = stream(out, repeat=False, batch_size=5)
    rows = [r for b in ShardDataset(config) for r in b["input_ids"].tolist()]
    assert sorted(shards.row_id(r, 64) for r in rows) == list(range(64))
    first_block = {shards.row_id(r, 64) for r in rows[:10]}
    assert first_block == set(range(10))  # the permutation stays inside its block
    assert np.array_equal(np.array(rows[0][:1]), np.array([2]))  # [CLS] first
