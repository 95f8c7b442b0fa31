"""Model, losses, metrics and schedule of the TF2 trainer against plain references."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from trainer import config as cfg  # noqa: E402
from trainer import metrics as shared  # noqa: E402
from trainer.tf2 import model as bert  # noqa: E402
from trainer.tf2 import optim  # noqa: E402


def test_schedule_matches_the_shared_pure_function():
    for warmup, total in ((10, 100), (0, 50), (7, 7)):
        schedule = optim.BertSchedule(1e-3, warmup, total)
        for step in range(0, total + 5):
            expected = cfg.learning_rate(step, base_lr=1e-3, warmup_steps=warmup,
                                         total_steps=total)
            assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-9), step


def test_loss_sums_and_metrics_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 11)).astype(np.float32)
    nsp = rng.normal(size=(3, 2)).astype(np.float32)
    ids = rng.integers(0, 11, size=(3, 4)).astype(np.int32)
    weights = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], np.float32)
    labels = np.array([[0], [1], [1]], np.int32)
    sums = bert.loss_sums({"mlm_logits": tf.constant(logits), "nsp_logits": tf.constant(nsp)},
                          {"masked_lm_ids": tf.constant(ids),
                           "masked_lm_weights": tf.constant(weights),
                           "next_sentence_labels": tf.constant(labels)})
    metrics = shared.finish({k: float(v) for k, v in sums.items()}, "nsp")

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    mlm_ce = -np.take_along_axis(log_softmax(logits), ids[..., None], -1)[..., 0]
    nsp_ce = -np.take_along_axis(log_softmax(nsp), labels, -1)[:, 0]
    w = weights.sum() + shared.MLM_DENOMINATOR_EPS
    assert metrics["masked_lm_loss"] == pytest.approx((mlm_ce * weights).sum() / w, rel=1e-5)
    assert metrics["masked_lm_accuracy"] == pytest.approx(
        ((logits.argmax(-1) == ids) * weights).sum() / w, rel=1e-6)
    assert metrics["next_sentence_loss"] == pytest.approx(nsp_ce.mean(), rel=1e-5)
    assert metrics["next_sentence_accuracy"] == pytest.approx(
        (nsp.argmax(-1) == labels[:, 0]).mean())


def test_model_outputs_and_weight_decay_exclusions():
    config = cfg.ModelConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=16)
    model = bert.build_model(config, max_seq_length=16, max_predictions_per_seq=3)
    out = model(bert.dummy_features(2, max_seq_length=16, max_predictions_per_seq=3))
    assert out["mlm_logits"].shape == (2, 3, 50) and out["nsp_logits"].shape == (2, 2)
    assert out["mlm_logits"].dtype == tf.float32
    no_decay = {id(v) for v in model.no_decay_variables()}
    for v in model.trainable_variables:
        is_norm_or_bias = v.name.endswith("bias") or v.name in ("gamma", "beta")
        assert (id(v) in no_decay) == is_norm_or_bias, v.path
    # the MLM output projection is the token embedding (tied), not a separate matrix
    assert not any("output_kernel" in v.path for v in model.trainable_variables)


def test_bf16_policy_keeps_float32_variables_and_logits():
    config = cfg.ModelConfig(vocab_size=30, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=8)
    model = bert.build_model(config, max_seq_length=8, max_predictions_per_seq=2,
                             dtype="mixed_bfloat16")
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    out = model(bert.dummy_features(1, max_seq_length=8, max_predictions_per_seq=2))
    assert out["mlm_logits"].dtype == tf.float32
