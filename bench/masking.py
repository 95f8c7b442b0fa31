"""Benchmark (not a test): what the masking recipes cost and give, on a real corpus.

    python -m bench.masking [--corpus pd] [--quick] [--work DIR]

1. Output bytes: static masking with dupe_factor 5 (Google's README) against dynamic masking
   (dupe_factor 1, no masks stored, ``word_starts`` instead), 128/20, both formats.
2. N-gram shares: MacBERT's weights (1-4 words at 40/30/20/10%) at 128/20 and 512/80: the
   share of masked spans of each length, from stats.json's ``masked_spans:N`` (static runs,
   dupe 1), and the masked tokens per instance against the unigram run.

Each job runs in this process on DirectRunner (one worker); prints one table per part.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench import corpora
from pipeline.run import run

MACBERT = ["--ngram_masking=1,2,3,4", "--ngram_weights=0.4,0.3,0.2,0.1"]


def job(corpus: Path, out: Path, *flags: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    manifest = run([f"--input={corpus}", f"--output_dir={out}", "--quiet", "--num_shards=4",
                    *flags])
    manifest["_seconds"] = time.perf_counter() - start
    with open(out / "stats.json", encoding="utf-8") as f:
        manifest["_counts"] = json.load(f)["counts"]
    return manifest


def shard_bytes(manifest: dict, fmt: str) -> int:
    return sum(s["bytes"] for s in manifest["shards"][fmt])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="pd", choices=corpora.CORPORA)
    parser.add_argument("--quick", action="store_true", help="the first ~200 KB only")
    parser.add_argument("--work", default=None, help="where outputs go (default: a temp dir)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_masking_"))
    corpus = corpora.corpus_file(args.corpus, quick=args.quick)
    vocab = f"--vocab_file={corpora.vocab_for(args.corpus)}"
    size = os.path.getsize(corpus)
    print(f"corpus {args.corpus}: {corpus} ({size / 1e6:.2f} MB), cpus={os.cpu_count()}")

    static = job(corpus, work / "static5", vocab, "--dupe_factor=5")
    dynamic = job(corpus, work / "dynamic1", vocab, "--masking=dynamic")
    print("\n1. Output bytes, 128/20")
    print("| run | instances | TFRecord MB | Parquet MB | job s |")
    print("|---|---:|---:|---:|---:|")
    for name, m in (("static, dupe 5", static), ("dynamic, dupe 1", dynamic)):
        print(f"| {name} | {m['total_instances']:,} | {shard_bytes(m, 'tfrecord') / 1e6:.2f} | "
              f"{shard_bytes(m, 'parquet') / 1e6:.2f} | {m['_seconds']:.1f} |")
    for fmt in ("tfrecord", "parquet"):
        print(f"dynamic/static bytes, {fmt}: "
              f"{shard_bytes(dynamic, fmt) / shard_bytes(static, fmt):.3f}")
    print(f"TFRecord bytes per input byte: static {shard_bytes(static, 'tfrecord') / size:.1f}x,"
          f" dynamic {shard_bytes(dynamic, 'tfrecord') / size:.1f}x")

    print("\n2. N-gram shares under MacBERT's weights (40/30/20/10), static, dupe 1")
    print("| length | run | 1 word | 2 | 3 | 4 | masked tokens / instance | unigram run |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for seq, pred in ((128, 20), (512, 80)):
        lengths = [f"--max_seq_length={seq}", f"--max_predictions_per_seq={pred}"]
        ngram = job(corpus, work / f"ngram{seq}", vocab, "--dupe_factor=1", *lengths, *MACBERT)
        unigram = job(corpus, work / f"unigram{seq}", vocab, "--dupe_factor=1", *lengths)
        counts = ngram["_counts"]
        spans = [counts.get(f"masked_spans:{n}", 0) for n in (1, 2, 3, 4)]
        shares = " | ".join(f"{100 * s / sum(spans):.1f}%" for s in spans)
        per = lambda c: c["masked_tokens"] / c["instances"]  # noqa: E731
        print(f"| {seq}/{pred} | {sum(spans):,} spans | {shares} | {per(counts):.2f} | "
              f"{per(unigram['_counts']):.2f} |")
    print(f"\noutputs under {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
