"""The DoFns: each wraps one pure step of ``pipeline.core`` and counts what it did.

Heavy objects (the LTP model, the WordPiece tokenizer) are built once per worker process in
``setup`` through ``apache_beam.utils.shared.Shared`` and reused by every DoFn instance and
bundle there. Per-step statistics leave as a tagged ``stats`` output (a Counter per file, batch
or bucket), summed into stats.json at the end; the same numbers feed Beam metrics for progress.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import Counter
from typing import List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipeline import schema
from pipeline.core import instances as core_instances
from pipeline.core.batched import create_bucket_instances
from pipeline.core.seeds import rng_for
from pipeline.core.text import CorruptInputError, decompressed, iter_documents
from pipeline.core.wordpiece import WordPieceTokenizer

STATS = "stats"
NAMESPACE = "bert_wwm"
LOG = logging.getLogger(__name__)

# Counters mirrored into Beam metrics for progress (the full set goes to stats.json).
_METRIC_KEYS = ("documents", "sentences", "tokens", "words", "instances", "masked_tokens",
                "chars_removed", "binary_lines_skipped", "binary_files_skipped",
                "empty_documents", "jsonl_bad_lines",
                "sentences_cut", "sentences_empty_after_tokenization")


def report(stats: Counter) -> None:
    for key in _METRIC_KEYS:
        if stats.get(key):
            Metrics.counter(NAMESPACE, key).inc(stats[key])


def localize(path: str) -> str:
    """A local path for ``path``: a remote directory or file (gs://, s3://, ...) is copied to a
    fresh temporary directory; local paths (and file://) are returned as they are."""
    if path.startswith("file://"):
        return path[len("file://"):]
    if "://" not in path:
        return path
    base = path.rstrip("/")
    target = tempfile.mkdtemp(prefix="bert_wwm_")
    inside = FileSystems.match([base + "/**"])[0].metadata_list
    if inside:  # a directory (e.g. an LTP model): copy it whole, keep relative names
        for meta in inside:
            _copy(meta.path, os.path.join(target, meta.path[len(base):].lstrip("/")))
        return target
    if not FileSystems.match([base])[0].metadata_list:
        raise FileNotFoundError(f"{path} does not exist")
    local = os.path.join(target, base.rsplit("/", 1)[-1])
    _copy(base, local)
    return local


def _copy(remote: str, local: str) -> None:
    os.makedirs(os.path.dirname(local), exist_ok=True)
    with FileSystems.open(remote, compression_type=CompressionTypes.UNCOMPRESSED) as src, \
            open(local, "wb") as dst:
        shutil.copyfileobj(src, dst)


class ReadDocumentsDoFn(beam.DoFn):
    """(file path, source name) → (doc_id, [sentence, ...]) per non-empty document.

    Document ids start with the source name (the path relative to the inputs' common
    directory), not the absolute path: the same corpus gives the same data wherever it is
    mounted or copied.
    """

    def __init__(self, *, input_format: str, text_field: str, max_sentence_chars: int):
        self._kw = dict(input_format=input_format, text_field=text_field,
                        max_sentence_chars=max_sentence_chars)

    def process(self, element: Tuple[str, str]):
        path, source = element
        stats = Counter()
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            stream = decompressed(raw, path)
            try:
                for doc in iter_documents(stream, source=source, stats=stats, **self._kw):
                    yield doc
            except CorruptInputError as e:
                raise CorruptInputError(f"{path}: {e}") from e
        if stats["binary_files_skipped"]:
            LOG.warning("skipped %s: binary or not UTF-8", path)
        elif not stats["documents"]:
            stats["files_without_documents"] += 1
            LOG.warning("no documents in %s", path)
        report(stats)
        yield beam.pvalue.TaggedOutput(STATS, stats)


class _Tokenization:
    """What one worker process keeps: the tokenizer and (with WWM) the LTP segmenter."""

    def __init__(self, vocab: Sequence[str], do_lower_case: bool, ltp_model: Optional[str],
                 user_dict: Optional[str]):
        self.tokenizer = WordPieceTokenizer(vocab, do_lower_case=do_lower_case)
        self.segmenter = None
        if ltp_model:
            from pipeline.core.segment import LtpSegmenter

            model = ltp_model if ltp_model == "default" else localize(ltp_model)
            self.segmenter = LtpSegmenter(model, user_dict=localize(user_dict) if user_dict
                                          else None)


class TokenizeDoFn(beam.DoFn):
    """A batch of (doc_id, sentences) → (doc_id, [Sentence, ...]) with word flags.

    Sentences of the whole batch go to LTP and to ``tokenizers`` together (both are much faster
    on batches than on single sentences).
    """

    def __init__(self, *, vocab: Sequence[str], do_lower_case: bool, ltp_model: Optional[str],
                 user_dict: Optional[str]):
        self._args = (tuple(vocab), do_lower_case, ltp_model, user_dict)
        self._shared = shared.Shared()
        self._state = None

    def setup(self):
        key = f"tokenization:{hash(self._args)}"
        self._state = self._shared.acquire(lambda: _Tokenization(*self._args), tag=key)

    def process(self, batch: List[Tuple[str, List[str]]]):
        stats = Counter()
        texts = [s for _, sentences in batch for s in sentences]
        Metrics.distribution(NAMESPACE, "batch_sentences").update(len(texts))
        spans = None
        segmenter = self._state.segmenter
        if segmenter is not None:
            before = dict(segmenter.stats)
            spans = segmenter.word_spans(texts)  # texts without CJK are not sent to LTP
            for ours, theirs in (("sentences_segmented", "segmented_texts"),
                                 ("ltp_unaligned_words", "unaligned_words"),
                                 ("ltp_failed_sentences", "failed_texts")):
                stats[ours] += segmenter.stats[theirs] - before[theirs]
        encoded = self._state.tokenizer.encode(texts, spans, stats=stats)
        k = 0
        for doc_id, sentences in batch:
            kept = [e for e in encoded[k:k + len(sentences)] if len(e.ids)]
            stats["sentences_empty_after_tokenization"] += len(sentences) - len(kept)
            k += len(sentences)
            if kept:
                yield doc_id, kept
            else:
                stats["documents_empty_after_tokenization"] += 1
        report(stats)
        yield beam.pvalue.TaggedOutput(STATS, stats)


class CreateInstancesDoFn(beam.DoFn):
    """(bucket, documents) → (bucket, InstanceBatch) of every dupe pass, rows shuffled.

    Documents are sorted by id first, so the pool and every draw are independent of the order
    the shuffle delivered them in; generators are seeded by (seed, bucket, pass).
    """

    def __init__(self, *, config: core_instances.InstanceConfig, dupe_factor: int, seed: int,
                 exact_google_draws: bool = False):
        self._config, self._dupe, self._seed = config, dupe_factor, seed
        self._exact = exact_google_draws

    def process(self, element):
        bucket, docs = element
        docs = sorted(docs, key=lambda d: d[0])
        pool = [d[1] for d in docs]
        stats = Counter()
        stats["buckets"] += 1
        Metrics.distribution(NAMESPACE, "bucket_documents").update(len(pool))
        if self._exact:
            batch = self._google_draws([d[0] for d in docs], pool, bucket, stats)
        else:
            batch = create_bucket_instances(pool, self._config, dupe_factor=self._dupe,
                                            seed=self._seed, bucket=bucket, stats=stats)
        report(stats)
        yield bucket, batch
        yield beam.pvalue.TaggedOutput(STATS, stats)

    def _google_draws(self, ids, pool, bucket, stats) -> schema.InstanceBatch:
        """Google's draw-for-draw path: a generator per document and pass."""
        made = []
        for dupe in range(self._dupe):
            for index, doc_id in enumerate(ids):
                rng = rng_for(self._seed, "instances", doc_id, dupe)
                made += core_instances.create_instances_from_document(
                    pool, index, self._config, rng, stats)
        batch = schema.InstanceBatch.from_instances(made, self._config.vocab_size)
        order = rng_for(self._seed, "order", bucket).sample(range(len(batch)), len(batch))
        return batch.take(order)


class SplitToShardsDoFn(beam.DoFn):
    """(bucket, batch) → (shard, (bucket, rows of the batch for that shard)).

    Buckets in key order, each batch's rows in order, make one global sequence of instances
    (``counts`` gives every bucket's size); instance ``g`` of it goes to shard ``g % num_shards``,
    Google's round-robin. Shard sizes therefore differ by at most one.
    """

    def __init__(self, num_shards: int):
        self._n = num_shards

    def process(self, element, counts):
        bucket, batch = element
        offset = sum(n for b, n in counts if b < bucket)
        for shard in range(self._n):
            rows = np.arange((shard - offset) % self._n, len(batch), self._n)
            if len(rows):
                yield shard, (bucket, batch.take(rows))
