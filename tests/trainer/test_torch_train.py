"""The whole PyTorch run through its CLI: refusal before any step, exact resume, the run
directory rule, HF export, and a 2-process torchrun (gloo) run. Tiny models (hidden 32,
2 layers) on fixture shards."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import transformers

from trainer import metrics
from trainer.pt import checkpoint
from trainer.train_torch import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(REPO, "configs", "train", "cpu-smoke.yaml")


def args(train_dir, model_yaml, out, *extra):
    return ["--data_dir", train_dir, "--model_config", model_yaml, "--train_config", SMOKE,
            "--output_dir", str(out), "--num_train_steps", "8", "--batch_size", "8",
            "--checkpoint_every", "100", "--log_every", "2", "--shuffle_buffer", "10",
            "--num_workers", "2", *extra]


def final_state(out):
    path = checkpoint.latest_checkpoint(str(out))
    return torch.load(os.path.join(path, "state.pt"), weights_only=False)


def run_env():
    return {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}


def test_cli_module_refuses_a_vocab_mismatch_before_any_step(train_dir, tmp_path):
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("vocab_size: 30522\nhidden_size: 32\nnum_hidden_layers: 1\n"
                     "num_attention_heads: 2\nintermediate_size: 64\n")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "trainer.train_torch",
                           *args(train_dir, str(wrong), out)], cwd=REPO, env=run_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "data vocab_size 64 != model vocab_size 30522" in proc.stderr
    assert not out.exists()  # nothing built, nothing written


def test_phase_mismatch_is_refused_in_process(train_dir, tiny_model_yaml, tmp_path):
    with pytest.raises(SystemExit, match="(?s)refusing to train: .*max_seq_length 32 != training "
                                         "config max_seq_length 128"):
        train(args(train_dir, tiny_model_yaml, tmp_path / "run", "--max_seq_length", "128"))
    assert not (tmp_path / "run").exists()


def test_held_out_data_smaller_than_one_batch_is_refused_before_anything(train_dir, eval_dir,
                                                                        tiny_model_yaml,
                                                                        tmp_path):
    with pytest.raises(SystemExit, match="no rank's held-out files hold one batch of 65"):
        train(args(train_dir, tiny_model_yaml, tmp_path / "run", "--eval_data_dir", eval_dir,
                   "--batch_size", "65"))  # 64 held-out examples
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def straight_run(train_dir, eval_dir, tmp_path_factory):
    """8 steps uninterrupted, with eval and HF export; 2 DataLoader workers."""
    out = tmp_path_factory.mktemp("straight")
    model_yaml = out / "tiny.yaml"
    model_yaml.write_text("hidden_size: 32\nnum_hidden_layers: 2\nnum_attention_heads: 2\n"
                          "intermediate_size: 64\nmax_position_embeddings: 64\n")
    summary = train(args(train_dir, str(model_yaml), out, "--eval_data_dir", eval_dir,
                         "--eval_every", "8", "--eval_steps", "100", "--export_hf",
                         str(out / "hf")))
    return out, str(model_yaml), summary


def test_run_reports_google_metric_names_in_the_shared_format(straight_run):
    out, _, summary = straight_run
    assert summary["step"] == 8 and summary["export_hf"] == str(out / "hf")
    assert summary["eval"]["examples"] == 64  # eval_steps 100: one pass, 2 shards x 4 batches
    lines = metrics.read(str(out / "metrics.jsonl"))
    assert [(x["split"], x["step"]) for x in lines] == [
        ("train", 2), ("train", 4), ("train", 6), ("train", 8), ("eval", 8)]
    assert all(list(x) == ["split", "step", *metrics.train_keys("nsp", tokens=True)]
               for x in lines[:4])
    assert list(lines[4]) == ["split", "step", *metrics.eval_keys("nsp")]
    assert summary["eval"] == {k: v for k, v in lines[4].items() if k not in ("split", "step")}
    # 2 updates x batch 8 per line; the schedule of cpu-smoke (warmup 10, base 1e-3)
    assert [x["examples"] for x in lines[:4]] == [16.0] * 4
    assert [x["learning_rate"] for x in lines[:4]] == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4])
    assert all(x["examples_per_sec"] > 0 and x["grad_norm"] > 0 for x in lines[:4])


def test_rerunning_the_command_resumes_with_the_same_data_and_weights(straight_run, train_dir,
                                                                      tmp_path):
    """Stop after 3 steps (odd: the next batch is the other worker's), rerun the same command
    to 8: the uninterrupted run's weights and data cursor."""
    straight, model_yaml, _ = straight_run
    out = tmp_path / "resumed"
    assert train(args(train_dir, model_yaml, out, "--stop_at_step", "3"))["step"] == 3
    assert checkpoint.complete_steps(str(out)) == [3]
    train(args(train_dir, model_yaml, out))
    a, b = final_state(straight), final_state(out)
    assert b["step"] == a["step"] == 8
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    def cursor(o):
        return torch.load(os.path.join(checkpoint.latest_checkpoint(str(o)), "rank-00000.pt"),
                          weights_only=False)["data"]

    assert cursor(straight) == cursor(out) == {"cursors": {"0": [0, 32], "1": [0, 32]},
                                                "batches": 8}
    assert [x["step"] for x in metrics.read(str(out / "metrics.jsonl"))] == [2, 3, 4, 6, 8]


def test_another_run_in_the_directory_is_refused_unless_overwrite(train_dir, tiny_model_yaml,
                                                                  tmp_path):
    """The old failure: a rerun with other settings trained next to the first run's
    checkpoints, and pruning could keep the old run's."""
    out = tmp_path / "run"
    train(args(train_dir, tiny_model_yaml, out, "--num_train_steps", "2", "--checkpoint_every",
               "1", "--num_workers", "0"))
    assert checkpoint.complete_steps(str(out)) == [1, 2]
    changed = args(train_dir, tiny_model_yaml, out, "--num_train_steps", "2", "--num_workers",
                   "0", "--learning_rate", "1e-2")
    with pytest.raises(SystemExit, match="learning_rate: 0.001 there, 0.01 now"):
        train(changed)
    assert checkpoint.complete_steps(str(out)) == [1, 2]  # untouched
    assert train(changed + ["--overwrite"])["step"] == 2
    assert checkpoint.complete_steps(str(out)) == [2]  # the first run's are gone
    assert final_state(out)["train_config"]["learning_rate"] == 1e-2


def test_hf_export_loads_with_auto_classes_and_gives_the_same_logits(straight_run, train_dir):
    out, _, _ = straight_run
    hf = str(out / "hf")
    state = final_state(out)
    trained = transformers.BertForPreTraining(transformers.BertConfig.from_pretrained(hf))
    trained.load_state_dict(state["model"])
    trained.eval()
    loaded = transformers.AutoModelForPreTraining.from_pretrained(hf).eval()
    encoder = transformers.AutoModel.from_pretrained(hf).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf)
    assert tokenizer.do_lower_case is True
    enc = tokenizer("W5 w6 w7", "w8 w9", return_tensors="pt")
    assert enc["input_ids"].tolist() == [[2, 10, 11, 12, 3, 13, 14, 3]]
    with torch.no_grad():
        expected = trained(**enc)
        got = loaded(**enc)
        hidden = encoder(**enc).last_hidden_state
        expected_hidden = trained.bert(**enc).last_hidden_state
    assert torch.allclose(got.prediction_logits, expected.prediction_logits, atol=1e-5)
    assert torch.allclose(got.seq_relationship_logits, expected.seq_relationship_logits, atol=1e-5)
    assert torch.allclose(hidden, expected_hidden, atol=1e-5)
    with open(os.path.join(hf, "config.json")) as f:
        assert json.load(f)["architectures"] == ["BertForPreTraining"]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(train_dir, tiny_model_yaml, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(REPO, "trainer", "train_torch.py"),
           *args(train_dir, tiny_model_yaml, out)]
    cmd[cmd.index("--num_train_steps") + 1] = "4"
    cmd[cmd.index("--num_workers") + 1] = "1"
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=run_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = checkpoint.latest_checkpoint(str(out))
    assert path.endswith("step-00000004")
    state = final_state(out)
    assert state["world_size"] == 2
    cursors = [torch.load(checkpoint.rank_file(path, r), weights_only=False)["data"]["cursors"]
               for r in range(2)]
    assert cursors == [{"0": [0, 32]}, {"1": [0, 32]}]  # each rank its own reader
    lines = metrics.read(str(out / "metrics.jsonl"))
    assert [x["step"] for x in lines] == [2, 4]  # rank 0 only writes
    assert [x["examples"] for x in lines] == [32.0, 32.0]  # both ranks' batches: 2 x 2 x 8


def test_init_checkpoint_starts_from_the_exported_weights(straight_run, train_dir, tmp_path):
    """Phase 2 style: --init_checkpoint an HF dir. Without --model_config its config is the
    model; a --model_config of another shape is refused, never silently replaced."""
    straight, _, _ = straight_run
    hf = str(straight / "hf")
    out = tmp_path / "phase2"
    preset = os.path.join(REPO, "configs", "model", "bert-tiny.yaml")  # hidden 128
    with pytest.raises(SystemExit, match="hidden_size: model 128 vs .* 32"):
        train(args(train_dir, preset, out, "--init_checkpoint", hf))
    argv = args(train_dir, preset, out, "--init_checkpoint", hf, "--num_train_steps", "1",
                "--learning_rate", "0", "--num_workers", "0")
    del argv[argv.index("--model_config"):argv.index("--model_config") + 2]
    train(argv)
    state = final_state(out)
    assert state["model_config"]["hidden_size"] == 32
    for name, tensor in final_state(straight)["model"].items():
        assert torch.equal(tensor, state["model"][name]), name  # lr 0: weights unchanged


def test_tensorboard_holds_the_metrics_of_metrics_jsonl(straight_run):
    """Event files written without TensorFlow or tensorboard (trainer.event_file), read back by
    TensorBoard's own loader."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out, _, _ = straight_run
    lines = metrics.read(str(out / "metrics.jsonl"))
    for split in ("train", "eval"):
        events = accumulator.EventAccumulator(str(out / "tensorboard" / split))
        events.Reload()
        expected = [x for x in lines if x["split"] == split]
        assert sorted(events.Tags()["scalars"]) == sorted(set(expected[0]) - {"split", "step"})
        for name in ("loss", "masked_lm_accuracy"):
            got = [(e.step, e.value) for e in events.Scalars(name)]
            assert got == [(x["step"], pytest.approx(x[name], rel=1e-6)) for x in expected]


# Runs train_torch.main in a fresh interpreter, then reports which TensorFlow-family modules it
# loaded and the stack of the first `import tensorflow...` (an audit hook: importlib.util.
# find_spec probes, as torch._dynamo's, import nothing and are not reported).
NO_TF_RUN = """
import json, sys, traceback

first_tf_import = []

def spy(event, args):  # observe only: the import goes on as it would
    if event == "import" and args[0].split(".")[0] == "tensorflow" and not first_tf_import:
        first_tf_import.append("".join(traceback.format_stack()))

sys.addaudithook(spy)
from trainer import train_torch
for argv in json.loads(sys.argv[1]):
    train_torch.main(argv)
print("LOADED=" + json.dumps(sorted(
    m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))))
print("FIRST_TF_IMPORT=" + json.dumps(first_tf_import))
"""


def test_cli_never_imports_tensorflow_and_logs_its_threads(train_dir, eval_dir, tiny_model_yaml,
                                                           tmp_path):
    """A PyTorch-only user needs no TensorFlow (and TensorFlow costs ~4 s and CUDA probing on
    stderr): train with eval, TensorBoard and HF export, then start a run from the export."""
    first, second = tmp_path / "run", tmp_path / "phase2"
    argv = args(train_dir, tiny_model_yaml, first, "--num_train_steps", "2", "--eval_data_dir",
                eval_dir, "--eval_every", "2", "--eval_steps", "1", "--export_hf",
                str(first / "hf"))
    restart = args(train_dir, tiny_model_yaml, second, "--num_train_steps", "1",
                   "--init_checkpoint", str(first / "hf"), "--num_workers", "0")
    env = run_env()
    for name in ("OMP_WAIT_POLICY", "TF_CPP_MIN_LOG_LEVEL", "HF_HUB_DISABLE_PROGRESS_BARS"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-c", NO_TF_RUN, json.dumps([argv, restart])],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = dict(line.split("=", 1) for line in proc.stdout.splitlines()
                  if line.startswith(("LOADED=", "FIRST_TF_IMPORT=")))
    assert json.loads(report["LOADED"]) == [], json.loads(report["FIRST_TF_IMPORT"])
    assert os.listdir(first / "tensorboard" / "eval") and os.path.isdir(second / "checkpoints")
    # The thread set-up is logged, with the wait policy set before torch loaded.
    assert "torch threads: intra-op 1 (OMP_NUM_THREADS=1" in proc.stderr
    assert "OpenMP wait policy PASSIVE" in proc.stderr
    assert "set after torch was loaded" not in proc.stderr
    assert "cuInit" not in proc.stderr and "Writing model shards" not in proc.stderr


def rewrite_in_place(path) -> None:
    """Change one byte of a Parquet shard, keeping it the same size and readable: the footer's
    writer name ("parquet-cpp-arrow ...": metadata no reader needs)."""
    data = bytearray(open(path, "rb").read())
    data[data.rindex(b"parquet-cpp")] ^= 0x20  # 'p' -> 'P'
    open(path, "wb").write(bytes(data))


def test_shards_changed_after_the_manifest_are_refused_before_any_step(train_dir, eval_dir,
                                                                       tiny_model_yaml,
                                                                       tmp_path, caplog):
    """A training shard rewritten in place (same size) and a truncated held-out shard: both
    named, with what differs, before anything is written; --skip_data_check trains anyway
    (once the truncated one, which no reader could read, is restored) and says so."""
    data = tmp_path / "data"
    held = tmp_path / "held"
    shutil.copytree(train_dir, data)
    shutil.copytree(eval_dir, held)
    changed = data / "parquet" / "part-00001-of-00004.parquet"
    truncated = held / "parquet" / "part-00000-of-00002.parquet"
    rewrite_in_place(changed)
    size = truncated.stat().st_size
    os.truncate(truncated, size - 100)
    out = tmp_path / "run"
    argv = args(str(data), tiny_model_yaml, out, "--eval_data_dir", str(held),
                "--num_train_steps", "2", "--num_workers", "0")
    with pytest.raises(SystemExit) as refused:
        train(argv)
    message = str(refused.value)
    assert message.startswith("refusing to train: 2 shard(s) differ from what their "
                              "manifest.json records")
    assert f"{changed}: sha256 " in message and "(same size: rewritten or corrupted" in message
    assert f"{truncated}: {size - 100} bytes, the manifest says {size}" in message
    assert f"pipeline.verify --output_dir {data}" in message and "--skip_data_check" in message
    assert not out.exists()  # refused before the run directory, model or any step
    shutil.copy(os.path.join(eval_dir, "parquet", truncated.name), truncated)
    with caplog.at_level("WARNING"):
        assert train(argv + ["--skip_data_check"])["step"] == 2
    assert "--skip_data_check: the parquet shards were NOT compared" in caplog.text


def test_cli_exits_as_for_every_refusal_on_a_changed_shard(train_dir, tiny_model_yaml, tmp_path):
    """Through the console entry point: exit status 1 with the message on stderr, as every
    refusal (SystemExit with a message); 2 stays argparse's, for a bad command line."""
    data = tmp_path / "data"
    shutil.copytree(train_dir, data)
    changed = data / "parquet" / "part-00003-of-00004.parquet"
    rewrite_in_place(changed)
    proc = subprocess.run([sys.executable, "-m", "trainer.train_torch",
                           *args(str(data), tiny_model_yaml, tmp_path / "run")], cwd=REPO,
                          env=run_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "refusing to train: 1 shard(s) differ" in proc.stderr
    assert f"{changed}: sha256 " in proc.stderr


def test_resume_skips_a_truncated_newest_checkpoint_for_the_one_before(train_dir,
                                                                      tiny_model_yaml,
                                                                      tmp_path, caplog):
    """Stopped at step 3 (checkpoints 2 and 3 kept), state.pt of step 3 truncated: the rerun
    warns naming it, resumes from step 2 (model, optimizer, RNG and data cursor all from
    there) and ends with the weights of an uninterrupted run. The damaged checkpoint is set
    aside, not deleted, and not overwritten when step 3 is saved again."""
    common = ("--num_train_steps", "4", "--checkpoint_every", "1", "--num_workers", "0")
    straight = tmp_path / "straight"
    train(args(train_dir, tiny_model_yaml, straight, *common))
    out = tmp_path / "run"
    train(args(train_dir, tiny_model_yaml, out, *common, "--stop_at_step", "3"))
    assert checkpoint.complete_steps(str(out)) == [2, 3]
    damaged = checkpoint.step_dir(str(out), 3)
    state = os.path.join(damaged, "state.pt")
    os.truncate(state, os.path.getsize(state) // 2)
    size = os.path.getsize(state)
    with caplog.at_level("INFO"):
        assert train(args(train_dir, tiny_model_yaml, out, *common))["step"] == 4
    assert (f"checkpoint {damaged} does not load (RuntimeError: PytorchStreamReader failed "
            in caplog.text)
    assert f"resumed {checkpoint.step_dir(str(out), 2)} at step 2" in caplog.text
    aside = os.path.join(str(out), "checkpoints", "unloadable-step-00000003")
    assert f"set {damaged} aside as {aside}" in caplog.text
    assert os.path.getsize(os.path.join(aside, "state.pt")) == size  # kept as it was
    assert checkpoint.complete_steps(str(out)) == [3, 4]
    a, b = final_state(straight), final_state(out)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    # step 3's line (of the dropped checkpoint's run) trimmed; log_every 2
    assert [x["step"] for x in metrics.read(str(out / "metrics.jsonl"))] == [2, 4]


def test_resume_starts_over_loudly_when_no_checkpoint_loads(train_dir, tiny_model_yaml,
                                                            tmp_path, caplog):
    common = ("--num_train_steps", "2", "--checkpoint_every", "1", "--num_workers", "0")
    out = tmp_path / "run"
    train(args(train_dir, tiny_model_yaml, out, *common, "--stop_at_step", "1"))
    os.remove(checkpoint.rank_file(checkpoint.step_dir(str(out), 1), 0))
    with caplog.at_level("INFO"):
        assert train(args(train_dir, tiny_model_yaml, out, *common))["step"] == 2
    assert "(FileNotFoundError: " in caplog.text
    assert "NONE of the 1 checkpoints in" in caplog.text and "initialised randomly" in caplog.text
    assert os.path.isdir(os.path.join(str(out), "checkpoints", "unloadable-step-00000001"))
    assert checkpoint.complete_steps(str(out)) == [1, 2]


@pytest.mark.slow
def test_torchrun_ranks_agree_on_the_data_check_and_on_the_checkpoint(train_dir,
                                                                     tiny_model_yaml, tmp_path):
    """2 processes (gloo). The data check is split over a node's processes (rank 1 hashes
    shards 1 and 3) and its reports gathered, so a changed shard 3 is refused by both ranks.
    A rank file missing on rank 1 only makes every rank skip that checkpoint: both resume
    from the one before, and rank 0's warning names rank 1's reason."""
    data = tmp_path / "data"
    shutil.copytree(train_dir, data)
    out = tmp_path / "ddp"

    def torchrun(*extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", os.path.join(REPO, "trainer", "train_torch.py"),
               *args(str(data), tiny_model_yaml, out, "--num_train_steps", "4",
                     "--checkpoint_every", "1", "--num_workers", "0", *extra)]
        return subprocess.run(cmd, cwd=str(tmp_path), env=run_env(), capture_output=True,
                              text=True, timeout=300)

    proc = torchrun("--stop_at_step", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    os.remove(checkpoint.rank_file(checkpoint.step_dir(str(out), 3), 1))
    shard = data / "parquet" / "part-00003-of-00004.parquet"
    original = shard.read_bytes()
    rewrite_in_place(shard)
    proc = torchrun()
    assert proc.returncode != 0
    assert proc.stderr.count("refusing to train: 1 shard(s) differ") == 2, proc.stderr[-3000:]
    assert f"{shard}: sha256 " in proc.stderr
    shard.write_bytes(original)
    proc = torchrun()
    assert proc.returncode == 0, proc.stderr[-3000:]
    damaged = checkpoint.step_dir(str(out), 3)
    assert f"checkpoint {damaged} does not load (rank 1: FileNotFoundError: " in proc.stderr
    assert f"resumed {checkpoint.step_dir(str(out), 2)} at step 2" in proc.stderr
    assert os.path.isdir(os.path.join(str(out), "checkpoints", "unloadable-step-00000003"))
    assert final_state(out)["step"] == 4
