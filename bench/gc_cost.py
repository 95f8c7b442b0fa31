"""What Python's garbage collector costs the job, with and without the workers' setting.

    python bench/gc_cost.py [--corpus pd] [--scale 1] [--pairs 2]
                            [--out bench/results/gc_cost.json]

Runs the job (DirectRunner in_memory, ``bench_pipeline.py``'s settings and command) in a
fresh process, alternately (ABBA) as it is and with ``pipeline.common.collector.tune`` made a no-op
(Python's defaults: a young collection every 700 container allocations, nothing frozen). A
``gc.callbacks`` hook times every collection with ``time.process_time``, split at the moment
the DoFns set the collector (before it: imports and pipeline construction, which the tuning
does not reach). Reports the collections per generation, their CPU seconds, the process's CPU
(user and system), page faults, peak RSS and the shards' digest (the same either way).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import bench_pipeline as bp  # noqa: E402  (bench/ is not a package)
import corpora  # noqa: E402

WORK = bp.WORK / "gc_cost"

# Runs in the job's process: times every collection, before and after the DoFns' set-up.
_PROBE = r"""
import gc, json, resource, runpy, sys, time
from pipeline.common import collector
untuned, report = sys.argv[1] == "untuned", sys.argv[2]
seen = {"before_setup": [0.0, [0, 0, 0]], "after_setup": [0.0, [0, 0, 0]]}
phase, started = ["before_setup"], [0.0]
def timer(what, info):
    if what == "start":
        started[0] = time.process_time()
    else:
        entry = seen[phase[0]]
        entry[0] += time.process_time() - started[0]
        entry[1][info["generation"]] += 1
gc.callbacks.append(timer)
tune = collector.tune
def setup_reached():
    phase[0] = "after_setup"
    return False if untuned else tune()
collector.tune = setup_reached
sys.argv = ["pipeline.run"] + sys.argv[3:]
try:
    runpy.run_module("pipeline.run", run_name="__main__", alter_sys=True)
except SystemExit as e:
    if e.code:
        raise
finally:
    with open(report, "w") as f:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        json.dump({"gc": seen, "process_cpu_s": time.process_time(), "user_s": usage.ru_utime,
                   "system_s": usage.ru_stime, "minor_faults": usage.ru_minflt,
                   "max_rss_mb": usage.ru_maxrss / 1024,
                   "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}, f)
"""


def run_once(mode: str, corpus_path: Path, vocab: Path, out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    job = bp.tool_command("ours-mem", corpus_path, vocab, out)
    report = out / "gc.json"
    subprocess.run([sys.executable, "-c", _PROBE, mode, str(report)] + job[3:], check=True,
                   capture_output=True)
    result = json.loads(report.read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    result["shards"] = [s["sha256"] for fmt in ("tfrecord", "parquet")
                        for s in manifest["shards"][fmt]]
    result["mode"] = mode
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="pd", choices=["pd", "reviews"])
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=bp.REPO / "bench" / "results" / "gc_cost.json")
    args = parser.parse_args(argv)
    corpus_path = corpora.corpus_file(args.corpus, scale=args.scale, quick=False)
    vocab = corpora.vocab_for(args.corpus)
    from pipeline.default_segmenter.cache import default_model_dir

    default_model_dir()  # built before anything is timed
    runs = []
    print(f"{'mode':8s} {'GC CPU s before set-up':>24s} {'GC CPU s after':>15s} "
          f"{'collections after (gen 0/1/2)':>30s} {'process CPU s':>14s} {'user':>7s} "
          f"{'system':>7s} {'faults':>8s} {'peak MB':>8s}")
    for pair in range(args.pairs):
        for mode in ("tuned", "untuned") if pair % 2 == 0 else ("untuned", "tuned"):
            r = run_once(mode, corpus_path, vocab, WORK / mode)
            runs.append(r)
            before, after = r["gc"]["before_setup"], r["gc"]["after_setup"]
            print(f"{mode:8s} {before[0]:24.2f} {after[0]:15.2f} "
                  f"{'/'.join(map(str, after[1])):>30s} {r['process_cpu_s']:14.2f} "
                  f"{r['user_s']:7.2f} {r['system_s']:7.2f} {r['minor_faults']:8d} "
                  f"{r['max_rss_mb']:8.0f}")
    same = len({json.dumps(r["shards"]) for r in runs}) == 1
    print(f"shards identical in every run: {same}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"corpus": args.corpus, "scale": args.scale,
                                    "input_mb": corpus_path.stat().st_size / 1e6,
                                    "runs": runs, "shards_identical": same}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
