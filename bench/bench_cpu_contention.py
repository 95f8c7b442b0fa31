"""Benchmark (not a test): both trainers' examples/s on the CPU smoke run, on a quiet CPU and
with busy processes competing for it.

    python -m bench.bench_cpu_contention --data_dir output [--busy 4] [--trainers tf,torch]
        [--repo DIR] [--env OMP_WAIT_POLICY=ACTIVE] [--out bench/results/contention.json]

--data_dir: a pipeline output dir with both shard formats, e.g. the default job's
(``python -m pipeline.run --runner=DirectRunner --output_dir output``). Each measurement runs a
trainer's CLI as a user does (``trainer/train_tpu.py`` / ``trainer/train_torch.py`` of --repo:
this checkout, or e.g. ``git archive COMMIT | tar -x -C DIR`` to measure an older version) with
``configs/model/bert-tiny.yaml``, ``configs/train/cpu-smoke.yaml``, batch 32 and
``--stop_at_step`` (default 16, log_every 4), once with no extra load and once with --busy
``while True: pass`` processes started before the trainer and killed after it (each also ends
itself after --timeout seconds). examples/s is read from the run's metrics.jsonl: the train
windows after the first (which holds start-up and TF's tracing), examples over seconds.

What else runs matters: each line reports the 1-minute load average at the start and end and
the mean number of runnable tasks (/proc/loadavg's 4th field, sampled every second during the
run; it counts the sampler itself). Keep the machine otherwise idle, or say what ran.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"tf": "trainer/train_tpu.py", "torch": "trainer/train_torch.py"}
BUSY_LOOP = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"


def read_loadavg() -> tuple:
    """(1-minute load average, runnable tasks now) from /proc/loadavg."""
    with open("/proc/loadavg", encoding="ascii") as f:
        fields = f.read().split()
    return float(fields[0]), int(fields[3].split("/")[0])


class LoadSampler:
    """Runnable-task counts every ``period`` seconds while it runs, in a thread."""

    def __init__(self, period: float = 1.0):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append(read_loadavg()[1])

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def start_busy(count: int, seconds: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-S", "-c", BUSY_LOOP.format(seconds=seconds)])
            for _ in range(count)]


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def steady_rate(metrics_path: str) -> tuple:
    """(examples/s over the train windows after the first, windows used) from metrics.jsonl."""
    if not os.path.exists(metrics_path):
        return None, 0
    with open(metrics_path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    windows = [x for x in lines if x["split"] == "train"][1:]
    if not windows:
        return None, 0
    seconds = sum(x["examples"] / x["examples_per_sec"] for x in windows)
    return sum(x["examples"] for x in windows) / seconds, len(windows)


def measure(trainer: str, *, repo: str, data_dir: str, busy: int, args, work: str,
            env: dict[str, str]) -> dict:
    out = os.path.join(work, f"{trainer}-busy{busy}")
    cmd = [sys.executable, SCRIPTS[trainer], "--data_dir", data_dir,
           "--model_config", "configs/model/bert-tiny.yaml",
           "--train_config", "configs/train/cpu-smoke.yaml", "--output_dir", out,
           "--overwrite", "--skip_data_check", "--batch_size", str(args.batch_size),
           "--stop_at_step", str(args.steps), "--log_every", str(args.log_every),
           *args.extra.split()]
    load_start = read_loadavg()[0]
    hogs = start_busy(busy, args.timeout + 30)
    try:
        time.sleep(1.0 if busy else 0.0)  # let the busy loops take the CPUs first
        with LoadSampler() as sampler:
            start = time.perf_counter()
            try:
                proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True,
                                      timeout=args.timeout)
                status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
                tail = proc.stderr[-2000:] if proc.returncode else ""
            except subprocess.TimeoutExpired:  # the windows written so far still count
                status, tail = f"timeout {args.timeout}s", ""
            wall = time.perf_counter() - start
    finally:
        stop(hogs)
    rate, windows = steady_rate(os.path.join(out, "metrics.jsonl"))
    return {"trainer": trainer, "busy": busy, "examples_per_sec": rate, "windows": windows,
            "wall_s": wall, "load_start": load_start, "load_end": read_loadavg()[0],
            "runnable_mean": sampler.mean(), "status": status, "stderr_tail": tail}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", required=True)
    p.add_argument("--repo", default=REPO, help="checkout whose trainers run (default: this one)")
    p.add_argument("--trainers", default="tf,torch")
    p.add_argument("--busy", type=int, default=4, help="busy-loop processes of the loaded runs")
    p.add_argument("--loads", default="quiet,loaded", help="which of quiet,loaded to run")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=16, help="--stop_at_step of every run")
    p.add_argument("--log_every", type=int, default=4)
    p.add_argument("--timeout", type=int, default=150, help="seconds per trainer run")
    p.add_argument("--extra", default="", help="more trainer flags, e.g. '--num_workers 2'")
    p.add_argument("--env", action="append", default=[],
                   help="KEY=VALUE for the trainer's environment (repeatable)")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args(argv)
    data_dir, repo = os.path.abspath(args.data_dir), os.path.abspath(args.repo)
    env = dict(os.environ, PYTHONPATH=repo, **dict(kv.split("=", 1) for kv in args.env))
    shown = {k: env[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "TF_CPP_MIN_LOG_LEVEL")
             if k in env}
    print(f"cpus {os.cpu_count()} (usable {len(os.sched_getaffinity(0))}); repo {repo}; "
          f"env {shown or '{}'}; batch {args.batch_size}, steps {args.steps}, {args.extra}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_contention_") as work:
        for trainer in args.trainers.split(","):
            for load in args.loads.split(","):
                busy = args.busy if load == "loaded" else 0
                r = measure(trainer, repo=repo, data_dir=data_dir, busy=busy, args=args,
                            work=work, env=env)
                results.append(r)
                rate = f"{r['examples_per_sec']:6.1f}" if r["examples_per_sec"] else "   n/a"
                print(f"{trainer:5s} {load:6s} (busy {busy}): {rate} examples/s over "
                      f"{r['windows']} windows; wall {r['wall_s']:5.1f} s; load "
                      f"{r['load_start']:.2f} -> {r['load_end']:.2f}, runnable mean "
                      f"{r['runnable_mean'] or 0:.1f}; {r['status']}", flush=True)
                if r["stderr_tail"]:
                    print(r["stderr_tail"])
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"argv": sys.argv[1:], "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
