"""trainer/hf_data.py: the map-style dataset, the collator and the epoch callback, with a real
``transformers.Trainer`` (a tiny local BertForPreTraining, no hub) on real dynamic shards; the
collator's masks are the PyTorch trainer stream's for the same (seed, epoch, index)."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import transformers

from pipeline import schema
from tests.trainer.conftest import TINY_MODEL
from trainer import data_contract
from trainer.config import ModelConfig
from trainer.hf_data import MaskingEpochCallback, PretrainingCollator, PretrainingDataset
from trainer.pt.data import IGNORE_INDEX, ShardDataset, StreamConfig

SEED = 11


def tiny_bert(vocab_size: int) -> transformers.BertForPreTraining:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=vocab_size, type_vocab_size=2,
                                     **TINY_MODEL)
    return transformers.BertForPreTraining(config)


def training_args(out, **overrides) -> transformers.TrainingArguments:
    values = dict(output_dir=str(out), max_steps=4, per_device_train_batch_size=8,
                  learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[],
                  use_cpu=True, seed=SEED, remove_unused_columns=False,
                  dataloader_num_workers=0, disable_tqdm=True)
    return transformers.TrainingArguments(**{**values, **overrides})


def original_ids(batch) -> np.ndarray:
    labels, ids = batch["labels"].numpy(), batch["input_ids"].numpy()
    return np.where(labels != IGNORE_INDEX, labels, ids)


def index_of(dataset: PretrainingDataset) -> dict:
    """(unmasked input_ids, token_type_ids) padded -> the stable indices with that row."""
    out = {}
    for i in range(len(dataset)):
        item = dataset[i]
        key = tuple(np.pad(item["input_ids"], (0, dataset.max_seq_length
                                               - len(item["input_ids"]))).tolist())
        types = tuple(np.pad(item["token_type_ids"], (0, dataset.max_seq_length
                                                      - len(item["token_type_ids"]))).tolist())
        out.setdefault((key, types), []).append(i)
    return out


def test_items_are_the_shards_rows_in_stable_index_order(real_dynamic_shards):
    dataset = PretrainingDataset(real_dynamic_shards)
    assert dataset.dynamic and len(dataset) == dataset.manifest["total_instances"]
    item = dataset[-1]
    assert item["index"] == len(dataset) - 1
    assert set(item) == {"input_ids", "attention_mask", "token_type_ids", schema.WORD_STARTS,
                         "next_sentence_label", "index"}
    assert len(item["input_ids"]) == len(item[schema.WORD_STARTS]) <= dataset.max_seq_length
    assert item["input_ids"][0] == 101 and item["input_ids"][-1] == 102  # [CLS] ... [SEP]
    with pytest.raises(IndexError):
        dataset[len(dataset)]


@pytest.mark.parametrize("epoch", [0, 2])
def test_collator_masks_equal_the_torch_trainer_streams(real_dynamic_shards, epoch):
    dataset = PretrainingDataset(real_dynamic_shards)
    collator = PretrainingCollator(dataset, seed=SEED)
    collator.set_epoch(epoch)
    manifest = data_contract.read_manifest(real_dynamic_shards)
    spec = data_contract.load_data_dir(real_dynamic_shards, data_contract.resolve_model_config(
        ModelConfig(**TINY_MODEL), manifest))
    config = StreamConfig(paths=tuple(spec.paths(schema.PARQUET_DIR)), batch_size=16,
                          max_seq_length=spec.max_seq_length,
                          max_predictions_per_seq=spec.max_predictions_per_seq, seed=SEED,
                          shuffle_buffer=32, next_sentence=spec.next_sentence,
                          masking=spec.masking,
                          index_offsets=tuple(spec.index_offsets(schema.PARQUET_DIR)))
    stream = iter(ShardDataset(config, cursors={0: (epoch, 0)}))
    lookup = index_of(dataset)
    for _ in range(3):
        batch = next(stream)
        assert int(batch["cursor_epoch"]) == epoch
        original = original_ids(batch)
        indices = [lookup[(tuple(original[r].tolist()),
                           tuple(batch["token_type_ids"][r].tolist()))][0]
                   for r in range(len(original))]
        ours = collator([dataset[i] for i in indices])
        assert list(ours) == ["input_ids", "attention_mask", "token_type_ids", "labels",
                              "next_sentence_label"]
        for name, tensor in ours.items():
            assert torch.equal(tensor, batch[name]), name


def test_held_out_items_keep_epoch_0_masks(real_dynamic_shards):
    train = PretrainingDataset(real_dynamic_shards)
    held_out = PretrainingDataset(real_dynamic_shards, mask_epoch=0)
    collator = PretrainingCollator(train, seed=SEED)
    at_0 = collator([train[i] for i in range(8)])
    collator.set_epoch(5)
    assert torch.equal(collator([held_out[i] for i in range(8)])["input_ids"], at_0["input_ids"])
    assert not torch.equal(collator([train[i] for i in range(8)])["input_ids"],
                           at_0["input_ids"])


def test_static_labels_are_the_stored_masks(train_dir):
    """Static fixture shards (vocab 64): the collator's batch of rows 0..7 is the PyTorch
    stream's first unshuffled batch (file 0, rows in order)."""
    dataset = PretrainingDataset(train_dir)
    assert not dataset.dynamic and "masked_lm_ids" in dataset[0]
    collator = PretrainingCollator(dataset, seed=SEED, next_sentence_label=False)
    spec = data_contract.load_data_dir(train_dir, dataclasses.replace(
        ModelConfig(**TINY_MODEL), vocab_size=64))
    config = StreamConfig(paths=tuple(spec.paths(schema.PARQUET_DIR)), batch_size=8,
                          max_seq_length=32, max_predictions_per_seq=5, shuffle=False,
                          repeat=False)
    expected = next(iter(ShardDataset(config)))
    ours = collator([dataset[i] for i in range(8)])
    assert "next_sentence_label" not in ours  # for BertForMaskedLM
    for name, tensor in ours.items():
        assert torch.equal(tensor, expected[name]), name


class RecordingTrainer(transformers.Trainer):
    """Keeps the epoch and the inputs of every training step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.seen.append((math.floor(self.state.epoch + 1e-9),
                          {k: v.detach().cpu() for k, v in inputs.items()}))
        return super().training_step(model, inputs, num_items_in_batch)


@pytest.mark.parametrize("workers", [0, 2])
def test_trainer_trains_with_each_epochs_masks(real_dynamic_shards, tmp_path, workers,
                                               torch_one_thread):
    """4 steps of a tiny BertForPreTraining over 16 instances (2 epochs of 2 batches): the
    loss is finite and every batch holds the masks of (seed, its epoch, index), in the
    training process (workers 0) and in DataLoader workers (2)."""
    full = PretrainingDataset(real_dynamic_shards)
    subset = torch.utils.data.Subset(full, list(range(100, 116)))  # items keep their index
    collator = PretrainingCollator(full, seed=SEED)
    trainer = RecordingTrainer(model=tiny_bert(full.manifest["vocab_size"]),
                               args=training_args(tmp_path, dataloader_num_workers=workers),
                               train_dataset=subset, data_collator=collator,
                               callbacks=[MaskingEpochCallback(collator)])
    result = trainer.train()
    assert result.global_step == 4 and math.isfinite(result.training_loss)
    losses = [x["loss"] for x in trainer.state.log_history if "loss" in x]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert [epoch for epoch, _ in trainer.seen] == [0, 0, 1, 1]
    lookup = index_of(full)
    masks = {}
    for epoch, batch in trainer.seen:
        original = original_ids(batch)
        indices = [lookup[(tuple(original[r].tolist()),
                           tuple(batch["token_type_ids"][r].tolist()))][0]
                   for r in range(len(original))]
        reference = PretrainingCollator(full, seed=SEED)
        reference.set_epoch(epoch)
        assert torch.equal(reference([full[i] for i in indices])["input_ids"],
                           batch["input_ids"])
        masks.update({(epoch, i): batch["input_ids"][r] for r, i in enumerate(indices)})
    assert sorted({i for _, i in masks}) == list(range(100, 116))
    assert sum(torch.equal(masks[0, i], masks[1, i]) for i in range(100, 116)) < 4


def test_the_callback_refuses_settings_that_lose_keys_or_the_epoch(real_dynamic_shards,
                                                                     tmp_path):
    dataset = PretrainingDataset(real_dynamic_shards)
    collator = PretrainingCollator(dataset, seed=SEED)
    for overrides, message in ((dict(remove_unused_columns=True), "remove_unused_columns"),
                               (dict(dataloader_num_workers=2,
                                     dataloader_persistent_workers=True), "persistent")):
        trainer = transformers.Trainer(
            model=tiny_bert(dataset.manifest["vocab_size"]),
            args=training_args(tmp_path, **overrides), train_dataset=dataset,
            data_collator=collator, callbacks=[MaskingEpochCallback(collator)])
        with pytest.raises(ValueError, match=message):
            trainer.train()
    with pytest.raises(KeyError, match="remove_unused_columns=False"):
        collator([{k: v for k, v in dataset[0].items() if k != "index"}])
