"""The job's unit of work, as pure steps: cut a file into document-aligned ranges, and turn one
range into instances.

A range is whole documents of one file (an uncompressed file is cut near every ``range_bytes``
at offsets where a document surely starts; a compressed or binary-looking file is one range).
Everything between the raw bytes and the instances happens in :func:`make_range_instances`:
read and clean, LTP and WordPiece in batches, then Google's algorithm with the range's
documents as the pool random next segments come from (as Google's script pools one input
file). Memory is bounded by one range, whatever the corpus size. The Beam DoFns and the
benchmarks call these functions; they know nothing of Beam.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO

from pipeline.core import google_order, vectorized
from pipeline.core.curation import CurationConfig, curate
from pipeline.core.instance import InstanceBatch, InstanceConfig
from pipeline.core.text import (
    SNIFF_BYTES,
    CorruptInputError,
    RangeReader,
    decompressed,
    document_boundary,
    iter_documents,
    looks_binary,
)
from pipeline.core.wordpiece import Sentence, WordPieceTokenizer

COMPRESSED_SUFFIXES = (".gz", ".bz2")


@dataclasses.dataclass(frozen=True)
class RangeConfig:
    """What turns a range into instances (the data flags of the job, minus where things are)."""
    instance: InstanceConfig
    input_format: str = "google"
    text_field: str = "text"
    max_sentence_chars: int = 500
    tokenize_batch_size: int = 64
    dupe_factor: int = 10
    seed: int = 12345
    exact_google_draws: bool = False
    normalize: str = "none"  # core.normalize.MODES
    curation: CurationConfig = CurationConfig()


def is_compressed(path: str) -> bool:
    return path.lower().endswith(COMPRESSED_SUFFIXES)


def plan_ranges(stream: BinaryIO, *, path: str, size: int, input_format: str,
                range_bytes: int) -> list[tuple[int, int | None]]:
    """(start, end) byte ranges of whole documents covering the file; ``end`` None means to
    the end of the file. ``stream`` is the file, seekable and not decompressed."""
    if is_compressed(path) or looks_binary(stream.read(SNIFF_BYTES)):
        return [(0, None)]  # cannot be entered in the middle / counted and skipped whole
    cuts = [0]
    for nominal in range(range_bytes, size, range_bytes):
        if nominal <= cuts[-1]:
            continue  # a long document already reached past this point
        cut = document_boundary(stream, nominal, input_format)
        if cut is None or cut >= size:
            break
        cuts.append(cut)
    return list(zip(cuts, cuts[1:] + [None]))


def range_key(source: str, start: int) -> tuple[str, int]:
    """The stable key of a range: seeds, piece names and the global order derive from it."""
    return source, start


def read_range_documents(raw: BinaryIO, *, path: str, source: str, start: int,
                         end: int | None, config: RangeConfig,
                         stats: Counter) -> Iterator[tuple[str, list[str]]]:
    """(doc id, sentences) of the range ``[start, end)`` of the file open as ``raw``
    (seekable, not decompressed). Document ids of a later range start with its offset: unique,
    and stable for the flags."""
    whole = not start and end is None
    if whole:
        stream = decompressed(raw, path)
    else:
        raw.seek(start)
        stream = raw if end is None else RangeReader(raw, end - start)
    source_id = f"{source}@{start}" if start else source
    try:
        yield from iter_documents(stream, source=source_id, whole_file=not start, stats=stats,
                                  input_format=config.input_format,
                                  text_field=config.text_field,
                                  max_sentence_chars=config.max_sentence_chars)
    except CorruptInputError as e:
        raise CorruptInputError(f"{path}: {e}") from e
    if whole and not stats["documents"] and not stats["binary_files_skipped"]:
        stats["files_without_documents"] += 1


def tokenize_documents(docs: Iterable[tuple[str, list[str]]], *,
                       tokenizer: WordPieceTokenizer, segmenter, batch_size: int,
                       stats: Counter, normalizer: Callable[[str], str] | None = None
                       ) -> Iterator[tuple[str, list[Sentence]]]:
    """(doc id, sentences) → (doc id, [Sentence]) in batches of ``batch_size`` documents:
    ``normalizer`` (``core.normalize``, None for none), then LTP (``segmenter``, None without
    whole-word masking) and WordPiece see all sentences of a batch at once (both are much
    faster on batches); both see the normalized text, so word offsets stay right. Sentences and
    documents that tokenize to nothing are dropped and counted."""
    batch: list[tuple[str, list[str]]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == batch_size:
            yield from _tokenize_batch(batch, tokenizer, segmenter, normalizer, stats)
            batch = []
    if batch:
        yield from _tokenize_batch(batch, tokenizer, segmenter, normalizer, stats)


_SEGMENTER_STATS = (("sentences_segmented", "segmented_texts"),
                    ("ltp_unaligned_words", "unaligned_words"),
                    ("ltp_failed_sentences", "failed_texts"))


def _tokenize_batch(batch, tokenizer, segmenter, normalizer, stats):
    texts = [s for _, sentences in batch for s in sentences]
    if normalizer is not None:
        texts = [normalizer(t) for t in texts]
    spans = None
    if segmenter is not None:
        before = dict(segmenter.stats)
        spans = segmenter.word_bounds(texts)  # texts without CJK are not sent to LTP
        for ours, theirs in _SEGMENTER_STATS:
            stats[ours] += segmenter.stats[theirs] - before[theirs]
    encoded = tokenizer.encode(texts, spans, stats=stats)
    k = 0
    for doc_id, sentences in batch:
        kept = [e for e in encoded[k:k + len(sentences)] if len(e.ids)]
        stats["sentences_empty_after_tokenization"] += len(sentences) - len(kept)
        k += len(sentences)
        if kept:
            yield doc_id, kept
        else:
            stats["documents_empty_after_tokenization"] += 1


def make_instances(docs: Sequence[tuple[str, list[Sentence]]], *, config: RangeConfig,
                   key: tuple[str, int], stats: Counter) -> InstanceBatch:
    """A pool's instances, rows in random order: the default (vectorized) maker, or Google's
    draw order with ``exact_google_draws``."""
    if config.exact_google_draws:
        return google_order.make_instances(docs, config.instance, dupe_factor=config.dupe_factor,
                                           seed=config.seed, key=key, stats=stats)
    return vectorized.make_instances([sentences for _, sentences in docs], config.instance,
                                     dupe_factor=config.dupe_factor, seed=config.seed, key=key,
                                     stats=stats)


def curated_documents(raw: BinaryIO, *, path: str, source: str, start: int,
                      end: int | None, config: RangeConfig, stats: Counter, converter=None,
                      drops: dict[int, str] | None = None,
                      weight: float = 1.0) -> Iterator[tuple[str, list[str]]]:
    """The range's documents after curation (``core.curation.curate``: ``--convert``,
    ``--filters``, the duplicate decisions ``drops`` (row → kind), the input's ``weight``);
    the documents and characters that go on are counted (``documents_kept``,
    ``chars_kept``)."""
    documents = read_range_documents(raw, path=path, source=source, start=start, end=end,
                                     config=config, stats=stats)
    if config.curation.active or weight != 1:
        documents = curate(documents, config=config.curation, converter=converter,
                           drops=drops or {}, weight=weight, key=range_key(source, start),
                           stats=stats)
    for doc_id, sentences in documents:
        stats["documents_kept"] += 1
        stats["chars_kept"] += sum(len(s) for s in sentences)
        yield doc_id, sentences


def make_range_instances(raw: BinaryIO, *, path: str, source: str, start: int,
                         end: int | None, config: RangeConfig,
                         tokenizer: WordPieceTokenizer, segmenter,
                         stats: Counter, normalizer=None, converter=None,
                         drops: dict[int, str] | None = None,
                         weight: float = 1.0) -> InstanceBatch:
    """One range of one file → its instances (rows in random order); ``stats`` counts what
    happened. Generators are seeded by (seed, source, range start). ``converter``, ``drops``
    and ``weight``: curation (:func:`curated_documents`)."""
    documents = curated_documents(raw, path=path, source=source, start=start, end=end,
                                  config=config, stats=stats, converter=converter,
                                  drops=drops, weight=weight)
    docs = list(tokenize_documents(documents, tokenizer=tokenizer, segmenter=segmenter,
                                   batch_size=config.tokenize_batch_size, stats=stats,
                                   normalizer=normalizer))
    stats["ranges"] += 1
    return make_instances(docs, config=config, key=range_key(source, start), stats=stats)
