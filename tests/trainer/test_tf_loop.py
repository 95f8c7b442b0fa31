"""The TF2 loop: exact resume, the run directory rule, the CLI (script and -m forms), refusing
mismatched data."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from pipeline import schema  # noqa: E402
from tests.trainer import tf_fixtures as fx  # noqa: E402
from trainer import config as cfg  # noqa: E402
from trainer import data_contract, metrics, run_setup  # noqa: E402
from trainer.tf2 import loop  # noqa: E402

CONFIG = cfg.ModelConfig(vocab_size=64, **fx.TINY)  # dropout 0.1 stays on: its RNG must resume
TRAIN = cfg.TrainConfig(batch_size=4, num_train_steps=6, learning_rate=1e-3, warmup_steps=2,
                        log_every=3, checkpoint_every=3, eval_every=3, eval_steps=2,
                        shuffle_buffer=32, mixed_precision="fp32")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fx.make_data_dir(str(tmp_path_factory.mktemp("tf_loop")), num_instances=40,
                            num_shards=2, seed=11)


def _fit(data_dir, output_dir, *, stop_at_step=None, **overrides):
    data = data_contract.load_data_dir(data_dir, CONFIG)
    run = run_setup.Run(model_config=CONFIG, train_config=dataclasses.replace(TRAIN, **overrides),
                        data=data, eval_data=data, output_dir=output_dir,
                        stop_at_step=stop_at_step)
    return loop.fit(run, tf.distribute.get_strategy())


def _weights(result):
    return [v.numpy() for v in result.trainer.model.trainable_variables]


def test_checkpoint_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, data_dir):
    """6 steps straight vs 3 steps (--stop_at_step), then the same run again: it resumes.
    Every step sees different examples, so a replayed or skipped batch (or a dropout RNG that
    restarts) would change the weights. The interrupted run lives behind a URL (TF's ram://
    file system, as gs:// on a TPU VM): run_config.json, metrics.jsonl and the resume rule
    work there too."""
    straight = _fit(data_dir, str(tmp_path / "a"))
    remote = f"ram://{tmp_path.name}/b"
    stopped = _fit(data_dir, remote, stop_at_step=3)
    assert stopped.step == 3 and stopped.export_hf is None
    resumed = _fit(data_dir, remote)
    assert straight.step == resumed.step == 6
    assert int(resumed.trainer.data_examples.numpy()) == 6 * 4
    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    lines = metrics.read(f"{remote}/metrics.jsonl")
    assert [(x["split"], x["step"]) for x in lines] == [
        ("train", 3), ("eval", 3), ("train", 6), ("eval", 6)]
    assert list(lines[0]) == ["split", "step", *metrics.train_keys("nsp")]
    assert list(lines[1]) == ["split", "step", *metrics.eval_keys("nsp")]
    # the same held-out batches at every evaluation, in one process or two
    evals = [x for x in metrics.read(str(tmp_path / "a" / "metrics.jsonl")) if x["split"] == "eval"]
    assert [x["examples"] for x in evals] == [8.0, 8.0]  # eval_steps 2 x batch 4
    assert evals[1]["loss"] == pytest.approx(lines[3]["loss"], rel=1e-5)
    assert tf.io.gfile.listdir(f"{remote}/tensorboard/train")  # TensorBoard event files
    with pytest.raises(run_setup.Refused, match="learning_rate: 0.001 there, 0.002 now"):
        _fit(data_dir, remote, learning_rate=2e-3)


def test_held_out_data_smaller_than_one_global_batch_is_refused_before_anything(tmp_path,
                                                                                data_dir):
    with pytest.raises(run_setup.Refused, match="one global batch of 64: nothing to evaluate"):
        _fit(data_dir, str(tmp_path / "run"), batch_size=64)  # 40 held-out examples
    assert not os.path.exists(tmp_path / "run")


def _cli(*args, module: bool, timeout: int = 240):
    cmd = [sys.executable] + (["-m", "trainer.train_tpu"] if module else ["trainer/train_tpu.py"])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    return subprocess.run(cmd + list(args), cwd=fx.REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_as_a_script_trains_evaluates_and_exports(tmp_path, data_dir):
    model_yaml = fx.write_yaml(str(tmp_path / "tiny.yaml"), fx.TINY)
    proc = _cli("--data_dir", data_dir, "--eval_data_dir", data_dir, "--model_config",
                model_yaml, "--train_config", "configs/train/cpu-smoke.yaml", "--output_dir",
                str(tmp_path / "run"), "--export_hf", str(tmp_path / "hf"),
                "--num_train_steps", "4", "--batch_size", "4", "--eval_steps", "1",
                module=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["step"] == 4 and summary["export_hf"] == str(tmp_path / "hf")
    assert summary["eval"]["examples"] == 4  # eval_steps 1 x batch 4
    lines = metrics.read(str(tmp_path / "run" / "metrics.jsonl"))
    assert summary["eval"] == {k: v for k, v in lines[-1].items() if k not in ("split", "step")}
    assert list(lines[-1]) == ["split", "step", *metrics.eval_keys("nsp")]
    assert os.path.exists(tmp_path / "hf" / "model.safetensors")
    assert os.path.exists(tmp_path / "hf" / schema.VOCAB_FILE)


@pytest.mark.parametrize("flags, message", [
    (["--max_seq_length", "128"], "max_seq_length 32 != training config max_seq_length 128"),
    (["--model_vocab", "99"], "vocab_size 64 != model vocab_size 99"),
    (["--model_positions", "16"], "max_seq_length 32 > model max_position_embeddings 16"),
])
def test_cli_as_a_module_refuses_a_manifest_model_mismatch_before_any_step(tmp_path, data_dir,
                                                                          flags, message):
    model = dict(fx.TINY)
    if flags[0] == "--model_vocab":
        model["vocab_size"], flags = int(flags[1]), []
    elif flags[0] == "--model_positions":
        model["max_position_embeddings"], flags = int(flags[1]), []
    model_yaml = fx.write_yaml(str(tmp_path / "m.yaml"), model)
    proc = _cli("--data_dir", data_dir, "--model_config", model_yaml, "--train_config",
                "configs/train/cpu-smoke.yaml", "--output_dir", str(tmp_path / "run"), *flags,
                module=True, timeout=60)
    assert proc.returncode != 0
    assert "refusing to train" in proc.stderr and message in proc.stderr, proc.stderr[-2000:]
    assert not os.path.exists(tmp_path / "run")  # nothing started
