"""The job as a recipe of labelled PTransforms.

  files ─ ReadDocuments ─ Reshuffle ─ Tokenize (LTP + WordPiece, batched)
        ─ Pool into buckets (hash of doc id) ─ CreateInstances (Google's algorithm per bucket)
        ─ BalancedShards (random keys, sizes within one) ─ WriteShards ─ stats.json, manifest.json

No step holds the corpus: documents meet only within a bucket (``--docs_per_bucket``), which is
the pool random next segments are drawn from, as in NVIDIA's LDDL.
"""
from __future__ import annotations

import math
import posixpath
from collections import Counter
from typing import List, Sequence, Tuple

import apache_beam as beam

from pipeline.beam import dofns, sinks
from pipeline.beam.options import JobConfig
from pipeline.core.instances import InstanceConfig
from pipeline.core.seeds import stable_hash64


def sum_counters(counters) -> Counter:
    total = Counter()
    for c in counters:
        total.update(c)
    return total


class ReadDocuments(beam.PTransform):
    """(file path, source name) → (doc_id, [sentence]); tagged output ``stats``."""

    def __init__(self, config: JobConfig):
        super().__init__()
        self._config = config

    def expand(self, paths):
        c = self._config
        return (paths
                | "Spread files" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(dofns.ReadDocumentsDoFn(
                    input_format=c.input_format, text_field=c.text_field,
                    max_sentence_chars=c.max_sentence_chars)).with_outputs(dofns.STATS,
                                                                          main="docs"))


class Tokenize(beam.PTransform):
    """(doc_id, [sentence]) → (doc_id, [Sentence]) in batches; tagged output ``stats``."""

    def __init__(self, config: JobConfig, vocab: Sequence[str]):
        super().__init__()
        self._config, self._vocab = config, vocab

    def expand(self, docs):
        c = self._config
        return (docs
                | "Spread documents" >> beam.Reshuffle()
                | "Batch" >> beam.BatchElements(min_batch_size=1,
                                                max_batch_size=c.tokenize_batch_size)
                | "LTP and WordPiece" >> beam.ParDo(dofns.TokenizeDoFn(
                    vocab=self._vocab, do_lower_case=c.do_lower_case,
                    ltp_model=c.ltp_model if c.do_whole_word_mask else None,
                    user_dict=c.user_dict)).with_outputs(dofns.STATS, main="docs"))


class CreateInstances(beam.PTransform):
    """Tokenized documents → (bucket, InstanceBatch); tagged output ``stats``.

    The number of buckets follows from the document count (a deterministic number), so a
    bucket holds about ``docs_per_bucket`` documents whatever the corpus size.
    """

    def __init__(self, config: JobConfig, instance_config: InstanceConfig):
        super().__init__()
        self._config, self._instance_config = config, instance_config

    def expand(self, docs):
        c = self._config
        num_buckets = (docs
                       | "Count documents" >> beam.combiners.Count.Globally()
                       | "Buckets" >> beam.Map(
                           lambda n, per: max(1, math.ceil(n / per)), c.docs_per_bucket))
        seed = c.random_seed
        return (docs
                | "Key by bucket" >> beam.Map(
                    lambda doc, n: (stable_hash64(seed, "bucket", doc[0]) % n, doc),
                    n=beam.pvalue.AsSingleton(num_buckets))
                | "Pool" >> beam.GroupByKey()
                | "Google's algorithm" >> beam.ParDo(dofns.CreateInstancesDoFn(
                    config=self._instance_config, dupe_factor=c.dupe_factor, seed=seed,
                    exact_google_draws=c.exact_google_draws)).with_outputs(
                        dofns.STATS, main="instances"))


class BalancedShards(beam.PTransform):
    """(bucket, InstanceBatch) → (shard, [(bucket, InstanceBatch) | None]) for every shard index,
    shard sizes within one (see ``SplitToShardsDoFn``). Elements are whole batches: a bucket's
    instances cross the shuffle as a few numpy arrays per shard, not one element each."""

    def __init__(self, num_shards: int):
        super().__init__()
        self._n = num_shards

    def expand(self, batches):
        n = self._n
        counts = batches | "Bucket sizes" >> beam.Map(lambda kv: (kv[0], len(kv[1])))
        split = batches | "Split to shards" >> beam.ParDo(dofns.SplitToShardsDoFn(n),
                                                         counts=beam.pvalue.AsList(counts))
        # One empty marker per shard, so a shard that gets no instance is still written.
        markers = (batches.pipeline
                   | "Shard indexes" >> beam.Create([(i, None) for i in range(n)]))
        return (split, markers) | "With markers" >> beam.Flatten() \
            | "Group shards" >> beam.GroupByKey()


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
    instance_config = InstanceConfig(
        max_seq_length=config.max_seq_length,
        max_predictions_per_seq=config.max_predictions_per_seq,
        masked_lm_prob=config.masked_lm_prob, short_seq_prob=config.short_seq_prob,
        do_whole_word_mask=config.do_whole_word_mask, vocab_size=len(vocab),
        cls_id=vocab.index("[CLS]"), sep_id=vocab.index("[SEP]"),
        mask_id=vocab.index("[MASK]"))
    read = (p
            | "Files" >> beam.Create(source_names(files))
            | "ReadDocuments" >> ReadDocuments(config))
    tokenized = read.docs | "Tokenize" >> Tokenize(config, vocab)
    made = tokenized.docs | "CreateInstances" >> CreateInstances(config, instance_config)
    shards = (made.instances
              | "BalancedShards" >> BalancedShards(config.num_shards)
              | "WriteShards" >> beam.ParDo(sinks.WriteShardDoFn(
                  output_dir=config.output_dir, num_shards=config.num_shards,
                  seed=config.random_seed,
                  formats=config.output_formats, max_seq_length=config.max_seq_length,
                  max_predictions_per_seq=config.max_predictions_per_seq,
                  gzip=config.compression == "gzip",
                  parquet_compression=config.parquet_compression)))
    stats = ((read[dofns.STATS], tokenized[dofns.STATS], made[dofns.STATS])
             | "All stats" >> beam.Flatten()
             | "Sum stats" >> beam.CombineGlobally(sum_counters))
    import dataclasses

    return (p
            | "Once" >> beam.Create([None])
            | "Write manifest" >> beam.Map(
                sinks.write_outputs, beam.pvalue.AsList(shards), beam.pvalue.AsSingleton(stats),
                output_dir=config.output_dir, config=dataclasses.asdict(config),
                vocab_size=len(vocab), vocab_sha256=vocab_sha256, ltp_model=ltp_identity))
