"""Files under --output_dir, through Beam's FileSystems (local, gs://, s3://, hdfs://).

Every file is written under a temporary name and renamed into place, so a reader never sees a
partial shard under its final name; a retried bundle rewrites identical bytes. manifest.json is
written last, after every shard and stats.json: its presence means the output is complete.
"""
from __future__ import annotations

import io
import json
import logging
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import schema
from pipeline.core.seeds import stable_seed
from pipeline.writers.manifest import build_manifest, build_stats
from pipeline.writers.parquet import write_parquet
from pipeline.writers.tfrecord import serialize_batch, write_tfrecords

LOG = logging.getLogger(__name__)
PIPELINE_FILES = (schema.TFRECORD_DIR, schema.PARQUET_DIR, schema.MANIFEST_FILE,
                  schema.STATS_FILE, "vocab.txt")


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def write_atomic(path: str, data: bytes) -> None:
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    tmp = join(directory, f".tmp-{uuid.uuid4().hex}-{name}")
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def make_dirs(path: str) -> None:
    try:
        FileSystems.mkdirs(path)
    except IOError:
        pass  # exists (object stores have no directories: nothing to make there)


class WriteShardDoFn(beam.DoFn):
    """(shard index, [(bucket, InstanceBatch) | None]) → the shard's files and a summary."""

    def __init__(self, *, output_dir: str, num_shards: int, seed: int, formats,
                 max_seq_length: int, max_predictions_per_seq: int, gzip: bool,
                 parquet_compression: str):
        self._dir, self._n, self._formats = output_dir, num_shards, tuple(formats)
        self._seed = seed
        self._lengths = (max_seq_length, max_predictions_per_seq)
        self._gzip, self._pq = gzip, parquet_compression

    def process(self, element):
        index, items = element
        # Buckets in key order (any arrival order), then one seeded shuffle of the whole shard:
        # every shard mixes instances of every bucket.
        parts = [batch for _, batch in sorted((i for i in items if i is not None),
                                              key=lambda kv: kv[0])]
        batch = (schema.InstanceBatch.concat(parts) if parts
                 else schema.InstanceBatch.from_instances([]))
        rng = np.random.default_rng(stable_seed(self._seed, "shard", index))
        batch = batch.take(rng.permutation(len(batch)))
        summary = {"index": index, "instances": len(batch), "paths": {}, "bytes": {}}
        if "tfrecord" in self._formats:
            suffix = ".tfrecord.gz" if self._gzip else ".tfrecord"
            rel = f"{schema.TFRECORD_DIR}/{schema.shard_name(index, self._n, suffix)}"
            sink = io.BytesIO()
            write_tfrecords(sink, serialize_batch(batch, *self._lengths), gzip=self._gzip)
            self._put(rel, sink.getvalue(), summary, "tfrecord")
        if "parquet" in self._formats:
            rel = f"{schema.PARQUET_DIR}/{schema.shard_name(index, self._n, '.parquet')}"
            sink = io.BytesIO()
            write_parquet(sink, batch,
                          compression=None if self._pq == "none" else self._pq)
            self._put(rel, sink.getvalue(), summary, "parquet")
        yield summary

    def _put(self, rel: str, data: bytes, summary: dict, fmt: str) -> None:
        write_atomic(join(self._dir, rel), data)
        summary["paths"][fmt] = rel
        summary["bytes"][fmt] = len(data)


def write_outputs(_, shards, stats, *, output_dir: str, config: dict, vocab_size: int,
                  vocab_sha256: str, ltp_model: dict) -> dict:
    """stats.json, then manifest.json (last). Returns the manifest."""
    stats_doc = build_stats(stats)
    write_atomic(join(output_dir, schema.STATS_FILE),
                 json.dumps(stats_doc, indent=2, ensure_ascii=False).encode("utf-8"))
    manifest = build_manifest(config=config, shards=shards, vocab_size=vocab_size,
                              vocab_sha256=vocab_sha256, ltp_model=ltp_model,
                              tfrecord_compression="GZIP" if config["compression"] == "gzip"
                              else "")
    manifest["stats"] = {k: stats_doc["counts"].get(k, 0) for k in
                         ("documents", "sentences", "tokens", "instances", "nsp_next",
                          "nsp_random", "masked_tokens")}
    write_atomic(join(output_dir, schema.MANIFEST_FILE),
                 json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"))
    LOG.info("wrote %d instances in %d shards to %s", manifest["total_instances"],
             manifest["num_shards"], output_dir)
    return manifest
