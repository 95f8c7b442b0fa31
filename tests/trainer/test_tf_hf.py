"""Weights across frameworks: TF trainer <-> Hugging Face BertForPreTraining (PyTorch), and each
trainer's export as the other trainer's --init_checkpoint, both ways.

Every variable is randomised first (LayerNorms and biases included), so a swapped or
mistransposed tensor anywhere changes the logits.
"""
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pipeline import schema  # noqa: E402
from tests.trainer import tf_fixtures as fx  # noqa: E402
from trainer import config as cfg  # noqa: E402
from trainer import data_contract, hf_export, run_setup  # noqa: E402
from trainer.pt import loop as pt_loop  # noqa: E402
from trainer.pt import model as pt_bert  # noqa: E402
from trainer.tf2 import hf_convert, loop  # noqa: E402
from trainer.tf2 import model as bert  # noqa: E402

SEQ, PREDS, VOCAB = 32, 5, 64
CONFIG = cfg.ModelConfig(vocab_size=VOCAB, **fx.TINY)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fx.make_data_dir(str(tmp_path_factory.mktemp("tf_hf")), num_instances=16,
                            num_shards=2, seed=7)


@pytest.fixture(scope="module")
def batch(data_dir):
    from trainer.tf2 import data as tfdata

    spec = data_contract.load_data_dir(data_dir, CONFIG)
    shards = tfdata.host_shards(spec.paths(schema.TFRECORD_DIR), spec.sizes(schema.TFRECORD_DIR))
    ds = tfdata.eval_dataset(shards, batch_size=8, max_seq_length=SEQ,
                             max_predictions_per_seq=PREDS)
    return {k: v.numpy() for k, v in next(iter(ds)).items()}


def randomise(model, seed: int):
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(0.0, 0.1, size=v.shape).astype(np.float32) + (
            1.0 if v.name == "gamma" else 0.0))
    return model


def randomised_model(seed: int) -> bert.BertPretrainer:
    return randomise(bert.build_model(CONFIG, max_seq_length=SEQ, max_predictions_per_seq=PREDS),
                     seed)


def randomised_torch_model(seed: int):
    """A fresh BertForPreTraining with LayerNorms and biases moved off their 1/0 init."""
    torch.manual_seed(seed)
    model = transformers.BertForPreTraining(
        transformers.BertConfig(**CONFIG.to_dict(), pad_token_id=0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def tf_logits(model, batch):
    out = model({k: tf.constant(batch[k]) for k in bert.MODEL_INPUTS}, training=False)
    return out["mlm_logits"].numpy(), out["nsp_logits"].numpy()


def torch_logits(pt_model, batch):
    pt_model.eval()
    with torch.no_grad():
        out = pt_model(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                       attention_mask=torch.tensor(batch["input_mask"], dtype=torch.long),
                       token_type_ids=torch.tensor(batch["segment_ids"], dtype=torch.long))
    positions = batch["masked_lm_positions"].astype(np.int64)[..., None]
    mlm = np.take_along_axis(out.prediction_logits.numpy(), positions, axis=1)
    return mlm, out.seq_relationship_logits.numpy()


def export(model, data_dir, out_dir):
    spec = data_contract.load_data_dir(data_dir, CONFIG)
    return hf_convert.export_hf(model, out_dir, vocab_file=spec.vocab_file,
                                do_lower_case=spec.do_lower_case)


def test_tf_export_loads_in_transformers_with_the_same_logits(tmp_path, data_dir, batch):
    model = randomised_model(1)
    out_dir = export(model, data_dir, str(tmp_path / "hf"))
    pt_model, info = transformers.BertForPreTraining.from_pretrained(
        out_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tf_mlm, tf_nsp = tf_logits(model, batch)
    pt_mlm, pt_nsp = torch_logits(pt_model, batch)
    np.testing.assert_allclose(pt_mlm, tf_mlm, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(pt_nsp, tf_nsp, atol=2e-4, rtol=1e-4)
    # the generic Auto classes and the tokenizer load the directory offline too
    assert isinstance(transformers.AutoModel.from_pretrained(out_dir),
                      transformers.BertModel)
    assert isinstance(transformers.AutoModelForPreTraining.from_pretrained(out_dir),
                      transformers.BertForPreTraining)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    assert tokenizer.convert_tokens_to_ids(["[CLS]", "[MASK]", "w0"]) == [2, 4, 5]


@pytest.mark.parametrize("safe", [True, False])
def test_torch_side_dir_initialises_the_tf_trainer_with_the_same_logits(tmp_path, data_dir,
                                                                         batch, safe):
    """The reverse direction, through the trainer's own --init_checkpoint path."""
    pt_model = randomised_torch_model(0)
    hf_dir = str(tmp_path / "pt")
    if safe:
        pt_model.save_pretrained(hf_dir)
        assert os.path.exists(os.path.join(hf_dir, hf_export.SAFETENSORS_FILE))
    else:  # the older torch pickle format (transformers 5 no longer writes it itself)
        pt_model.config.save_pretrained(hf_dir)
        torch.save(pt_model.state_dict(), os.path.join(hf_dir, hf_export.TORCH_WEIGHTS_FILE))

    trainer = loop.Trainer(trainer_run(data_dir, str(tmp_path / "run"), hf_dir),
                           tf.distribute.get_strategy())
    assert "initialised from" in trainer.restore_or_init()
    tf_mlm, tf_nsp = tf_logits(trainer.model, batch)
    pt_mlm, pt_nsp = torch_logits(pt_model, batch)
    np.testing.assert_allclose(tf_mlm, pt_mlm, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(tf_nsp, pt_nsp, atol=2e-4, rtol=1e-4)


def test_import_export_round_trip_keeps_tensors_and_logits(tmp_path, data_dir, batch):
    first = randomised_model(2)
    dir_a = export(first, data_dir, str(tmp_path / "a"))
    second = bert.build_model(CONFIG, max_seq_length=SEQ, max_predictions_per_seq=PREDS)
    assert hf_convert.load_hf_weights(second, dir_a) == []
    for (a, b) in zip(tf_logits(first, batch), tf_logits(second, batch)):
        np.testing.assert_array_equal(a, b)
    tensors_a = hf_convert.read_hf_tensors(dir_a)
    tensors_b = hf_convert.read_hf_tensors(export(second, data_dir, str(tmp_path / "b")))
    assert tensors_a.keys() == tensors_b.keys()
    for name in tensors_a:
        np.testing.assert_array_equal(tensors_a[name], tensors_b[name])


def test_init_checkpoint_of_another_shape_is_refused(tmp_path, data_dir):
    other = cfg.ModelConfig(**{**CONFIG.to_dict(), "hidden_size": 64})
    model = bert.build_model(other, max_seq_length=SEQ, max_predictions_per_seq=PREDS)
    hf_dir = export(model, data_dir, str(tmp_path / "big"))
    small = bert.build_model(CONFIG, max_seq_length=SEQ, max_predictions_per_seq=PREDS)
    with pytest.raises(ValueError, match="hidden_size"):
        hf_convert.load_hf_weights(small, hf_dir)


def pretrainer_logits(pretrainer, batch):
    """The PyTorch trainer's forward (heads on the gathered positions) on a TF batch."""
    names = {"input_ids": "input_ids", "attention_mask": "input_mask",
             "token_type_ids": "segment_ids", "masked_lm_positions": "masked_lm_positions",
             "masked_lm_ids": "masked_lm_ids", "masked_lm_weights": "masked_lm_weights"}
    features = {ours: torch.from_numpy(batch[theirs]).long() for ours, theirs in names.items()}
    features["masked_lm_weights"] = features["masked_lm_weights"].float()
    features["next_sentence_label"] = torch.from_numpy(batch["next_sentence_labels"][:, 0]).long()
    pretrainer.eval()
    with torch.no_grad():
        out = pretrainer(features)
    return out["mlm_logits"].numpy(), out["nsp_logits"].numpy()


def trainer_run(data_dir, output_dir, init_checkpoint=None):
    return run_setup.Run(model_config=CONFIG, train_config=cfg.TrainConfig(mixed_precision="fp32"),
                         data=data_contract.load_data_dir(data_dir, CONFIG),
                         output_dir=output_dir, init_checkpoint=init_checkpoint)


def test_tf_trainer_export_initialises_the_torch_trainer_with_the_same_logits(tmp_path, data_dir,
                                                                              batch):
    """TF trainer --export_hf (``Trainer.export_hf``, what ``fit`` calls) -> PyTorch trainer
    --init_checkpoint (``pt.model.build_model``, what ``pt.loop.train`` calls)."""
    tf_trainer = loop.Trainer(trainer_run(data_dir, str(tmp_path / "tf_run")),
                              tf.distribute.get_strategy())
    randomise(tf_trainer.model, 3)
    exported = tf_trainer.export_hf(str(tmp_path / "tf_hf"))
    pretrainer = pt_bert.Pretrainer(pt_bert.build_model(CONFIG, init_checkpoint=exported))
    tf_mlm, tf_nsp = tf_logits(tf_trainer.model, batch)
    pt_mlm, pt_nsp = pretrainer_logits(pretrainer, batch)
    np.testing.assert_allclose(pt_mlm, tf_mlm, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(pt_nsp, tf_nsp, atol=2e-4, rtol=1e-4)


def test_torch_trainer_export_initialises_the_tf_trainer_with_the_same_logits(tmp_path, data_dir,
                                                                              batch):
    """PyTorch trainer --export_hf (``pt.loop.export_hf``, what ``train`` calls) -> TF trainer
    --init_checkpoint (``Trainer.restore_or_init``, what ``fit`` calls)."""
    pretrainer = pt_bert.Pretrainer(randomised_torch_model(4))
    exported = pt_loop.export_hf(trainer_run(data_dir, str(tmp_path / "pt_run")), pretrainer,
                                 str(tmp_path / "pt_hf"))
    tf_trainer = loop.Trainer(trainer_run(data_dir, str(tmp_path / "tf_run"), exported),
                              tf.distribute.get_strategy())
    assert tf_trainer.restore_or_init() == f"initialised from {exported} (missing: none)"
    pt_mlm, pt_nsp = pretrainer_logits(pretrainer, batch)
    tf_mlm, tf_nsp = tf_logits(tf_trainer.model, batch)
    np.testing.assert_allclose(tf_mlm, pt_mlm, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(tf_nsp, pt_nsp, atol=2e-4, rtol=1e-4)
