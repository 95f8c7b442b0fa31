"""Are the shards a trainer is about to read the bytes the pipeline wrote?

The pipeline records every shard's size and sha256 in ``manifest.json``
(``pipeline.schema``). A shard replaced, truncated by a failed copy or rewritten after that
(another job writing into the same directory, a partial ``gsutil rsync``) trains without any
error: Parquet and TFRecord readers only notice damage they happen to decode. So both trainers
compare size and sha256 of each shard they will read before the first step, and refuse on a
difference (``trainer.run_setup.refuse_changed_data``); ``--skip_data_check`` skips it.

Cost: one sequential read of every shard, at startup (also at every resume). sha256 ran at
about 1.3 GB/s per core from page cache (``bench/bench_data_check.py``); files are hashed in
parallel threads, in blocks of ``BLOCK_SIZE`` so hashlib releases the GIL. This checks identity, not
content: ``python -m pipeline.verify`` also decodes every record.

Manifests written before sizes and digests were recorded: what is recorded is checked, and
``unchecked_notes`` says what is not. Framework-free; files are read through
``trainer.storage`` (local paths or URLs).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import time
from collections.abc import Sequence

from trainer import storage
from trainer.data_contract import DataSpec, shard_entries

BLOCK_SIZE = 4 << 20  # big enough that hashlib drops the GIL and remote reads stream
MAX_THREADS = 8
MAX_LISTED = 20  # problems named in a refusal; the rest are counted


@dataclasses.dataclass(frozen=True)
class Expected:
    """One shard as the manifest records it (``bytes`` / ``sha256`` None: not recorded)."""

    path: str
    data_dir: str
    bytes: int | None = None
    sha256: str | None = None


@dataclasses.dataclass
class Report:
    """What one process found: ``problems`` as (path, what differs); sizes in bytes.

    Plain data, so ranks can gather their reports (``torch.distributed.all_gather_object``).
    """

    problems: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    data_dirs: list[str] = dataclasses.field(default_factory=list)
    files: int = 0
    bytes_read: int = 0
    seconds: float = 0.0

    @staticmethod
    def merge(reports: Sequence["Report"]) -> "Report":
        """One report of several processes' (a problem found on several nodes counts once;
        seconds is the slowest process's, as they ran at the same time)."""
        out = Report()
        for r in reports:
            out.problems += [p for p in r.problems if p not in out.problems]
            out.data_dirs += [d for d in r.data_dirs if d not in out.data_dirs]
            out.files += r.files
            out.bytes_read += r.bytes_read
            out.seconds = max(out.seconds, r.seconds)
        return out

    def rate(self) -> float:
        """MB/s (1e6 bytes) over the check's wall time."""
        return self.bytes_read / self.seconds / 1e6 if self.seconds > 0 else 0.0


def expected_shards(spec: DataSpec, fmt: str) -> list[Expected]:
    """The ``fmt`` shards of ``spec`` in manifest order, with what the manifest records."""
    return [Expected(path=path, data_dir=spec.data_dir,
                     bytes=int(e["bytes"]) if e.get("bytes") is not None else None,
                     sha256=e.get("sha256") or None)
            for path, e in zip(spec.paths(fmt), shard_entries(spec.manifest, fmt))]


def unique(shards: Sequence[Expected]) -> list[Expected]:
    """``shards`` without repeats of a path (--eval_data_dir may be --data_dir), in order."""
    seen, out = set(), []
    for s in shards:
        if s.path not in seen:
            seen.add(s.path)
            out.append(s)
    return out


def unchecked_notes(shards: Sequence[Expected]) -> list[str]:
    """One line per data dir whose manifest lacks sizes or digests (written before they were
    recorded), saying what is not checked there; [] when everything is."""
    notes = []
    for data_dir in dict.fromkeys(s.data_dir for s in shards):
        mine = [s for s in shards if s.data_dir == data_dir]
        no_hash = sum(s.sha256 is None for s in mine)
        no_size = sum(s.bytes is None for s in mine)
        if not no_hash and not no_size:
            continue
        missing = [f"no sha256 for {no_hash} of {len(mine)} shards (contents not checked)"]
        if no_size:
            missing.append(f"no size for {no_size} (size not checked)")
        notes.append(f"{data_dir}: its manifest records {' and '.join(missing)}: written by a "
                     f"pipeline from before they were recorded? `python -m pipeline.verify "
                     f"--output_dir {data_dir}` reads those shards' records")
    return notes


def share(shards: Sequence[Expected], *, part: int, parts: int) -> list[Expected]:
    """This process's ``part`` of ``parts`` (every parts-th shard: shards are similar in size)."""
    if not 0 <= part < parts:
        raise ValueError(f"part must be in [0, {parts}), got {part}")
    return list(shards[part::parts])


def default_threads(processes: int = 1) -> int:
    """Hashing threads for one of ``processes`` processes sharing this machine's cores."""
    return max(1, min(MAX_THREADS, (os.cpu_count() or 1) // max(1, processes)))


def file_digest(path: str, *, block_size: int = BLOCK_SIZE) -> tuple[int, str]:
    """(size in bytes, sha256 hex digest) of ``path``, read once in ``block_size`` blocks."""
    digest, size = hashlib.sha256(), 0
    with storage.open_binary(path) as f:
        while True:
            block = f.read(block_size)
            if not block:
                break
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def difference(shard: Expected, size: int, sha256: str) -> str | None:
    """What differs between the file read and its manifest entry (None: nothing recorded
    does). A size difference is reported alone: the digest then differs too."""
    if shard.bytes is not None and size != shard.bytes:
        return f"{size} bytes, the manifest says {shard.bytes}"
    if shard.sha256 is not None and sha256 != shard.sha256:
        same = " (same size: rewritten or corrupted in place)" if shard.bytes is not None else ""
        return (f"sha256 {sha256[:16]}... differs from the manifest's "
                f"{shard.sha256[:16]}...{same}")
    return None


def _check_one(shard: Expected, block_size: int) -> tuple[int, str | None]:
    """(bytes read, what differs or None) of one shard; a file that cannot be read differs."""
    if shard.bytes is None and shard.sha256 is None:
        return 0, None  # nothing to compare with: unchecked_notes says so
    try:
        size, sha256 = file_digest(shard.path, block_size=block_size)
    except Exception as e:  # noqa: BLE001 -- any failure to read the shard refuses it
        # tf.io.gfile raises tf.errors.NotFoundError (not an OSError) for a missing URL
        if isinstance(e, FileNotFoundError) or type(e).__name__ == "NotFoundError":
            return 0, "missing"
        return 0, f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return size, difference(shard, size, sha256)


def check_files(shards: Sequence[Expected], *, threads: int = 1,
                block_size: int = BLOCK_SIZE) -> Report:
    """Read and hash every shard (``threads`` files at a time); problems in ``shards`` order."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(lambda s: _check_one(s, block_size), shards))
    report = Report(data_dirs=list(dict.fromkeys(s.data_dir for s in shards)),
                    files=len(shards), seconds=time.perf_counter() - start)
    for shard, (read, problem) in zip(shards, results):
        report.bytes_read += read
        if problem is not None:
            report.problems.append((shard.path, problem))
    return report


def refusal_message(report: Report, *, skip_flag: str = "--skip_data_check") -> str:
    """The refusal for a report with problems: each shard and what differs (the first
    ``MAX_LISTED``), then what to do."""
    lines = [f"{path}: {what}" for path, what in report.problems[:MAX_LISTED]]
    if len(report.problems) > MAX_LISTED:
        lines.append(f"... and {len(report.problems) - MAX_LISTED} more")
    dirs = [d for d in report.data_dirs
            if any(p.startswith(d.rstrip("/") + "/") for p, _ in report.problems)]
    verify = "; ".join(f"`python -m pipeline.verify --output_dir {d}`" for d in dirs)
    return (f"{len(report.problems)} shard(s) differ from what their manifest.json records "
            "(replaced, truncated or changed after the pipeline wrote it):\n  "
            + "\n  ".join(lines)
            + f"\ncheck the data with {verify}, then rewrite or recopy it; or pass {skip_flag} "
              "to train on it as it is")
