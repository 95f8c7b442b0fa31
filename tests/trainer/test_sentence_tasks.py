"""Sentence tasks (the manifest's ``next_sentence``) on the shared, framework-free side: the metric
names each task reports, and the data both trainers refuse before building anything."""
import json
import os

import pytest

from pipeline import schema
from tests.trainer.conftest import TINY_MODEL
from trainer import data_contract, metrics, run_setup
from trainer.config import ModelConfig, TrainConfig
from trainer.train_torch import train as train_torch
from trainer.train_tpu import train as train_tf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(REPO, "configs", "train", "cpu-smoke.yaml")
TINY = TINY_MODEL  # tests/trainer/conftest.py: the one tiny model
SUMS = dict(mlm_loss_sum=6.0, mlm_weight_sum=3.0, mlm_correct_sum=2.0, nsp_loss_sum=1.5,
            nsp_correct_sum=1.0, num_examples=2.0)


def test_every_pipeline_task_has_its_metric_names():
    assert set(metrics.PAIR_METRICS) == set(schema.SENTENCE_TASKS)
    assert metrics.eval_keys("nsp") == ("loss", "masked_lm_accuracy", "masked_lm_loss",
                                        "next_sentence_accuracy", "next_sentence_loss",
                                        "examples")
    assert metrics.eval_keys("sop") == ("loss", "masked_lm_accuracy", "masked_lm_loss",
                                        "sentence_order_accuracy", "sentence_order_loss",
                                        "examples")
    assert metrics.eval_keys("none") == ("loss", "masked_lm_accuracy", "masked_lm_loss",
                                         "examples")
    assert metrics.train_keys("none")[-3:] == ("grad_norm", "learning_rate", "examples_per_sec")
    assert metrics.sum_keys("none") == ("mlm_loss_sum", "mlm_weight_sum", "mlm_correct_sum",
                                        "num_examples")
    with pytest.raises(ValueError, match="next_sentence must be one of"):
        metrics.eval_keys("mlm")


def test_sop_is_scored_as_nsp_under_its_own_names_and_none_is_masked_lm_only():
    nsp, sop = metrics.finish(SUMS, "nsp"), metrics.finish(SUMS, "sop")
    assert (sop["sentence_order_accuracy"], sop["sentence_order_loss"]) == (
        nsp["next_sentence_accuracy"], nsp["next_sentence_loss"]) == (0.5, 0.75)
    assert sop["loss"] == nsp["loss"]
    mlm_only = {k: v for k, v in SUMS.items() if not k.startswith("nsp_")}
    none = metrics.finish(mlm_only, "none")
    assert tuple(none) == metrics.eval_keys("none")
    assert none["loss"] == none["masked_lm_loss"] == nsp["masked_lm_loss"]
    log = metrics.MetricsLog("unused", next_sentence="none", active=False)
    with pytest.raises(ValueError, match="holds"):  # NSP keys in a none run's log
        log.write("eval", 1, nsp)


def rewrite_manifest(data_dir, **changes):
    path = os.path.join(data_dir, schema.MANIFEST_FILE)
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    manifest.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del manifest[key]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f)


def cli_args(data_dir, model_yaml, out, *extra):
    return ["--data_dir", data_dir, "--model_config", model_yaml, "--train_config", SMOKE,
            "--output_dir", str(out), "--num_train_steps", "2", "--batch_size", "4", *extra]


@pytest.mark.parametrize("train", [train_torch, train_tf], ids=["torch", "tf"])
def test_both_trainers_refuse_a_sentence_task_they_do_not_know(train, shards, tiny_model_yaml,
                                                               tmp_path):
    data = shards.make_shard_dir(str(tmp_path / "data"), num_instances=8, num_shards=1, seed=1)
    rewrite_manifest(data, next_sentence="sbo")
    with pytest.raises(SystemExit, match="refusing to train: .*next_sentence 'sbo' is not one "
                                         r"of \('nsp', 'sop', 'none'\)"):
        train(cli_args(data, tiny_model_yaml, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("train", [train_torch, train_tf], ids=["torch", "tf"])
def test_both_trainers_refuse_held_out_data_of_another_task(train, shards, tiny_model_yaml,
                                                            tmp_path):
    data = shards.make_shard_dir(str(tmp_path / "sop"), num_instances=8, num_shards=1, seed=1,
                                 next_sentence="sop")
    held_out = shards.make_shard_dir(str(tmp_path / "nsp"), num_instances=8, num_shards=1,
                                     seed=2, next_sentence="nsp")
    with pytest.raises(SystemExit, match="held-out data next_sentence 'nsp' != training data "
                                         "next_sentence 'sop'"):
        train(cli_args(data, tiny_model_yaml, tmp_path / "run", "--eval_data_dir", held_out))
    assert not (tmp_path / "run").exists()


def test_the_task_comes_from_the_manifest_and_older_manifests_mean_nsp(shards, tmp_path):
    config = ModelConfig(vocab_size=64, **TINY)
    for task in schema.SENTENCE_TASKS:
        data = shards.make_shard_dir(str(tmp_path / task), num_instances=4, num_shards=1,
                                     seed=1, next_sentence=task)
        assert data_contract.load_data_dir(data, config).next_sentence == task
    rewrite_manifest(str(tmp_path / "nsp"), next_sentence=None)  # written before the key
    assert "next_sentence" not in data_contract.read_manifest(str(tmp_path / "nsp"))
    assert data_contract.load_data_dir(str(tmp_path / "nsp"), config).next_sentence == "nsp"


def test_single_segment_data_needs_no_second_segment_embedding(shards, tmp_path):
    one_type = ModelConfig(vocab_size=64, type_vocab_size=1, **TINY)
    none = shards.make_shard_dir(str(tmp_path / "none"), num_instances=4, num_shards=1, seed=1,
                                 next_sentence="none")
    run = run_setup.prepare_run(one_type, TrainConfig(max_seq_length=32,
                                                      max_predictions_per_seq=5),
                                data_dir=none, output_dir=str(tmp_path / "run"))
    assert run.data.next_sentence == "none"
    sop = shards.make_shard_dir(str(tmp_path / "sop"), num_instances=4, num_shards=1, seed=1,
                                next_sentence="sop")
    with pytest.raises(ValueError, match="type_vocab_size 1 < 2: sop data has segment ids"):
        data_contract.load_data_dir(sop, one_type)


@pytest.mark.slow
def test_both_trainers_train_on_single_segment_data_the_pipeline_wrote(tmp_path,
                                                                      small_ltp_model_dir,
                                                                      tiny_model_yaml,
                                                                      task_metrics):
    """The real job with --next_sentence=none (the throw-away LTP model), then 4 steps of each
    trainer on its output: masked-LM metrics only."""
    from pipeline.run import run

    corpus = os.path.join(REPO, "pipeline", "resources", "sample", "peoples_daily_sample.txt")
    with open(corpus, encoding="utf-8") as f:
        docs = [d for d in f.read().split("\n\n") if d.strip()][:40]
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    data = str(tmp_path / "data")
    run([f"--input={text}", f"--output_dir={data}", f"--ltp_model={small_ltp_model_dir}",
         "--next_sentence=none", "--max_seq_length=64", "--max_predictions_per_seq=10",
         "--dupe_factor=1", "--num_shards=2", "--quiet"])
    assert data_contract.read_manifest(data)["next_sentence"] == "none"
    for name, train in (("torch", train_torch), ("tf", train_tf)):
        out = tmp_path / name
        summary = train(cli_args(data, tiny_model_yaml, out, "--num_train_steps", "4",
                                 "--log_every", "2", "--eval_data_dir", data, "--eval_every",
                                 "4", "--eval_steps", "2", "--num_workers", "0",
                                 "--export_hf", str(out / "hf")))
        task_metrics(str(out / metrics.METRICS_FILE), "none", summary["eval"])
        assert summary["export_hf"] == str(out / "hf")
