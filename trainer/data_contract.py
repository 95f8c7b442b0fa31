"""The trainers' side of the data contract: read, validate and check a pipeline output dir.

Both trainers call ``load_data_dir`` (or ``read_manifest`` + ``check_compatible``) before building
a model step, so that a wrong vocabulary or a sequence length the model cannot embed fails in a
second with a message naming both numbers, not hours later as an index error on a TPU.

Framework-free: files are read through ``trainer.storage`` (local paths, or URLs such as
``gs://...``).
"""
from __future__ import annotations

import dataclasses
import itertools
import json

from pipeline import schema
from pipeline.core.masking import MaskingConfig
from trainer.config import ModelConfig
from trainer.storage import join, read_text

FORMATS = (schema.TFRECORD_DIR, schema.PARQUET_DIR)  # "tfrecord", "parquet"


def read_manifest(data_dir: str) -> dict:
    """``data_dir/manifest.json`` as a dict, validated by ``pipeline.schema.validate_manifest``.

    Raises FileNotFoundError naming the path when the pipeline has not finished (the manifest is
    written last), ValueError when keys are missing, the format version is unknown or the
    sentence task (``next_sentence``) is not one this code trains (``schema.SENTENCE_TASKS``).
    """
    path = join(data_dir, schema.MANIFEST_FILE)
    try:
        manifest = json.loads(read_text(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: not a pipeline output dir, or the pipeline "
                                "has not finished (it writes the manifest last)") from None
    schema.validate_manifest(manifest, source=path)
    try:
        schema.sentence_task(manifest)
        schema.masking_mode(manifest)
    except ValueError as e:
        raise ValueError(f"{path}: {e}: data of a sentence task or masking mode this trainer "
                         "does not know (written by a newer pipeline?)") from None
    return manifest


def check_compatible(manifest: dict, model_config: ModelConfig, *,
                     max_seq_length: int | None = None,
                     max_predictions_per_seq: int | None = None) -> None:
    """Refuse data the model cannot train on; ValueError listing every mismatch found.

    max_seq_length / max_predictions_per_seq: what the training config expects for this phase
    (None = accept the manifest's). The model's vocab_size must be set (see
    ``resolve_model_config``) and equal the manifest's: a larger model vocab would train rows of
    the embedding that no token uses, a smaller one fails with index errors mid-run.
    """
    problems = []
    seq = manifest["max_seq_length"]
    if seq > model_config.max_position_embeddings:
        problems.append(f"data max_seq_length {seq} > model max_position_embeddings "
                        f"{model_config.max_position_embeddings}")
    if max_seq_length is not None and seq != max_seq_length:
        problems.append(f"data max_seq_length {seq} != training config max_seq_length "
                        f"{max_seq_length} (wrong phase's data?)")
    preds = manifest["max_predictions_per_seq"]
    if max_predictions_per_seq is not None and preds != max_predictions_per_seq:
        problems.append(f"data max_predictions_per_seq {preds} != training config "
                        f"max_predictions_per_seq {max_predictions_per_seq}")
    if preds > seq:
        problems.append(f"data max_predictions_per_seq {preds} > max_seq_length {seq}")
    if model_config.vocab_size is None:
        problems.append("model vocab_size is unset: call resolve_model_config first")
    elif manifest["vocab_size"] != model_config.vocab_size:
        problems.append(f"data vocab_size {manifest['vocab_size']} != model vocab_size "
                        f"{model_config.vocab_size} (different vocab.txt?)")
    task = schema.sentence_task(manifest)
    if task != "none" and model_config.type_vocab_size < 2:
        problems.append(f"model type_vocab_size {model_config.type_vocab_size} < 2: {task} "
                        "data has segment ids 0 and 1")
    if manifest["total_instances"] <= 0:
        problems.append("data has no instances (total_instances is 0)")
    if problems:
        raise ValueError("data and model are incompatible:\n  " + "\n  ".join(problems))


def resolve_model_config(model_config: ModelConfig, manifest: dict) -> ModelConfig:
    """Fill an unset vocab_size from the manifest; a set one is kept (and checked later)."""
    if model_config.vocab_size is not None:
        return model_config
    return dataclasses.replace(model_config, vocab_size=int(manifest["vocab_size"]))


def shard_entries(manifest: dict, fmt: str) -> list[dict]:
    """The manifest's ``shards[fmt]`` list of {"path", "instances"}; ValueError if absent."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    entries = manifest["shards"].get(fmt) or []
    if not entries:
        raise ValueError(f"manifest lists no {fmt} shards (pipeline run without that writer?)")
    return entries


def shard_paths(data_dir: str, manifest: dict, fmt: str) -> list[str]:
    """Absolute paths (or URLs) of the ``fmt`` shards, in manifest order (sorted by name)."""
    return [join(data_dir, e["path"]) for e in shard_entries(manifest, fmt)]


def shard_sizes(manifest: dict, fmt: str) -> list[int]:
    """Instances per shard, parallel to ``shard_paths``."""
    return [int(e["instances"]) for e in shard_entries(manifest, fmt)]


def first_indexes(manifest: dict, fmt: str) -> list[int]:
    """The stable index of each ``fmt`` shard's first instance: the instances of the shards
    before it, in manifest order. Instance k of shard i has index first_indexes[i] + k (the
    same for both formats: shard i of each holds the same rows in the same order)."""
    return list(itertools.accumulate(shard_sizes(manifest, fmt)[:-1], initial=0))


def vocab_path(data_dir: str, manifest: dict) -> str:
    """Absolute path of the vocab the data was made with (the pipeline copies it into data_dir)."""
    return join(data_dir, manifest["vocab_file"])


@dataclasses.dataclass(frozen=True)
class LengthBin:
    """One length bin of binned data (``--length_bins``): a Google-format dataset of its own,
    padded to ``bound``. ``index_offsets``: the stable index of each of its shards' first
    instance, per format (from the shard's place in the manifest's top-level list), so dynamic
    masks are the same whether the data is read binned or as one list."""

    bound: int
    max_predictions_per_seq: int
    instances: int
    paths: dict[str, list[str]]
    sizes: dict[str, list[int]]
    index_offsets: dict[str, list[int]]


def length_bins(data_dir: str, manifest: dict) -> tuple[LengthBin, ...]:
    """The manifest's non-empty length bins, in increasing bound order; () when unbinned."""
    found = []
    for entry in schema.length_bins(manifest):
        if not entry["instances"]:
            continue  # an empty bin: no shards, never drawn
        paths, sizes, offsets = {}, {}, {}
        for fmt, entries in entry["shards"].items():
            first = dict(zip((e["path"] for e in shard_entries(manifest, fmt)),
                             first_indexes(manifest, fmt)))
            paths[fmt] = [join(data_dir, e["path"]) for e in entries]
            sizes[fmt] = [int(e["instances"]) for e in entries]
            offsets[fmt] = [first[e["path"]] for e in entries]
        found.append(LengthBin(bound=int(entry["bound"]),
                               max_predictions_per_seq=int(entry["max_predictions_per_seq"]),
                               instances=int(entry["instances"]), paths=paths, sizes=sizes,
                               index_offsets=offsets))
    return tuple(found)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a trainer needs from a checked data dir. Paths are absolute (or URLs).

    next_sentence: the sentence task (``schema.SENTENCE_TASKS``): "nsp" and "sop" data hold
    ``next_sentence_labels`` for the 2-way head, "none" data has no such feature (masked-LM
    only). It decides the features read, the loss and the metric names.
    """

    data_dir: str
    manifest: dict
    max_seq_length: int
    max_predictions_per_seq: int
    vocab_size: int
    do_lower_case: bool
    vocab_file: str
    tfrecord_compression: str
    next_sentence: str
    # Dynamic data (manifest masking mode "dynamic"): how the trainers mask it every epoch
    # (pipeline.core.masking.mask_dynamic); None for static data, whose masks are stored.
    masking: MaskingConfig | None = None
    # Binned data (format_version 2): the non-empty bins; () for unbinned data, read as one
    # list of shards at max_seq_length.
    bins: tuple[LengthBin, ...] = ()

    @property
    def dynamic(self) -> bool:
        return self.masking is not None

    def index_offsets(self, fmt: str) -> list[int]:
        """The stable index of each shard's first instance (``first_indexes``)."""
        return first_indexes(self.manifest, fmt)

    def paths(self, fmt: str) -> list[str]:
        return shard_paths(self.data_dir, self.manifest, fmt)

    def sizes(self, fmt: str) -> list[int]:
        return shard_sizes(self.manifest, fmt)


def load_data_dir(data_dir: str, model_config: ModelConfig, *,
                  max_seq_length: int | None = None,
                  max_predictions_per_seq: int | None = None) -> DataSpec:
    """read_manifest + check_compatible in one call; returns the facts trainers use.

    model_config must already have its vocab_size resolved (``resolve_model_config``).
    """
    manifest = read_manifest(data_dir)
    check_compatible(manifest, model_config, max_seq_length=max_seq_length,
                     max_predictions_per_seq=max_predictions_per_seq)
    return DataSpec(
        data_dir=join(data_dir), manifest=manifest,
        max_seq_length=int(manifest["max_seq_length"]),
        max_predictions_per_seq=int(manifest["max_predictions_per_seq"]),
        vocab_size=int(manifest["vocab_size"]), do_lower_case=bool(manifest["do_lower_case"]),
        vocab_file=vocab_path(data_dir, manifest),
        tfrecord_compression=manifest.get("tfrecord_compression", "") or "",
        next_sentence=schema.sentence_task(manifest), masking=masking_config(manifest),
        bins=length_bins(join(data_dir), manifest))


def masking_config(manifest: dict) -> MaskingConfig | None:
    """The dynamic-masking settings of a manifest; None for static data."""
    if schema.masking_mode(manifest) != "dynamic":
        return None
    return MaskingConfig.from_manifest(manifest["masking"], int(manifest["vocab_size"]))
