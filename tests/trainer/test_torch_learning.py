"""BERT-Tiny learns from real Chinese text: shards the pipeline wrote from the People's Daily
sample (split by document into train and held-out text, fixture ``real_shards``), a short CPU run
of trainer/train_torch's train(), and Google's eval metrics on the held-out shards.

Baselines come from the data, not assumptions: MLM = always predict the masked token most
frequent in the *training* shards ("，"); NSP = 0.5, and the majority class is reported too (one-
sentence chunks are always "random", so about 65% of held-out pairs are random).
"""
import math
import os

import pytest

from pipeline import schema
from tests.trainer.conftest import LEARNING_RATE, LEARNING_STEPS, LEARNING_WARMUP, MLM_MARGIN, REPO
from trainer.train_torch import train


@pytest.mark.slow
def test_tiny_bert_beats_the_most_frequent_token_on_held_out_chinese(real_shards, tmp_path,
                                                                     torch_one_thread):
    metrics = train([
        "--data_dir", real_shards["train"], "--eval_data_dir", real_shards["heldout"],
        "--model_config", os.path.join(REPO, "configs", "model", "bert-tiny.yaml"),
        "--train_config", os.path.join(REPO, "configs", "train", "cpu-smoke.yaml"),
        "--output_dir", str(tmp_path / "run"), "--num_train_steps", str(LEARNING_STEPS),
        "--batch_size", "32", "--learning_rate", str(LEARNING_RATE),
        "--warmup_steps", str(LEARNING_WARMUP), "--log_every", "100",
        "--eval_every", str(LEARNING_STEPS), "--eval_steps", "1000",
        "--checkpoint_every", "1000"])["eval"]
    with open(os.path.join(real_shards["train"], schema.VOCAB_FILE), encoding="utf-8") as f:
        uniform = math.log(len(f.read().splitlines()))
    print(f"held-out ({metrics['examples']:.0f} examples): masked_lm_accuracy "
          f"{metrics['masked_lm_accuracy']:.4f} vs most-frequent-token baseline "
          f"{real_shards['mlm_baseline']:.4f}; masked_lm_loss {metrics['masked_lm_loss']:.3f} "
          f"vs uniform {uniform:.3f}; next_sentence_accuracy "
          f"{metrics['next_sentence_accuracy']:.4f} (majority {real_shards['nsp_majority']:.4f})")
    # eval_steps 1000 means at most one pass: every full batch of the held-out set
    assert metrics["examples"] == real_shards["heldout_instances"] // 32 * 32
    assert metrics["masked_lm_accuracy"] > real_shards["mlm_baseline"] + MLM_MARGIN
    assert metrics["masked_lm_loss"] < uniform - 3.0
    assert metrics["next_sentence_accuracy"] > 0.5
    # NSP within this budget reaches the class prior (one-sentence chunks are always random).
    assert metrics["next_sentence_accuracy"] > real_shards["nsp_majority"] - 0.03
