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


class MakeInstances(beam.PTransform):
    """(path, source name, size, mtime, format, text field) → piece indexes (dicts,
    statistics included)."""

    def __init__(self, config: JobConfig, vocab: Sequence[str], fs_options: dict[str, object],
                 *, pieces_dir: str):
        super().__init__()
        self._config, self._vocab, self._fs = config, vocab, fs_options
        self._pieces = pieces_dir

    def expand(self, files):
        c = self._config
        return (files
                | "Plan ranges" >> beam.ParDo(dofns.PlanRangesDoFn(
                    range_bytes=c.range_bytes,
                    filesystem_options=self._fs))
                | "Spread ranges" >> beam.Reshuffle()
                | "Read, segment, tokenize, make instances" >> beam.ParDo(
                    dofns.MakeInstancesDoFn(c, self._vocab, pieces_dir=self._pieces,
                                            filesystem_options=self._fs)))


def _offsets(grouped):
    """(_, [(piece key, rows)]) → (piece id, global offset of its first row) per piece."""
    _, sizes = grouped
    for key, offset in dofns.piece_offsets(list(sizes)).items():
        yield pieces.piece_id(key), offset


def _assign(joined, num_shards: int):
    """(piece id, {"piece": [index], "offset": [offset]}) → (shard, ("class", class of the
    piece)) for each of its classes, and its statistics to one shard (any one: they are
    summed)."""
    piece_id, parts = joined
    (piece,), (offset,) = parts["piece"], parts["offset"]
    for shard, source in dofns.assign_classes(piece, offset, num_shards):
        yield shard, ("class", source)
    yield piece_id % num_shards, ("stats", piece["stats"])


class WriteShards(beam.PTransform):
    """Piece indexes → one summary per shard (every shard written, sizes within one)."""

    def __init__(self, config: JobConfig, fs_options: dict[str, object], *, layout: Layout):
        super().__init__()
        self._config, self._fs, self._layout = config, fs_options, layout

    def expand(self, pieces):
        c = self._config
        offsets = (pieces
                   | "Piece sizes" >> beam.Map(lambda p: (0, (p["key"], p["rows"])))
                   | "All sizes" >> beam.GroupByKey()
                   | "Offsets" >> beam.FlatMap(_offsets))
        keyed = pieces | "By piece" >> beam.Map(lambda p: (p["id"], p))
        assigned = ({"piece": keyed, "offset": offsets}
                    | "Join offsets" >> beam.CoGroupByKey()
                    | "Assign classes" >> beam.FlatMap(_assign, num_shards=c.num_shards))
        # One marker per shard, so a shard that gets no instance is still written.
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
                    filesystem_options=self._fs)))


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
                masking={"mode": config.masking,
                         **dofns.range_config(config, vocab).instance.masking.to_manifest()},
                vocab_text=vocab_text, vocab_sha256=vocab_sha256, ltp_model=ltp_identity,
                filesystem_options=fs_options))
