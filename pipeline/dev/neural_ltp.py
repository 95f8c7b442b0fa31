"""Neural LTP models with random weights, built offline, for tests and benchmarks of the neural
segmentation path (``--ltp_model`` a neural directory, ``--ltp_device``).

    python -m pipeline.dev.neural_ltp DIR [--shape tiny|small] [--seed 0]

The model is made of the classes a real LTP 4.2 neural model is made of: ``ltp_core``'s
``LTPModule`` with an ELECTRA backbone (``transformers``, built from a config by
``ltp_core.models.utils.load_transformers``), the ``TokenOnly`` processor and an
``MLPTokenClassifier`` word-segmentation head over LTP's two tags (``I-W``, ``B-W``). Its
weights are random, drawn from ``seed`` (the same seed, the same files). It is saved in the
layout ``ltp.LTP(DIR)`` loads without the hub:

  config.json            ``"nerual": true`` (LTP's spelling), the model as ``_ltp_target_``
                         specs, the cws tags
  pytorch_model.bin      the ``LTPModule``'s state dict (``torch.save``)
  tokenizer.json         a BERT WordPiece tokenizer (``tokenizers``) of the shipped
  tokenizer_config.json  bert-base-chinese vocabulary (21,128 entries, lower-casing), which
  vocab.txt              ``AutoTokenizer`` loads as a fast ``BertTokenizer``

Shapes (``SHAPES``):

  tiny   embedding and hidden 32, 2 layers, 2 heads, feed-forward 64: a 3 MB directory built
         in about a second once torch is imported; the tests' model.
  small  the backbone of LTP/small, which LTP's README names as Chinese-ELECTRA small: the
         ELECTRA-small shape (embedding 128, hidden 256, 12 layers, 4 heads, feed-forward
         1024, 512 positions) over the 21,128-entry vocabulary; about 12 M parameters. For
         speed measurements: only the backbone and the cws head run for segmentation, so the
         other tasks' heads of the real model do not matter. (The shape is ELECTRA-small's as
         published; LTP/small's own config.json was not read: there is no hub access here.)

Random weights segment at random (words of one to a few dozen characters): these models test
the mechanics and measure speed; they are useless as segmenters. ``config.json`` says so.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ZH_VOCAB = Path(__file__).resolve().parent.parent / "resources" / "vocab" / \
    "bert-base-chinese-vocab.txt"
CWS_TAGS = ["I-W", "B-W"]  # ltp.nerual's default cws vocabulary (WORD_MIDDLE, WORD_START)
SHAPES = {
    "tiny": dict(embedding_size=32, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=64),
    "small": dict(embedding_size=128, hidden_size=256, num_hidden_layers=12,
                  num_attention_heads=4, intermediate_size=1024),
}
WEIGHTS_FILE = "pytorch_model.bin"  # ltp.mixin.PYTORCH_WEIGHTS_NAME


def _vocab_size(vocab_file: Path) -> int:
    with open(vocab_file, encoding="utf-8") as f:
        return sum(1 for _ in f)


def model_config(shape: str = "tiny", *, vocab_size: int = 21128) -> dict:
    """The ``config.json`` of a random neural model of ``shape`` (see the module docstring)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    backbone = dict(model_type="electra", vocab_size=vocab_size, max_position_embeddings=512,
                    type_vocab_size=2, **SHAPES[shape])
    hidden = backbone["hidden_size"]
    return {
        "nerual": True,
        "note": f"random weights ({shape} shape, pipeline.dev.neural_ltp): it segments at "
                "random; for tests and benchmarks only",
        "model": {
            "_ltp_target_": "ltp_core.models.ltp_model.LTPModule",
            "backbone": {"_ltp_target_": "ltp_core.models.utils.load_transformers",
                         "config": backbone},
            "processor": {"cws": {"_ltp_target_": "ltp_core.models.processor.TokenOnly"}},
            "heads": {"cws": {
                "_ltp_target_": "ltp_core.models.components.token.MLPTokenClassifier",
                "input_size": hidden, "num_labels": len(CWS_TAGS), "dropout": 0.1}},
        },
        "vocabs": {"cws": list(CWS_TAGS)},
    }


def _save_tokenizer(directory: Path, vocab_file: Path) -> None:
    """BERT's WordPiece pipeline (clean text, CJK characters apart, lower case and no accents,
    [CLS] ... [SEP]) as ``tokenizer.json``, plus the vocabulary and a config naming the class."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordPiece.from_file(str(vocab_file), unk_token="[UNK]",
                                                     max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True,
                                                      handle_chinese_chars=True,
                                                      strip_accents=None, lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    ids = tokenizer.get_vocab()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.save(str(directory / "tokenizer.json"))
    shutil.copyfile(vocab_file, directory / "vocab.txt")
    special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
               "cls_token": "[CLS]", "mask_token": "[MASK]"}
    with open(directory / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                   "model_max_length": 512, **special}, f, indent=1)


def build_neural_model(path: str | os.PathLike, *, shape: str = "tiny", seed: int = 0,
                       vocab_file: str | os.PathLike = ZH_VOCAB) -> Path:
    """Write a random-weight neural LTP model of ``shape`` into the directory ``path`` (made if
    missing; files of the same names are replaced) and return it. Deterministic in ``seed``;
    torch's global random state is left as it was."""
    import torch
    from ltp_core.models.utils import instantiate

    directory, vocab_file = Path(path), Path(vocab_file)
    directory.mkdir(parents=True, exist_ok=True)
    config = model_config(shape, vocab_size=_vocab_size(vocab_file))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = instantiate(config["model"])
    torch.save(model.state_dict(), directory / WEIGHTS_FILE)
    _save_tokenizer(directory, vocab_file)
    with open(directory / "config.json", "w", encoding="utf-8") as f:  # last: LTP looks for it
        json.dump(config, f, indent=1)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_neural_model(args.directory, shape=args.shape, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
