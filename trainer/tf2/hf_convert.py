"""Weights between ``model.BertPretrainer`` (keras-hub) and Hugging Face ``BertForPreTraining``.

One table (``weight_map``) pairs every HF tensor name with a Keras variable and a layout, and
serves both directions, so import and export cannot drift apart. Layouts: HF ``nn.Linear``
weights are [out, in]; Keras Dense kernels are [in, out] and keras-hub's attention kernels split
the head axis: query/key/value [hidden, heads, head_dim], output [heads, head_dim, hidden],
query/key/value biases [heads, head_dim]. The MLM decoder weight is tied to the word embeddings
on both sides, so only ``cls.predictions.bias`` is stored for it.

keras-hub ships a HF BERT converter (``keras_hub.src.utils.transformers.convert_bert``) but it is
import-only and covers the backbone, not the MLM/NSP heads, so it is not used here.

Export writes ``model.safetensors`` from numpy plus config and tokenizer files through
``trainer.hf_export`` (no torch needed on a TPU VM); ``AutoModelForPreTraining`` and
``AutoTokenizer`` load the result offline (tests/trainer/test_tf_hf.py).
"""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from trainer import hf_export

log = logging.getLogger(__name__)

DENSE = "dense"   # HF [out, in] <-> Keras kernel reshaped from [in, out]
PLAIN = "plain"   # same values, reshaped (embeddings, LayerNorm, biases)


@dataclasses.dataclass(frozen=True)
class Entry:
    hf_name: str
    variable: object   # a keras.Variable
    layout: str
    in_axes: int = 1   # DENSE: how many leading kernel axes are the input (2 for attn output)


def _layer_entries(i: int, layer) -> list[Entry]:
    p = f"bert.encoder.layer.{i}."
    attn = layer._self_attention_layer
    out = []
    for hf, dense in (("attention.self.query", attn.query_dense),
                      ("attention.self.key", attn.key_dense),
                      ("attention.self.value", attn.value_dense),
                      ("attention.output.dense", attn.output_dense),
                      ("intermediate.dense", layer._feedforward_intermediate_dense),
                      ("output.dense", layer._feedforward_output_dense)):
        in_axes = 2 if hf == "attention.output.dense" else 1
        out += [Entry(p + hf + ".weight", dense.kernel, DENSE, in_axes),
                Entry(p + hf + ".bias", dense.bias, PLAIN)]
    for hf, norm in (("attention.output.LayerNorm", layer._self_attention_layer_norm),
                     ("output.LayerNorm", layer._feedforward_layer_norm)):
        out += [Entry(p + hf + ".weight", norm.gamma, PLAIN),
                Entry(p + hf + ".bias", norm.beta, PLAIN)]
    return out


def weight_map(model) -> list[Entry]:
    """Every BertForPreTraining tensor (minus tied copies) and its Keras variable."""
    bb = model.backbone
    emb_norm = bb.get_layer("embeddings_layer_norm")
    entries = [
        Entry("bert.embeddings.word_embeddings.weight", bb.token_embedding.embeddings, PLAIN),
        Entry("bert.embeddings.position_embeddings.weight",
              bb.get_layer("position_embedding").position_embeddings, PLAIN),
        Entry("bert.embeddings.token_type_embeddings.weight",
              bb.get_layer("segment_embedding").embeddings, PLAIN),
        Entry("bert.embeddings.LayerNorm.weight", emb_norm.gamma, PLAIN),
        Entry("bert.embeddings.LayerNorm.bias", emb_norm.beta, PLAIN),
    ]
    for i, layer in enumerate(bb.transformer_layers):
        entries += _layer_entries(i, layer)
    pooler, head = bb.get_layer("pooled_dense"), model.mlm_head
    entries += [
        Entry("bert.pooler.dense.weight", pooler.kernel, DENSE),
        Entry("bert.pooler.dense.bias", pooler.bias, PLAIN),
        Entry("cls.predictions.transform.dense.weight", head._intermediate_dense.kernel, DENSE),
        Entry("cls.predictions.transform.dense.bias", head._intermediate_dense.bias, PLAIN),
        Entry("cls.predictions.transform.LayerNorm.weight",
              head._intermediate_layer_norm.gamma, PLAIN),
        Entry("cls.predictions.transform.LayerNorm.bias",
              head._intermediate_layer_norm.beta, PLAIN),
        Entry("cls.predictions.bias", head._bias, PLAIN),
        Entry("cls.seq_relationship.weight", model.nsp_head.kernel, DENSE),
        Entry("cls.seq_relationship.bias", model.nsp_head.bias, PLAIN),
    ]
    return entries


def to_hf(value: np.ndarray, layout: str, hf_shape: tuple[int, ...]) -> np.ndarray:
    if layout == DENSE:  # Keras [in..., out...] -> [in, out] -> HF [out, in]
        return np.ascontiguousarray(np.reshape(value, (hf_shape[1], hf_shape[0])).T)
    return np.ascontiguousarray(np.reshape(value, hf_shape))


def from_hf(value: np.ndarray, layout: str, keras_shape: tuple[int, ...]) -> np.ndarray:
    if layout == DENSE:
        return np.reshape(value.T, keras_shape)
    return np.reshape(value, keras_shape)


def hf_shape(entry: Entry) -> tuple[int, ...]:
    """The HF shape of an entry: [out, in] for DENSE, the flattened values otherwise
    (embedding tables keep their 2-D shape)."""
    shape = tuple(int(d) for d in entry.variable.shape)
    if entry.layout == DENSE:
        return (int(np.prod(shape[entry.in_axes:])), int(np.prod(shape[:entry.in_axes])))
    if entry.hf_name.endswith("embeddings.weight"):
        return shape
    return (int(np.prod(shape)),)


def export_tensors(model) -> dict[str, np.ndarray]:
    """HF name -> float32 numpy array, in BertForPreTraining's layouts."""
    return {e.hf_name: to_hf(np.asarray(e.variable.numpy(), np.float32), e.layout, hf_shape(e))
            for e in weight_map(model)}


def _normalise_name(name: str) -> str:
    """Accept BertModel dirs (no "bert." prefix) and TF-ported names (LayerNorm gamma/beta)."""
    name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                        "LayerNorm.bias")
    if name.startswith(("embeddings.", "encoder.", "pooler.")):
        name = "bert." + name
    return name


def read_hf_tensors(hf_dir: str) -> dict[str, np.ndarray]:
    """All tensors of a HF dir (model.safetensors, else pytorch_model.bin) as float32 numpy."""
    st = os.path.join(hf_dir, hf_export.SAFETENSORS_FILE)
    if os.path.exists(st):
        from safetensors.numpy import load_file

        raw = load_file(st)
    else:
        import torch  # deferred: only .bin checkpoints need torch

        state = torch.load(os.path.join(hf_dir, hf_export.TORCH_WEIGHTS_FILE),
                           map_location="cpu", weights_only=True)
        raw = {k: v.float().numpy() for k, v in state.items()}
    return {_normalise_name(k): np.asarray(v, np.float32) for k, v in raw.items()}


def load_hf_weights(model, hf_dir: str) -> list[str]:
    """Copy a HF BERT dir's weights into ``model``; return HF names not found (left as
    initialised, e.g. the heads of a BertModel checkpoint). Shapes are checked first."""
    hf_export.check_init_checkpoint(model.model_config, hf_dir)
    tensors = read_hf_tensors(hf_dir)
    missing = []
    for e in weight_map(model):
        if e.hf_name not in tensors:
            missing.append(e.hf_name)
            continue
        keras_shape = tuple(int(d) for d in e.variable.shape)
        e.variable.assign(from_hf(tensors[e.hf_name], e.layout, keras_shape))
    if missing:
        log.warning("%s lacks %d tensors, left as initialised: %s", hf_dir, len(missing),
                    missing)
    return missing


def export_hf(model, out_dir: str, *, vocab_file: str, do_lower_case: bool,
              model_max_length: int | None = None) -> str:
    """Write a HF BertForPreTraining directory (weights, config, vocab, tokenizer)."""
    tensors = export_tensors(model)
    return hf_export.export_hf(
        out_dir, model_config=model.model_config,
        save_weights=lambda d: hf_export.write_safetensors(d, tensors),
        vocab_file=vocab_file, do_lower_case=do_lower_case, model_max_length=model_max_length)
