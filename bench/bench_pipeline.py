"""Throughput, CPU and memory of our pipeline vs Google's create_pretraining_data.py.

One command, same corpus and settings for every tool (max_seq_length 128,
max_predictions_per_seq 20, masked_lm_prob 0.15, dupe_factor 5, random_seed 12345)::

    python bench/bench_pipeline.py --corpus pd --quick           # smoke check, < 3 min
    python bench/bench_pipeline.py --corpus all --out bench/results/full.json
    python bench/bench_pipeline.py --corpus pd --quick --scale 1 10 --tools google ours-mem
    python bench/bench_pipeline.py --corpus pd --profile          # per-stage breakdown

Every tool runs as its own subprocess, so its wall time, CPU time (user+sys of the whole process
tree) and peak resident memory (sum over the tree, sampled every 50 ms from /proc) are its own.
Each tool also runs once on a tiny input (a few lines) to measure its fixed start-up cost, which
is subtracted to get the steady-state rate per core: input bytes / (CPU s - start-up CPU s).
See bench/README.md for every column.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
import corpora  # noqa: E402  (bench/ is not a package)

SETTINGS = dict(max_seq_length=128, max_predictions_per_seq=20, masked_lm_prob=0.15,
                dupe_factor=5, random_seed=12345)
MIN_STEADY_S = 3.0
TOOLS = ("google", "ours-mem", "ours-tfr", "ours-mp1", "ours-mp2", "floor-a", "floor-b")
TOOL_LABELS = {
    "google": "Google create_pretraining_data (1 proc, no WWM)",
    "ours-mem": "ours DirectRunner in_memory",
    "ours-tfr": "ours DirectRunner in_memory, TFRecord only",
    "ours-mp1": "ours DirectRunner multi_processing x1",
    "ours-mp2": "ours DirectRunner multi_processing x2",
    "floor-a": "floor: LTP + tokenizers, pre-split words",
    "floor-b": "floor: LTP spans + WordPiece offsets",
}
WORK = Path(os.environ.get("BENCH_WORK_DIR", "/tmp/bert_wwm_bench"))
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


# --- measuring a process tree ------------------------------------------------------------------

def _children_map():
    """pid → parent pid for every process (from /proc/*/stat)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                pass
    return parents


def _tree(root: int):
    parents = _children_map()
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid and p not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return tree


def _sample(pid: int):
    """(rss bytes, user+sys seconds) of one live process, or None."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            rss = int(f.read().split()[1]) * PAGE
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return rss, (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def _pss(pid: int):
    """Proportional set size in bytes of one live process (each shared page divided among the
    processes that map it), or None."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return None


class TreeSampler(threading.Thread):
    """Samples the RSS sum and per-process CPU of a process tree every ``interval`` seconds,
    and its PSS sum every ``pss_every`` samples (reading smaps_rollup walks a process's page
    tables: too costly at the RSS rate)."""

    def __init__(self, root: int, interval: float = 0.05, pss_every: int = 20):
        super().__init__(daemon=True)
        self.root, self.interval, self.pss_every = root, interval, pss_every
        self.peak_rss, self.peak_procs, self.peak_pss = 0, 0, 0
        self.cpu = {}  # pid -> last seen user+sys seconds
        self._halt = threading.Event()

    def run(self):
        tick = 0
        while not self._halt.is_set():
            total, n = 0, 0
            pids = _tree(self.root)
            for pid in pids:
                got = _sample(pid)
                if got:
                    total += got[0]
                    n += 1
                    self.cpu[pid] = got[1]
            if total > self.peak_rss:
                self.peak_rss, self.peak_procs = total, n
            if tick % self.pss_every == 0:
                pss = sum(filter(None, map(_pss, pids)))
                self.peak_pss = max(self.peak_pss, pss)
            tick += 1
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()


def measure(cmd, *, log: Path, env=None) -> dict:
    """Run ``cmd``; wall s, CPU s of the tree, peak tree RSS, load averages around it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env=env or os.environ.copy())
        sampler = TreeSampler(proc.pid)
        sampler.start()
        rc = proc.wait()
    wall = time.perf_counter() - start
    sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # RUSAGE_CHILDREN counts every descendant that was waited for (Beam reaps its workers);
    # the /proc samples cover any that were not. The larger is the better lower bound.
    cpu_rusage = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu_sampled = sum(sampler.cpu.values())
    if rc != 0:
        tail = log.read_bytes()[-3000:].decode("utf-8", "replace")
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed (rc={rc}):\n{tail}")
    return {"wall_s": wall, "cpu_s": max(cpu_rusage, cpu_sampled), "cpu_rusage_s": cpu_rusage,
            "cpu_sampled_s": cpu_sampled, "peak_rss_mb": sampler.peak_rss / 2**20,
            "peak_pss_mb": sampler.peak_pss / 2**20,
            "peak_procs": sampler.peak_procs, "load_before": load_before,
            "load_after": os.getloadavg()}


# --- the tools ---------------------------------------------------------------------------------

def count_tfrecords(path: Path) -> int:
    """Records in an uncompressed TFRecord file (reads only the length headers)."""
    n = 0
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if len(header) < 12:
                return n
            (length,) = struct.unpack("<Q", header[:8])
            f.seek(length + 4, os.SEEK_CUR)
            n += 1


def tool_command(tool: str, corpus_path: Path, vocab: Path, out: Path):
    py = sys.executable
    if tool == "google":
        return [py, str(BENCH / "run_google.py"), f"--input_file={corpus_path}",
                f"--output_file={out / 'google.tfrecord'}", f"--vocab_file={vocab}",
                "--do_lower_case=True"] + [f"--{k}={v}" for k, v in SETTINGS.items()]
    if tool.startswith("ours"):
        mode = {"ours-mem": ["--direct_running_mode=in_memory"],
                "ours-tfr": ["--direct_running_mode=in_memory"],
                "ours-mp1": ["--direct_running_mode=multi_processing", "--direct_num_workers=1"],
                "ours-mp2": ["--direct_running_mode=multi_processing",
                             "--direct_num_workers=2"]}[tool]
        return [py, "-m", "pipeline.run", "--runner=DirectRunner", f"--input={corpus_path}",
                f"--output_dir={out}", f"--vocab_file={vocab}", "--do_lower_case=true",
                "--output_formats=" + ("tfrecord" if tool == "ours-tfr" else "tfrecord,parquet"),
                "--overwrite"] + mode + \
            [f"--{k}={v}" for k, v in SETTINGS.items()]
    if tool.startswith("floor"):
        return [py, str(Path(__file__).resolve()), "_floor", tool[-1], str(corpus_path),
                str(vocab), str(out / "floor.json")]
    raise ValueError(tool)


def instances_made(tool: str, out: Path):
    if tool == "google":
        return count_tfrecords(out / "google.tfrecord")
    if tool.startswith("ours"):
        return json.loads((out / "manifest.json").read_text())["total_instances"]
    return None


def run_tool(tool: str, corpus_path: Path, vocab: Path, tag: str) -> dict:
    out = WORK / "out" / f"{tag}-{tool}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    result = measure(tool_command(tool, corpus_path, vocab, out), log=out / "log.txt")
    result["instances"] = instances_made(tool, out)
    if tool.startswith("floor"):
        result.update(json.loads((out / "floor.json").read_text()))
    return result


def floor_main(way: str, corpus_path: str, vocab_path: str, out: str) -> None:
    """LTP legacy segmentation + tokenizers WordPiece alone, on the corpus's sentences.

    a: LTP words → ``encode_batch(words, is_pretokenized=True)`` → ``word_ids``.
    b: whole sentences → ``LtpSegmenter.word_bounds`` + ``WordPieceTokenizer.encode`` (offsets).
    """
    from pipeline.core.segment import LtpSegmenter
    from pipeline.core.text import has_cjk, iter_documents
    from pipeline.core.wordpiece import WordPieceTokenizer, read_vocab

    with open(vocab_path, encoding="utf-8") as f:
        tokenizer = WordPieceTokenizer(read_vocab(f.read()))
    from pipeline.default_segmenter.cache import default_model_dir

    segmenter = LtpSegmenter(str(default_model_dir()), parallelism=False)  # as the job runs it
    from pipeline.common import collector

    collector.tune()  # Python's garbage collector as the job's workers set it
    stats = Counter()
    with open(corpus_path, "rb") as f:
        sentences = [s for _, doc in iter_documents(f, source=corpus_path, input_format="google",
                                                    max_sentence_chars=500, stats=stats)
                     for s in doc]
    tokens = 0
    for b in range(0, len(sentences), 1024):
        batch = sentences[b:b + 1024]
        if way == "a":
            words = _ltp_words(segmenter, batch, has_cjk)
            encodings = tokenizer._tok.encode_batch(words, is_pretokenized=True,
                                                    add_special_tokens=False)
            tokens += sum(len(e.ids) for e in encodings if e.word_ids is not None)
        else:
            encoded = tokenizer.encode(batch, segmenter.word_bounds(batch))
            tokens += sum(len(e.ids) for e in encoded)
    with open(out, "w") as f:
        json.dump({"sentences": len(sentences), "tokens": tokens}, f)


def _ltp_words(segmenter, batch, has_cjk):
    cjk = [i for i, s in enumerate(batch) if has_cjk(s)]
    words = [s.split() for s in batch]
    found = segmenter._predict([batch[i] for i in cjk]) if cjk else []
    for i, w in zip(cjk, found):
        words[i] = [p for word in w for p in str(word).split()] or batch[i].split()
    return [w or [s] for w, s in zip(words, batch)]


# --- the benchmark -----------------------------------------------------------------------------

def load_str(load) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def bench_corpus(corpus: str, scale: int, quick: bool, tools, startup: dict) -> list:
    path = corpora.corpus_file(corpus, scale=scale, quick=quick)
    vocab = corpora.vocab_for(corpus)
    size = path.stat().st_size
    tag = f"{corpus}{'-quick' if quick else ''}-x{scale}"
    rows = []
    for tool in tools:
        key = (tool, corpus)
        if key not in startup:
            tiny = corpora.tiny_file(corpus)
            print(f"[{time.strftime('%H:%M:%S')}] start-up: {tool} on {tiny.name}", flush=True)
            startup[key] = run_tool(tool, tiny, vocab, f"{corpus}-tiny")
            startup[key]["input_bytes"] = tiny.stat().st_size
        print(f"[{time.strftime('%H:%M:%S')}] {tool} on {tag} ({size / 1e6:.2f} MB), "
              f"load {load_str(os.getloadavg())}", flush=True)
        r = run_tool(tool, path, vocab, tag)
        s = startup[key]
        steady_cpu, steady_wall = r["cpu_s"] - s["cpu_s"], r["wall_s"] - s["wall_s"]
        # Start-up varies by a second or more between runs: below MIN_STEADY_S of real work
        # a rate would be noise (use a larger --scale for such a corpus).
        timeable = min(steady_cpu, steady_wall) >= MIN_STEADY_S
        r.update(tool=tool, corpus=corpus, scale=scale, quick=quick, input_bytes=size,
                 startup_wall_s=s["wall_s"], startup_cpu_s=s["cpu_s"],
                 startup_peak_rss_mb=s["peak_rss_mb"], steady_cpu_s=steady_cpu,
                 steady_wall_s=steady_wall,
                 mb_per_s_per_core=size / 1e6 / steady_cpu if timeable else None,
                 mb_per_s_wall=size / 1e6 / steady_wall if timeable else None,
                 instances_per_s=(r["instances"] / steady_wall) if r["instances"] and timeable
                 else None)
        rows.append(r)
    google = next((r for r in rows if r["tool"] == "google"), None)
    for r in rows:
        if google:
            if r["mb_per_s_per_core"] and google["mb_per_s_per_core"]:
                r["per_core_vs_google"] = r["mb_per_s_per_core"] / google["mb_per_s_per_core"]
            r["wall_vs_google"] = google["wall_s"] / r["wall_s"]
    return rows


def print_table(rows) -> None:
    head = (f"{'tool':<9} {'corpus':<14} {'MB':>6} {'wall s':>7} {'CPU s':>7} {'RSS MB':>7} "
            f"{'PSS MB':>7} "
            f"{'st.wall':>7} {'st.CPU':>6} {'MB/s/core':>9} {'inst':>7} {'inst/s':>7} "
            f"{'xG core':>7} {'xG wall':>7}  load before→after")
    print(head)
    print("-" * len(head))
    for r in rows:
        name = f"{r['corpus']}{'-q' if r['quick'] else ''}-x{r['scale']}"
        inst = r["instances"] if r["instances"] is not None else "-"
        ips = f"{r['instances_per_s']:.0f}" if r.get("instances_per_s") else "-"
        xc = f"{r['per_core_vs_google']:.2f}" if "per_core_vs_google" in r else "-"
        xw = f"{r['wall_vs_google']:.2f}" if "wall_vs_google" in r else "-"
        rate = f"{r['mb_per_s_per_core']:.3f}" if r["mb_per_s_per_core"] else "too small"
        print(f"{r['tool']:<9} {name:<14} {r['input_bytes'] / 1e6:>6.2f} {r['wall_s']:>7.1f} "
              f"{r['cpu_s']:>7.1f} {r['peak_rss_mb']:>7.0f} {r['peak_pss_mb']:>7.0f} "
              f"{r['startup_wall_s']:>7.1f} "
              f"{r['startup_cpu_s']:>6.1f} {rate:>9} {inst:>7} {ips:>7} "
              f"{xc:>7} {xw:>7}  {load_str(r['load_before'])} → {load_str(r['load_after'])}")


def targets(rows) -> list:
    """The project's targets, evaluated on what was measured (reported, never asserted)."""
    lines = []
    label = lambda corpus, scale, quick: f"{corpus}{'-quick' if quick else ''} x{scale}"  # noqa
    by = {(r["tool"], r["corpus"], r["scale"], r["quick"]): r for r in rows}
    for (tool, corpus, scale, quick), r in sorted(by.items()):
        if tool == "ours-mem" and corpus != "english" and "per_core_vs_google" in r:
            ok = r["per_core_vs_google"] >= 2.5
            lines.append(f"{label(corpus, scale, quick)}: ours per-core / Google per-core = "
                         f"{r['per_core_vs_google']:.2f} (target >= 2.5: "
                         f"{'met' if ok else 'NOT met'})")
        floor = by.get(("floor-b", corpus, scale, quick))
        if (tool in ("ours-mem", "ours-tfr") and floor and r["mb_per_s_per_core"]
                and floor["mb_per_s_per_core"]):
            ratio = floor["mb_per_s_per_core"] / r["mb_per_s_per_core"]
            lines.append(f"{label(corpus, scale, quick)}: {tool} CPU per MB / floor-b's = "
                         f"{ratio:.2f} (target <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'})")
        if tool == "ours-mem" and r["mb_per_s_per_core"] is None:
            lines.append(f"{label(corpus, scale, quick)}: under {MIN_STEADY_S:.0f} s of work "
                         f"after start-up: too small to time (use a larger --scale)")
        if (tool == "ours-mp2" and ("ours-mp1", corpus, scale, quick) in by
                and r["mb_per_s_wall"] and by[("ours-mp1", corpus, scale, quick)]["mb_per_s_wall"]):
            one = by[("ours-mp1", corpus, scale, quick)]
            speedup = (one["wall_s"] - one["startup_wall_s"]) / max(
                r["wall_s"] - r["startup_wall_s"], 1e-9)
            met = "met" if speedup >= 1.7 else "NOT met"
            lines.append(f"{label(corpus, scale, quick)}: 2 workers vs 1 worker steady wall "
                         f"speed-up = {speedup:.2f} (target >= 1.7: {met})")
    for (tool, corpus, scale, quick), r in sorted(by.items()):
        if scale != 1 and (tool, corpus, 1, quick) in by:
            base = by[(tool, corpus, 1, quick)]["peak_rss_mb"]
            ratio = r["peak_rss_mb"] / base
            note = ""
            if tool.startswith("ours"):
                note = f" (target < 1.5: {'met' if ratio < 1.5 else 'NOT met'})"
            lines.append(f"{corpus}{'-quick' if quick else ''} peak RSS x{scale}/x1, {tool}: "
                         f"{r['peak_rss_mb']:.0f} / {base:.0f} MB = {ratio:.2f}{note}")
    return lines


# --- per-stage profile -------------------------------------------------------------------------

class Stage:
    def __init__(self, name, table):
        self.name, self.table = name, table

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.table.append((self.name, time.perf_counter() - self.wall,
                           time.process_time() - self.cpu))


class _TimedSegmenter:
    """The segmenter with its time counted: LTP's share of the tokenize step."""

    def __init__(self, segmenter):
        self._segmenter, self.wall, self.cpu = segmenter, 0.0, 0.0

    @property
    def stats(self):
        return self._segmenter.stats

    def word_bounds(self, texts):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return self._segmenter.word_bounds(texts)
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu


def profile(corpus: str, scale: int, quick: bool) -> dict:
    """The job's core steps (``pipeline.core.ranges``, the writers) called one by one in this
    process, timed separately; then the full in_memory run."""
    import io

    import numpy as np
    import pyarrow.parquet as pq

    from pipeline.beam.pieces import encode_piece, read_blocks
    from pipeline.common import collector
    from pipeline.core.instance import InstanceBatch, InstanceConfig
    from pipeline.core.ranges import (
        RangeConfig,
        make_instances,
        plan_ranges,
        range_key,
        read_range_documents,
        tokenize_documents,
    )
    from pipeline.core.segment import LtpSegmenter
    from pipeline.core.wordpiece import WordPieceTokenizer, read_vocab
    from pipeline.default_segmenter.cache import default_model_dir
    from pipeline.writers.parquet import batch_to_table
    from pipeline.writers.tfrecord import framed_batch

    path = corpora.corpus_file(corpus, scale=scale, quick=quick)
    vocab_list = read_vocab(corpora.vocab_for(corpus).read_text(encoding="utf-8"))
    table, stats = [], Counter()
    with Stage("load models (not in the sum)", []):
        tokenizer = WordPieceTokenizer(vocab_list)
        # as the pipeline runs it: single-threaded
        segmenter = _TimedSegmenter(LtpSegmenter(str(default_model_dir()), parallelism=False))
        collector.tune()  # the garbage collector as the job's workers set it
    config = RangeConfig(
        instance=InstanceConfig(
            max_seq_length=128, max_predictions_per_seq=20, masked_lm_prob=0.15,
            vocab_size=len(vocab_list), cls_id=vocab_list.index("[CLS]"),
            sep_id=vocab_list.index("[SEP]"), mask_id=vocab_list.index("[MASK]")),
        dupe_factor=SETTINGS["dupe_factor"], seed=SETTINGS["random_seed"])
    with Stage("plan ranges", table):
        with open(path, "rb") as f:
            ranges = plan_ranges(f, path=str(path), size=path.stat().st_size,
                                 input_format="google", range_bytes=1_000_000)
    source = path.name  # as the job names a lone input file
    docs_per_range, made = [], []
    with Stage("read/clean/split", table):
        for start, end in ranges:
            with open(path, "rb") as f:
                docs_per_range.append(list(read_range_documents(
                    f, path=str(path), source=source, start=start, end=end, config=config,
                    stats=stats)))
    tokenized = []
    with Stage("LTP + WordPiece (tokenize_documents)", table) as both:
        for docs in docs_per_range:
            tokenized.append(list(tokenize_documents(
                docs, tokenizer=tokenizer, segmenter=segmenter,
                batch_size=config.tokenize_batch_size, stats=stats)))
    table.pop()  # split into its two parts
    table.append(("LTP segmentation (word_bounds)", segmenter.wall, segmenter.cpu))
    table.append(("WordPiece + word flags (encode)", time.perf_counter() - both.wall
                  - segmenter.wall, time.process_time() - both.cpu - segmenter.cpu))
    with Stage("instances + masking (vectorized, per range)", table):
        for (start, _), docs in zip(ranges, tokenized):
            made.append(make_instances(docs, config=config, key=range_key(source, start),
                                       stats=stats))
    shards = 4
    with Stage("piece files: encode + read back", table):
        blobs = [encode_piece(batch, shards) for batch in made]
        parts = [[b for data, classes in blobs  # one length bin: classes[0]
                  for b in read_blocks(io.BytesIO(data), classes[0][s])] for s in range(shards)]
    with Stage("shard interleave (random merge)", table):
        parts = [InstanceBatch.concat(p) for p in parts]
        parts = [p.take(np.random.default_rng(s).permutation(len(p))) for s, p in enumerate(parts)]
    with Stage("TFRecord (framed_batch)", table):
        records = [framed_batch(part, 128, 20) for part in parts]
    with Stage("Parquet (batch_to_table + write)", table):
        for part in parts:
            sink = io.BytesIO()
            pq.write_table(batch_to_table(part), sink, compression="snappy")
    docs = [d for docs in docs_per_range for d in docs]
    instances = made
    del records
    out = WORK / "out" / f"profile-{corpus}"
    argv = [f"--input={path}", f"--output_dir={out}", "--overwrite", "--runner=DirectRunner",
            "--direct_running_mode=in_memory", f"--vocab_file={corpora.vocab_for(corpus)}",
            "--output_formats=tfrecord,parquet"] + [f"--{k}={v}" for k, v in SETTINGS.items()]
    from pipeline.run import run

    full = []
    with Stage("full DirectRunner in_memory run", full):
        manifest = run(argv)
    stage_wall = sum(w for _, w, _ in table)
    stage_cpu = sum(c for _, _, c in table)
    overhead = ("Beam overhead (full run - sum of stages)", full[0][1] - stage_wall,
                full[0][2] - stage_cpu)
    return {"corpus": corpus, "scale": scale, "quick": quick, "input_bytes": path.stat().st_size,
            "documents": len(docs), "instances_profile": sum(map(len, instances)),
            "instances_pipeline": manifest["total_instances"],
            "stages": [dict(stage=n, wall_s=w, cpu_s=c) for n, w, c in table + [overhead]],
            "full_run": dict(wall_s=full[0][1], cpu_s=full[0][2]),
            "load_after": os.getloadavg()}


def print_profile(p: dict) -> None:
    total_w, total_c = p["full_run"]["wall_s"], p["full_run"]["cpu_s"]
    print(f"\nper-stage profile: {p['corpus']}{'-quick' if p['quick'] else ''} x{p['scale']}, "
          f"{p['input_bytes'] / 1e6:.2f} MB, {p['documents']} docs, {p['instances_profile']} "
          f"instances (pipeline: {p['instances_pipeline']}); load after "
          f"{load_str(p['load_after'])}")
    print(f"{'stage':<45} {'wall s':>8} {'share':>6} {'CPU s':>8} {'share':>6}")
    for s in p["stages"]:
        print(f"{s['stage']:<45} {s['wall_s']:>8.2f} {s['wall_s'] / total_w:>6.1%} "
              f"{s['cpu_s']:>8.2f} {s['cpu_s'] / total_c:>6.1%}")
    print(f"{'= full DirectRunner in_memory run':<45} {total_w:>8.2f} {1:>6.0%} "
          f"{total_c:>8.2f} {1:>6.0%}")


def code_version() -> str:
    """sha256 over pipeline/**/*.py: which code a result was measured on (it changes often)."""
    import hashlib

    digest = hashlib.sha256()
    for f in sorted((REPO / "pipeline").rglob("*.py")):
        digest.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


# --- entry point -------------------------------------------------------------------------------

def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_floor":
        floor_main(*argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="pd", choices=corpora.CORPORA + ("all",))
    parser.add_argument("--scale", type=int, nargs="+", default=[1])
    parser.add_argument("--quick", action="store_true", help="a ~200 KB slice of each corpus")
    parser.add_argument("--tools", nargs="+", choices=TOOLS,
                        default=[t for t in TOOLS if t != "ours-tfr"])
    parser.add_argument("--profile", action="store_true", help="per-stage breakdown instead")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    args = parser.parse_args(argv)
    names = corpora.CORPORA if args.corpus == "all" else (args.corpus,)
    from pipeline.default_segmenter.cache import default_model_dir

    model = default_model_dir()  # built (trained, ~30 s) before anything is timed
    meta = {"settings": SETTINGS, "code_sha256": code_version(),
            "python": sys.version.split()[0], "cpus": os.cpu_count(),
            "machine": platform.platform(), "ltp_model": str(model),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_start": os.getloadavg()}
    result = {"meta": meta}
    if args.profile:
        result["profiles"] = []
        for name in names:
            for scale in args.scale:
                p = profile(name, scale, args.quick)
                print_profile(p)
                result["profiles"].append(p)
    else:
        rows, startup = [], {}
        for name in names:
            for scale in args.scale:
                rows.extend(bench_corpus(name, scale, args.quick, args.tools, startup))
        print()
        print_table(rows)
        print()
        for line in targets(rows):
            print(line)
        result.update(rows=rows, startup={f"{t}/{c}": v for (t, c), v in startup.items()},
                      targets=targets(rows))
    meta["load_end"] = os.getloadavg()
    print(f"\nload averages (1/5/15 min): start {load_str(meta['load_start'])}, "
          f"end {load_str(meta['load_end'])}; {os.cpu_count()} CPUs; "
          f"pipeline code {meta['code_sha256']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
