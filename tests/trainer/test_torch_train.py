"""The whole PyTorch run through its CLI: refusal before any step, exact resume, HF export,
and a 2-process torchrun (gloo) run. Tiny models (hidden 32, 2 layers) on fixture shards."""
import json
import os
import subprocess
import sys

import pytest
import torch
import transformers

from trainer.pt import checkpoint
from trainer.train_torch import main

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
    with pytest.raises(ValueError, match="max_seq_length 32 != training config max_seq_length 128"):
        main(args(train_dir, tiny_model_yaml, tmp_path / "run", "--max_seq_length", "128"))
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def straight_run(train_dir, eval_dir, tmp_path_factory):
    """8 steps uninterrupted, with eval and HF export; 2 DataLoader workers."""
    out = tmp_path_factory.mktemp("straight")
    model_yaml = out / "tiny.yaml"
    model_yaml.write_text("hidden_size: 32\nnum_hidden_layers: 2\nnum_attention_heads: 2\n"
                          "intermediate_size: 64\nmax_position_embeddings: 64\n")
    metrics = main(args(train_dir, str(model_yaml), out, "--eval_data_dir", eval_dir,
                        "--eval_every", "8", "--eval_steps", "100", "--export_hf", str(out / "hf")))
    return out, str(model_yaml), metrics


def test_run_reports_google_metric_names(straight_run):
    out, _, metrics = straight_run
    assert {"masked_lm_accuracy", "masked_lm_loss", "next_sentence_accuracy",
            "next_sentence_loss"} <= set(metrics)
    assert metrics["eval_examples"] == 64
    lines = [json.loads(l) for l in open(out / "metrics.jsonl")]
    train = [l for l in lines if l["kind"] == "train"]
    assert [l["step"] for l in train] == [2, 4, 6, 8]
    assert all(l["examples_per_sec"] > 0 and l["learning_rate"] > 0 for l in train)


def test_resume_gives_the_same_data_and_the_same_weights(straight_run, train_dir, tmp_path):
    """Stop after 3 steps (odd: the next batch is the other worker's), resume to 8."""
    straight, model_yaml, _ = straight_run
    out = tmp_path / "resumed"
    main(args(train_dir, model_yaml, out, "--stop_at_step", "3"))
    assert checkpoint.complete_steps(str(out)) == [3]
    main(args(train_dir, model_yaml, out, "--resume"))
    a, b = final_state(straight), final_state(out)
    assert b["step"] == a["step"] == 8
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    cursor = lambda o: torch.load(os.path.join(checkpoint.latest_checkpoint(str(o)),
                                               "rank-00000.pt"), weights_only=False)["data"]
    assert cursor(straight) == cursor(out) == {"cursors": {"0": [0, 32], "1": [0, 32]},
                                                "batches": 8}


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
    lines = [json.loads(l) for l in open(out / "metrics.jsonl")]
    assert [l["step"] for l in lines] == [2, 4]  # rank 0 only writes


def test_init_checkpoint_starts_from_the_exported_weights(straight_run, train_dir, tmp_path):
    """Phase 2 style: --init_checkpoint an HF dir; its architecture wins over the preset."""
    straight, _, _ = straight_run
    preset = os.path.join(REPO, "configs", "model", "bert-tiny.yaml")  # hidden 128: ignored
    out = tmp_path / "phase2"
    main(args(train_dir, preset, out, "--init_checkpoint", str(straight / "hf"),
              "--num_train_steps", "1", "--learning_rate", "0", "--num_workers", "0"))
    state = final_state(out)
    assert state["model_config"]["hidden_size"] == 32
    for name, tensor in final_state(straight)["model"].items():
        assert torch.equal(tensor, state["model"][name]), name  # lr 0: weights unchanged
