"""Pipeline flags: a Beam ``PipelineOptions`` subclass plus YAML presets (``--config``).

Flag names follow Google's create_pretraining_data.py where one exists. A ``--config`` YAML file
(see ``configs/``) supplies values; flags given on the command line override it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import List, Optional, Sequence, Tuple

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.core.text import FORMATS

RESOURCES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "resources")
DEFAULT_INPUT = os.path.join(RESOURCES, "sample", "peoples_daily_sample.txt")
# Vocabularies shipped with the package, usable by name in --vocab_file.
BUILTIN_VOCABS = {name: os.path.join(RESOURCES, "vocab", f"{name}-vocab.txt")
                  for name in ("bert-base-chinese", "bert-base-uncased")}
DEFAULT_VOCAB = "bert-base-chinese"
OUTPUT_FORMATS = ("tfrecord", "parquet")


def str2bool(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


class WwmOptions(PipelineOptions):
    """Options of the data job (everything else goes to the Beam runner)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add = parser.add_argument
        add("--config", default=None, help="YAML preset (configs/*.yaml); flags override it")
        add("--input", action="append", default=None,
            help="file glob, local or any Beam filesystem (gs://, s3://, hdfs://); repeatable. "
                 ".gz/.bz2 are decompressed. Default: the built-in sample corpus")
        add("--input_format", default="google", choices=FORMATS,
            help="google: a sentence per line, blank line between documents; lines: a document "
                 "per line; jsonl: a JSON object per line with --text_field")
        add("--text_field", default="text", help="JSON key holding the text (jsonl)")
        add("--output_dir", default="output", help="where shards and manifest.json go")
        add("--vocab_file", default=DEFAULT_VOCAB,
            help="a BERT vocab.txt (any filesystem), or a built-in name: "
                 + ", ".join(BUILTIN_VOCABS))
        add("--do_lower_case", type=str2bool, default=True)
        add("--max_seq_length", type=int, default=128)
        add("--max_predictions_per_seq", type=int, default=20)
        add("--masked_lm_prob", type=float, default=0.15)
        add("--dupe_factor", type=int, default=10)
        add("--short_seq_prob", type=float, default=0.1)
        add("--random_seed", type=int, default=12345)
        add("--do_whole_word_mask", type=str2bool, default=True,
            help="mask whole words: LTP words for Chinese, ## groups for Latin text")
        add("--ltp_model", default="default",
            help="'default' (built-in legacy model, trained on first use), a local or gs:// LTP "
                 "model directory, or a hub name")
        add("--user_dict", default=None, help="extra words for LTP, one per line")
        add("--num_shards", type=int, default=4)
        add("--output_formats", default="tfrecord,parquet",
            help="comma-separated subset of tfrecord,parquet")
        add("--compression", default="none", choices=("none", "gzip"),
            help="TFRecord compression (tf.data 'GZIP'); Parquet pages are always compressed")
        add("--parquet_compression", default="snappy",
            choices=("snappy", "zstd", "gzip", "none"))
        add("--overwrite", type=str2bool, nargs="?", const=True, default=False,
            help="replace the pipeline's files in a non-empty --output_dir")
        add("--max_sentence_chars", type=int, default=500,
            help="longer sentences are cut (at a comma or space when possible)")
        add("--range_mb", type=float, default=1.0,
            help="input is processed in document-aligned ranges of about this many MB "
                 "(compressed files: whole): the unit of parallel work, and the pool random "
                 "next segments are drawn from")
        add("--tokenize_batch_size", type=int, default=64,
            help="most documents per segmentation/WordPiece batch")
        add("--exact_google_draws", type=str2bool, nargs="?", const=True, default=False,
            help="make instances with Google's per-token random draws (given the same "
                 "generator, Google's exact output; about 4x slower). Default: the same "
                 "algorithm and distributions, vectorized")


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """The validated data-job settings; written whole into manifest.json."""
    input: Tuple[str, ...]
    input_format: str
    text_field: str
    output_dir: str
    vocab_file: str
    do_lower_case: bool
    max_seq_length: int
    max_predictions_per_seq: int
    masked_lm_prob: float
    dupe_factor: int
    short_seq_prob: float
    random_seed: int
    do_whole_word_mask: bool
    ltp_model: str
    user_dict: Optional[str]
    num_shards: int
    output_formats: Tuple[str, ...]
    compression: str
    parquet_compression: str
    overwrite: bool
    max_sentence_chars: int
    range_mb: float
    tokenize_batch_size: int
    exact_google_draws: bool = False

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "JobConfig":
        o = options.view_as(WwmOptions)
        formats = tuple(f.strip() for f in o.output_formats.split(",") if f.strip())
        config = cls(
            input=tuple(o.input or [DEFAULT_INPUT]), input_format=o.input_format,
            text_field=o.text_field, output_dir=o.output_dir,
            vocab_file=BUILTIN_VOCABS.get(o.vocab_file, o.vocab_file),
            do_lower_case=o.do_lower_case, max_seq_length=o.max_seq_length,
            max_predictions_per_seq=o.max_predictions_per_seq, masked_lm_prob=o.masked_lm_prob,
            dupe_factor=o.dupe_factor, short_seq_prob=o.short_seq_prob,
            random_seed=o.random_seed, do_whole_word_mask=o.do_whole_word_mask,
            ltp_model=o.ltp_model, user_dict=o.user_dict, num_shards=o.num_shards,
            output_formats=formats, compression=o.compression,
            parquet_compression=o.parquet_compression, overwrite=bool(o.overwrite),
            max_sentence_chars=o.max_sentence_chars, range_mb=o.range_mb,
            tokenize_batch_size=o.tokenize_batch_size,
            exact_google_draws=bool(o.exact_google_draws))
        config.validate()
        return config

    @property
    def range_bytes(self) -> int:
        return round(self.range_mb * 1_000_000)

    def validate(self) -> None:
        bad = [f for f in self.output_formats if f not in OUTPUT_FORMATS]
        if bad or not self.output_formats:
            raise ValueError(f"--output_formats must be a non-empty subset of {OUTPUT_FORMATS}, "
                             f"got {self.output_formats}")
        checks = [
            (self.num_shards >= 1, "--num_shards must be >= 1"),
            (self.dupe_factor >= 1, "--dupe_factor must be >= 1"),
            (self.max_sentence_chars >= 16, "--max_sentence_chars must be >= 16"),
            (self.range_bytes >= 1000, "--range_mb must be at least 0.001 (1 KB)"),
            (self.tokenize_batch_size >= 1, "--tokenize_batch_size must be >= 1"),
            (self.max_predictions_per_seq <= self.max_seq_length,
             "--max_predictions_per_seq cannot exceed --max_seq_length"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def expand_config(argv: Sequence[str]) -> List[str]:
    """Prepend the values of a ``--config`` YAML file to ``argv`` (flags given win)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return list(argv)
    import yaml

    with open(known.config, encoding="utf-8") as f:
        preset = yaml.safe_load(f) or {}
    if not isinstance(preset, dict):
        raise ValueError(f"{known.config}: expected a mapping of flag names to values")
    given = {a.split("=", 1)[0].lstrip("-") for a in argv if a.startswith("--")}
    extra = []
    for key, value in preset.items():
        if key in given:
            continue
        values = value if isinstance(value, list) else [value]
        if key == "output_formats" and isinstance(value, list):
            values = [",".join(value)]
        extra.extend(f"--{key}={v}" for v in values)
    return extra + list(argv)
