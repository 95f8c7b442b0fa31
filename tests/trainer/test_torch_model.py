"""Model pieces: the gathered MLM loss equals transformers' labels= loss, metrics, optimizers."""
import pytest
import torch

from pipeline import schema
from tests.trainer.conftest import TINY_MODEL
from trainer import data_contract, metrics
from trainer.config import ModelConfig, TrainConfig, learning_rate
from trainer.pt.data import ShardDataset, StreamConfig
from trainer.pt.model import Pretrainer, build_model, build_optimizer, build_scheduler, param_groups

TINY = ModelConfig(vocab_size=64, **TINY_MODEL)


@pytest.fixture
def batch(train_dir):
    spec = data_contract.load_data_dir(train_dir, TINY)
    config = StreamConfig(paths=tuple(spec.paths(schema.PARQUET_DIR)), batch_size=6,
                          max_seq_length=32, max_predictions_per_seq=5)
    return next(iter(ShardDataset(config)))


def test_gathered_loss_equals_transformers_labels_loss(batch):
    pretrainer = Pretrainer(build_model(TINY, generator_seed=0)).eval()
    with torch.no_grad():
        ours = pretrainer(batch)
        theirs = pretrainer.model(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"],
                                  token_type_ids=batch["token_type_ids"], labels=batch["labels"],
                                  next_sentence_label=batch["next_sentence_label"])
    assert ours["loss"].item() == pytest.approx(theirs.loss.item(), rel=1e-5)
    # The head on gathered positions gives the same logits as the full-sequence head.
    rows = torch.arange(6).unsqueeze(1)
    full = theirs.prediction_logits[rows, batch["masked_lm_positions"]]
    assert torch.allclose(ours["mlm_logits"], full, atol=1e-5)


def test_metrics_are_weighted_by_masked_lm_weights(batch):
    pretrainer = Pretrainer(build_model(TINY, generator_seed=0)).eval()
    with torch.no_grad():
        out = pretrainer(batch)
    values = metrics.finish({k: float(v) for k, v in out["sums"].items()}, "nsp")
    weights = batch["masked_lm_weights"]
    assert out["sums"]["mlm_weight_sum"].item() == weights.sum().item() < weights.numel()  # padding
    hits = (out["mlm_logits"].argmax(-1) == batch["masked_lm_ids"]).float()
    denominator = weights.sum().item() + metrics.MLM_DENOMINATOR_EPS
    assert values["masked_lm_accuracy"] == pytest.approx(
        (hits * weights).sum().item() / denominator, rel=1e-6)
    nll = torch.nn.functional.cross_entropy(out["mlm_logits"].transpose(1, 2),
                                            batch["masked_lm_ids"], reduction="none")
    assert values["masked_lm_loss"] == pytest.approx((nll * weights).sum().item() / denominator,
                                                     rel=1e-5)
    assert values["next_sentence_loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(out["nsp_logits"], batch["next_sentence_label"]).item(),
        rel=1e-5)
    assert values["examples"] == 6


def test_same_seed_gives_same_weights_without_touching_the_process_rng():
    state = torch.get_rng_state()
    a, b = build_model(TINY, generator_seed=3), build_model(TINY, generator_seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_no_weight_decay_on_biases_and_layer_norm():
    groups = param_groups(Pretrainer(build_model(TINY)), 0.01)
    assert all(p.ndim >= 2 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.ndim == 1 for p in groups[1]["params"])


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_optimizers_reduce_the_loss_and_follow_the_schedule(batch, optimizer):
    config = TrainConfig(optimizer=optimizer, learning_rate=1e-2, warmup_steps=2,
                         num_train_steps=10)
    pretrainer = Pretrainer(build_model(TINY, generator_seed=0)).eval()  # no dropout noise
    opt = build_optimizer(pretrainer, config)
    sched = build_scheduler(opt, config)
    losses, lrs = [], []
    for _ in range(8):
        lrs.append(sched.get_last_lr()[0])
        loss = pretrainer(batch)["loss"]
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    expected = [learning_rate(s, base_lr=1e-2, warmup_steps=2, total_steps=10) for s in range(8)]
    assert lrs == pytest.approx(expected)
