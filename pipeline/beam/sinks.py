"""Files under --output_dir, through Beam's FileSystems (local, gs://, s3://, hdfs://).

Every file is written under a temporary name and renamed into place, so a reader never sees a
partial shard under its final name; a retried bundle rewrites identical bytes. manifest.json is
written last, after every shard and stats.json: its presence means the output is complete.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from typing import List

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import schema
from pipeline.core.seeds import stable_seed
from pipeline.writers.manifest import build_manifest, build_stats
from pipeline.writers.parquet import ROW_GROUP_SIZE, ParquetSink
from pipeline.writers.pieces import read_blocks
from pipeline.writers.tfrecord import TFRecordSink, serialize_batch

LOG = logging.getLogger(__name__)
PIECES_DIR = "_pieces"  # instances between the two halves of the job; removed at the end
PIPELINE_FILES = (schema.TFRECORD_DIR, schema.PARQUET_DIR, schema.MANIFEST_FILE,
                  schema.STATS_FILE, "vocab.txt", PIECES_DIR)


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


@contextlib.contextmanager
def atomic_writer(path: str):
    """A file object for ``path``: written under a temporary name, renamed into place on
    success (a reader never sees a partial file), removed on failure."""
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    tmp = join(directory, f".tmp-{uuid.uuid4().hex}-{name}")
    try:
        with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            yield f
    except BaseException:
        if FileSystems.exists(tmp):
            FileSystems.delete([tmp])
        raise
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_atomic(path: str, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def make_dirs(path: str) -> None:
    try:
        FileSystems.mkdirs(path)
    except IOError:
        pass  # exists (object stores have no directories: nothing to make there)


class _Source:
    """One piece's class for a shard, read a block at a time."""

    def __init__(self, stream, blocks):
        self._blocks = read_blocks(stream, blocks)
        self._batch, self._at = None, 0

    def take(self, count: int) -> List[schema.InstanceBatch]:
        parts = []
        while count:
            if self._batch is None or self._at == len(self._batch):
                self._batch, self._at = next(self._blocks), 0
            k = min(count, len(self._batch) - self._at)
            parts.append(self._batch.take(np.arange(self._at, self._at + k)))
            self._at += k
            count -= k
        return parts


class WriteShardDoFn(beam.DoFn):
    """(shard index, [(piece key, piece path, blocks) | None]) → the shard's files and a summary.

    The shard's rows are a uniformly random interleaving of its sources (each already in random
    order, so the result is a uniform shuffle of the shard), drawn from the shard's seed and
    written ``CHUNK_ROWS`` at a time: memory holds one block per source and one chunk, never
    the shard. TFRecord and Parquet are streamed to their files.
    """

    CHUNK_ROWS = ROW_GROUP_SIZE

    def __init__(self, *, output_dir: str, pieces_dir: str, num_shards: int, seed: int,
                 formats, max_seq_length: int, max_predictions_per_seq: int, gzip: bool,
                 parquet_compression: str):
        self._dir, self._pieces, self._n = output_dir, pieces_dir, num_shards
        self._formats, self._seed = tuple(formats), seed
        self._lengths = (max_seq_length, max_predictions_per_seq)
        self._gzip, self._pq = gzip, parquet_compression

    def process(self, element):
        index, items = element
        # Sources in piece-key order, whatever order the shuffle delivered them in.
        sources = [(path, blocks) for _, path, blocks in
                   sorted((i for i in items if i is not None), key=lambda i: i[0])]
        counts = [sum(rows for _, _, rows in blocks) for _, blocks in sources]
        rng = np.random.default_rng(stable_seed(self._seed, "shard", index))
        order = rng.permutation(np.repeat(np.arange(len(sources), dtype=np.int32), counts))
        summary = {"index": index, "instances": len(order), "paths": {}, "bytes": {}}
        with contextlib.ExitStack() as stack:
            streams = [stack.enter_context(FileSystems.open(
                join(self._pieces, path), compression_type=CompressionTypes.UNCOMPRESSED))
                for path, _ in sources]
            readers = [_Source(stream, blocks) for stream, (_, blocks) in zip(streams, sources)]
            writers = self._writers(index, stack, summary)
            for start in range(0, len(order), self.CHUNK_ROWS):
                chunk = order[start:start + self.CHUNK_ROWS]
                by_source = np.argsort(chunk, kind="stable")
                present, taken = np.unique(chunk, return_counts=True)
                parts = [p for s, k in zip(present.tolist(), taken.tolist())
                         for p in readers[s].take(k)]
                batch = schema.InstanceBatch.concat(parts).take(np.argsort(by_source))
                for write in writers:
                    write(batch)
            if not len(order):
                for write in writers:
                    write(None)
        yield summary

    def _writers(self, index: int, stack: contextlib.ExitStack, summary: dict):
        """One function per format taking the next chunk (None: an empty shard)."""
        writers = []
        if "tfrecord" in self._formats:
            suffix = ".tfrecord.gz" if self._gzip else ".tfrecord"
            rel = f"{schema.TFRECORD_DIR}/{schema.shard_name(index, self._n, suffix)}"
            f = stack.enter_context(self._counted(rel, summary, "tfrecord"))
            records = TFRecordSink(f, gzip=self._gzip)
            stack.callback(records.close)
            writers.append(lambda b: b is not None and records.write_all(
                serialize_batch(b, *self._lengths)))
        if "parquet" in self._formats:
            rel = f"{schema.PARQUET_DIR}/{schema.shard_name(index, self._n, '.parquet')}"
            f = stack.enter_context(self._counted(rel, summary, "parquet"))
            table = ParquetSink(f, compression=None if self._pq == "none" else self._pq)
            stack.callback(table.close)
            writers.append(table.write)
        return writers

    @contextlib.contextmanager
    def _counted(self, rel: str, summary: dict, fmt: str):
        with atomic_writer(join(self._dir, rel)) as f:
            counting = _CountingWriter(f)
            yield counting
        summary["paths"][fmt] = rel
        summary["bytes"][fmt] = counting.written


class _CountingWriter(io.RawIOBase):
    """Passes writes through and counts the bytes (the manifest records shard sizes)."""

    def __init__(self, f):
        super().__init__()
        self._f, self.written = f, 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.written

    def write(self, data) -> int:
        self._f.write(data)
        n = len(data)
        self.written += n
        return n


def write_outputs(_, shards, stats, *, output_dir: str, pieces_dir: str, config: dict,
                  vocab_size: int, vocab_sha256: str, ltp_model: dict) -> dict:
    """Removes the piece files; writes stats.json, then manifest.json (last). Returns the
    manifest."""
    if FileSystems.exists(pieces_dir):
        FileSystems.delete([pieces_dir])
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
