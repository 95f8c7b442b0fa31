"""The one contract between the pipeline's writers and the trainers.

Feature names, dtypes and lengths are Google's (google-research/bert ``run_pretraining.py``):
every TFRecord ``tf.train.Example`` holds exactly these features at fixed length, padded with 0.
Parquet shards hold the same names as *unpadded* lists (``next_sentence_labels`` as a scalar),
which pyarrow and Hugging Face ``datasets`` read directly.

This module imports no framework at module level: the TF feature spec and the Arrow schema are
built on request, so the pure core, the Beam workers and the PyTorch trainer can all import it.
"""
from __future__ import annotations

# Special tokens of every BERT WordPiece vocabulary we accept.
CLS, SEP, MASK, PAD, UNK = "[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"

# (name, dtype, length kind). Length kinds: "seq" = max_seq_length, "pred" =
# max_predictions_per_seq, "one" = 1. Order is the order features are written in.
FEATURES = (
    ("input_ids", "int64", "seq"),
    ("input_mask", "int64", "seq"),
    ("segment_ids", "int64", "seq"),
    ("masked_lm_positions", "int64", "pred"),
    ("masked_lm_ids", "int64", "pred"),
    ("masked_lm_weights", "float32", "pred"),
    ("next_sentence_labels", "int64", "one"),
)
FEATURE_NAMES = tuple(name for name, _, _ in FEATURES)
# The masked-LM features of static data; dynamic data has none of them.
MASK_FEATURES = ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights")
# Dynamic data's per-token whole-word boundaries: 1 where a masking group (a whole word, or a
# piece right after [CLS]/[SEP]) starts, 0 inside a word, on [CLS]/[SEP] and on padding.
WORD_STARTS = "word_starts"
WORD_STARTS_FEATURE = (WORD_STARTS, "int64", "seq")

# What manifest key ``masking`` says (absent in older manifests: static):
#   static   masks drawn once by the pipeline and stored (Google's data, masked_lm_* features)
#   dynamic  no masks stored; ``word_starts`` instead; the trainers mask every epoch anew with
#            pipeline.core.masking from (run seed, epoch, the instance's index)
MASKING_MODES = ("static", "dynamic")

# NSP labels, as in Google's data: 0 = B really follows A, 1 = B is random.
NSP_IS_NEXT = 0
NSP_IS_RANDOM = 1
# SOP labels (ALBERT's data reuses the NSP feature): 0 = A then B in order, 1 = swapped.
SOP_IN_ORDER = 0
SOP_SWAPPED = 1

# What ``next_sentence_labels`` means (manifest key ``next_sentence``; absent means "nsp"):
#   nsp  Google's next sentence prediction: [CLS] A [SEP] B [SEP], label NSP_*
#   sop  sentence-order prediction: the same layout, label SOP_*
#   none one segment per instance ([CLS] sentences [SEP], segment_ids all 0): RoBERTa-style
#        data for masked-LM only; the feature ``next_sentence_labels`` is absent from both the
#        TFRecord Examples and the Parquet columns.
SENTENCE_TASKS = ("nsp", "sop", "none")
LABEL_FEATURE = "next_sentence_labels"


def sentence_task(manifest: dict) -> str:
    """The manifest's ``next_sentence`` (manifests written before it existed: "nsp")."""
    task = manifest.get("next_sentence", "nsp")
    if task not in SENTENCE_TASKS:
        raise ValueError(f"manifest next_sentence {task!r} is not one of {SENTENCE_TASKS}")
    return task


def masking_mode(manifest: dict) -> str:
    """The manifest's masking mode (manifests written before it existed: "static")."""
    mode = (manifest.get("masking") or {}).get("mode", "static")
    if mode not in MASKING_MODES:
        raise ValueError(f"manifest masking mode {mode!r} is not one of {MASKING_MODES}")
    return mode


def features(next_sentence: str = "nsp", masking: str = "static"):
    """FEATURES as written for ``next_sentence`` (without the label for "none") and
    ``masking`` (dynamic: ``word_starts`` after ``segment_ids``, no masked_lm_*)."""
    out = []
    for f in FEATURES:
        if next_sentence == "none" and f[0] == LABEL_FEATURE:
            continue
        if masking == "dynamic" and f[0] in MASK_FEATURES:
            continue
        out.append(f)
        if masking == "dynamic" and f[0] == "segment_ids":
            out.append(WORD_STARTS_FEATURE)
    return tuple(out)

# Files under --output_dir.
TFRECORD_DIR = "tfrecord"
PARQUET_DIR = "parquet"
MANIFEST_FILE = "manifest.json"
STATS_FILE = "stats.json"
VOCAB_FILE = "vocab.txt"
# Instances between the two halves of the job, under run-<id>/ (unless --temp_dir); this run's
# are removed at its end.
PIECES_DIR = "_pieces"
# New shards of a run that replaces a previous output, under run-<id>/ until the swap.
STAGING_DIR = "_staging"
# Held by the running job (pipeline.beam.output_dir): a second job on the directory is refused.
LOCK_FILE = ".bert-wwm.lock"
# The files of a finished output besides its shards (exact names: see pipeline.beam.output_dir
# for what --overwrite replaces; other files are left alone).
OUTPUT_FILES = (MANIFEST_FILE, STATS_FILE, VOCAB_FILE)
OUTPUT_DIRS = (TFRECORD_DIR, PARQUET_DIR, PIECES_DIR, STAGING_DIR)
MANIFEST_FORMAT_VERSION = 1
# Outputs with length bins (``--length_bins``) are written as version 2, so code that predates
# bins refuses them instead of reading shards of several lengths as one.
BINNED_FORMAT_VERSION = 2
FORMAT_VERSIONS = (MANIFEST_FORMAT_VERSION, BINNED_FORMAT_VERSION)

# How a path the manifest names (vocab_file, shard paths) may not look. The manifest travels
# with the data (copied from a bucket, a colleague, an archive): none of its paths may make a
# tool read, or --overwrite delete, a file outside the output directory. The pipeline writes
# plain relative paths ("vocab.txt", "tfrecord/part-00000-of-00002.tfrecord").
_REFUSED_PATHS = (
    (lambda p: not p, "an empty string"),
    (lambda p: p.startswith("/"), "an absolute path"),
    (lambda p: ":" in p, "a ':' (a URL such as s3://..., or a drive)"),
    (lambda p: "\\" in p, "a backslash"),
    (lambda p: any(ord(c) < 32 or ord(c) == 127 for c in p), "a control character"),
    (lambda p: ".." in p.split("/"), "a '..' segment"),
    (lambda p: bool({"", "."} & set(p.split("/"))), "an empty or '.' segment"),
)


def relative_path_problem(path: str) -> str:
    """Why ``path`` is not a plain relative path inside a directory ("" if it is one)."""
    return next((reason for refused, reason in _REFUSED_PATHS if refused(path)), "")


def shard_name(index: int, num_shards: int, suffix: str) -> str:
    """``part-00003-of-00010.tfrecord``: sortable, and says how many siblings to expect."""
    return f"part-{index:05d}-of-{num_shards:05d}{suffix}"


def bin_dir(bound: int) -> str:
    """A length bin's directory under tfrecord/ and parquet/: ``len-0128``."""
    return f"len-{bound:04d}"


def shard_path(fmt: str, index: int, num_shards: int, *, gzip: bool = False,
               bound: int | None = None) -> str:
    """A shard's path relative to the output directory, e.g.
    ``parquet/part-00000-of-00004.parquet``, or ``tfrecord/len-0128/part-...`` in the length
    bin of ``bound``."""
    sub = f"{bin_dir(bound)}/" if bound is not None else ""
    if fmt == "tfrecord":
        suffix = ".tfrecord.gz" if gzip else ".tfrecord"
        return f"{TFRECORD_DIR}/{sub}{shard_name(index, num_shards, suffix)}"
    if fmt == "parquet":
        return f"{PARQUET_DIR}/{sub}{shard_name(index, num_shards, '.parquet')}"
    raise ValueError(f"unknown shard format {fmt!r}")


def feature_length(kind: str, max_seq_length: int, max_predictions_per_seq: int) -> int:
    return {"seq": max_seq_length, "pred": max_predictions_per_seq, "one": 1}[kind]


def tf_feature_spec(max_seq_length: int, max_predictions_per_seq: int,
                    next_sentence: str = "nsp", masking: str = "static") -> dict:
    """Exactly google-research/bert run_pretraining's ``name_to_features`` (without the label
    for ``next_sentence="none"``; ``word_starts`` instead of masked_lm_* for dynamic data)."""
    import tensorflow as tf  # deferred: only TF users pay for the import

    dtypes = {"int64": tf.int64, "float32": tf.float32}
    return {
        name: tf.io.FixedLenFeature([feature_length(kind, max_seq_length, max_predictions_per_seq)],
                                    dtypes[dtype])
        for name, dtype, kind in features(next_sentence, masking)
    }


def arrow_schema(next_sentence: str = "nsp", masking: str = "static"):
    """Arrow schema of the Parquet shards: unpadded lists, scalar label (none for "none");
    ``word_starts`` instead of masked_lm_* for dynamic data."""
    import pyarrow as pa

    columns = [
        ("input_ids", pa.list_(pa.int32())),
        ("input_mask", pa.list_(pa.int8())),
        ("segment_ids", pa.list_(pa.int8())),
        (WORD_STARTS, pa.list_(pa.int8())),
        ("masked_lm_positions", pa.list_(pa.int32())),
        ("masked_lm_ids", pa.list_(pa.int32())),
        ("masked_lm_weights", pa.list_(pa.float32())),
        (LABEL_FEATURE, pa.int64()),
    ]
    names = {name for name, _, _ in features(next_sentence, masking)}
    return pa.schema([c for c in columns if c[0] in names])


# manifest.json, written last under --output_dir. Keys trainers rely on (all top level):
#   format_version, max_seq_length, max_predictions_per_seq, vocab_size, do_lower_case,
#   vocab_file (relative to the output dir: the pipeline copies the vocab there),
#   vocab_sha256, total_instances,
#   shards: {"tfrecord": [{"path": relative path, "instances": n, "bytes": size,
#                          "sha256": hex digest of the file}, ...], "parquet": [...]},
#   tfrecord_compression ("" or "GZIP", as tf.data names it),
#   next_sentence ("nsp", "sop" or "none": see SENTENCE_TASKS; absent in older manifests),
#   masking ({"mode": "static" or "dynamic" (MASKING_MODES), masked_lm_prob,
#             max_predictions_per_seq, whole_word, mask_id, ngram_lengths, ngram_weights}:
#            pipeline.core.masking.MaskingConfig; absent in older manifests: static),
#   bins (format_version 2 only, --length_bins): [{"bound", "max_predictions_per_seq",
#         "instances", "shards": {fmt: [...]}}], one per bin in increasing bound order, each a
#         Google-format dataset padded to its bound; the top-level "shards" lists all of them,
#   config (every pipeline option), versions, ltp_model, created_unix.
MANIFEST_REQUIRED_KEYS = ("format_version", "max_seq_length", "max_predictions_per_seq",
                          "vocab_size", "do_lower_case", "vocab_file", "total_instances",
                          "shards")


def validate_manifest(manifest: dict, source: str = "manifest.json") -> dict:
    """Check the keys trainers rely on; raise ValueError naming what is missing."""
    missing = [k for k in MANIFEST_REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"{source} lacks {missing}: not written by this pipeline, or truncated")
    if manifest["format_version"] not in FORMAT_VERSIONS:
        raise ValueError(f"{source} has format_version {manifest['format_version']}, "
                         f"this code reads {' and '.join(map(str, FORMAT_VERSIONS))}")
    if (manifest["format_version"] == BINNED_FORMAT_VERSION) != bool(manifest.get("bins")):
        raise ValueError(f"{source}: format_version {manifest['format_version']} "
                         f"{'without' if manifest.get('bins') is None else 'with'} length bins")
    return manifest


def length_bins(manifest: dict) -> list[dict]:
    """The manifest's length bins (``--length_bins``), [] for an unbinned output. Each:
    {"bound": its max_seq_length, "max_predictions_per_seq", "instances",
     "shards": {"tfrecord": [shard entries], "parquet": [...]}} (no shards: an empty bin)."""
    return list(manifest.get("bins") or [])
