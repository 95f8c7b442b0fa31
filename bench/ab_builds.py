"""Two builds of this repository side by side: is one slower? (Not a test.)

    python bench/ab_builds.py A B [--repeats 3] [--scale 10] [--mode in_memory]

Checks out each commit (or ``WORKTREE`` for the working tree) into a git worktree under the
bench work directory and runs the job from there (``python -m pipeline.run`` with the worktree
first on the path) on the same corpus, alternating A, B, A, B, ... so that a machine that
drifts over the runs drifts for both. Corpus and settings as ``bench_pipeline.py``: People's
Daily 1998-01 ``--scale`` times (10: 56 MB), 128/20/0.15, dupe_factor 5, both formats; the
built-in LTP model of this build, given to both as ``--ltp_model`` (an older build may train
its own differently); one process (DirectRunner in_memory) by default. Each run's wall and CPU
seconds (every process of the job) and a digest of its shards' sha256, which must be the same
for both builds when the output is meant to be unchanged. Writes
``bench/results/ab_builds.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import bench_pipeline as bp  # noqa: E402  (bench/ is not a package)
import corpora  # noqa: E402

REPO = BENCH.parent
WORK = bp.WORK / "ab_builds"
MODES = {"in_memory": ["--direct_running_mode=in_memory"],
         "mp2": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]}


def worktree(ref: str) -> tuple[Path, str]:
    """(directory, commit) of ``ref`` checked out under WORK; the working tree as is for
    ``WORKTREE``."""
    if ref == "WORKTREE":
        return REPO, "WORKTREE"
    commit = subprocess.run(["git", "rev-parse", ref], cwd=REPO, check=True, text=True,
                            capture_output=True).stdout.strip()
    path = WORK / commit[:12]
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=REPO,
                       check=True, capture_output=True)
    return path, commit


def shards_digest(out: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(out.rglob("part-*")):
        h.update(path.relative_to(out).as_posix().encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def run_once(tree: Path, corpus: Path, out: Path, mode: str, model: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline.run", "--runner=DirectRunner", f"--input={corpus}",
           f"--output_dir={out}", f"--vocab_file={corpora.vocab_for('pd')}",
           "--do_lower_case=true", "--output_formats=tfrecord,parquet", f"--ltp_model={model}",
           *MODES[mode]] + [f"--{k}={v}" for k, v in bp.SETTINGS.items()]
    env = dict(os.environ, PYTHONPATH=str(tree))
    probe = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"],
                           cwd=tree, env=env, check=True, text=True, capture_output=True)
    if not probe.stdout.strip().startswith(str(tree)):
        raise RuntimeError(f"{tree}: imports {probe.stdout.strip()}, not its own code")
    out.mkdir(parents=True, exist_ok=True)
    result = bp.measure(cmd, log=out.parent / f"{out.name}.log", env=env)
    result["shards"] = shards_digest(out)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("builds", nargs=2, help="two commits (or WORKTREE)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--mode", choices=sorted(MODES), default="in_memory")
    args = parser.parse_args(argv)
    corpus = corpora.corpus_file("pd", scale=args.scale)
    trees = [worktree(ref) for ref in args.builds]
    # One LTP model for both (this build's built-in one, built here if needed): an older
    # build may train its own differently.
    from pipeline.default_segmenter.cache import default_model_dir

    model = str(default_model_dir())
    print(f"corpus {corpus} ({corpus.stat().st_size / 1e6:.1f} MB); builds "
          + ", ".join(f"{ref} = {commit[:12]}" for ref, (_, commit) in zip(args.builds, trees)))
    runs: dict[str, list[dict]] = {ref: [] for ref in args.builds}
    for repeat in range(args.repeats):
        for ref, (tree, _) in zip(args.builds, trees):
            got = run_once(tree, corpus, WORK / "out" / ref.replace("/", "_"), args.mode, model)
            runs[ref].append(got)
            print(f"#{repeat + 1} {ref}: {got['wall_s']:.1f} s wall, {got['cpu_s']:.1f} CPU s, "
                  f"load {got['load_before'][0]:.2f}, shards {got['shards']}", flush=True)
    a, b = args.builds
    pairs = [rb["cpu_s"] / ra["cpu_s"] for ra, rb in zip(runs[a], runs[b])]
    summary = {"corpus_mb": corpus.stat().st_size / 1e6, "mode": args.mode,
               "commits": {ref: commit for ref, (_, commit) in zip(args.builds, trees)},
               "runs": runs, "cpu_ratio_b_over_a_per_pair": pairs,
               "median_ratio": statistics.median(pairs),
               "same_shards": len({r["shards"] for rs in runs.values() for r in rs}) == 1}
    print(f"CPU {b}/{a} per pair: " + ", ".join(f"{p:.3f}" for p in pairs)
          + f"; median {summary['median_ratio']:.3f}; same shards: {summary['same_shards']}")
    out = BENCH / "results" / "ab_builds.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
