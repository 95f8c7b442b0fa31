"""The TF2 loop: exact resume, the run directory rule, the CLI (script and -m forms), refusing
mismatched data."""
import dataclasses
import json
import os
import re
import shutil
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


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """TRAIN's 6 steps uninterrupted: the weights every resumed run must end with."""
    return _fit(data_dir, str(tmp_path_factory.mktemp("straight")))


def test_checkpoint_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, data_dir,
                                                                     straight):
    """6 steps straight vs 3 steps (--stop_at_step), then the same run again: it resumes.
    Every step sees different examples, so a replayed or skipped batch (or a dropout RNG that
    restarts) would change the weights. The interrupted run lives behind a URL (TF's ram://
    file system, as gs:// on a TPU VM): run_config.json, metrics.jsonl and the resume rule
    work there too."""
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
    assert list(lines[0]) == ["split", "step", *metrics.train_keys("nsp", tokens=True)]
    assert list(lines[1]) == ["split", "step", *metrics.eval_keys("nsp")]
    # the same held-out batches at every evaluation, in one process or two
    evals = [x for x in metrics.read(os.path.join(straight.trainer.run.output_dir,
                                                  "metrics.jsonl")) if x["split"] == "eval"]
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
    """The CLI as a user runs it: no PYTHONPATH, no TF_CPP_MIN_LOG_LEVEL (the trainer's own
    quieting is under test)."""
    cmd = [sys.executable] + (["-m", "trainer.train_tpu"] if module else ["trainer/train_tpu.py"])
    env = dict(os.environ)
    for name in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL"):
        env.pop(name, None)
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
    assert not start_up_noise(proc.stderr), proc.stderr[-3000:]


# What TensorFlow 2.21 printed on a CPU machine before trainer/quiet.py (import, device probe,
# tf.data and checkpoint INFO lines); never by default since, with --verbose again.
NOISE = ("cuInit", "cudart_stub", "oneDNN", "cpu_feature_guard", "absl::InitializeLog",
         "Sharding callback duration")


def start_up_noise(stderr: str) -> list:
    return [line for line in stderr.splitlines()
            if any(n in line for n in NOISE) or re.match(r"I\d{4} ", line)]


@pytest.mark.parametrize("verbose", [False, True])
def test_cli_keeps_tensorflow_start_up_noise_out_unless_verbose(tmp_path, data_dir, verbose):
    """Refused after TensorFlow loaded and listed its devices (held-out data smaller than one
    batch): the refusal always shows; TF's own start-up lines only with --verbose."""
    model_yaml = fx.write_yaml(str(tmp_path / "tiny.yaml"), fx.TINY)
    proc = _cli("--data_dir", data_dir, "--eval_data_dir", data_dir, "--model_config",
                model_yaml, "--train_config", "configs/train/cpu-smoke.yaml", "--output_dir",
                str(tmp_path / "run"), "--batch_size", "64", *(["--verbose"] * verbose),
                module=True, timeout=120)
    assert proc.returncode != 0
    assert "refusing to train: " in proc.stderr and "one global batch of 64" in proc.stderr, \
        proc.stderr
    if verbose:  # TF logs at level 0: at least its INFO lines are back
        assert any(re.match(r"[IWE]\d{4} ", line) for line in proc.stderr.splitlines())
    else:
        assert not start_up_noise(proc.stderr), proc.stderr


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


def test_shards_changed_after_the_manifest_are_refused_before_any_step(tmp_path, data_dir,
                                                                       caplog):
    """Two training shards swapped (same size, other bytes: each still a valid TFRecord file)
    and a truncated held-out shard: both named, with what differs, before anything is
    written; --skip_data_check trains anyway and says so (without the held-out data, whose
    truncated shard no reader could read)."""
    from trainer import train_tpu

    data, held = tmp_path / "data", tmp_path / "held"
    shutil.copytree(data_dir, data)
    shutil.copytree(data_dir, held)
    first, second = (data / "tfrecord" / f"part-0000{i}-of-00002.tfrecord" for i in (0, 1))
    assert first.stat().st_size == second.stat().st_size  # fixed-length Examples
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    truncated = held / "tfrecord" / "part-00001-of-00002.tfrecord"
    size = truncated.stat().st_size
    os.truncate(truncated, size - 10)
    model_yaml = fx.write_yaml(str(tmp_path / "tiny.yaml"), fx.TINY)
    out = tmp_path / "run"
    argv = ["--data_dir", str(data), "--eval_data_dir", str(held), "--model_config",
            model_yaml, "--train_config", "configs/train/cpu-smoke.yaml", "--output_dir",
            str(out), "--num_train_steps", "2", "--batch_size", "4", "--eval_steps", "1"]
    with pytest.raises(SystemExit) as refused:
        train_tpu.train(argv)
    message = str(refused.value)
    assert message.startswith("refusing to train: 3 shard(s) differ from what their "
                              "manifest.json records")
    for changed in (first, second):
        assert f"{changed}: sha256 " in message
    assert f"{truncated}: {size - 10} bytes, the manifest says {size}" in message
    assert f"pipeline.verify --output_dir {data}`; `python -m pipeline.verify --output_dir " \
           f"{held}`" in message and "--skip_data_check" in message
    assert not out.exists()  # refused before the run directory, model or any step
    with caplog.at_level("WARNING"):  # the truncated held-out shard could not be read
        del argv[argv.index("--eval_data_dir"):argv.index("--eval_data_dir") + 2]
        assert train_tpu.train(argv + ["--skip_data_check"])["step"] == 2
    assert "--skip_data_check: the tfrecord shards were NOT compared" in caplog.text


def test_resume_skips_a_truncated_newest_checkpoint_for_the_one_before(tmp_path, data_dir,
                                                                      straight, caplog):
    """Stopped at step 4 (checkpoints 3 and 4), ckpt-4's .data file truncated: the rerun warns
    naming it, resumes from ckpt-3 (model, optimizer, data position and dropout RNG: one
    tf.train.Checkpoint) and ends with the weights of an uninterrupted run. ckpt-4 is set
    aside, not deleted, and not overwritten when step 4 is saved again."""
    out = str(tmp_path / "run")
    assert _fit(data_dir, out, stop_at_step=4, eval_every=100).step == 4
    ckpts = os.path.join(out, "checkpoints")
    [data_file] = tf.io.gfile.glob(os.path.join(ckpts, "ckpt-4.data-*"))
    os.truncate(data_file, os.path.getsize(data_file) // 2)
    size = os.path.getsize(data_file)
    with caplog.at_level("INFO"):
        resumed = _fit(data_dir, out, eval_every=100)  # eval: no effect on the weights
    assert resumed.step == 6 and int(resumed.trainer.data_examples.numpy()) == 6 * 4
    damaged = os.path.join(ckpts, "ckpt-4")
    assert f"checkpoint {damaged} does not restore (IndexError: " in caplog.text
    assert f"resumed {os.path.join(ckpts, 'ckpt-3')} at step 3" in caplog.text
    assert f"set {damaged} aside as {os.path.join(ckpts, 'unloadable-ckpt-4')}" in caplog.text
    assert os.path.getsize(data_file.replace("ckpt-4", "unloadable-ckpt-4")) == size
    assert [os.path.basename(p) for p in resumed.trainer.manager.checkpoints] == [
        "ckpt-3", "ckpt-6"]
    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_restore_newest_falls_back_sets_aside_and_reports_when_none_restores(tmp_path,
                                                                             caplog):
    """checkpoints.restore_newest on two variables: a truncated newest falls back to the one
    before, the state file then lists only the kept ones; with every one damaged it returns
    None and the state file goes (nothing is left for it to list)."""
    from trainer.tf2 import checkpoints

    v = tf.Variable(0.0)
    ckpt = tf.train.Checkpoint(v=v, w=tf.Variable(tf.zeros([1000])))
    manager = tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=5)
    for step in (1, 2, 3):
        v.assign(float(step))
        manager.save(checkpoint_number=step)
    [data3] = tf.io.gfile.glob(str(tmp_path / "ckpt-3.data-*"))
    os.truncate(data3, os.path.getsize(data3) // 2)
    with caplog.at_level("WARNING"):
        chosen, skipped = checkpoints.restore_newest(
            ckpt, tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=5))
    assert (chosen, skipped, float(v.numpy())) == (str(tmp_path / "ckpt-2"),
                                                   [str(tmp_path / "ckpt-3")], 2.0)
    assert "ckpt-3 does not restore (IndexError: " in caplog.text
    again = tf.train.CheckpointManager(ckpt, str(tmp_path), max_to_keep=5)
    assert again.checkpoints == [str(tmp_path / "ckpt-1"), str(tmp_path / "ckpt-2")]
    assert again.latest_checkpoint == str(tmp_path / "ckpt-2")
    assert tf.io.gfile.glob(str(tmp_path / "unloadable-ckpt-3.*"))
    for step in (1, 2):
        os.remove(tmp_path / f"ckpt-{step}.index")
    assert checkpoints.restore_newest(ckpt, again) == (None, [str(tmp_path / "ckpt-2"),
                                                            str(tmp_path / "ckpt-1")])
    assert not os.path.exists(tmp_path / "checkpoint")
    assert tf.train.CheckpointManager(ckpt, str(tmp_path), 5).latest_checkpoint is None
    assert sorted(os.listdir(tmp_path)) == sorted(
        f"unloadable-ckpt-{n}.{ext}" for n in (1, 2, 3) for ext in ("index", "data-00000-of-00001")
        if not (n < 3 and ext == "index"))


@pytest.mark.slow
def test_resume_starts_over_loudly_when_no_checkpoint_restores(tmp_path, data_dir, caplog):
    """The only checkpoint's index gone: warned, set aside, and the run starts from step 0 on
    a freshly built model (a failed restore may have assigned some variables)."""
    common = dict(num_train_steps=2, checkpoint_every=1, eval_every=100)
    out = str(tmp_path / "run")
    _fit(data_dir, out, stop_at_step=1, **common)
    ckpts = os.path.join(out, "checkpoints")
    os.remove(os.path.join(ckpts, "ckpt-1.index"))
    with caplog.at_level("INFO"):
        result = _fit(data_dir, out, **common)
    assert result.step == 2 and int(result.trainer.data_examples.numpy()) == 2 * 4
    assert f"checkpoint {os.path.join(ckpts, 'ckpt-1')} does not restore" in caplog.text
    assert "NONE of the 1 checkpoints in" in caplog.text
    assert "initialised randomly" in caplog.text
    assert tf.io.gfile.glob(os.path.join(ckpts, "unloadable-ckpt-1.data-*"))
