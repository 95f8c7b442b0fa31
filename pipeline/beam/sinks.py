"""Files under --output_dir, through Beam's FileSystems (local, gs://, s3://, hdfs://).

Shards go where the run's layout says (``output_dir.Layout``): in place into an output
directory without a previous output, staged under ``_staging/run-<id>`` otherwise, swapped
into place by the last step.

Every file is written under a temporary name and renamed into place, so a reader never sees a
partial shard under its final name; a retried bundle rewrites identical bytes. manifest.json is
written last, after every shard and stats.json: its presence means the output is complete.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections import Counter

import apache_beam as beam
import numpy as np

from pipeline import schema
from pipeline.beam import fs, worker
from pipeline.beam.output_dir import Layout, delete_run_pieces, swap_in
from pipeline.beam.pieces import read_blocks
from pipeline.core.instance import InstanceBatch
from pipeline.core.seeds import stable_seed
from pipeline.writers.manifest import build_manifest, build_stats, curation_emptied
from pipeline.writers.parquet import ROW_GROUP_SIZE, ParquetSink
from pipeline.writers.tfrecord import TFRecordSink, framed_batch

LOG = logging.getLogger(__name__)


class _Source:
    """One piece's class for a shard, read a block at a time."""

    def __init__(self, stream, blocks):
        self._blocks = read_blocks(stream, blocks)
        self._batch, self._at = None, 0

    def take(self, count: int) -> list[InstanceBatch]:
        parts = []
        while count:
            if self._batch is None or self._at == len(self._batch):
                self._batch, self._at = next(self._blocks), 0
            k = min(count, len(self._batch) - self._at)
            parts.append(self._batch.slice(self._at, self._at + k))
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
                 parquet_compression: str, next_sentence: str,
                 filesystem_options: dict[str, object], masking: str = "static",
                 bins: tuple[tuple[int, int], ...] = ()):
        self._dir, self._pieces, self._n = output_dir, pieces_dir, num_shards
        self._task, self._masking = next_sentence, masking
        self._formats, self._seed = tuple(formats), seed
        self._lengths = (max_seq_length, max_predictions_per_seq)
        # (bound, max_predictions_per_seq) per length bin; shard key k is shard k % n of bin
        # k // n, padded to that bin's lengths.
        self._bins = tuple(bins)
        self._gzip, self._pq = gzip, parquet_compression
        self._fs = filesystem_options

    def setup(self):
        worker.setup(self._fs)

    def process(self, element):
        """(shard, [(kind, value)]): kind "class" (piece key, piece path, blocks), "stats" (a
        piece's statistics, summed into the summary: they need no shuffle of their own) or
        "marker" (every shard has one, so a shard without instances is still written)."""
        index, items = element
        classes, stats = [], Counter()
        for kind, value in items:
            if kind == "class":
                classes.append(value)
            elif kind == "stats":
                stats.update(value)
        if index < 0:  # statistics only (stats_key): no shard
            yield {"index": index, "instances": 0, "paths": {}, "bytes": {}, "sha256": {},
                   "stats": stats}
            return
        # Sources in piece-key order, whatever order the shuffle delivered them in.
        sources = [(path, blocks) for _, path, blocks in sorted(classes, key=lambda c: c[0])]
        counts = [sum(rows for _, _, rows in blocks) for _, blocks in sources]
        rng = np.random.default_rng(stable_seed(self._seed, "shard", index))
        order = rng.permutation(np.repeat(np.arange(len(sources), dtype=np.int32), counts))
        summary = {"index": index, "instances": len(order), "paths": {}, "bytes": {},
                   "sha256": {}, "stats": stats}
        if self._bins:
            summary["bin"] = index // self._n
        with contextlib.ExitStack() as stack:
            streams = [stack.enter_context(fs.open_read(fs.join(self._pieces, path)))
                       for path, _ in sources]
            readers = [_Source(stream, blocks) for stream, (_, blocks) in zip(streams, sources)]
            writers = self._writers(index, stack, summary)
            for start in range(0, len(order), self.CHUNK_ROWS):
                chunk = order[start:start + self.CHUNK_ROWS]
                by_source = np.argsort(chunk, kind="stable")
                present, taken = np.unique(chunk, return_counts=True)
                parts = [p for s, k in zip(present.tolist(), taken.tolist())
                         for p in readers[s].take(k)]
                batch = InstanceBatch.concat(parts).take(np.argsort(by_source))
                for write in writers:
                    write(batch)
            if not len(order):
                for write in writers:
                    write(None)
        yield summary

    def _writers(self, index: int, stack: contextlib.ExitStack, summary: dict):
        """One function per format taking the next chunk (None: an empty shard)."""
        writers = []
        shard, bound, lengths = index, None, self._lengths
        if self._bins:
            shard = index % self._n
            bound, predictions = self._bins[index // self._n]
            lengths = (bound, predictions)
        if "tfrecord" in self._formats:
            rel = schema.shard_path("tfrecord", shard, self._n, gzip=self._gzip, bound=bound)
            f = stack.enter_context(self._counted(rel, summary, "tfrecord"))
            records = TFRecordSink(f, gzip=self._gzip)
            stack.callback(records.close)
            with_label, dynamic = self._task != "none", self._masking == "dynamic"
            writers.append(lambda b: b is not None and records.write_framed(
                framed_batch(b, *lengths, with_label=with_label, dynamic=dynamic)))
        if "parquet" in self._formats:
            rel = schema.shard_path("parquet", shard, self._n, bound=bound)
            f = stack.enter_context(self._counted(rel, summary, "parquet"))
            table = ParquetSink(f, compression=None if self._pq == "none" else self._pq,
                                next_sentence=self._task, masking=self._masking)
            stack.callback(table.close)
            writers.append(table.write)
        return writers

    @contextlib.contextmanager
    def _counted(self, rel: str, summary: dict, fmt: str):
        with fs.atomic_writer(fs.join(self._dir, rel)) as f:
            counting = _CountingWriter(f)
            yield counting
        summary["paths"][fmt] = rel
        summary["bytes"][fmt] = counting.written
        summary["sha256"][fmt] = counting.digest.hexdigest()


class _CountingWriter(io.RawIOBase):
    """Passes writes through, counting and hashing the bytes (the manifest records each shard's
    size and sha256, so a copy can be verified without the job)."""

    def __init__(self, f):
        super().__init__()
        self._f, self.written, self.digest = f, 0, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.written

    def write(self, data) -> int:
        self._f.write(data)
        self.digest.update(data)
        n = len(data)
        self.written += n
        return n


def stats_key(piece_id: int, num_shards: int) -> int:
    """The GroupByKey key a piece's statistics travel under: negative (no shard has it), one
    of ``num_shards`` so the summing is spread."""
    return -1 - piece_id % num_shards


def sum_stats(counters) -> Counter:
    total = Counter()
    for c in counters:
        total.update(c)
    return total


class CurationEmptiedError(ValueError):
    """Curation (filters, dedup, weights) left no document of a corpus that had some."""


class DataWarningsError(ValueError):
    """--strict and stats.json would carry warnings (``writers.manifest.data_warnings``)."""


def write_outputs(element, *, layout: Layout, config: dict, vocab_text: str,
                  vocab_sha256: str, ltp_model: dict,
                  filesystem_options: dict[str, object], masking: dict,
                  bins: tuple[tuple[int, int], ...] = ()) -> dict:
    """(_, [shard summary]) → removes this run's piece files; with a staged run, swaps the
    previous output for the new shards (``output_dir.swap_in``); writes vocab.txt, stats.json
    (the shards' statistics summed), then manifest.json (last: its presence means the output
    is complete). With ``strict``, data warnings fail the run before any of that. Returns the
    manifest."""
    fs.use_options(filesystem_options)
    _, summaries = element
    shards = [{k: v for k, v in s.items() if k != "stats"} for s in summaries
              if s["index"] >= 0]
    stats = sum_stats(s["stats"] for s in summaries)
    output_dir = layout.output_dir
    stats_doc = build_stats(stats, inputs=config.get("input") or ())
    emptied = curation_emptied(stats_doc)
    if emptied:  # before anything is replaced, as below
        raise CurationEmptiedError(emptied)
    if config.get("strict") and stats_doc["warnings"]:
        # Before anything is replaced: the previous output stays, this run's files go.
        raise DataWarningsError(
            "--strict: the data looks wrong for its settings, no manifest written: "
            + " | ".join(w["message"] for w in stats_doc["warnings"]))
    delete_run_pieces(layout.pieces_dir)
    if layout.staged:
        swap_in(output_dir, staging=layout.shard_root, previous=layout.previous,
                new_files=[rel for s in shards for rel in s["paths"].values()])
    fs.write_atomic(fs.join(output_dir, schema.VOCAB_FILE), vocab_text.encode("utf-8"))
    fs.write_atomic(fs.join(output_dir, schema.STATS_FILE),
                    json.dumps(stats_doc, indent=2, ensure_ascii=False).encode("utf-8"))
    manifest = build_manifest(config=config, shards=shards,
                              vocab_size=len(vocab_text.rstrip("\n").split("\n")),
                              vocab_sha256=vocab_sha256, ltp_model=ltp_model,
                              masking=masking, bins=bins,
                              tfrecord_compression="GZIP" if config["compression"] == "gzip"
                              else "")
    manifest["run_id"] = layout.run_id
    manifest["stats"] = {k: stats_doc["counts"].get(k, 0) for k in
                         ("documents", "sentences", "tokens", "instances", "nsp_next",
                          "nsp_random", "sop_in_order", "sop_swapped", "masked_tokens")}
    fs.write_atomic(fs.join(output_dir, schema.MANIFEST_FILE),
                    json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"))
    # DEBUG: the launcher says it once the job is done (this runs in a worker).
    LOG.debug("wrote %d instances in %d shards to %s", manifest["total_instances"],
             manifest["num_shards"], output_dir)
    return manifest
