"""The whole PyTorch run through its CLI: refusal before any step, exact resume, the run
directory rule, HF export, and a 2-process torchrun (gloo) run. Tiny models (hidden 32,
2 layers) on fixture shards."""
import json
import os
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
    assert all(list(x) == ["split", "step", *metrics.train_keys("nsp")] for x in lines[:4])
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
    cursor = lambda o: torch.load(os.path.join(checkpoint.latest_checkpoint(str(o)),
                                               "rank-00000.pt"), weights_only=False)["data"]
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
    assert json.load(open(os.path.join(hf, "config.json")))["architectures"] == ["BertForPreTraining"]


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
