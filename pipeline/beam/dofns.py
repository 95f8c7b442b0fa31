"""The DoFns: each wraps pure steps of ``pipeline.core`` and counts what it did.

Heavy objects (the LTP model, the WordPiece tokenizer) are built once per worker process in
``setup`` through ``apache_beam.utils.shared.Shared`` and reused by every DoFn instance and
bundle there. Per-step statistics leave as a tagged ``stats`` output (a Counter per file or
range), summed into stats.json at the end; the same numbers feed Beam metrics for progress.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import Counter
from typing import List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipeline import schema
from pipeline.core import instances as core_instances
from pipeline.core.batched import create_bucket_instances
from pipeline.core.seeds import rng_for, stable_hash64
from pipeline.core.text import (SNIFF_BYTES, CorruptInputError, RangeReader, decompressed,
                                document_boundary, iter_documents, looks_binary)
from pipeline.core.wordpiece import WordPieceTokenizer
from pipeline.beam.sinks import write_atomic
from pipeline.writers.pieces import encode_piece

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


class _Tokenization:
    """What one worker process keeps: the tokenizer and (with WWM) the LTP segmenter.

    LTP runs single-threaded: Beam already runs one worker per core (``--direct_num_workers``,
    Dataflow's one SDK process per vCPU), and LTP's own thread pool would only make workers
    compete for the same cores.
    """

    def __init__(self, vocab: Sequence[str], do_lower_case: bool, ltp_model: Optional[str],
                 user_dict: Optional[str]):
        self.tokenizer = WordPieceTokenizer(vocab, do_lower_case=do_lower_case)
        self.segmenter = None
        if ltp_model:
            from pipeline.core.segment import LtpSegmenter

            model = ltp_model if ltp_model == "default" else localize(ltp_model)
            self.segmenter = LtpSegmenter(model, user_dict=localize(user_dict) if user_dict
                                          else None, parallelism=False)


class PlanRangesDoFn(beam.DoFn):
    """(file path, source name) → (path, source, start, end) document-aligned byte ranges.

    Uncompressed text files are cut near every ``range_bytes`` at offsets where a document
    surely starts (``core.text.document_boundary``); compressed files cannot be entered in the
    middle and are one range; a file that looks binary is one range, which counts and skips it.
    ``end`` None means to the end of the file.
    """

    def __init__(self, *, input_format: str, range_bytes: int):
        self._format, self._bytes = input_format, range_bytes

    def process(self, element: Tuple[str, str]):
        path, source = element
        if path.lower().endswith((".gz", ".bz2")):
            yield path, source, 0, None
            return
        size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            if looks_binary(f.read(SNIFF_BYTES)):
                yield path, source, 0, None
                return
            cuts = [0]
            for nominal in range(self._bytes, size, self._bytes):
                if nominal <= cuts[-1]:
                    continue  # a long document already reached past this point
                cut = document_boundary(f, nominal, self._format)
                if cut is None or cut >= size:
                    break
                cuts.append(cut)
        cuts.append(None)
        for start, end in zip(cuts[:-1], cuts[1:]):
            yield path, source, start, end


class MakeInstancesDoFn(beam.DoFn):
    """One range of one file → its instances, parked in a piece file; yields the piece's index.

    Everything between the raw bytes and the instances happens here, one range at a time:
    read and clean, LTP and WordPiece in batches of ``tokenize_batch_size`` documents, then
    Google's algorithm with the range's documents as the pool random next segments come from
    (as Google's script pools one input file). Memory is bounded by one range, whatever the
    corpus size. Generators are seeded by (seed, source, range start).
    """

    def __init__(self, *, vocab: Sequence[str], do_lower_case: bool, ltp_model: Optional[str],
                 user_dict: Optional[str], input_format: str, text_field: str,
                 max_sentence_chars: int, tokenize_batch_size: int,
                 config: core_instances.InstanceConfig, dupe_factor: int, seed: int,
                 exact_google_draws: bool, pieces_dir: str, num_shards: int):
        self._args = (tuple(vocab), do_lower_case, ltp_model, user_dict)
        self._read = dict(input_format=input_format, text_field=text_field,
                          max_sentence_chars=max_sentence_chars)
        self._batch = tokenize_batch_size
        self._config, self._dupe, self._seed = config, dupe_factor, seed
        self._exact = exact_google_draws
        self._pieces, self._shards = pieces_dir, num_shards
        self._shared = shared.Shared()
        self._state = None

    def setup(self):
        key = f"tokenization:{hash(self._args)}"
        self._state = self._shared.acquire(lambda: _Tokenization(*self._args), tag=key)

    def process(self, element):
        path, source, start, end = element
        stats = Counter()
        docs = []
        for batch in _batches(self._documents(path, source, start, end, stats), self._batch):
            docs.extend(self._tokenize(batch, stats))
        stats["ranges"] += 1
        Metrics.distribution(NAMESPACE, "range_documents").update(len(docs))
        key = (source, start)
        if self._exact:
            batch = self._google_draws(docs, key, stats)
        else:
            batch = create_bucket_instances([d[1] for d in docs], self._config,
                                            dupe_factor=self._dupe, seed=self._seed,
                                            bucket=key, stats=stats)
        name = f"piece-{stable_hash64(source, start):016x}.bin"
        data, classes = encode_piece(batch, self._shards)
        write_atomic(FileSystems.join(self._pieces, name), data)
        report(stats)
        yield {"key": key, "path": name, "rows": len(batch), "classes": classes}
        yield beam.pvalue.TaggedOutput(STATS, stats)

    def _documents(self, path, source, start, end, stats):
        whole = not start and end is None
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            if whole:
                stream = decompressed(raw, path)
            else:
                raw.seek(start)
                stream = raw if end is None else RangeReader(raw, end - start)
            # Ids of a later range start with its offset: unique, and stable for the flags.
            source_id = f"{source}@{start}" if start else source
            try:
                yield from iter_documents(stream, source=source_id, whole_file=not start,
                                          stats=stats, **self._read)
            except CorruptInputError as e:
                raise CorruptInputError(f"{path}: {e}") from e
        if stats["binary_files_skipped"]:
            LOG.warning("skipped %s: binary or not UTF-8", path)
        elif whole and not stats["documents"]:
            stats["files_without_documents"] += 1
            LOG.warning("no documents in %s", path)

    def _tokenize(self, batch: List[Tuple[str, List[str]]], stats: Counter):
        """(doc_id, sentences) → (doc_id, [Sentence]) for a batch; LTP and WordPiece see all
        its sentences at once (both are much faster on batches than on single sentences)."""
        texts = [s for _, sentences in batch for s in sentences]
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

    def _google_draws(self, docs, key, stats) -> schema.InstanceBatch:
        """Google's draw-for-draw path: a generator per document and pass."""
        pool = [d[1] for d in docs]
        made = []
        for dupe in range(self._dupe):
            for index, (doc_id, _) in enumerate(docs):
                rng = rng_for(self._seed, "instances", doc_id, dupe)
                made += core_instances.create_instances_from_document(
                    pool, index, self._config, rng, stats)
        batch = schema.InstanceBatch.from_instances(made, self._config.vocab_size)
        order = rng_for(self._seed, "order", *key).sample(range(len(batch)), len(batch))
        return batch.take(order)


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def piece_offsets(sizes: List[Tuple[tuple, int]]) -> dict:
    """(piece key, rows) of every piece → {key: offset of its first row in the global sequence}.

    Pieces in key order, each piece's rows in order, make one global sequence of instances;
    instance ``g`` of it goes to shard ``g % num_shards`` (Google's round-robin), so shard sizes
    differ by at most one.
    """
    offsets, total = {}, 0
    for key, rows in sorted(sizes):
        offsets[key] = total
        total += rows
    return offsets


def assign_classes(piece: dict, offsets: dict, num_shards: int):
    """A piece's classes → (shard, (piece key, path, blocks)). Row ``i`` of a piece starting at
    global offset ``o`` is in class ``i % num_shards`` and belongs to shard
    ``(o + i) % num_shards``: class ``c`` goes whole to shard ``(c + o) % num_shards``."""
    offset = offsets[piece["key"]]
    for c, blocks in enumerate(piece["classes"]):
        if blocks:
            yield (c + offset) % num_shards, (piece["key"], piece["path"], blocks)
