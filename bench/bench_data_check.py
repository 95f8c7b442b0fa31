"""Benchmark (not a test): what the trainers' data check costs before the first step.

    python -m bench.bench_data_check [--mb 1024] [--files 16] [--threads 1 2] [--dir DIR]

Writes ``--files`` shard-like files of ``--mb`` MB in all (random bytes: sha256 costs the same
on any content), records their size and sha256 as a manifest would, then times
``trainer.data_check.check_files`` (size + sha256 of every file, ``BLOCK_SIZE`` reads) with
each thread count, best of ``--repeats``. The files were just written, so they are read from
the page cache: this is the hashing cost, the floor of a check; a cold disk or a bucket adds
its read time. Report the numbers with the command, ``nproc`` and the load average (other
processes on the machine slow it).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from trainer import data_check

CHUNK = 1 << 20


def make_files(directory: str, *, total_mb: int, files: int) -> list:
    """``files`` files of total_mb/files MB each; their manifest entries (``Expected``)."""
    block = os.urandom(CHUNK)
    per_file = max(1, total_mb // files)
    shards = []
    for i in range(files):
        path = os.path.join(directory, f"part-{i:05d}-of-{files:05d}.parquet")
        with open(path, "wb") as f:
            for j in range(per_file):
                f.write(bytes([i, j % 256]) + block[2:])  # no two chunks alike
        size, sha256 = data_check.file_digest(path)
        shards.append(data_check.Expected(path=path, data_dir=directory, bytes=size,
                                          sha256=sha256))
    return shards


def time_check(shards: list, *, threads: int, block_size: int, repeats: int) -> float:
    """Best wall seconds of ``repeats`` checks (a check that finds a problem is an error)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        report = data_check.check_files(shards, threads=threads, block_size=block_size)
        best = min(best, time.perf_counter() - start)
        if report.problems:
            raise RuntimeError(f"unexpected problems: {report.problems}")
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=1024, help="MB of files in all")
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--block_mb", type=float, default=data_check.BLOCK_SIZE / CHUNK)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", help="where to write the files (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        shards = make_files(directory, total_mb=args.mb, files=args.files)
        total = sum(s.bytes for s in shards)
        print(f"{len(shards)} files, {total / 1e6:.0f} MB, block {args.block_mb:g} MiB, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        for threads in args.threads:
            seconds = time_check(shards, threads=threads, block_size=int(args.block_mb * CHUNK),
                                 repeats=args.repeats)
            print(f"threads {threads}: {seconds:.2f} s, {total / seconds / 1e6:.0f} MB/s")


if __name__ == "__main__":
    main()
