"""The one contract between the pipeline's writers and the trainers.

Feature names, dtypes and lengths are Google's (google-research/bert ``run_pretraining.py``):
every TFRecord ``tf.train.Example`` holds exactly these features at fixed length, padded with 0.
Parquet shards hold the same names as *unpadded* lists (``next_sentence_labels`` as a scalar),
which pyarrow and Hugging Face ``datasets`` read directly.

This module imports no framework at module level: the TF feature spec and the Arrow schema are
built on request, so the pure core, the Beam workers and the PyTorch trainer can all import it.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Dict, List, Sequence

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

# NSP labels, as in Google's data: 0 = B really follows A, 1 = B is random.
NSP_IS_NEXT = 0
NSP_IS_RANDOM = 1

# Files under --output_dir.
TFRECORD_DIR = "tfrecord"
PARQUET_DIR = "parquet"
MANIFEST_FILE = "manifest.json"
STATS_FILE = "stats.json"
MANIFEST_FORMAT_VERSION = 1


def shard_name(index: int, num_shards: int, suffix: str) -> str:
    """``part-00003-of-00010.tfrecord``: sortable, and says how many siblings to expect."""
    return f"part-{index:05d}-of-{num_shards:05d}{suffix}"


def feature_length(kind: str, max_seq_length: int, max_predictions_per_seq: int) -> int:
    return {"seq": max_seq_length, "pred": max_predictions_per_seq, "one": 1}[kind]


@dataclasses.dataclass(frozen=True)
class Instance:
    """One pretraining example, unpadded.

    input_ids: [CLS] A [SEP] B [SEP] as vocabulary ids, length n <= max_seq_length.
    num_a: number of leading tokens in segment 0, i.e. len(A) + 2 ([CLS] and the first [SEP]).
    masked_lm_positions: ascending positions in input_ids, never 0 (position 0 is [CLS]);
      NVIDIA's HDF5 readers stop at the first 0, so 0 must never be a real prediction.
    masked_lm_ids: the original ids at those positions (the labels).
    next_sentence_label: NSP_IS_NEXT or NSP_IS_RANDOM.
    """

    input_ids: Sequence[int]
    num_a: int
    masked_lm_positions: Sequence[int]
    masked_lm_ids: Sequence[int]
    next_sentence_label: int

    @property
    def segment_ids(self) -> List[int]:
        n = len(self.input_ids)
        return [0] * self.num_a + [1] * (n - self.num_a)

    def padded_features(self, max_seq_length: int, max_predictions_per_seq: int) -> Dict[str, list]:
        """Google's fixed-length features (values as Python lists, in FEATURES order)."""
        n = len(self.input_ids)
        m = len(self.masked_lm_positions)
        if n > max_seq_length or m > max_predictions_per_seq:
            raise ValueError(
                f"instance of {n} tokens / {m} predictions exceeds "
                f"max_seq_length={max_seq_length} / max_predictions_per_seq={max_predictions_per_seq}")
        pad_s = [0] * (max_seq_length - n)
        pad_p = max_predictions_per_seq - m
        return {
            "input_ids": list(self.input_ids) + pad_s,
            "input_mask": [1] * n + pad_s,
            "segment_ids": self.segment_ids + pad_s,
            "masked_lm_positions": list(self.masked_lm_positions) + [0] * pad_p,
            "masked_lm_ids": list(self.masked_lm_ids) + [0] * pad_p,
            "masked_lm_weights": [1.0] * m + [0.0] * pad_p,
            "next_sentence_labels": [self.next_sentence_label],
        }

    def row(self) -> dict:
        """The unpadded Parquet row."""
        n = len(self.input_ids)
        m = len(self.masked_lm_positions)
        return {
            "input_ids": list(self.input_ids),
            "input_mask": [1] * n,
            "segment_ids": self.segment_ids,
            "masked_lm_positions": list(self.masked_lm_positions),
            "masked_lm_ids": list(self.masked_lm_ids),
            "masked_lm_weights": [1.0] * m,
            "next_sentence_labels": self.next_sentence_label,
        }


# Compact wire format for instances between pipeline stages: a header of four uint32
# (n tokens, num_a, n predictions, nsp label) then uint32 arrays. Much smaller and faster to
# pickle than a dataclass of lists, and independent of Python's pickle protocol.
_HEADER = struct.Struct("<4I")


def pack_instance(inst: Instance) -> bytes:
    n, m = len(inst.input_ids), len(inst.masked_lm_positions)
    body = struct.pack(f"<{n + 2 * m}I", *inst.input_ids, *inst.masked_lm_positions,
                       *inst.masked_lm_ids)
    return _HEADER.pack(n, inst.num_a, m, inst.next_sentence_label) + body


def unpack_instance(blob: bytes) -> Instance:
    n, num_a, m, label = _HEADER.unpack_from(blob, 0)
    values = struct.unpack_from(f"<{n + 2 * m}I", blob, _HEADER.size)
    return Instance(input_ids=values[:n], num_a=num_a, masked_lm_positions=values[n:n + m],
                    masked_lm_ids=values[n + m:], next_sentence_label=label)


def tf_feature_spec(max_seq_length: int, max_predictions_per_seq: int) -> dict:
    """Exactly google-research/bert run_pretraining's ``name_to_features``."""
    import tensorflow as tf  # deferred: only TF users pay for the import

    dtypes = {"int64": tf.int64, "float32": tf.float32}
    return {
        name: tf.io.FixedLenFeature([feature_length(kind, max_seq_length, max_predictions_per_seq)],
                                    dtypes[dtype])
        for name, dtype, kind in FEATURES
    }


def arrow_schema():
    """Arrow schema of the Parquet shards: unpadded lists, scalar NSP label."""
    import pyarrow as pa

    return pa.schema([
        ("input_ids", pa.list_(pa.int32())),
        ("input_mask", pa.list_(pa.int8())),
        ("segment_ids", pa.list_(pa.int8())),
        ("masked_lm_positions", pa.list_(pa.int32())),
        ("masked_lm_ids", pa.list_(pa.int32())),
        ("masked_lm_weights", pa.list_(pa.float32())),
        ("next_sentence_labels", pa.int64()),
    ])


# manifest.json, written last under --output_dir. Keys trainers rely on (all top level):
#   format_version, max_seq_length, max_predictions_per_seq, vocab_size, do_lower_case,
#   vocab_file (relative to the output dir: the pipeline copies the vocab there),
#   vocab_sha256, total_instances,
#   shards: {"tfrecord": [{"path": relative path, "instances": n}, ...], "parquet": [...]},
#   tfrecord_compression ("" or "GZIP", as tf.data names it),
#   config (every pipeline option), versions, ltp_model, created_unix.
MANIFEST_REQUIRED_KEYS = ("format_version", "max_seq_length", "max_predictions_per_seq",
                          "vocab_size", "do_lower_case", "vocab_file", "total_instances",
                          "shards")


def validate_manifest(manifest: dict, source: str = "manifest.json") -> dict:
    """Check the keys trainers rely on; raise ValueError naming what is missing."""
    missing = [k for k in MANIFEST_REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"{source} lacks {missing}: not written by this pipeline, or truncated")
    if manifest["format_version"] != MANIFEST_FORMAT_VERSION:
        raise ValueError(f"{source} has format_version {manifest['format_version']}, "
                         f"this code reads {MANIFEST_FORMAT_VERSION}")
    return manifest
