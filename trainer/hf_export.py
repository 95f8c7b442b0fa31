"""Write a Hugging Face model directory that ``AutoModel``/``AutoModelForPreTraining``/
``AutoTokenizer`` load offline: config.json, weights, vocab.txt, tokenizer files.

Framework-light: only ``transformers``' config and tokenizer classes and file copies. The
weights are written by the caller's framework through the ``save_weights(out_dir)`` callback
(PyTorch: ``model.save_pretrained``); a TF trainer that has converted its variables to HF names
can use ``write_safetensors`` instead. The tokenizer is rebuilt from the exact vocab.txt the data
was made with and the manifest's do_lower_case, so fine-tuning tokenizes as pretraining did.

Every export is a whole BertForPreTraining, whatever the data's sentence task, so that
``BertForPreTraining``, ``AutoModelForMaskedLM`` and ``AutoModel`` load it without missing
weights. After masked-LM-only training (next_sentence "none") the pooler and the NSP head
(``bert.pooler``, ``cls.seq_relationship``) were frozen: they hold their initial values (random,
or the --init_checkpoint's), untrained by this run.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping

from pipeline.schema import VOCAB_FILE  # the data's vocab.txt, copied under the same name
from trainer import storage
from trainer.config import ModelConfig

ARCHITECTURE = "BertForPreTraining"
# Hugging Face's file names (transformers.utils CONFIG_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_NAME).
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_WEIGHTS_FILE = "pytorch_model.bin"
# Fields that must agree between a HF config.json and our ModelConfig to share weights.
SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "type_vocab_size")


def hf_bert_config(model_config: ModelConfig):
    """``transformers.BertConfig`` of ``model_config``, declaring BertForPreTraining weights."""
    from transformers import BertConfig

    if model_config.vocab_size is None:
        raise ValueError("model vocab_size is unset: resolve it from the manifest first")
    return BertConfig(**model_config.to_dict(), pad_token_id=0, architectures=[ARCHITECTURE])


def copy_vocab(src: str, out_dir: str) -> str:
    """Copy the vocab (local path or URL) to ``out_dir/vocab.txt``; return the new path."""
    dst = os.path.join(out_dir, VOCAB_FILE)
    with storage.open_binary(src) as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data)
    return dst


def count_vocab(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def write_tokenizer(out_dir: str, *, vocab_file: str, do_lower_case: bool,
                    model_max_length: int) -> None:
    """vocab.txt + tokenizer.json + tokenizer_config.json (BertTokenizer, fast backend)."""
    from transformers import BertTokenizerFast

    local_vocab = copy_vocab(vocab_file, out_dir)
    tokenizer = BertTokenizerFast(vocab=local_vocab, do_lower_case=do_lower_case,
                                  model_max_length=model_max_length)
    tokenizer.save_pretrained(out_dir)


def write_config(out_dir: str, model_config: ModelConfig) -> None:
    hf_bert_config(model_config).save_pretrained(out_dir)


def write_safetensors(out_dir: str, tensors: Mapping[str, "object"]) -> None:
    """Weights as ``model.safetensors`` from numpy arrays keyed by HF BertForPreTraining names
    (e.g. ``bert.embeddings.word_embeddings.weight``, ``cls.predictions.bias``)."""
    from safetensors.numpy import save_file

    save_file(dict(tensors), os.path.join(out_dir, SAFETENSORS_FILE),
              metadata={"format": "pt"})


def export_hf(out_dir: str, *, model_config: ModelConfig, save_weights: Callable[[str], None],
              vocab_file: str, do_lower_case: bool,
              model_max_length: int | None = None) -> str:
    """Write the whole directory; return its absolute path.

    save_weights(out_dir) writes the weights (it may also write config.json; ours replaces it so
    the architecture and fields are always those of ``model_config``). Raises ValueError when
    the vocab file's line count is not the model's vocab_size.
    """
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    save_weights(out_dir)
    write_config(out_dir, model_config)
    write_tokenizer(out_dir, vocab_file=vocab_file, do_lower_case=do_lower_case,
                    model_max_length=model_max_length or model_config.max_position_embeddings)
    n = count_vocab(os.path.join(out_dir, VOCAB_FILE))
    if n != model_config.vocab_size:
        raise ValueError(f"{vocab_file} has {n} entries, model vocab_size is "
                         f"{model_config.vocab_size}")
    return out_dir


def export_hf_for_data(out_dir: str, *, model_config: ModelConfig,
                       save_weights: Callable[[str], None], spec) -> str:
    """``export_hf`` with vocab and casing taken from a ``data_contract.DataSpec``."""
    return export_hf(out_dir, model_config=model_config, save_weights=save_weights,
                     vocab_file=spec.vocab_file, do_lower_case=spec.do_lower_case)


def read_exported_config(out_dir: str) -> dict:
    with open(os.path.join(out_dir, CONFIG_FILE), encoding="utf-8") as f:
        return json.load(f)


def model_config_from_hf(hf_dir: str) -> ModelConfig:
    """The ModelConfig of an exported (or any HF BERT) directory: for ``--init_checkpoint``."""
    values = read_exported_config(hf_dir)
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in values.items() if k in names})


def check_init_checkpoint(model_config: ModelConfig, hf_dir: str) -> None:
    """Refuse (ValueError naming each field) an HF directory whose tensors do not fit
    ``model_config``: the model is built from ``model_config``, never silently from the
    checkpoint's config."""
    theirs = model_config_from_hf(hf_dir)
    bad = [f"{f}: model {getattr(model_config, f)} vs {hf_dir} {getattr(theirs, f)}"
           for f in SHAPE_FIELDS if getattr(model_config, f) != getattr(theirs, f)]
    if bad:
        raise ValueError("--init_checkpoint does not fit the model:\n  " + "\n  ".join(bad))
