"""Learning on real data: BERT-Tiny (configs/model/bert-tiny.yaml) on shards the pipeline writes
from the People's Daily sample, evaluated on held-out *documents* (the corpus is split at a
document boundary before the pipeline runs, so no document is on both sides).

Baselines are measured on the held-out data itself: MLM = always predicting the training
labels' most frequent token; NSP = 0.5 and the majority label (one-sentence chunks always get a
random B, so "random" is the majority). Measured figures are printed (pytest -s).
"""
import json
import os

import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("apache_beam")

from tests.trainer import tf_fixtures as fx  # noqa: E402
from tests.trainer.conftest import LEARNING_RATE, LEARNING_WARMUP, MLM_MARGIN  # noqa: E402
from tests.trainer.conftest import LEARNING_STEPS_TF as LEARNING_STEPS  # noqa: E402
from trainer import config as cfg  # noqa: E402
from trainer import data_contract  # noqa: E402
from trainer.run_setup import Run  # noqa: E402


@pytest.mark.slow
def test_tiny_bert_beats_the_baselines_on_held_out_documents(real_shards, tmp_path):
    from trainer.tf2 import loop

    model = cfg.load_model_config(os.path.join(fx.REPO, "configs/model/bert-tiny.yaml"))
    manifest = data_contract.read_manifest(real_shards["train"])
    model = data_contract.resolve_model_config(model, manifest)
    heldout = data_contract.load_data_dir(real_shards["heldout"], model)
    eval_examples = real_shards["heldout_instances"]
    train = cfg.with_overrides(
        cfg.load_train_config(os.path.join(fx.REPO, "configs/train/cpu-smoke.yaml")),
        dict(batch_size=32, num_train_steps=LEARNING_STEPS, warmup_steps=LEARNING_WARMUP,
             learning_rate=LEARNING_RATE, log_every=100, checkpoint_every=LEARNING_STEPS,
             eval_every=LEARNING_STEPS, eval_steps=1000, shuffle_buffer=2000,
             steps_per_execution=100))
    result = loop.fit(Run(model_config=model, train_config=train,
                          data=data_contract.load_data_dir(real_shards["train"], model),
                          output_dir=str(tmp_path / "run"), eval_data=heldout),
                      tf.distribute.get_strategy())
    ev = result.eval
    figures = {"steps": LEARNING_STEPS, "examples_per_sec": result.train["examples_per_sec"],
               "heldout_instances": eval_examples, "scored": ev["examples"],
               "masked_lm_accuracy": ev["masked_lm_accuracy"],
               "mlm_baseline": real_shards["mlm_baseline"],
               "mlm_margin": ev["masked_lm_accuracy"] - real_shards["mlm_baseline"],
               "next_sentence_accuracy": ev["next_sentence_accuracy"],
               "nsp_majority_baseline": real_shards["nsp_majority"]}
    print("\nLEARNING", json.dumps(figures, indent=1))
    assert ev["examples"] == eval_examples // 32 * 32  # one pass of full batches, not 1000
    assert figures["mlm_margin"] > MLM_MARGIN
    assert ev["next_sentence_accuracy"] > 0.5
    # NSP within this budget reaches the class prior (one-sentence chunks are always random).
    assert ev["next_sentence_accuracy"] > real_shards["nsp_majority"] - 0.03
