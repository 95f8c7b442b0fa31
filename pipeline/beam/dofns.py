"""The DoFns: each wraps pure steps of ``pipeline.core`` and counts what it did.

Heavy objects (the LTP model, the WordPiece tokenizer) are built once per worker process in
``setup`` through ``apache_beam.utils.shared.Shared`` and reused by every DoFn instance and
bundle there. A remote LTP model (gs://, s3://) is copied to a temporary directory, loaded, and
the copy removed at once: nothing is left on the worker's disk.

No DoFn has more than one output and no step reads a side input: Beam's DaskRunner gives all
outputs of a ParDo one bag and recomputes a side input inside every task that reads it, so the
job passes everything as elements (statistics ride along with the piece they describe).
"""
from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipeline.beam import fs, worker
from pipeline.beam.options import InputSpec, JobConfig
from pipeline.beam.output_dir import skip_outputs
from pipeline.beam.pieces import encode_piece, piece_id, piece_name, sketch_name
from pipeline.core import curation
from pipeline.core.instance import InstanceConfig
from pipeline.core.normalize import normalizer_for
from pipeline.core.ranges import (
    RangeConfig,
    is_compressed,
    make_range_instances,
    plan_ranges,
    range_key,
    read_range_documents,
)
from pipeline.core.seeds import stable_hash64
from pipeline.core.wordpiece import WordPieceTokenizer

NAMESPACE = "bert_wwm"
LOG = logging.getLogger(__name__)

# Counters mirrored into Beam metrics for progress (stats.json has the full set).
METRIC_KEYS = ("files", "ranges", "documents", "sentences", "tokens", "words", "instances",
               "masked_tokens", "chars_removed", "binary_lines_skipped",
               "binary_files_skipped", "empty_documents", "jsonl_bad_lines", "sentences_cut",
               "sentences_empty_after_tokenization", "unk_tokens", "input_ranges_changed",
               "documents_kept")


def report(stats: Counter) -> None:
    for key in METRIC_KEYS:
        if stats.get(key):
            Metrics.counter(NAMESPACE, key).inc(stats[key])
    for key, value in stats.items():  # curation: dropped_documents_min_chars, ...
        if value and key.startswith(("dropped_documents:", "dropped_chars:")):
            Metrics.counter(NAMESPACE, key.replace(":", "_")).inc(value)


def range_config(job: JobConfig, vocab: Sequence[str]) -> RangeConfig:
    """The core settings of the per-range step, from the job's."""
    return RangeConfig(
        instance=InstanceConfig(
            max_seq_length=job.max_seq_length, max_predictions_per_seq=job.max_predictions_per_seq,
            masked_lm_prob=job.masked_lm_prob, short_seq_prob=job.short_seq_prob,
            do_whole_word_mask=job.do_whole_word_mask, vocab_size=len(vocab),
            cls_id=vocab.index("[CLS]"), sep_id=vocab.index("[SEP]"),
            mask_id=vocab.index("[MASK]"), next_sentence=job.next_sentence,
            masking_mode=job.masking, ngram_lengths=job.ngram_lengths,
            ngram_weights=job.ngram_weight_values),
        input_format=job.input_format, text_field=job.text_field,
        max_sentence_chars=job.max_sentence_chars,
        tokenize_batch_size=job.tokenize_batch_size, dupe_factor=job.dupe_factor,
        seed=job.random_seed, exact_google_draws=job.exact_google_draws,
        normalize=job.normalize, curation=job.curation)


def load_segmenter(ltp_model: str, user_dict: str | None, ltp_device: str = "cpu"):
    """The LTP segmenter for ``--ltp_model``/``--user_dict``/``--ltp_device`` on any filesystem.
    Remote files are copied to a temporary directory only while the model loads.

    LTP runs single-threaded: Beam already runs one worker per core (``--direct_num_workers``,
    Dataflow's one SDK process per vCPU, Dask's worker threads), and LTP's own thread pool
    would only make workers compete for the same cores (a neural model on the CPU: one torch
    thread, ``ltp_device.worker_device``).
    """
    from pipeline.beam.ltp_device import worker_device
    from pipeline.core.segment import LtpSegmenter, model_kind
    from pipeline.default_segmenter.cache import default_model_dir

    model = str(default_model_dir()) if ltp_model == "default" else ltp_model
    with fs.localized(model) as local_model:
        device = worker_device(ltp_device, neural=model_kind(local_model) != "legacy")
        if user_dict is None:
            return LtpSegmenter(local_model, parallelism=False, device=device)
        with fs.localized(user_dict) as local_dict:
            return LtpSegmenter(local_model, user_dict=local_dict, parallelism=False,
                                device=device)


class _Tokenization:
    """What one worker process keeps: the OpenCC converter (``--convert``), the normalizer,
    the tokenizer and (with WWM) the LTP segmenter."""

    def __init__(self, vocab: Sequence[str], do_lower_case: bool, ltp_model: str | None,
                 user_dict: str | None, normalize: str, ltp_device: str = "cpu",
                 convert: str = "none"):
        self.converter = curation.converter_for(convert)
        self.normalizer = normalizer_for(vocab, normalize)
        self.tokenizer = WordPieceTokenizer(vocab, do_lower_case=do_lower_case)
        self.segmenter = load_segmenter(ltp_model, user_dict, ltp_device) if ltp_model else None


def list_inputs(specs: Sequence[InputSpec]) -> list[tuple[fs.InputFile, InputSpec]]:
    """Every file the --input specs match, each once, sorted, with the spec that holds for it;
    a pattern matching nothing is an error, and so is a file two specs match with different
    options (which format would it be read in?)."""
    chosen: dict[str, tuple[fs.InputFile, InputSpec]] = {}
    for spec in specs:
        for f in fs.input_files([spec.pattern]):
            earlier = chosen.get(f.path)
            if earlier and (earlier[1].input_format, earlier[1].text_field,
                            earlier[1].weight) != (spec.input_format, spec.text_field,
                                                   spec.weight):
                raise ValueError(
                    f"{f.path} is matched by --input {earlier[1].pattern!r} (format "
                    f"{earlier[1].input_format}, text_field {earlier[1].text_field}, weight "
                    f"{earlier[1].weight:g}) and by --input {spec.pattern!r} (format "
                    f"{spec.input_format}, text_field {spec.text_field}, weight "
                    f"{spec.weight:g}): make the patterns disjoint")
            chosen.setdefault(f.path, (f, spec))
    return [chosen[path] for path in sorted(chosen)]


class ListFilesDoFn(beam.DoFn):
    """The --input specs → (path, source name, size, mtime, format, text field, weight, input
    index) of every file they match (``list_inputs``); the input index is the place of the
    --input that holds for the file (per-input statistics). Source names are relative to
    ``base`` (see ``source_base``). Listing happens when the job runs, so a job graph (a
    Dataflow template) holds patterns, not file lists. Files of a pipeline output directory
    that a pattern reaches into are skipped and counted (``output_dir.skip_outputs``). Size
    and mtime are checked again when each range is read."""

    def __init__(self, *, base: str, output_dir: str, filesystem_options: dict[str, object]):
        self._base, self._output, self._fs = base, output_dir, filesystem_options

    def setup(self):
        worker.setup(self._fs)

    def process(self, specs: tuple[InputSpec, ...]):
        files = list_inputs(specs)
        keep, skipped = skip_outputs([(f.path, f.size) for f, _ in files], current=self._output)
        for path in skipped:
            LOG.warning("skipped %s: a file of a pipeline output directory, not corpus text",
                        path)
        Metrics.counter(NAMESPACE, "output_files_skipped").inc(len(skipped))
        kept = {path for path, _ in keep}
        for f, spec in files:
            if f.path in kept:
                yield (f.path, source_name(f.path, self._base), f.size, f.mtime,
                       spec.input_format, spec.text_field, spec.weight, specs.index(spec))


class PlanRangesDoFn(beam.DoFn):
    """(path, source, size, mtime, format, field[, weight, input index]) → (path, source,
    start, end, size, mtime, format, field[, weight, input index]): document-aligned byte
    ranges (``core.ranges.plan_ranges``) of the file as listed."""

    def __init__(self, *, range_bytes: int, filesystem_options: dict[str, object]):
        self._bytes, self._fs = range_bytes, filesystem_options

    def setup(self):
        worker.setup(self._fs)

    def process(self, element: tuple):
        path, source, size, mtime, input_format, text_field, *rest = element
        with fs.open_read(path) as f:
            ranges = plan_ranges(f, path=path, size=size,
                                 input_format=input_format, range_bytes=self._bytes)
        for start, end in ranges:
            yield (path, source, start, end, size, mtime, input_format, text_field, *rest)


class MakeInstancesDoFn(beam.DoFn):
    """One range of one file → its instances, parked in a piece file; yields the piece's index
    (key, path, rows, shard classes) with the range's statistics."""

    def __init__(self, job: JobConfig, vocab: Sequence[str], *, pieces_dir: str,
                 filesystem_options: dict[str, object]):
        self._config = range_config(job, vocab)
        self._tokenization = (tuple(vocab), job.do_lower_case,
                              job.ltp_model if job.do_whole_word_mask else None, job.user_dict,
                              job.normalize, job.ltp_device, job.convert)
        self._pieces, self._shards, self._fs = pieces_dir, job.num_shards, filesystem_options
        self._bounds = job.bin_bounds
        self._on_change, self._range_bytes = job.on_input_change, job.range_bytes
        self._shared = shared.Shared()
        self._state = None

    def setup(self):
        worker.setup(self._fs)
        key = f"tokenization:{stable_hash64(*self._tokenization)}"
        self._state = self._shared.acquire(lambda: _Tokenization(*self._tokenization), tag=key)

    def process(self, element):
        drops, stats = {}, Counter()
        if isinstance(element, dict):  # with --dedup: the range and the decisions on it
            element, drops, stats = element["range"], element["drops"], element["stats"]
        path, source, start, end, size, mtime, input_format, text_field, *rest = element
        weight, input_index = rest or (1.0, 0)
        config = self._config
        if (input_format, text_field) != (config.input_format, config.text_field):
            config = dataclasses.replace(config, input_format=input_format,
                                         text_field=text_field)
        with fs.open_read(path) as raw:
            batch = make_range_instances(
                raw, path=path, source=source, start=start, end=end, config=config,
                tokenizer=self._state.tokenizer, segmenter=self._state.segmenter, stats=stats,
                normalizer=self._state.normalizer, converter=self._state.converter,
                drops=drops, weight=weight)
        changed = input_change(path, size, mtime)
        if changed:
            if self._on_change == "fail":
                raise InputChangedError(
                    f"{path} changed while the job read it ({changed}): its instances would "
                    "come from a file that no longer exists as listed. Rerun when the input "
                    "is stable, or pass --on_input_change=skip to skip such ranges (counted)")
            LOG.warning("skipped the range at byte %d of %s: the file changed while the job "
                        "read it (%s)", start, path, changed)
            stats = Counter(input_ranges_changed=1)
            batch = batch.take(np.arange(0))
        for what in ("documents", "chars"):
            stats[f"input:{input_index}:{what}"] += stats[f"{what}_kept"]
        stats[f"input:{input_index}:instances"] += len(batch)
        if stats["binary_files_skipped"]:
            LOG.warning("skipped %s: binary or not UTF-8", path)
        elif stats["files_without_documents"]:
            LOG.warning("no documents in %s", path)
        key = range_key(source, start)
        size = (end if end is not None else size) - start
        if size > 2 * self._range_bytes and not is_compressed(path) and stats["documents"]:
            stats["ranges_over_twice_range_mb"] += 1  # a document without a boundary for MBs
        name = piece_name(key, size, len(batch))
        data, classes = encode_piece(batch, self._shards, bounds=self._bounds)
        fs.write_atomic(fs.join(self._pieces, name), data)
        Metrics.distribution(NAMESPACE, "range_documents").update(stats["documents"])
        Metrics.counter(NAMESPACE, "bytes_read").inc(size)
        report(stats)
        LOG.debug("range %s@%d: %d documents, %d instances", source, start,
                  stats["documents"], len(batch))
        yield {"key": key, "id": piece_id(key), "path": name, "rows": len(batch),
               "bin_rows": [sum(rows for blocks in per_class for _, _, rows in blocks)
                            for per_class in classes],
               "classes": classes, "stats": stats}


def number_ranges(grouped, *, requested_partitions: int = 0):
    """(_, [range]) → (range number, (range, partitions)) for every range: numbers in (path,
    start) order, the order duplicates are kept in (``core.curation``); ``partitions`` from
    the input's total size (``curation.partitions_for``)."""
    _, ranges = grouped
    ranges = sorted(ranges, key=lambda r: (r[0], r[2]))
    total = sum((r[3] if r[3] is not None else r[4]) - r[2] for r in ranges)
    partitions = curation.partitions_for(total, requested_partitions)
    for number, task in enumerate(ranges):
        yield number, (task, partitions)


class SketchRangeDoFn(beam.DoFn):
    """(range number, (range, partitions)) → the index of the range's duplicate sketch file
    (``core.curation.sketch_range``: the documents that pass --convert and --filters, as
    MakeInstances will read them)."""

    def __init__(self, job: JobConfig, vocab: Sequence[str], *, pieces_dir: str,
                 filesystem_options: dict[str, object]):
        self._config = range_config(job, vocab)
        self._pieces, self._fs = pieces_dir, filesystem_options
        self._converter = None

    def setup(self):
        worker.setup(self._fs)
        self._converter = curation.converter_for(self._config.curation.convert)

    def process(self, element):
        number, (task, partitions) = element
        path, source, start, end, _, _, input_format, text_field, *_ = task
        config = dataclasses.replace(self._config, input_format=input_format,
                                     text_field=text_field)
        scratch = Counter()  # MakeInstances counts all of this again
        with fs.open_read(path) as raw:
            docs = read_range_documents(raw, path=path, source=source, start=start, end=end,
                                        config=config, stats=scratch)
            rows = [sentences for _, _, sentences in curation.filtered_documents(
                docs, config=config.curation, converter=self._converter, stats=scratch)]
        sketch = curation.sketch_range(rows, range_no=number, config=config.curation,
                                       partitions=partitions)
        data = curation.encode_sketch(sketch)
        name = sketch_name(range_key(source, start), len(rows))
        fs.write_atomic(fs.join(self._pieces, name), data)
        yield {"range": number, "path": name, "partitions": partitions,
               "index": curation.SketchIndex.parse(data)}


def to_partitions(sketch: dict):
    """A sketch's index → (partition, where that partition's slice, the exact hashes and the
    signatures are in the file) for every partition: each gets only its own offsets."""
    index: curation.SketchIndex = sketch["index"]
    for p in range(sketch["partitions"]):
        yield p, {"range": sketch["range"], "path": sketch["path"],
                  "num_perm": index.num_perm, "part": index.part(p),
                  "exact": (index.offsets[0], index.sizes[0]),
                  "sigs": (index.offsets[1], index.sizes[1])}


def _read_at(f, offset: int, size: int) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise IOError(f"sketch file truncated: wanted {size} bytes at {offset}")
    return data


class DedupPartitionDoFn(beam.DoFn):
    """(partition, [``to_partitions``' sketch slices]) → (range number, {"rows": rows,
    "near": is near}) for each range with documents the duplicate rule drops
    (``core.curation.find_duplicates`` over this partition's band entries of every range), and
    (0, {"stats": ...}) with its counts."""

    def __init__(self, *, threshold: float, pieces_dir: str,
                 filesystem_options: dict[str, object]):
        self._threshold, self._pieces, self._fs = threshold, pieces_dir, filesystem_options

    def setup(self):
        worker.setup(self._fs)

    def process(self, element):
        p, sketches = element
        sketches = sorted(sketches, key=lambda s: s["range"])
        by_range = {s["range"]: s for s in sketches}
        parts = []
        for s in sketches:
            offset, size = s["part"]
            if size:
                with fs.open_read(fs.join(self._pieces, s["path"])) as f:
                    parts.append(curation.read_part(_read_at(f, offset, size)))
        entries = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.uint64)

        def fetch(keys):
            exact = np.zeros((len(keys), 2), dtype=np.uint64)
            sigs = None
            ranges = keys >> np.uint64(32)
            for number in np.unique(ranges):
                s = by_range[int(number)]
                mine = np.flatnonzero(ranges == number)
                rows = (keys[mine] & np.uint64(0xFFFFFFFF)).astype(np.int64)
                with fs.open_read(fs.join(self._pieces, s["path"])) as f:
                    block = np.frombuffer(_read_at(f, *s["exact"]),
                                          dtype=np.uint64).reshape(-1, 2)
                    exact[mine] = block[rows]
                    if s["num_perm"]:
                        sig = np.frombuffer(_read_at(f, *s["sigs"]),
                                            dtype=np.uint32).reshape(-1, s["num_perm"])
                        if sigs is None:
                            sigs = np.zeros((len(keys), s["num_perm"]), dtype=np.uint32)
                        sigs[mine] = sig[rows]
            return exact, sigs if sigs is not None else np.zeros((len(keys), 0), np.uint32)

        stats = Counter()
        drops = curation.find_duplicates(entries, fetch, threshold=self._threshold,
                                         stats=stats)
        keys = np.array(sorted(drops), dtype=np.uint64)
        near = np.array([drops[int(k)] == "near" for k in keys], dtype=bool)
        ranges = keys >> np.uint64(32)
        for number in np.unique(ranges):  # compact: rows and kinds as arrays
            mine = ranges == number
            yield int(number), {"rows": (keys[mine] & np.uint64(0xFFFFFFFF)).astype(np.uint32),
                                "near": near[mine]}
        if stats:
            yield 0, {"stats": stats}


def with_decisions(joined):
    """(range number, {"range": [(range, partitions)], "decisions": [...]}) → the element
    MakeInstancesDoFn takes with --dedup: {"range", "drops": {row: kind}, "stats"}; a row two
    partitions drop for different kinds is an exact duplicate."""
    _, parts = joined
    ((task, _),) = parts["range"]
    drops: dict[int, str] = {}
    stats = Counter()
    for decision in parts["decisions"]:
        if "rows" in decision:
            for row, near in zip(decision["rows"].tolist(), decision["near"].tolist()):
                if drops.get(row) != "exact":
                    drops[row] = "near" if near else "exact"
        stats.update(decision.get("stats", {}))
    return {"range": task, "drops": drops, "stats": stats}


class InputChangedError(IOError):
    """An input file's size or modification time differs from when the job listed it."""


def input_change(path: str, size: int, mtime: float | None) -> str | None:
    """What changed in ``path`` since it was listed with ``size`` and ``mtime``, or None. A
    file that is gone counts as changed."""
    try:
        now_size, now_mtime = fs.stat(path)
    except (FileNotFoundError, IOError, IndexError):
        return "it is gone"
    if now_size != size:
        return f"{size} bytes when listed, {now_size} now"
    if mtime is not None and now_mtime is not None and now_mtime != mtime:
        return f"modified at {now_mtime:.3f}, listed with {mtime:.3f}"
    return None


def source_base(patterns: Sequence[str]) -> str:
    """The directory source names are relative to: the common directory of the patterns'
    fixed parts (a file's own directory for a single path). It depends on the flags only, not
    on what the patterns match, so the same corpus gives the same data wherever it lives."""
    dirs = []
    for pattern in patterns:
        fixed = pattern
        for i, ch in enumerate(pattern):
            if ch in "*?[{":
                fixed = pattern[:i]
                break
        dirs.append(fixed.rsplit("/", 1)[0] if "/" in fixed else "")
    common = dirs[0]
    for d in dirs[1:]:
        while common and not (d == common or d.startswith(common.rstrip("/") + "/")):
            common = common.rsplit("/", 1)[0] if "/" in common else ""
    return common


def source_name(path: str, base: str) -> str:
    if base and path.startswith(base.rstrip("/") + "/"):
        return path[len(base.rstrip("/")) + 1:]
    return path


def piece_offsets(sizes: list[tuple[tuple, list[int]]]) -> tuple[dict[tuple, list[int]],
                                                                  list[int]]:
    """(piece key, rows per length bin) of every piece → ({key: offset of its first row of
    each bin in that bin's global sequence}, instances per bin).

    Pieces in key order, each piece's rows of a bin in order, make one global sequence of the
    bin's instances; instance ``g`` of it goes to the bin's shard ``g % num_shards`` (Google's
    round-robin), so shard sizes within a bin differ by at most one. Without bins there is one
    bin.
    """
    offsets: dict[tuple, list[int]] = {}
    totals: list[int] = []
    for key, rows in sorted(sizes):
        totals += [0] * (len(rows) - len(totals))
        offsets[key] = list(totals[:len(rows)])
        for b, n in enumerate(rows):
            totals[b] += n
    return offsets, totals


def shard_key(bin_index: int, shard: int, num_shards: int) -> int:
    """The job-wide index of a bin's shard (its GroupByKey key): bins after one another."""
    return bin_index * num_shards + shard


def assign_classes(piece: dict, offsets: list[int], num_shards: int):
    """A piece's classes → (shard key, (piece key, path, blocks)). Row ``i`` of a bin of a
    piece starting at the bin's global offset ``o`` is in class ``i % num_shards`` and belongs
    to the bin's shard ``(o + i) % num_shards``: class ``c`` goes whole to shard
    ``(c + o) % num_shards``."""
    for b, (per_class, offset) in enumerate(zip(piece["classes"], offsets)):
        for c, blocks in enumerate(per_class):
            if blocks:
                yield (shard_key(b, (c + offset) % num_shards, num_shards),
                       (piece["key"], piece["path"], blocks))
