"""Pipeline flags: one declaration (``JobConfig``) makes the Beam options, the validated job
settings and the manifest's ``config``; plus YAML presets (``--config``), runner short names and
the refusal of flags nobody knows.

Flag names follow Google's create_pretraining_data.py where one exists. A ``--config`` YAML file
(see ``configs/``) supplies values; flags given on the command line override it.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.beam.ltp_device import check_device, check_model_device
from pipeline.common.sizes import MB
from pipeline.core.bins import parse_bins
from pipeline.core.curation import (
    CONVERSIONS,
    DEDUP_MODES,
    FILTERS,
    CurationConfig,
    parse_filters,
    parse_weight,
)
from pipeline.core.masking import parse_ngram
from pipeline.core.text import FORMATS

RESOURCES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "resources")
DEFAULT_INPUT = os.path.join(RESOURCES, "sample", "peoples_daily_sample.txt")
# Vocabularies shipped with the package, usable by name in --vocab_file.
BUILTIN_VOCABS = {name: os.path.join(RESOURCES, "vocab", f"{name}-vocab.txt")
                  for name in ("bert-base-chinese", "bert-base-uncased")}
DEFAULT_VOCAB = "bert-base-chinese"
OUTPUT_FORMATS = ("tfrecord", "parquet")
# More shards than this needs --allow_many_shards: 100,000 shards is 200,000 files, rarely meant.
MAX_SHARDS = 10_000
# --runner short names that mean this project's runner: DaskRunner (Beam has no short name for
# it) and DirectRunner (Beam's, kept on its FnApiRunner: see pipeline.beam.direct_runner).
RUNNER_ALIASES = {"DaskRunner": "pipeline.beam.dask_runner.DaskRunner",
                  "DirectRunner": "pipeline.beam.direct_runner.DirectRunner"}


def str2bool(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def _flag(default, help: str, **argparse_kwargs):
    """A JobConfig field that is also a command-line flag of the same name."""
    return dataclasses.field(default=default, metadata=dict(help=help, **argparse_kwargs))


def _switch(help: str):
    """A boolean flag that also works bare (``--overwrite`` = ``--overwrite=true``)."""
    return _flag(False, help, type=str2bool, nargs="?", const=True)


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """The validated data-job settings (everything but the runner's); written whole into
    manifest.json. Each field is the flag ``--<name>``."""
    input: tuple[str, ...] = _flag(
        (DEFAULT_INPUT,), "file glob, local or any Beam filesystem (gs://, s3://, hdfs://); "
        "repeatable. .gz/.bz2 are decompressed. Options for this input's files may follow "
        "the pattern: 'more/*.jsonl;format=jsonl;text_field=content' (else --input_format and "
        "--text_field), and ';weight=W' repeats (W > 1) or samples (W < 1) this input's "
        "documents about W-fold (docs/curation.md). Default: the built-in sample corpus",
        action="append")
    input_format: str = _flag(
        "google", "google: a sentence per line, blank line between documents; lines: a "
        "document per line; jsonl: a JSON object per line with --text_field. For every "
        "--input without its own ';format='", choices=FORMATS)
    text_field: str = _flag("text", "JSON key holding the text (jsonl), for every --input "
                            "without its own ';text_field='")
    output_dir: str = _flag("output", "where shards and manifest.json go (any filesystem)")
    vocab_file: str = _flag(
        DEFAULT_VOCAB, "a BERT vocab.txt (any filesystem), or a built-in name: "
        + ", ".join(BUILTIN_VOCABS))
    do_lower_case: bool = _flag(True, "lower-case and strip accents (uncased vocabularies)",
                                type=str2bool, nargs="?", const=True)
    max_seq_length: int = _flag(128, "tokens per instance, [CLS] and [SEP] included", type=int)
    max_predictions_per_seq: int = _flag(20, "most masked positions per instance", type=int)
    masked_lm_prob: float = _flag(0.15, "share of tokens masked", type=float)
    dupe_factor: int | None = _flag(
        None, "passes over the input, each with other draws. Default: 10 with static "
        "masking, 1 with --masking=dynamic (the trainers draw a new mask every epoch)",
        type=int)
    short_seq_prob: float = _flag(0.1, "share of documents aiming at a shorter length",
                                  type=float)
    random_seed: int = _flag(12345, "every draw derives from it and stable keys", type=int)
    do_whole_word_mask: bool = _flag(
        True, "mask whole words: LTP words for Chinese, ## groups for Latin text",
        type=str2bool, nargs="?", const=True)
    masking: str = _flag(
        "static", "static: masks drawn here and stored (Google's data; every dupe pass "
        "stored); dynamic: no masks stored, a word_starts feature instead, and this "
        "project's trainers (or its Hugging Face collator) draw a new whole-word mask "
        "every epoch", choices=("static", "dynamic"))
    ngram_masking: str = _flag(
        "1", "span lengths in whole words for n-gram masking, e.g. 1,2,3,4 (MacBERT); "
        "spans stay inside a segment and never overlap. Default 1: Google's single words")
    ngram_weights: str | None = _flag(
        None, "the probability of each --ngram_masking length, summing to 1, e.g. "
        "0.4,0.3,0.2,0.1 (MacBERT), or 'harmonic' (1/n, Model Garden's). Default: harmonic")
    length_bins: str | None = _flag(
        None, "sequence-length bins, e.g. 64,128,256: each instance goes to the first bin "
        "whose bound holds its tokens (the last bin ends at --max_seq_length), and each bin "
        "gets shards of its own (as many as --num_shards=N says), padded to its bound, under "
        "tfrecord/len-NNNN/ and parquet/len-NNNN/. The instances are those of the job "
        "without bins. Default: no bins")
    normalize: str = _flag(
        None, "none: the text as given (Google's); nfkc_punct: NFKC, then curly quotes, dashes, "
        "ellipses and box drawing the vocabulary lacks become their ASCII forms (no [UNK] for "
        "Chinese punctuation). Default: none, but nfkc_punct for the built-in sample job "
        "(no --input)", choices=("none", "nfkc_punct"))
    convert: str = _flag(
        "none", "before anything else reads the text: convert traditional Chinese to "
        "simplified with OpenCC (t2s: characters; tw2s, hk2s: Taiwan or Hong Kong variants; "
        "tw2sp: Taiwan phrases too, 軟體 → 软件); counted in stats.json", choices=CONVERSIONS)
    filters: str | None = _flag(
        None, "quality filters, comma-separated, each NAME or NAME=VALUE (all: every one at "
        "its default): " + "; ".join(f"{n} (default {d:g}): {text}" for n, (d, text) in
                                     FILTERS.items())
        + ". Dropped documents and characters are counted per filter. Default: none")
    dedup: str = _flag(
        "none", "drop duplicate documents across the whole corpus, keeping the first in "
        "(input file, byte offset) order: exact (equal text after NFKC and whitespace "
        "collapsing) or near (also MinHash near-duplicates, see --near_dup_threshold); "
        "counted per kind", choices=DEDUP_MODES)
    near_dup_threshold: float = _flag(
        0.8, "--dedup=near: a document goes when its estimated Jaccard similarity (character "
        "shingles) to an earlier one sharing an LSH band is at least this, in (0, 1]",
        type=float)
    near_dup_shingle: int = _flag(
        3, "--dedup=near: characters per shingle (1-3); 3 finds copies with up to 2%% of "
        "characters changed at the default threshold", type=int)
    dedup_partitions: int = _flag(
        0, "--dedup: how many groups the band keys are split into between the two passes "
        "(memory per group falls with more). Never changes the output. Default 0: one per "
        "8 MB of input", type=int)
    next_sentence: str = _flag(
        "nsp", "the second segment and its label: nsp (Google's next sentence prediction), sop "
        "(sentence-order prediction: B always follows A, swapped half the time), none (one "
        "segment of whole sentences, no label: masked-LM only, as RoBERTa)",
        choices=("nsp", "sop", "none"))
    ltp_model: str = _flag(
        "default", "'default' (built-in legacy model, trained on first use), a local, gs:// "
        "or s3:// LTP model directory, or a hub name")
    user_dict: str | None = _flag(None, "extra words for LTP, one per line (any filesystem)")
    ltp_device: str = _flag(
        "cpu", "where a neural --ltp_model runs on each worker: cpu, cuda, cuda:N, or auto "
        "(cuda where the worker's torch sees a GPU, else cpu). Legacy (perceptron) models "
        "run on the CPU only and refuse cuda (docs/segmenter.md)")
    num_shards: int = _flag(4, "output shards per format", type=int)
    output_formats: tuple[str, ...] = _flag(
        OUTPUT_FORMATS, "comma-separated subset of tfrecord,parquet")
    compression: str = _flag(
        "none", "TFRecord compression (tf.data 'GZIP'); Parquet pages are always compressed",
        choices=("none", "gzip"))
    parquet_compression: str = _flag("snappy", "Parquet page compression",
                                     choices=("snappy", "zstd", "gzip", "none"))
    overwrite: bool = _switch(
        "replace the pipeline's previous output in a non-empty --output_dir, once the new one "
        "is complete; files that are not the pipeline's are kept")
    temp_dir: str | None = _flag(
        None, "where the instances wait between the job's two halves (about 6x the input; "
        "any filesystem). Only this run's files there are deleted. Default: "
        "--output_dir/_pieces")
    break_lock: bool = _switch(
        "remove the output directory's lock left by a job that died (never needed otherwise)")
    on_input_change: str = _flag(
        "fail", "an input file whose size or modification time changed while the job read it: "
        "fail (the job stops, naming it) or skip (its ranges read after the change are skipped "
        "and counted as input_ranges_changed)", choices=("fail", "skip"))
    allow_many_shards: bool = _switch(
        f"allow --num_shards above {MAX_SHARDS} (each shard is a file per format)")
    max_sentence_chars: int = _flag(
        500, "longer sentences are cut (at a comma or space when possible)", type=int)
    range_mb: float = _flag(
        1.0, "input is processed in document-aligned ranges of about this many MB "
        "(compressed files: whole): the unit of parallel work, and the pool random next "
        "segments are drawn from", type=float)
    tokenize_batch_size: int = _flag(64, "most documents per segmentation/WordPiece batch",
                                     type=int)
    exact_google_draws: bool = _switch(
        "make instances with Google's per-token random draws (given the same generator, "
        "Google's exact output; about 4x slower). Default: the same algorithm and "
        "distributions, vectorized")
    strict: bool = _switch(
        "for production runs: the data warnings of stats.json (a google-format file without "
        "blank lines, every jsonl line rejected, a document larger than a range, few random "
        "next segments) fail the job before its manifest is written")
    quiet: bool = _switch("print only warnings and errors: no progress lines")
    verbose: bool = _switch("also print what Beam and LTP print (hidden by default)")

    @classmethod
    def from_options(cls, options: PipelineOptions) -> "JobConfig":
        given = options.view_as(WwmOptions)
        values = {f.name: getattr(given, f.name) for f in dataclasses.fields(cls)}
        if values["normalize"] is None:  # the built-in sample job normalizes; else Google's text
            values["normalize"] = "none" if values["input"] else "nfkc_punct"
        values["input"] = tuple(values["input"] or (DEFAULT_INPUT,))
        values["vocab_file"] = BUILTIN_VOCABS.get(values["vocab_file"], values["vocab_file"])
        formats = values["output_formats"]
        if isinstance(formats, str):
            formats = tuple(f.strip() for f in formats.split(",") if f.strip())
        values["output_formats"] = tuple(formats)
        if values["dupe_factor"] is None:
            values["dupe_factor"] = 1 if values["masking"] == "dynamic" else 10
        lengths, weights = parse_ngram(values["ngram_masking"], values["ngram_weights"])
        values["ngram_masking"] = ",".join(map(str, lengths))
        values["ngram_weights"] = ",".join(f"{w:.6g}" for w in weights)
        for switch in ("overwrite", "exact_google_draws", "quiet", "verbose", "break_lock",
                       "allow_many_shards", "strict"):
            values[switch] = bool(values[switch])
        config = cls(**values)
        config.validate()
        return config

    @property
    def bin_bounds(self) -> tuple[int, ...]:
        """The length bins' bounds, the last = max_seq_length; () without bins."""
        return parse_bins(self.length_bins, self.max_seq_length)

    @property
    def ngram_lengths(self) -> tuple[int, ...]:
        return parse_ngram(self.ngram_masking, self.ngram_weights)[0]

    @property
    def ngram_weight_values(self) -> tuple[float, ...]:
        return parse_ngram(self.ngram_masking, self.ngram_weights)[1]

    @property
    def curation(self) -> CurationConfig:
        """The curation settings (``core.curation``); the default does nothing."""
        return CurationConfig(convert=self.convert, filters=parse_filters(self.filters),
                              dedup=self.dedup, near_dup_threshold=self.near_dup_threshold,
                              shingle=self.near_dup_shingle, seed=self.random_seed)

    @property
    def range_bytes(self) -> int:
        return round(self.range_mb * MB)

    def inputs(self) -> tuple[InputSpec, ...]:
        """Each --input parsed (``parse_input``), the job's format and field as defaults."""
        return tuple(parse_input(spec, input_format=self.input_format,
                                 text_field=self.text_field) for spec in self.input)

    def validate(self) -> None:
        self.inputs()
        bad = [f for f in self.output_formats if f not in OUTPUT_FORMATS]
        if bad or not self.output_formats:
            raise ValueError(f"--output_formats must be a non-empty subset of {OUTPUT_FORMATS}, "
                             f"got {self.output_formats}")
        checks = [
            (self.num_shards >= 1, "--num_shards must be >= 1"),
            (self.num_shards <= MAX_SHARDS or self.allow_many_shards,
             f"--num_shards {self.num_shards} is above {MAX_SHARDS} ({self.num_shards} files "
             f"per format, most of them tiny or empty unless the corpus is huge): pass "
             f"--allow_many_shards if that is meant"),
            (self.dupe_factor >= 1, "--dupe_factor must be >= 1"),
            (self.max_sentence_chars >= 16, "--max_sentence_chars must be >= 16"),
            (self.range_bytes >= 1000, "--range_mb must be at least 0.001 (1 KB)"),
            (self.tokenize_batch_size >= 1, "--tokenize_batch_size must be >= 1"),
            (self.max_predictions_per_seq <= self.max_seq_length,
             "--max_predictions_per_seq cannot exceed --max_seq_length"),
            (not self.exact_google_draws or (self.masking == "static"
                                             and self.ngram_masking == "1"),
             "--exact_google_draws reproduces Google's static single-word masking only: it "
             "cannot be combined with --masking=dynamic or --ngram_masking"),
        ]
        parse_ngram(self.ngram_masking, self.ngram_weights)
        parse_bins(self.length_bins, self.max_seq_length)
        self.curation  # noqa: B018  (refuses bad curation settings)
        if self.dedup_partitions < 0:
            raise ValueError("--dedup_partitions must be >= 0 (0: automatic)")
        check_device(self.ltp_device)
        if self.do_whole_word_mask and self.ltp_model == "default":
            check_model_device(self.ltp_device, "legacy")  # the built-in model is legacy
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class WwmOptions(PipelineOptions):
    """Options of the data job (everything else goes to the Beam runner)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--config", default=None,
                            help="a data preset by name (" + ", ".join(presets()) + ") or a "
                                 "YAML file of flag values; flags given override it")
        for field in dataclasses.fields(JobConfig):
            kwargs = dict(field.metadata)
            # Repeatable flags start empty (argparse would append to a default).
            default = None if kwargs.get("action") == "append" else field.default
            if field.name == "output_formats":
                default = ",".join(field.default)
            parser.add_argument(f"--{field.name}", default=default, **kwargs)


# Data presets (--config=zh-128 or --config=configs/data/zh-128.yaml), beside the package.
PRESETS_DIR = os.path.join(os.path.dirname(os.path.dirname(RESOURCES)), "configs", "data")


def presets() -> list[str]:
    """The names of the data presets (``configs/data/*.yaml``), sorted."""
    if not os.path.isdir(PRESETS_DIR):
        return []
    return sorted(n[:-len(".yaml")] for n in os.listdir(PRESETS_DIR) if n.endswith(".yaml"))


def preset_path(config: str) -> str:
    """A --config value as a file: a path as given, else a preset name; FileNotFoundError
    naming the presets when neither exists."""
    if os.path.isfile(config):
        return config
    named = os.path.join(PRESETS_DIR, config if config.endswith(".yaml") else config + ".yaml")
    if os.sep not in config and os.path.isfile(named):
        return named
    raise FileNotFoundError(f"--config {config!r} is neither a file nor a preset; the presets "
                            f"are: {', '.join(presets()) or '(none found)'} (or give a path "
                            "to a YAML file)")


def expand_config(argv: Sequence[str]) -> list[str]:
    """Prepend the values of a ``--config`` YAML file to ``argv`` (flags given win)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return list(argv)
    import yaml

    with open(preset_path(known.config), encoding="utf-8") as f:
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


def resolve_runner(argv: Sequence[str]) -> list[str]:
    """``argv`` with a runner: DirectRunner when none is named, and the short names of
    ``RUNNER_ALIASES`` spelled out (Beam's own DirectRunner may download and run Prism). A
    runner name nobody knows is refused here, before anything is created (ValueError with the
    closest known name)."""
    out, named = list(argv), False
    for i, arg in enumerate(out):
        if arg.startswith("--runner="):
            named = True
            name = check_runner(arg.split("=", 1)[1])
            out[i] = "--runner=" + RUNNER_ALIASES.get(name, name)
        elif arg == "--runner" and i + 1 < len(out):
            named = True
            name = check_runner(out[i + 1])
            out[i + 1] = RUNNER_ALIASES.get(name, name)
    return out if named else out + ["--runner=" + RUNNER_ALIASES["DirectRunner"]]


def known_runners() -> list[str]:
    """The short runner names --runner takes: ours and Beam's (its map, by class name)."""
    from apache_beam.runners.runner import _RUNNER_MAP

    names = {path.rsplit(".", 1)[1] for path in _RUNNER_MAP.values()} | set(RUNNER_ALIASES)
    return sorted(names)


def check_runner(name: str) -> str:
    """``name`` if Beam (or this project) can make a runner of it: a known short name in any
    case, with or without "Runner", or a dotted ``module.Class`` path; else ValueError."""
    if "." in name:
        return name  # a class path: Beam imports it and says what is missing
    from apache_beam.runners.runner import _RUNNER_MAP

    ours = {n.lower(): n for n in RUNNER_ALIASES}
    for form in (name.lower(), name.lower() + "runner"):
        if form in ours:
            return ours[form]
        if form in _RUNNER_MAP:
            return name
    known = known_runners()
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) or \
        difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = f" (did you mean {next(k for k in known if k.lower() == close[0].lower())}?)"
    raise ValueError(f"unknown --runner {name!r}{hint}; known runners: {', '.join(known)}, "
                     "or a module.Class path; nothing was run")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One --input: a file pattern and the options that hold for the files it matches."""
    pattern: str
    input_format: str
    text_field: str
    weight: float = 1.0  # each document about this many times (core.curation.weighted)


# Options an --input may carry after its pattern:
# 'more/*.jsonl;format=jsonl;text_field=body;weight=2'.
INPUT_OPTIONS = ("format", "text_field", "weight")


def parse_input(spec: str, *, input_format: str = "google",
                text_field: str = "text") -> InputSpec:
    """``pattern[;key=value]...`` → InputSpec; keys not given take the job's --input_format and
    --text_field. ValueError for an unknown key (with the closest one) or a bad value."""
    pattern, *options = spec.split(";")
    values = {"format": input_format, "text_field": text_field, "weight": "1"}
    for option in options:
        key, eq, value = option.partition("=")
        key = key.strip()
        if not eq or key not in INPUT_OPTIONS:
            close = difflib.get_close_matches(key, INPUT_OPTIONS, n=1)
            raise ValueError(f"--input {spec!r}: unknown option {option!r}"
                             + (f" (did you mean {close[0]}=...?)" if close else "")
                             + f"; an --input takes PATTERN;{'=...;'.join(INPUT_OPTIONS)}=...")
        values[key] = value.strip()
    if values["format"] not in FORMATS:
        raise ValueError(f"--input {spec!r}: format {values['format']!r} is not one of "
                         f"{', '.join(FORMATS)}")
    if not values["text_field"]:
        raise ValueError(f"--input {spec!r}: an empty text_field")
    if not pattern:
        raise ValueError(f"--input {spec!r}: no file pattern")
    try:
        weight = parse_weight(values["weight"])
    except ValueError as e:
        raise ValueError(f"--input {spec!r}: {e}") from None
    return InputSpec(pattern, values["format"], values["text_field"], weight)


def with_pattern(spec: str, pattern: str) -> str:
    """``spec`` with its pattern replaced (its options kept)."""
    rest = spec.split(";", 1)
    return pattern + (";" + rest[1] if len(rest) > 1 else "")


class UnknownFlagError(ValueError):
    """Arguments no registered option set knows (a typo would otherwise run the whole job on
    the defaults: Beam only warns and drops them)."""


def check_flags(argv: Sequence[str]) -> None:
    """Refuse, before any work, every argument that neither this job nor Beam nor the chosen
    runner knows, suggesting the closest known flag."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    if any("dask_runner" in a for a in argv):
        import apache_beam.runners.dask.dask_runner  # noqa: F401  registers DaskOptions

    parser = _BeamArgumentParser(allow_abbrev=False)
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(list(argv))
    if not unknown:
        return
    known = [s for action in parser._actions for s in action.option_strings]
    problems = []
    for arg in unknown:
        name = arg.split("=", 1)[0]
        close = difflib.get_close_matches(name, known, n=1) if name.startswith("--") else []
        problems.append(f"{arg!r}" + (f" (did you mean {close[0]}?)" if close else ""))
    raise UnknownFlagError("unknown argument(s): " + ", ".join(problems)
                           + "; nothing was run (see --help)")
