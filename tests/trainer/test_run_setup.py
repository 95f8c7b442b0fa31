"""What both trainers share without a framework: one flag surface, the configs and checks it
leads to, the run directory's resume rule and the metrics.jsonl format."""
import ast
import dataclasses
import importlib
import inspect
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from tests.trainer.conftest import TINY_MODEL
from trainer import flags, hf_export, metrics, run_setup
from trainer.config import ModelConfig, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(REPO, "configs", "train", "cpu-smoke.yaml")
TINY = TINY_MODEL  # tests/trainer/conftest.py: the one tiny model


def help_options(script: str) -> list:
    """The option lines of ``python SCRIPT --help`` (the description line left out)."""
    proc = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout[proc.stdout.index("options:"):].splitlines()


def test_both_entry_points_take_the_same_flags_with_the_same_help():
    tf_help = help_options("trainer/train_tpu.py")
    assert tf_help == help_options("trainer/train_torch.py")
    text = "\n".join(tf_help)
    for name in ("--data_dir", "--output_dir", "--overwrite", "--stop_at_step", "--tpu"):
        assert name in text
    for field in dataclasses.fields(TrainConfig):
        assert f"--{field.name} " in text, field.name
    assert "--model_dir" not in text and "--resume" not in text


def test_console_scripts_name_both_entry_points():
    """setup.py's console scripts: the two trainers' main(argv=None), which print the summary
    and return None (a console script exits with main's return value)."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", "") == "setup")
    entry_points = ast.literal_eval(next(k.value for k in call.keywords
                                         if k.arg == "entry_points"))
    scripts = dict(line.split("=") for line in entry_points["console_scripts"])
    assert scripts["bert-wwm-train-tf"] == "trainer.train_tpu:main"
    assert scripts["bert-wwm-train-torch"] == "trainer.train_torch:main"
    for target in (scripts["bert-wwm-train-tf"], scripts["bert-wwm-train-torch"]):
        module, name = target.split(":")
        main = getattr(importlib.import_module(module), name)
        signature = inspect.signature(main)
        assert list(signature.parameters) == ["argv"] and signature.return_annotation == "None"


def args_for(*argv):
    return flags.parse_args(["--data_dir", "d", "--train_config", SMOKE, "--output_dir", "o",
                             *argv], description="test")


def test_flags_override_the_preset_and_the_model_comes_from_a_preset_or_the_checkpoint(tmp_path):
    model_yaml = tmp_path / "m.yaml"
    model_yaml.write_text("".join(f"{k}: {v}\n" for k, v in TINY.items()))
    model, train = run_setup.load_configs(args_for("--model_config", str(model_yaml),
                                                   "--batch_size", "3", "--eval_steps", "7"))
    assert (train.batch_size, train.eval_steps, train.learning_rate) == (3, 7, 1e-3)
    assert model.hidden_size == 32
    hf_export.write_config(str(tmp_path / "hf"), ModelConfig(vocab_size=64, hidden_size=16,
                                                              num_attention_heads=2))
    model, _ = run_setup.load_configs(args_for("--init_checkpoint", str(tmp_path / "hf")))
    assert (model.hidden_size, model.vocab_size) == (16, 64)
    with pytest.raises(ValueError, match="--model_config is required"):
        run_setup.load_configs(args_for())


def test_an_init_checkpoint_of_another_shape_than_the_model_config_is_refused(train_dir, tmp_path):
    hf_export.write_config(str(tmp_path / "hf"), ModelConfig(vocab_size=64, **{
        **TINY, "hidden_size": 64}))
    with pytest.raises(ValueError, match="hidden_size: model 32 vs .* 64"):
        run_setup.prepare_run(ModelConfig(**TINY), TrainConfig(), data_dir=train_dir,
                              output_dir=str(tmp_path / "run"),
                              init_checkpoint=str(tmp_path / "hf"))


def make_run(data_dir, output_dir, **train):
    return run_setup.prepare_run(ModelConfig(**TINY), TrainConfig(**train), data_dir=data_dir,
                                 output_dir=str(output_dir))


def start(run, trainer="pytorch", replicas=1):
    record = run_setup.run_record(run, trainer=trainer, replicas=replicas)
    run_setup.start_run_dir(run, record, clear=run_setup.check_run_dir(run, record))


def test_a_run_resumes_only_where_its_configuration_matches(train_dir, eval_dir, tmp_path):
    out = tmp_path / "run"
    first = make_run(train_dir, out, learning_rate=1e-3)
    start(first)
    saved = json.loads((out / run_setup.RUN_CONFIG).read_text())
    assert saved["train_config"]["learning_rate"] == 1e-3 and saved["trainer"] == "pytorch"
    # periods, eval_steps and the eval data may change between a run and its resumption
    same = run_setup.prepare_run(ModelConfig(**TINY), TrainConfig(learning_rate=1e-3,
                                                                  log_every=7, eval_steps=3),
                                 data_dir=train_dir, eval_data_dir=eval_dir,
                                 output_dir=str(out))
    start(same)
    # the same data at another path is the same run (its manifest's digest is compared)
    moved = shutil.copytree(train_dir, tmp_path / "moved")
    start(make_run(str(moved), out, learning_rate=1e-3, log_every=7, eval_steps=3))
    for other, message in [
        (dict(run=make_run(train_dir, out, learning_rate=2e-3)),
         "train_config.learning_rate: 0.001 there, 0.002 now"),
        (dict(run=first, replicas=2), "replicas: 1 there, 2 now"),
        (dict(run=first, trainer="tf2"), "trainer: 'pytorch' there, 'tf2' now"),
        (dict(run=make_run(eval_dir, out, learning_rate=1e-3)), "data.manifest_sha256"),
    ]:
        with pytest.raises(run_setup.Refused, match=message):
            start(**other)


def test_overwrite_deletes_only_the_trainers_files(train_dir, tmp_path):
    out = tmp_path / "run"
    start(make_run(train_dir, out, learning_rate=1e-3))
    for name in ("checkpoints/step-00000002", "tensorboard/train", "hf"):
        (out / name).mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"split": "train", "step": 2}\n')
    (out / "notes.txt").write_text("mine")
    changed = dataclasses.replace(make_run(train_dir, out, learning_rate=2e-3), overwrite=True)
    start(changed)
    assert sorted(os.listdir(out)) == ["hf", "notes.txt", run_setup.RUN_CONFIG]
    assert json.loads((out / run_setup.RUN_CONFIG).read_text())["train_config"][
        "learning_rate"] == 2e-3


def test_run_files_without_a_run_config_are_refused(train_dir, tmp_path):
    out = tmp_path / "run"
    (out / "notes").mkdir(parents=True)
    start(make_run(train_dir, out))  # unrelated files: a fresh run may start here
    os.remove(out / run_setup.RUN_CONFIG)
    (out / "checkpoints").mkdir()
    with pytest.raises(run_setup.Refused, match="holds checkpoints but no run_config.json"):
        start(make_run(train_dir, out))


def test_stop_at_step_ends_early_without_moving_the_schedule(train_dir, tmp_path):
    run = dataclasses.replace(make_run(train_dir, tmp_path, num_train_steps=10, log_every=4,
                                       checkpoint_every=4, warmup_steps=2), stop_at_step=5)
    assert run.last_step == 5
    assert [s for s in range(1, 11) if run.log_due(s)] == [4, 5, 8]
    assert [s for s in range(1, 11) if run.checkpoint_due(s)] == [4, 5, 8]
    assert run.learning_rate_at(4) == pytest.approx(1e-4 * 6 / 8)
    with pytest.raises(ValueError, match="stop_at_step"):
        run_setup.prepare_run(ModelConfig(**TINY), TrainConfig(), data_dir=train_dir,
                              output_dir=str(tmp_path), stop_at_step=0)


SUMS = dict(mlm_loss_sum=6.0, mlm_weight_sum=3.0, mlm_correct_sum=2.0, nsp_loss_sum=1.5,
            nsp_correct_sum=1.0, num_examples=2.0)


def test_metrics_are_finished_with_one_set_of_denominators():
    values = metrics.finish(SUMS, "nsp")
    assert tuple(values) == metrics.eval_keys("nsp")
    w = 3.0 + metrics.MLM_DENOMINATOR_EPS
    assert values["masked_lm_loss"] == 6.0 / w and values["masked_lm_accuracy"] == 2.0 / w
    assert (values["next_sentence_loss"], values["next_sentence_accuracy"]) == (0.75, 0.5)
    assert values["loss"] == 6.0 / w + 0.75 and values["examples"] == 2.0
    train = metrics.finish_train(metrics.add(SUMS, SUMS), "nsp", grad_norm_sum=3.0, steps=2,
                                 learning_rate=1e-4, seconds=2.0)
    assert tuple(train) == metrics.train_keys("nsp")
    assert (train["grad_norm"], train["examples_per_sec"], train["examples"]) == (1.5, 2.0, 4.0)


def test_metrics_log_holds_one_format_and_trims_after_a_resumed_step(tmp_path):
    scalars = []
    log = metrics.MetricsLog(str(tmp_path), next_sentence="nsp",
                             scalars=lambda *a: scalars.append(a))
    for step in (2, 4, 6):
        log.write("train", step, metrics.finish_train(SUMS, "nsp", grad_norm_sum=1.0, steps=2,
                                                      learning_rate=1e-4, seconds=1.0))
    log.write("eval", 4, metrics.finish(SUMS, "nsp"))
    with pytest.raises(ValueError, match="holds"):
        log.write("eval", 6, {"masked_lm_accuracy": 0.5})
    lines = metrics.read(str(tmp_path / metrics.METRICS_FILE))
    assert [(x["split"], x["step"]) for x in lines] == [("train", 2), ("train", 4),
                                                         ("train", 6), ("eval", 4)]
    assert list(lines[0]) == ["split", "step", *metrics.train_keys("nsp")]
    assert list(lines[3]) == ["split", "step", *metrics.eval_keys("nsp")]
    assert [(s, n) for s, n, _ in scalars] == [("train", 2), ("train", 4), ("train", 6),
                                               ("eval", 4)]
    log.trim(4)  # resumed from the step-4 checkpoint: step 6 will be logged again
    assert [x["step"] for x in metrics.read(log.path)] == [2, 4, 4]


def test_a_non_finite_loss_stops_every_rank_after_rank_0_wrote_its_line(tmp_path):
    values = metrics.finish_train({**SUMS, "nsp_loss_sum": math.nan}, "nsp", grad_norm_sum=1.0,
                                  steps=1, learning_rate=1e-4, seconds=1.0)
    with pytest.raises(FloatingPointError, match="train loss is nan at step 3"):
        metrics.MetricsLog(str(tmp_path / "run"), next_sentence="nsp").write("train", 3, values)
    assert metrics.read(str(tmp_path / "run" / metrics.METRICS_FILE))[0]["step"] == 3
    other_rank = metrics.MetricsLog(str(tmp_path / "other"), next_sentence="nsp", active=False)
    with pytest.raises(FloatingPointError):  # stops too (no rank is left waiting), writes nothing
        other_rank.write("train", 3, values)
    assert not (tmp_path / "other").exists()
