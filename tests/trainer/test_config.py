"""Presets, overrides and the learning-rate schedule (trainer.config: no framework needed)."""
import dataclasses
import os

import pytest

from trainer.config import (
    ModelConfig,
    TrainConfig,
    learning_rate,
    load_model_config,
    load_train_config,
    with_overrides,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name: (layers, hidden, heads), from the BERT paper and Turc et al. 2019.
SIZES = {"bert-tiny": (2, 128, 2), "bert-mini": (4, 256, 4), "bert-small": (4, 512, 8),
         "bert-medium": (8, 512, 8), "bert-base": (12, 768, 12), "bert-large": (24, 1024, 16)}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_model_presets_have_the_published_sizes(name):
    config = load_model_config(os.path.join(REPO, "configs", "model", f"{name}.yaml"))
    layers, hidden, heads = SIZES[name]
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (
        layers, hidden, heads)
    assert config.intermediate_size == 4 * hidden
    assert config.vocab_size is None  # taken from the data's manifest


@pytest.mark.parametrize("name", ["cpu-smoke", "gpu", "tpu-v3-8", "tpu-v4-8"])
def test_train_presets_load(name):
    config = load_train_config(os.path.join(REPO, "configs", "train", f"{name}.yaml"))
    assert config.warmup_steps < config.num_train_steps
    if name != "cpu-smoke":
        assert (config.max_seq_length, config.max_predictions_per_seq) == (128, 20)
        assert config.warmup_steps >= 2500 and config.mixed_precision == "bf16"


def test_v3_8_preset_is_the_bert_paper_setup():
    config = load_train_config(os.path.join(REPO, "configs", "train", "tpu-v3-8.yaml"))
    assert config.batch_size * 8 == 256
    assert (config.learning_rate, config.warmup_steps) == (1e-4, 10000)
    tpu = load_train_config(os.path.join(REPO, "configs", "train", "tpu-v4-8.yaml"))
    assert tpu.optimizer == "lamb"


def test_unknown_keys_are_refused(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("hidden_size: 64\nnum_hidden_layer: 2\n")
    with pytest.raises(ValueError, match="num_hidden_layer"):
        load_model_config(str(path))


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="multiple"):
        ModelConfig(hidden_size=100, num_attention_heads=3)


def test_overrides_replace_only_given_values():
    base = TrainConfig(batch_size=8, learning_rate=1e-3)
    new = with_overrides(base, {"batch_size": 4, "learning_rate": None})
    assert (new.batch_size, new.learning_rate) == (4, 1e-3)
    assert dataclasses.replace(new, batch_size=8) == base


def test_learning_rate_warms_up_then_decays_to_zero():
    def lr(s):
        return learning_rate(s, base_lr=1e-3, warmup_steps=4, total_steps=12)

    assert [round(lr(s), 10) for s in range(4)] == [2.5e-4, 5e-4, 7.5e-4, 1e-3]
    assert lr(4) == pytest.approx(1e-3)
    assert lr(8) == pytest.approx(5e-4)
    assert lr(11) == pytest.approx(1.25e-4)
    assert lr(12) == 0.0 and lr(100) == 0.0
    values = [lr(s) for s in range(4, 13)]
    assert values == sorted(values, reverse=True)


def test_learning_rate_without_warmup_starts_at_base():
    assert learning_rate(0, base_lr=0.1, warmup_steps=0, total_steps=10) == pytest.approx(0.1)
    assert learning_rate(5, base_lr=0.1, warmup_steps=0, total_steps=10) == pytest.approx(0.05)
