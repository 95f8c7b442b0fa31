"""Check a job's output against its manifest.json: are the files a trainer will read complete,
uncorrupted and what the manifest says they are?

    python -m pipeline.verify --output_dir output
    python -m pipeline.verify --output_dir gs://bucket/data128      # after a copy

Every shard is read whole: each file listed is present and nothing extra lies among them;
size and sha256 as recorded when the file was written; TFRecord framing with both CRCs of
every record; each shard's instance count; the schema (features, dtypes, fixed lengths, no
label for next_sentence "none"; ``word_starts`` instead of masked_lm_* for dynamic data);
every instance valid (``pipeline.readers.rows``: ids inside the vocabulary, masked positions
inside the sequence, strictly increasing and never 0, weights 1.0 exactly where a prediction
is, labels 0 or 1, word starts 0 or 1 and 0 on [CLS]/[SEP] and padding, ...); dynamic data's
masking settings against the vocabulary; and the TFRecord and Parquet shards holding the
same instances in the same order. Binned output (``--length_bins``): every shard at its bin's
lengths, every row's length inside its bin, and the bins against the manifest
(:func:`check_bins`). Exit code 0 with a one-line summary, 1 with the
list of what is wrong (file, record, field), 2 for a bad command line.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from pipeline import schema
from pipeline.common.sizes import MB, megabytes
from pipeline.readers.output import (
    HashingReader,
    NotAnOutput,
    Output,
    open_output,
    open_read,
    warning_messages,
)
from pipeline.readers.rows import Spec, check_chunk, fingerprints, shard_spec
from pipeline.readers.shards import ShardError, read_shard
from pipeline.tools import cli, console, progress

MANIFEST = schema.MANIFEST_FILE
KEPT_PER_FILE = 1000  # problems stored per file (the rest are counted)


@dataclasses.dataclass
class Findings:
    """Problems as (file, record or None, field or "", message)."""
    problems: list[tuple[str, int | None, str, str]] = dataclasses.field(default_factory=list)
    per_file: dict[str, int] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    bytes_read: int = 0

    def add(self, file: str, record: int | None, field: str, message: str) -> None:
        self.per_file[file] = self.per_file.get(file, 0) + 1
        if self.per_file[file] <= KEPT_PER_FILE:
            self.problems.append((file, record, field, message))

    @property
    def count(self) -> int:
        return sum(self.per_file.values())

    def merge(self, other: "Findings") -> None:
        for file, n in other.per_file.items():
            kept = [p for p in other.problems if p[0] == file]
            room = max(0, KEPT_PER_FILE - self.per_file.get(file, 0))
            self.problems.extend(kept[:room])
            self.per_file[file] = self.per_file.get(file, 0) + n
        self.notes.extend(n for n in other.notes if n not in self.notes)
        self.bytes_read += other.bytes_read


def check_manifest(output: Output, found: Findings) -> None:
    """The manifest against the listing, the vocabulary and itself."""
    m = output.manifest
    listed = set()
    for fmt in ("tfrecord", "parquet"):
        entries = output.shards(fmt)
        if not entries:
            continue
        if len(entries) != m.get("num_shards", len(entries)):
            found.add(MANIFEST, None, "shards", f"{len(entries)} {fmt} shards listed, "
                                                f"num_shards says {m['num_shards']}")
        total = sum(e["instances"] for e in entries)
        if total != m["total_instances"]:
            found.add(MANIFEST, None, "shards", f"the {fmt} shards hold {total} instances, "
                                                f"total_instances says {m['total_instances']}")
        for entry in entries:
            listed.add(entry["path"])
            size = output.files.get(entry["path"])
            if size is None:
                found.add(entry["path"], None, "", "missing (listed in the manifest)")
            elif "bytes" in entry and size != entry["bytes"]:
                found.add(entry["path"], None, "", f"{size} bytes, the manifest says "
                                                   f"{entry['bytes']}")
    if "tfrecord" in output.formats and "parquet" in output.formats:
        counts = [[e["instances"] for e in output.shards(f)] for f in ("tfrecord", "parquet")]
        if counts[0] != counts[1]:
            found.add(MANIFEST, None, "shards", "TFRecord and Parquet shard counts differ")
    ours = set(schema.OUTPUT_DIRS)
    for rel in sorted(output.files):
        top = rel.split("/", 1)[0]
        if rel not in listed and ((top in ours and "/" in rel) or top.startswith(".tmp-")):
            found.add(rel, None, "", "not in the manifest" + (
                moved_from(output, rel) or " (left by another run, or a partial copy)"))
    if output.binned:
        check_bins(output, found)
    vocab_file = m.get("vocab_file", schema.VOCAB_FILE)
    if vocab_file not in output.files:
        found.add(vocab_file, None, "", "missing: the ids cannot be checked against it")
        return
    data = output.read(vocab_file)
    if m.get("vocab_sha256") and hashlib.sha256(data).hexdigest() != m["vocab_sha256"]:
        found.add(vocab_file, None, "", "sha256 differs from the manifest's vocab_sha256")
    if len(output.vocab) != m["vocab_size"]:
        found.add(vocab_file, None, "", f"{len(output.vocab)} tokens, the manifest says "
                                        f"vocab_size {m['vocab_size']}")
    if schema.STATS_FILE not in output.files:
        found.add(schema.STATS_FILE, None, "", "missing")
    want = [{"name": n, "dtype": d, "length": k}
            for n, d, k in schema.features(output.task, output.masking)]
    if "features" in m and m["features"] != want:
        found.add(MANIFEST, None, "features", f"do not match the schema for next_sentence "
                                              f"{output.task!r}, masking {output.masking!r}")
    if output.dynamic:
        check_dynamic_masking(output, found)


def moved_from(output: Output, path: str, digest: str | None = None) -> str:
    """If the file at ``path`` holds the bytes of another shard the manifest lists (its
    sha256, hashed here when not given: only files of a listed shard's size are), what that
    says, e.g. ``: it holds the bytes of ..., a shard of bin len-0032, moved or copied into
    bin len-0064's directory``; else ""."""
    if digest is None:
        sizes = {entry.get("bytes") for fmt in output.formats for entry in output.shards(fmt)}
        if output.files.get(path) not in sizes:
            return ""
        try:
            with HashingReader(open_read(output.resolve(path))) as reader:
                reader.drain()
                digest = reader.digest.hexdigest()
        except (OSError, ValueError):
            return ""
    other = output.listed_sha256.get(digest)
    if other is None or other == path:
        return ""
    theirs, here = output.bin_of_path(other), output.bin_of_path(path)
    if theirs is not None and (here is None or here.index != theirs.index):
        into = f"bin {here.name}'s directory" if here is not None else "here"
        return (f": it holds the bytes of {other}, a shard of bin {theirs.name}, moved or "
                f"copied into {into}")
    return f": it holds the bytes of {other} (moved or copied here)"


def check_bins(output: Output, found: Findings) -> None:
    """A binned output's ``bins`` (format_version 2) against the manifest and each other:
    bounds increasing up to max_seq_length, instance counts adding up (to total_instances,
    and each bin's to its shards'), each bin's shards balanced (sizes within one) and in its
    own directory, an empty bin without shards, and the top-level shard lists exactly the
    bins' lists one after the other. The rows' lengths are checked shard by shard
    (``readers.rows``: every shard at its bin's lengths)."""
    m, bins = output.manifest, output.bins
    bounds = [b.bound for b in bins]
    if bounds != sorted(set(bounds)):
        found.add(MANIFEST, None, "bins", f"bounds {bounds} do not increase")
    elif bounds[-1] != m["max_seq_length"]:
        found.add(MANIFEST, None, "bins", f"the last bin's bound is {bounds[-1]}, not "
                                          f"max_seq_length {m['max_seq_length']}")
    total = sum(b.instances for b in bins)
    if total != m["total_instances"]:
        found.add(MANIFEST, None, "bins", f"the bins hold {total} instances, total_instances "
                                          f"says {m['total_instances']}")
    for b in bins:
        where = f"bins[{b.index}] ({b.name})"
        if b.max_predictions_per_seq > m["max_predictions_per_seq"]:
            found.add(MANIFEST, None, "bins", f"{where}: max_predictions_per_seq "
                                              f"{b.max_predictions_per_seq} is more than the "
                                              f"manifest's {m['max_predictions_per_seq']}")
        for fmt in schema_formats(output):
            entries = output.bin_shards(b.index, fmt)
            if not b.instances:
                if entries:
                    found.add(MANIFEST, None, "bins", f"{where} is empty (0 instances) but "
                                                      f"lists {len(entries)} {fmt} shards")
                continue
            if not entries:
                found.add(MANIFEST, None, "bins", f"{where}: {b.instances} instances, no "
                                                  f"{fmt} shards")
                continue
            sizes = [e["instances"] for e in entries]
            if sum(sizes) != b.instances:
                found.add(MANIFEST, None, "bins", f"{where}: its {fmt} shards hold "
                                                  f"{sum(sizes)} instances, the bin says "
                                                  f"{b.instances}")
            if max(sizes) - min(sizes) > 1:
                found.add(MANIFEST, None, "bins", f"{where}: {fmt} shards unbalanced, "
                                                  f"{min(sizes)} to {max(sizes)} instances "
                                                  f"(the job makes them differ by one at most)")
            home = f"{fmt}/{b.name}/"
            for entry in entries:
                if not entry["path"].startswith(home):
                    found.add(entry["path"], None, "", f"listed in {where}, whose shards are "
                                                       f"under {home}")
    for fmt in schema_formats(output):
        top = output.shards(fmt)
        joined = [(b.index, e) for b in bins for e in output.bin_shards(b.index, fmt)]
        in_bins = {e["path"]: b for b, e in joined}
        in_top = {e["path"] for e in top}
        for entry in top:
            if entry["path"] not in in_bins:
                found.add(entry["path"], None, "", "in the manifest's shards but in no "
                                                   "bin's (its bin, and so its lengths, is "
                                                   "unknown)")
        for b, entry in joined:
            if entry["path"] not in in_top:
                found.add(entry["path"], None, "", f"listed in bins[{b}] but not in the "
                                                   f"manifest's shards")
        listed = [e for e in top if e["path"] in in_bins]
        if [e["path"] for e in listed] != [e["path"] for _, e in joined if e["path"] in in_top]:
            found.add(MANIFEST, None, "bins", f"the {fmt} shards are not listed in bin order "
                                              f"(the stable index of each instance counts "
                                              f"the shards before it)")
        by_path = {e["path"]: e for _, e in joined}
        for entry in listed:
            differ = [k for k in ("instances", "bytes", "sha256")
                      if entry.get(k) != by_path[entry["path"]].get(k)]
            if differ:
                found.add(MANIFEST, None, "bins", f"{entry['path']}: {', '.join(differ)} "
                                                  f"differ between bins[{in_bins[entry['path']]}] "
                                                  f"and the manifest's shards")


def schema_formats(output: Output) -> list[str]:
    """The formats the top-level shards or any bin list."""
    return [fmt for fmt in ("tfrecord", "parquet") if output.shards(fmt) or any(
        output.bin_shards(b.index, fmt) for b in output.bins)]


def check_dynamic_masking(output: Output, found: Findings) -> None:
    """Dynamic data: the settings the trainers will mask with agree with the data (their
    types were checked on opening: ``readers.output.usable_manifest``)."""
    m, masking = output.manifest, output.manifest["masking"]
    mask_id = output.vocab.index(schema.MASK) if schema.MASK in output.vocab else None
    if mask_id is None:
        found.add(m.get("vocab_file", schema.VOCAB_FILE), None, "",
                  f"no {schema.MASK} token: dynamic data cannot be masked")
    elif masking["mask_id"] != mask_id:
        found.add(MANIFEST, None, "masking", f"mask_id {masking['mask_id']} is not "
                                             f"{schema.MASK} (id {mask_id} in the vocabulary)")
    if masking["max_predictions_per_seq"] != m["max_predictions_per_seq"]:
        found.add(MANIFEST, None, "masking", f"max_predictions_per_seq "
                                             f"{masking['max_predictions_per_seq']}, the "
                                             f"manifest's is {m['max_predictions_per_seq']}")
    for b in output.bins:
        if b.max_predictions_per_seq > masking["max_predictions_per_seq"]:
            found.add(MANIFEST, None, "masking", f"bin {b.name}'s max_predictions_per_seq "
                                                 f"{b.max_predictions_per_seq} is more than "
                                                 f"masking's {masking['max_predictions_per_seq']}")
    lengths, weights = masking["ngram_lengths"], masking["ngram_weights"]
    if lengths != sorted(set(lengths)) or abs(sum(weights) - 1.0) > 1e-6:
        found.add(MANIFEST, None, "masking", "ngram_lengths must increase and ngram_weights "
                                             "sum to 1")


def check_shard(output: Output, fmt: str, entry: dict, spec: Spec, found: Findings,
                on_bytes) -> dict[str, np.ndarray] | None:
    """Read one shard whole; returns the fingerprints of its valid records (and their record
    numbers under "records") for the cross-format check, None if it could not be read."""
    path = entry["path"]
    if path not in output.files:
        return None
    hasher = HashingReader(open_read(output.resolve(path)))
    prints: dict[str, list] = {}
    records = 0
    try:
        source = hasher if fmt == "tfrecord" else None
        if fmt == "parquet":  # pyarrow seeks: hash in a pass of its own
            hasher.drain()
            on_bytes(hasher.bytes)
        for chunk in read_shard(output, fmt, path, hasher=source,
                                on_bytes=on_bytes if fmt == "tfrecord" else None):
            rows, problems = check_chunk(chunk, spec)
            for record, field, message in problems:
                found.add(path, record, field, message)
            for name, values in fingerprints(rows).items():
                prints.setdefault(name, []).append(values)
            prints.setdefault("records", []).append(rows.records)
            records = chunk.first + chunk.size
        hasher.drain()
    except ShardError as e:
        found.add(path, e.record, "", e.message)
        return None
    except Exception as e:  # damage no check foresaw is still a finding about this file
        found.add(path, None, "", f"cannot be read: {type(e).__name__}: {e}")
        return None
    finally:
        hasher.close()
    found.bytes_read += hasher.bytes
    if records != entry["instances"]:
        found.add(path, None, "", f"{records} records, the manifest says {entry['instances']}")
    if "sha256" in entry:
        digest = hasher.digest.hexdigest()
        if digest != entry["sha256"]:
            found.add(path, None, "", "sha256 differs from the manifest's" + (
                moved_from(output, path, digest) or " (the file changed after it was "
                                                    "written)"))
    elif "sha256 not recorded" not in " ".join(found.notes):
        found.notes.append("sha256 not recorded in this (older) manifest: contents checked, "
                           "checksums not compared")
    return {k: np.concatenate(v) for k, v in prints.items()}


def compare_formats(paths: tuple[str, str], prints: tuple[dict, dict], found: Findings) -> None:
    """Record by record, the TFRecord and Parquet shards of one index hold the same instances
    (records invalid in either are already reported)."""
    (a_path, b_path), (a, b) = paths, prints
    common, ia, ib = np.intersect1d(a["records"], b["records"], return_indices=True)
    differ = np.zeros(len(common), dtype=bool)
    fields = [n for n in a if n != "records"]
    for name in fields:
        differ |= a[name][ia] != b[name][ib]
    for k in np.flatnonzero(differ)[:KEPT_PER_FILE].tolist():
        names = [n for n in fields if a[n][ia[k]] != b[n][ib[k]]]
        found.add(b_path, int(common[k]), ", ".join(names), f"differs from record "
                                                            f"{int(common[k])} of {a_path}")


def check_index(output: Output, index: int, spec: Spec,
                on_bytes: Callable[[int], None] = lambda n: None) -> Findings:
    """Shard ``index`` of every format (binned output: at its length bin's lengths), and the
    two formats against each other."""
    found = Findings()
    prints = {}
    for fmt in output.formats:
        entries = output.shards(fmt)
        if index < len(entries):
            prints[fmt] = (entries[index]["path"],
                           check_shard(output, fmt, entries[index],
                                       shard_spec(output, fmt, index, spec), found, on_bytes))
    if len(prints) == 2 and all(p is not None for _, p in prints.values()):
        (pa, a), (pb, b) = prints["tfrecord"], prints["parquet"]
        compare_formats((pa, pb), (a, b), found)
    return found


def _check_index_job(job) -> Findings:
    """``check_index`` in a worker process."""
    return check_index(*job)


def verify(output: Output, *, workers: int = 1, filesystem_flags: Sequence[str] = (),
           quiet: bool = False) -> Findings:
    """Everything; shard indexes in ``workers`` processes (each reads one shard of each
    format at a time)."""
    found = Findings()
    check_manifest(output, found)
    spec = Spec.of(output)
    count = max((len(output.shards(f)) for f in output.formats), default=0)
    sizes = [sum(output.files.get(output.shards(f)[i]["path"], 0) for f in output.formats
                 if i < len(output.shards(f))) for i in range(count)]
    meter = progress.Progress(sum(sizes), emit=lambda line: print(
        f"verify: {line}", file=sys.stderr, flush=True))
    done = [0]

    def on_bytes(n: int) -> None:
        done[0] += n
        if not quiet:
            meter.update(done[0])

    if workers <= 1 or count <= 1:
        for index in range(count):
            found.merge(check_index(output, index, spec, on_bytes))
        return found
    context = multiprocessing.get_context("fork" if "fork" in
                                          multiprocessing.get_all_start_methods() else None)
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=cli.use_filesystem_flags,
            initargs=(list(filesystem_flags),)) as pool:
        jobs = [(output, index, spec) for index in range(count)]
        for index, result in enumerate(pool.map(_check_index_job, jobs)):
            found.merge(result)
            on_bytes(sizes[index])
    return found


def data_warnings(output: Output) -> list[str]:
    """stats.json's warnings about the data (files can be intact and the data still not what
    was meant: ``writers.manifest.data_warnings``); shown, not counted as problems."""
    try:
        return warning_messages(output.stats)
    except (ValueError, UnicodeDecodeError, OSError):
        return []  # a damaged stats.json is a problem verify reports on its own


def summary(output: Output, found: Findings, seconds: float) -> str:
    m = output.manifest
    counts = ", ".join(f"{len(output.shards(f))} {f}" for f in output.formats)
    if output.binned:
        counts += (f" shards in {len(output.bins)} length bins (" + ", ".join(
            f"{b.name}: {b.instances:,}" for b in output.bins) + " instances)")
    else:
        counts += " shards"
    rate = found.bytes_read / seconds / MB if seconds > 0 else 0.0
    return (f"OK: {output.root}: {counts}, {m['total_instances']:,} instances each "
            f"format, {megabytes(found.bytes_read)} read in {seconds:.1f} s "
            f"({rate:.1f} MB/s); files, sizes, sha256, CRCs, schema and every instance as the "
            f"manifest says" + ("; masking dynamic: word_starts checked, no masks stored"
                                if output.dynamic else "")
            + ("; every shard at its bin's lengths" if output.binned else "")
            + ("".join(f"; {n}" for n in found.notes)))


def report_problems(found: Findings, *, limit: int) -> str:
    lines = [f"FAILED: {found.count} problem{'s' if found.count != 1 else ''} in "
             f"{len(found.per_file)} file{'s' if len(found.per_file) != 1 else ''}:"]
    ordered = sorted(found.problems, key=lambda p: (p[0], -1 if p[1] is None else p[1]))
    for file, record, field, message in ordered[:limit]:
        where = file + (f", record {record}" if record is not None else "")
        lines.append(f"  {where}: " + (f"{field}: " if field else "") + message)
    if found.count > limit:
        lines.append(f"  ... and {found.count - limit} more; per file: " + ", ".join(
            f"{f} {n}" for f, n in sorted(found.per_file.items())))
    lines.extend(f"note: {n}" for n in found.notes)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.tool_parser("python -m pipeline.verify", __doc__.split("\n\n")[0])
    parser.add_argument("--max_problems", type=int, default=50,
                        help="problems listed in full (all are counted)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes reading shards in parallel (default: one per core)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args, rest = cli.parse_tool_args(parser, argv)
    console.setup(quiet=True)
    started = time.perf_counter()
    try:
        output = open_output(args.output_dir)
    except NotAnOutput as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    found = verify(output, workers=args.workers, filesystem_flags=rest, quiet=args.quiet)
    for warning in data_warnings(output):
        print(f"data warning (stats.json): {warning}")
    if found.count:
        print(report_problems(found, limit=args.max_problems))
        return 1
    print(summary(output, found, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
