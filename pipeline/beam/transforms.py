"""The job as a recipe of labelled PTransforms.

  files ─ PlanRanges (document-aligned byte ranges) ─ Reshuffle
        ─ MakeInstances: per range, read → LTP + WordPiece (batched) → Google's algorithm with
          the range as the pool → a piece file of instances, shuffled, in shard classes
        ─ WriteShards: piece sizes → global offsets; each piece's classes grouped by shard (block
          indexes only) → a random interleaving of the shard's classes, streamed to its files
        ─ stats.json, manifest.json

Only file names, ranges and piece indexes cross Beam's shuffles: no step holds the corpus or
its instances, so memory stays flat in corpus size on any runner, DirectRunner included.
"""
from __future__ import annotations

import dataclasses
import posixpath
from collections import Counter
from typing import List, Sequence, Tuple

import apache_beam as beam

from pipeline.beam import dofns, sinks
from pipeline.beam.options import JobConfig
from pipeline.core.instances import InstanceConfig


def sum_counters(counters) -> Counter:
    total = Counter()
    for c in counters:
        total.update(c)
    return total


class MakeInstances(beam.PTransform):
    """(file path, source name) → piece indexes (dicts); tagged output ``stats``."""

    def __init__(self, config: JobConfig, vocab: Sequence[str]):
        super().__init__()
        self._config, self._vocab = config, vocab

    def expand(self, files):
        c, vocab = self._config, self._vocab
        instance_config = InstanceConfig(
            max_seq_length=c.max_seq_length, max_predictions_per_seq=c.max_predictions_per_seq,
            masked_lm_prob=c.masked_lm_prob, short_seq_prob=c.short_seq_prob,
            do_whole_word_mask=c.do_whole_word_mask, vocab_size=len(vocab),
            cls_id=vocab.index("[CLS]"), sep_id=vocab.index("[SEP]"),
            mask_id=vocab.index("[MASK]"))
        return (files
                | "Spread files" >> beam.Reshuffle()
                | "Plan ranges" >> beam.ParDo(dofns.PlanRangesDoFn(
                    input_format=c.input_format, range_bytes=c.range_bytes))
                | "Spread ranges" >> beam.Reshuffle()
                | "Read, segment, tokenize, make instances" >> beam.ParDo(
                    dofns.MakeInstancesDoFn(
                        vocab=vocab, do_lower_case=c.do_lower_case,
                        ltp_model=c.ltp_model if c.do_whole_word_mask else None,
                        user_dict=c.user_dict, input_format=c.input_format,
                        text_field=c.text_field, max_sentence_chars=c.max_sentence_chars,
                        tokenize_batch_size=c.tokenize_batch_size, config=instance_config,
                        dupe_factor=c.dupe_factor, seed=c.random_seed,
                        exact_google_draws=c.exact_google_draws,
                        pieces_dir=pieces_dir(c), num_shards=c.num_shards)
                ).with_outputs(dofns.STATS, main="pieces"))


class WriteShards(beam.PTransform):
    """Piece indexes → one summary per shard (every shard written, sizes within one)."""

    def __init__(self, config: JobConfig):
        super().__init__()
        self._config = config

    def expand(self, pieces):
        c = self._config
        offsets = (pieces
                   | "Piece sizes" >> beam.Map(lambda p: (p["key"], p["rows"]))
                   | "All sizes" >> beam.combiners.ToList()
                   | "Offsets" >> beam.Map(dofns.piece_offsets))
        assigned = pieces | "Assign classes" >> beam.FlatMap(
            dofns.assign_classes, offsets=beam.pvalue.AsSingleton(offsets),
            num_shards=c.num_shards)
        # One empty marker per shard, so a shard that gets no instance is still written.
        markers = (pieces.pipeline
                   | "Shard indexes" >> beam.Create([(i, None) for i in range(c.num_shards)]))
        return ((assigned, markers)
                | "With markers" >> beam.Flatten()
                | "Group by shard" >> beam.GroupByKey()
                | "Write" >> beam.ParDo(sinks.WriteShardDoFn(
                    output_dir=c.output_dir, pieces_dir=pieces_dir(c),
                    num_shards=c.num_shards, seed=c.random_seed, formats=c.output_formats,
                    max_seq_length=c.max_seq_length,
                    max_predictions_per_seq=c.max_predictions_per_seq,
                    gzip=c.compression == "gzip", parquet_compression=c.parquet_compression)))


def pieces_dir(config: JobConfig) -> str:
    return sinks.join(config.output_dir, sinks.PIECES_DIR)


def source_names(files: Sequence[str]) -> List[Tuple[str, str]]:
    """(path, name relative to the files' common directory), sorted; a lone file: its name."""
    files = sorted(files)
    if not files:
        return []
    base = posixpath.dirname(files[0]) if len(files) == 1 else posixpath.commonpath(files)
    return [(f, posixpath.relpath(f, base) if base else f) for f in files]


def build(p: beam.Pipeline, *, config: JobConfig, files: Sequence[str], vocab: Sequence[str],
          vocab_sha256: str, ltp_identity: dict):
    """Add the whole job to ``p``; returns the PCollection holding the manifest."""
    made = (p
            | "Files" >> beam.Create(source_names(files))
            | "MakeInstances" >> MakeInstances(config, vocab))
    shards = made.pieces | "WriteShards" >> WriteShards(config)
    stats = (made[dofns.STATS]
             | "Sum stats" >> beam.CombineGlobally(sum_counters))
    return (p
            | "Once" >> beam.Create([None])
            | "Write manifest" >> beam.Map(
                sinks.write_outputs, beam.pvalue.AsList(shards), beam.pvalue.AsSingleton(stats),
                output_dir=config.output_dir, pieces_dir=pieces_dir(config),
                config=dataclasses.asdict(config), vocab_size=len(vocab),
                vocab_sha256=vocab_sha256, ltp_model=ltp_identity))
