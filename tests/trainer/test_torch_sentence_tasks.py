"""The PyTorch trainer on SOP and single-segment ("none") data: what it reads, the loss, the
metrics it reports (only those the data has) and the export. Tiny models on fixture shards."""
import os

import pytest
import torch
import transformers

from pipeline import schema
from tests.trainer.conftest import TINY_MODEL
from trainer import data_contract, metrics
from trainer.config import ModelConfig
from trainer.pt.data import ShardDataset, StreamConfig
from trainer.pt.model import Pretrainer, build_model
from trainer.train_torch import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(REPO, "configs", "train", "cpu-smoke.yaml")
TINY = TINY_MODEL  # tests/trainer/conftest.py: the one tiny model
SEED = 12345  # cpu-smoke's seed: the fresh model's weights
FROZEN = ("bert.pooler.", "cls.seq_relationship.")


@pytest.fixture(scope="module", params=["sop", "none"])
def task_run(request, shards, tmp_path_factory):
    """4 steps with held-out data and an export, on data of one sentence task."""
    task = request.param
    root = tmp_path_factory.mktemp(f"torch_{task}")
    data = shards.make_shard_dir(str(root / "train"), num_instances=48, num_shards=2, seed=3,
                                 next_sentence=task)
    held_out = shards.make_shard_dir(str(root / "eval"), num_instances=16, num_shards=2,
                                     seed=4, first_index=1000, next_sentence=task)
    model_yaml = root / "tiny.yaml"
    model_yaml.write_text("".join(f"{k}: {v}\n" for k, v in TINY.items()))
    summary = train(["--data_dir", data, "--eval_data_dir", held_out, "--model_config",
                     str(model_yaml), "--train_config", SMOKE, "--output_dir", str(root / "run"),
                     "--export_hf", str(root / "hf"), "--num_train_steps", "4", "--batch_size",
                     "8", "--log_every", "2", "--eval_every", "4", "--eval_steps", "2",
                     "--num_workers", "0", "--learning_rate", "1e-2", "--seed", str(SEED)])
    return task, root, summary


def test_metrics_jsonl_holds_exactly_the_task_metrics(task_run, task_metrics):
    task, root, summary = task_run
    task_metrics(str(root / "run" / metrics.METRICS_FILE), task, summary["eval"])


@pytest.mark.parametrize("task_run", ["none"], indirect=True)
def test_none_export_loads_everywhere_with_pooler_and_nsp_head_untrained(task_run):
    _, root, _ = task_run
    hf = str(root / "hf")
    loaded, info = transformers.BertForPreTraining.from_pretrained(hf, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert isinstance(transformers.AutoModelForMaskedLM.from_pretrained(hf),
                      transformers.BertForMaskedLM)
    fresh = build_model(ModelConfig(vocab_size=64, **TINY), generator_seed=SEED).state_dict()
    trained = loaded.state_dict()
    for name, tensor in fresh.items():
        if name.startswith(FROZEN):
            assert torch.equal(trained[name], tensor), name  # as initialised
    assert not torch.equal(trained["bert.embeddings.word_embeddings.weight"],
                           fresh["bert.embeddings.word_embeddings.weight"])


@pytest.fixture
def none_batch(shards, tmp_path):
    data = shards.make_shard_dir(str(tmp_path / "none"), num_instances=12, num_shards=1, seed=5,
                                 next_sentence="none")
    spec = data_contract.load_data_dir(data, ModelConfig(vocab_size=64, **TINY))
    config = StreamConfig(paths=tuple(spec.paths(schema.PARQUET_DIR)), batch_size=6,
                          max_seq_length=32, max_predictions_per_seq=5,
                          next_sentence=spec.next_sentence)
    return next(iter(ShardDataset(config)))


def test_single_segment_batches_train_masked_lm_only(none_batch):
    assert "next_sentence_label" not in none_batch
    assert int(none_batch["token_type_ids"].abs().sum()) == 0  # one segment
    pretrainer = Pretrainer(build_model(ModelConfig(vocab_size=64, **TINY), generator_seed=0),
                            "none").eval()  # no dropout: compared with another forward
    out = pretrainer(none_batch)
    assert "nsp_logits" not in out and tuple(out["sums"]) == metrics.sum_keys("none")
    # the loss is transformers' masked-LM loss (labels= on the whole sequence)
    full = pretrainer.model(input_ids=none_batch["input_ids"],
                            attention_mask=none_batch["attention_mask"],
                            token_type_ids=none_batch["token_type_ids"]).prediction_logits
    mlm = torch.nn.functional.cross_entropy(full.transpose(1, 2), none_batch["labels"])
    assert out["loss"].item() == pytest.approx(mlm.item(), rel=1e-4)
    out["loss"].backward()
    for name, p in pretrainer.model.named_parameters():
        assert (p.grad is None) == name.startswith(FROZEN), name
