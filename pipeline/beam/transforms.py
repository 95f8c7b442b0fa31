"""The job as a recipe of labelled PTransforms.

  --input patterns ─ ListFiles ─ PlanRanges (document-aligned byte ranges) ─ Reshuffle
        ─ MakeInstances: per range, read → LTP + WordPiece (batched) → Google's algorithm with
          the range as the pool → a piece file of instances, shuffled, in shard classes
        ─ WriteShards: piece sizes → global offsets, joined back to each piece; each piece's
          classes grouped by shard (block indexes only) → a random interleaving of the
          shard's classes, streamed to its files; each piece's statistics ride along to one
          shard, which sums them
        ─ Finish: this run's pieces removed; with a previous output there, the swap (old
          files out, staged shards renamed in); vocab.txt, stats.json, manifest.json last

Only patterns, file names, ranges and piece indexes cross Beam's shuffles: no step holds the
corpus or its instances, so memory stays flat in corpus size on any runner, DirectRunner
included. The graph uses only ParDo, GroupByKey, Flatten, Create and Reshuffle, with one output
per ParDo and no side input: the subset every runner, Beam's DaskRunner included, executes
as intended (see ``dofns``). Every step after the last GroupByKey depends on every shard, so
the final step's result is the whole job.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import apache_beam as beam

from pipeline.beam import dofns, pieces, sinks
from pipeline.beam.options import JobConfig
from pipeline.beam.output_dir import Layout
from pipeline.core.bins import max_predictions


class MakeInstances(beam.PTransform):
    """(path, source name, size, mtime, format, text field, weight, input index) → piece
    indexes (dicts, statistics included); with --dedup, through ``Deduplicate`` first."""

    def __init__(self, config: JobConfig, vocab: Sequence[str], fs_options: dict[str, object],
                 *, pieces_dir: str):
        super().__init__()
        self._config, self._vocab, self._fs = config, vocab, fs_options
        self._pieces = pieces_dir

    def expand(self, files):
        c = self._config
        ranges = files | "Plan ranges" >> beam.ParDo(dofns.PlanRangesDoFn(
            range_bytes=c.range_bytes, filesystem_options=self._fs))
        if c.dedup == "none":
            ranges = ranges | "Spread ranges" >> beam.Reshuffle()
        else:
            ranges = ranges | "Deduplicate" >> Deduplicate(c, self._vocab, self._fs,
                                                           pieces_dir=self._pieces)
        return ranges | "Read, segment, tokenize, make instances" >> beam.ParDo(
            dofns.MakeInstancesDoFn(c, self._vocab, pieces_dir=self._pieces,
                                    filesystem_options=self._fs))


class Deduplicate(beam.PTransform):
    """Ranges → each range with the duplicate decisions on its documents (``--dedup``):

      ranges ─ numbered in (path, start) order ─ Reshuffle ─ SketchRange: a sketch file per
        range (exact hashes, MinHash signatures, band keys split into partitions)
      ─ each sketch's offsets to each partition ─ GroupByKey ─ DedupPartition: the rule over
        one partition's band buckets → (range number, rows to drop, each once)
      ─ joined back to the ranges by number (CoGroupByKey)

    Only ranges, file names and the rows dropped cross the shuffles; the band keys and
    signatures stay in the sketch files (next to the pieces), read a partition at a time."""

    def __init__(self, config: JobConfig, vocab: Sequence[str], fs_options: dict[str, object],
                 *, pieces_dir: str):
        super().__init__()
        self._config, self._vocab, self._fs = config, vocab, fs_options
        self._pieces = pieces_dir

    def expand(self, ranges):
        c = self._config
        numbered = (ranges
                    | "All ranges" >> beam.Map(lambda r: (0, r))
                    | "Together" >> beam.GroupByKey()
                    | "Number" >> beam.FlatMap(dofns.number_ranges,
                                               requested_partitions=c.dedup_partitions))
        decisions = (numbered
                     | "Spread" >> beam.Reshuffle()
                     | "Sketch" >> beam.ParDo(dofns.SketchRangeDoFn(
                         c, self._vocab, pieces_dir=self._pieces, filesystem_options=self._fs))
                     | "To partitions" >> beam.FlatMap(dofns.to_partitions)
                     | "By partition" >> beam.GroupByKey()
                     | "Find duplicates" >> beam.ParDo(dofns.DedupPartitionDoFn(
                         threshold=c.near_dup_threshold, pieces_dir=self._pieces,
                         filesystem_options=self._fs)))
        return ({"range": numbered, "decisions": decisions}
                | "Join" >> beam.CoGroupByKey()
                | "With decisions" >> beam.Map(dofns.with_decisions))


def _offsets(grouped):
    """(_, [(piece key, rows per bin)]) → (piece id, global offsets of its first row of each
    bin) per piece."""
    _, sizes = grouped
    for key, offsets in dofns.piece_offsets(list(sizes))[0].items():
        yield pieces.piece_id(key), offsets


def _bin_markers(grouped, num_shards: int):
    """One marker per shard of every length bin that holds instances, so each of its shards
    is written even if it gets none; an empty bin gets no shards."""
    _, sizes = grouped
    for b, total in enumerate(dofns.piece_offsets(list(sizes))[1]):
        if total:
            for s in range(num_shards):
                yield dofns.shard_key(b, s, num_shards), ("marker", None)


def _assign(joined, num_shards: int):
    """(piece id, {"piece": [index], "offset": [offsets]}) → (shard key, ("class", class of the
    piece)) for each of its classes; its statistics go to a key of their own (negative: no
    shard), summed there."""
    piece_id, parts = joined
    (piece,), (offsets,) = parts["piece"], parts["offset"]
    for shard, source in dofns.assign_classes(piece, offsets, num_shards):
        yield shard, ("class", source)
    yield sinks.stats_key(piece_id, num_shards), ("stats", piece["stats"])


class WriteShards(beam.PTransform):
    """Piece indexes → one summary per shard (every shard written, sizes within one)."""

    def __init__(self, config: JobConfig, fs_options: dict[str, object], *, layout: Layout):
        super().__init__()
        self._config, self._fs, self._layout = config, fs_options, layout

    def expand(self, pieces):
        c = self._config
        sizes = (pieces
                 | "Piece sizes" >> beam.Map(lambda p: (0, (p["key"], p["bin_rows"])))
                 | "All sizes" >> beam.GroupByKey())
        offsets = sizes | "Offsets" >> beam.FlatMap(_offsets)
        keyed = pieces | "By piece" >> beam.Map(lambda p: (p["id"], p))
        assigned = ({"piece": keyed, "offset": offsets}
                    | "Join offsets" >> beam.CoGroupByKey()
                    | "Assign classes" >> beam.FlatMap(_assign, num_shards=c.num_shards))
        if c.bin_bounds:  # the shards of bins that hold instances
            markers = sizes | "Shard markers" >> beam.FlatMap(_bin_markers,
                                                             num_shards=c.num_shards)
        else:  # every shard, even if the job made no piece at all
            markers = (pieces.pipeline | "Shard indexes" >> beam.Create(
                [(i, ("marker", None)) for i in range(c.num_shards)]))
        return ((assigned, markers)
                | "With markers" >> beam.Flatten()
                | "Group by shard" >> beam.GroupByKey()
                | "Write" >> beam.ParDo(sinks.WriteShardDoFn(
                    output_dir=self._layout.shard_root, pieces_dir=self._layout.pieces_dir,
                    num_shards=c.num_shards, seed=c.random_seed, formats=c.output_formats,
                    max_seq_length=c.max_seq_length,
                    max_predictions_per_seq=c.max_predictions_per_seq,
                    gzip=c.compression == "gzip", parquet_compression=c.parquet_compression,
                    next_sentence=c.next_sentence, masking=c.masking,
                    bins=bin_specs(c), filesystem_options=self._fs)))


def bin_specs(config: JobConfig) -> tuple[tuple[int, int], ...]:
    """(bound, max_predictions_per_seq) of each length bin; () without bins."""
    return tuple((bound, max_predictions(bound, config.max_predictions_per_seq,
                                         config.masked_lm_prob))
                 for bound in config.bin_bounds)


def build(p: beam.Pipeline, *, config: JobConfig, layout: Layout, vocab_text: str,
          vocab_sha256: str, ltp_identity: dict, fs_options: dict[str, object]):
    """Add the whole job to ``p``, writing as ``layout`` says (``output_dir.layout``); returns
    the PCollection holding the manifest."""
    from pipeline.core.wordpiece import read_vocab

    vocab = read_vocab(vocab_text)
    files = (p
             | "Input patterns" >> beam.Create([config.inputs()])
             | "List files" >> beam.ParDo(dofns.ListFilesDoFn(
                 base=dofns.source_base([spec.pattern for spec in config.inputs()]),
                 output_dir=config.output_dir,
                 filesystem_options=fs_options))
             | "Spread files" >> beam.Reshuffle())
    pieces = files | "MakeInstances" >> MakeInstances(config, vocab, fs_options,
                                                      pieces_dir=layout.pieces_dir)
    return (pieces
            | "WriteShards" >> WriteShards(config, fs_options, layout=layout)
            | "All shards" >> beam.Map(lambda summary: (0, summary))
            | "Once" >> beam.GroupByKey()
            | "Write manifest" >> beam.Map(
                sinks.write_outputs, layout=layout, config=dataclasses.asdict(config),
                bins=bin_specs(config),
                masking={"mode": config.masking,
                         **dofns.range_config(config, vocab).instance.masking.to_manifest()},
                vocab_text=vocab_text, vocab_sha256=vocab_sha256, ltp_model=ltp_identity,
                filesystem_options=fs_options))
