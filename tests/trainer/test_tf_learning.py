"""Learning on real data: BERT-Tiny (configs/model/bert-tiny.yaml) on shards the pipeline writes
from the People's Daily sample, evaluated on held-out *documents* (the corpus is split at a
document boundary before the pipeline runs, so no document is on both sides).

Baselines are measured on the held-out data itself: MLM = always predicting the training
labels' most frequent token; NSP = 0.5 and the majority label (one-sentence chunks always get a
random B, so "random" is the majority). Measured figures are printed (pytest -s).
"""
import collections
import json
import os
import subprocess
import sys

import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("apache_beam")

from tests.trainer import tf_fixtures as fx  # noqa: E402
from trainer import config as cfg  # noqa: E402
from trainer import data_contract  # noqa: E402

CORPUS = os.path.join(fx.REPO, "pipeline", "resources", "sample", "peoples_daily_sample.txt")
VOCAB = os.path.join(fx.REPO, "pipeline", "resources", "vocab", "bert-base-chinese-vocab.txt")
HAVE_PIPELINE = all(os.path.exists(p) for p in
                    (CORPUS, VOCAB, os.path.join(fx.REPO, "pipeline", "run.py")))
SEQ, PREDS = 64, 10
STEPS = 300  # 9,600 examples: ~60 s on 2 idle CPU cores, ~125 s measured under load


def _split_corpus(out_dir: str) -> dict:
    with open(CORPUS, encoding="utf-8") as f:
        docs = [d for d in f.read().split("\n\n") if d.strip()]
    cut = len(docs) * 9 // 10
    paths = {}
    for part, chunk in (("train", docs[:cut]), ("heldout", docs[cut:])):
        paths[part] = os.path.join(out_dir, f"{part}.txt")
        with open(paths[part], "w", encoding="utf-8") as f:
            f.write("\n\n".join(chunk) + "\n")
    return paths


def _run_pipelines(tmp: str) -> dict:
    """Both pipeline runs at once (separate processes: Beam's DirectRunner per process)."""
    texts, procs, dirs = _split_corpus(tmp), [], {}
    for part, dupe in (("train", 3), ("heldout", 3)):
        dirs[part] = os.path.join(tmp, f"out_{part}")
        argv = [f"--input={texts[part]}", f"--output_dir={dirs[part]}", f"--vocab_file={VOCAB}",
                f"--max_seq_length={SEQ}", f"--max_predictions_per_seq={PREDS}",
                f"--dupe_factor={dupe}", "--num_shards=4"]
        code = f"from pipeline.run import run; run({argv!r})"
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=fx.REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    return dirs


def _labels(data_dir: str):
    """(Counter of real masked_lm_ids, Counter of NSP labels) over a whole data dir."""
    m = data_contract.read_manifest(data_dir)
    spec = {"masked_lm_ids": tf.io.FixedLenFeature([PREDS], tf.int64),
            "masked_lm_weights": tf.io.FixedLenFeature([PREDS], tf.float32),
            "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64)}
    ids, nsp = collections.Counter(), collections.Counter()
    ds = tf.data.TFRecordDataset(data_contract.shard_paths(data_dir, m, "tfrecord")).batch(512)
    for batch in ds.map(lambda r: tf.io.parse_example(r, spec)):
        w = batch["masked_lm_weights"].numpy() > 0
        ids.update(batch["masked_lm_ids"].numpy()[w].tolist())
        nsp.update(batch["next_sentence_labels"].numpy()[:, 0].tolist())
    return ids, nsp


@pytest.mark.skipif(not HAVE_PIPELINE, reason="pipeline/run.py or its sample resources missing")
def test_tiny_bert_beats_the_baselines_on_held_out_documents(tmp_path):
    from trainer.tf2 import loop

    dirs = _run_pipelines(str(tmp_path))
    model = cfg.load_model_config(os.path.join(fx.REPO, "configs/model/bert-tiny.yaml"))
    manifest = data_contract.read_manifest(dirs["train"])
    model = data_contract.resolve_model_config(model, manifest)
    heldout = data_contract.load_data_dir(dirs["heldout"], model)
    eval_examples = heldout.manifest["total_instances"]
    train = cfg.with_overrides(
        cfg.load_train_config(os.path.join(fx.REPO, "configs/train/cpu-smoke.yaml")),
        dict(batch_size=32, num_train_steps=STEPS, warmup_steps=30, learning_rate=2e-3,
             log_every=100, checkpoint_every=STEPS, eval_every=STEPS,
             eval_steps=eval_examples // 32, shuffle_buffer=2000, steps_per_execution=100))
    result = loop.fit(loop.RunSpec(model_config=model, train_config=train,
                                   data=data_contract.load_data_dir(dirs["train"], model),
                                   model_dir=str(tmp_path / "run"), eval_data=heldout),
                      tf.distribute.get_strategy())

    train_ids, _ = _labels(dirs["train"])
    eval_ids, eval_nsp = _labels(dirs["heldout"])
    top = train_ids.most_common(1)[0][0]
    mlm_baseline = eval_ids[top] / sum(eval_ids.values())
    nsp_majority = max(eval_nsp.values()) / sum(eval_nsp.values())
    ev = result.eval
    figures = {"steps": STEPS, "examples_per_sec": result.examples_per_sec,
               "heldout_instances": eval_examples,
               "masked_lm_accuracy": ev["masked_lm_accuracy"], "mlm_baseline": mlm_baseline,
               "mlm_margin": ev["masked_lm_accuracy"] - mlm_baseline,
               "next_sentence_accuracy": ev["next_sentence_accuracy"],
               "nsp_margin_over_half": ev["next_sentence_accuracy"] - 0.5,
               "nsp_majority_baseline": nsp_majority,
               "nsp_margin_over_majority": ev["next_sentence_accuracy"] - nsp_majority}
    print("\nLEARNING", json.dumps(figures, indent=1))
    assert figures["mlm_margin"] > 0.005
    assert figures["nsp_margin_over_half"] > 0.05
    assert figures["nsp_margin_over_majority"] > -0.03  # at least the class prior is learnt
