"""What the job costs on a local dask.distributed cluster against DirectRunner with 2 workers,
in CPU seconds of every process involved, with the idle cluster's own rate measured and
subtracted.

    python bench/dask_cost.py                          # ~20 MB corpus, 2 rounds, 30 s idle
    python bench/dask_cost.py --gb 0.06 --pairs 1
    python bench/dask_cost.py --clusters dask-glibc \
        --cluster_env DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False

The corpus and job flags are ``bench/soak.py``'s (People's Daily and reviews, rotated copies;
128/20/0.15, dupe_factor 5, ``--range_mb=8``, 64 shards, TFRecord + Parquet). Each cluster is
the one docs/clusters.md starts: ``dask scheduler`` + ``dask worker --nworkers 2 --nthreads 1``
on 127.0.0.1. ``--clusters dask`` has dask's defaults: its nannies start the worker processes
with ``MALLOC_TRIM_THRESHOLD_=65536``, which turned every array over 128 KB into a fresh mmap
until the job's DoFns began setting glibc's thresholds themselves
(``pipeline.common.allocator``); ``dask-glibc`` unsets the variable through a dask config file
(glibc's own settings, as DirectRunner's workers have). The clusters start once and keep
running between runs, so their CPU is read from /proc before and after each run (start-up is
not counted).

1. idle: each cluster's CPU rate (CPU-s per second) over ``--idle_s`` seconds, per process
   group (scheduler, nanny process, worker processes); measured again after the runs;
2. ``--pairs`` rounds of: DirectRunner multi_processing x2, then the job on each cluster. The
   launcher's CPU (with every child it reaped: DirectRunner's worker processes) comes from
   ``getrusage(RUSAGE_CHILDREN)``, the clusters' from /proc. A Dask figure with the idle share
   subtracted is ``launcher + cluster - idle rate x wall``;
3. per worker thread (names from the workers themselves): where the worker processes' CPU
   went, and their system CPU (page faults, mmap/munmap).

Output: lines as it goes, a summary (ratio of means to DirectRunner) and ``--out`` (JSON).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import soak  # noqa: E402  (bench/ is not a package)

REPO = BENCH.parent
WORK = Path(os.environ.get("BENCH_WORK_DIR", "/tmp/bert_wwm_bench")) / "dask_cost"
RUN_CAP_S = 7200  # one run: about 100 s at 60 MB, half an hour at 1 GB
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, task: int | None = None) -> float:
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    try:
        with open(path, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task") if os.path.exists(f"/proc/{pid}/task") else []:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return out


class Cluster:
    """A scheduler and 2 single-threaded workers on loopback (docs/clusters.md's local form)."""

    def __init__(self, env: dict):
        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        dask = str(Path(sys.executable).parent / "dask")
        self.log = open(WORK / "cluster.log", "wb")
        self.scheduler = subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", "127.0.0.1:0"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.nanny = None
        try:
            _wait_listening(port, 60)
            self.nanny = subprocess.Popen(
                [dask, "worker", self.address, "--nworkers", "2", "--nthreads", "1",
                 "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                 "--memory-limit", "8GB"],
                stdout=self.log, stderr=subprocess.STDOUT, env=env)
            deadline = time.time() + 120
            while len(self.workers()) < 2:
                if time.time() > deadline:
                    raise RuntimeError("the workers did not start; see cluster.log")
                time.sleep(0.5)
            time.sleep(15)  # workers registering, imports settling
        except BaseException:
            self.stop()
            raise

    def workers(self) -> list[int]:
        """The worker processes: the nanny process's children that are dask workers."""
        out = []
        for pid in children(self.nanny.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"resource_tracker" not in f.read():
                        out.append(pid)
            except OSError:
                pass
        return sorted(out)

    def groups(self) -> dict[str, list[int]]:
        workers = self.workers()
        other = [p for w in [self.nanny.pid, *workers] for p in children(w)
                 if p not in workers]
        return {"scheduler": [self.scheduler.pid], "nanny": [self.nanny.pid],
                "workers": workers, "other": other}

    def cpu(self) -> dict[str, float]:
        return {name: sum(cpu_s(p) for p in pids) for name, pids in self.groups().items()}

    def malloc_env(self) -> list[str | None]:
        """MALLOC_TRIM_THRESHOLD_ in each worker process's environment (None: unset)."""
        out = []
        for pid in self.workers():
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            value = env.get(b"MALLOC_TRIM_THRESHOLD_")
            out.append(value.decode() if value is not None else None)
        return out

    def sys_s(self) -> tuple[float, int]:
        """(system CPU seconds, minor page faults) of the worker processes."""
        total, faults = 0.0, 0
        for pid in self.workers():
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[12]) / TICK
            faults += int(fields[7])
        return total, faults

    def peak_rss_mb(self) -> list[float]:
        """Each worker process's peak resident memory so far (VmHWM), MB."""
        out = []
        for pid in self.workers():
            with open(f"/proc/{pid}/status") as f:
                out += [int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")]
        return out

    def threads(self) -> dict[tuple[int, int], float]:
        return {(pid, int(t)): cpu_s(pid, int(t)) for pid in self.workers()
                for t in os.listdir(f"/proc/{pid}/task")}

    def thread_names(self) -> dict[tuple[int, int], str]:
        from distributed import Client

        def names():
            import os as os_
            import threading
            return {"pid": os_.getpid(),
                    "threads": {t.native_id: t.name for t in threading.enumerate()}}

        with Client(self.address, timeout=30) as client:
            got = client.run(names)
        return {(v["pid"], int(tid)): name for v in got.values()
                for tid, name in v["threads"].items()}

    def stop(self):
        """The nanny process and the scheduler stopped by their PIDs, then any worker process
        that outlived its nanny."""
        workers = self.workers() if self.nanny is not None else []
        for proc in (self.nanny, self.scheduler):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        _kill(workers)
        self.log.close()


def _kill(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def children_cpu() -> tuple[float, float, int]:
    """(user, system) CPU seconds and minor page faults of every reaped child and its reaped
    descendants."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime, ru.ru_stime, ru.ru_minflt


def run_job(name: str, files, extra, env) -> dict:
    out = WORK / "out" / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline.run", f"--input={files[0].parent}/part-*.txt",
           f"--output_dir={out}", "--overwrite"] + soak.JOB_FLAGS + extra
    before, load = children_cpu(), os.getloadavg()
    start = time.perf_counter()
    seen: dict[int, float] = {}  # the launcher's own CPU and each descendant's, last read
    with open(WORK / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        while True:
            try:
                rc = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                tree, frontier = [proc.pid], [proc.pid]
                while frontier:
                    kids = children(frontier.pop())
                    tree += kids
                    frontier += kids
                for pid in tree:
                    seen[pid] = max(seen.get(pid, 0.0), cpu_s(pid))
                if time.perf_counter() - start > RUN_CAP_S:
                    _kill(reversed(tree))  # the job and the worker processes it started
                    proc.wait()
                    raise RuntimeError(f"{name} ran past {RUN_CAP_S} s; see "
                                       f"{WORK / f'{name}.log'}")
    wall = time.perf_counter() - start
    user, system, faults = (a - b for a, b in zip(children_cpu(), before))
    if rc:
        raise RuntimeError(f"{name} failed; see {WORK / f'{name}.log'}")
    manifest = json.loads((out / "manifest.json").read_text())
    digests = {fmt: [s["sha256"] for s in shards]
               for fmt, shards in sorted(manifest["shards"].items())}
    shutil.rmtree(out, ignore_errors=True)
    own = seen.get(proc.pid, 0.0)
    return {"wall_s": wall, "launcher_cpu_s": user + system, "launcher_sys_cpu_s": system,
            "launcher_minor_faults": faults,
            # sampled every 0.5 s: the launcher process alone, and its descendants (for
            # DirectRunner its worker processes; a lower bound, the last 0.5 s is missed)
            "launcher_own_cpu_s_sampled": own,
            "descendants_cpu_s_sampled": sum(seen.values()) - own, "load_before": load,
            "instances": manifest["total_instances"],
            "shards_digest": hashlib.sha256(json.dumps(digests).encode()).hexdigest()}


def glibc_config(env: dict) -> dict:
    """``env`` plus a dask config directory whose file unsets the nannies'
    MALLOC_TRIM_THRESHOLD_ (a DASK_... variable cannot: dask lowercases its keys)."""
    config_dir = WORK / "dask-config"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "glibc-malloc.yaml").write_text(
        "distributed:\n  nanny:\n    pre-spawn-environ:\n      MALLOC_TRIM_THRESHOLD_: null\n")
    return dict(env, DASK_CONFIG=str(config_dir))


def idle_rates(clusters: dict, seconds: float) -> dict:
    """Each cluster's CPU-s per second per process group over the same ``seconds``."""
    c0, t0 = {n: c.cpu() for n, c in clusters.items()}, time.perf_counter()
    time.sleep(seconds)
    dt = time.perf_counter() - t0
    rates = {}
    for name, cluster in clusters.items():
        c1 = cluster.cpu()
        rates[name] = {k: (c1[k] - c0[name].get(k, 0.0)) / dt for k in c1}
        print(f"{name}: idle CPU-s per s: " + ", ".join(f"{k} {v:.4f}"
                                                        for k, v in rates[name].items())
              + f"; total {sum(rates[name].values()):.4f}", flush=True)
    return rates


def dask_run(name: str, cluster: Cluster, idle: dict, files, job_flags, env) -> dict:
    before, threads_before, sys_before = cluster.cpu(), cluster.threads(), cluster.sys_s()
    r = run_job(name, files, ["--runner=DaskRunner", f"--dask_client_address={cluster.address}",
                              *job_flags], env)
    after, threads_after = cluster.cpu(), cluster.threads()
    sys_after = cluster.sys_s()
    workers_sys, faults = sys_after[0] - sys_before[0], sys_after[1] - sys_before[1]
    groups = {k: after[k] - before.get(k, 0.0) for k in after}
    idle_share = sum(idle.values()) * r["wall_s"]
    total = r["launcher_cpu_s"] + sum(groups.values())
    names = cluster.thread_names()
    per_thread = {}
    for key, cpu in threads_after.items():
        label = names.get(key, f"tid {key[1]}")
        if label.startswith("Dask-Default-Threads"):
            label = "Dask-Default-Threads (task)"
        per_thread[label] = per_thread.get(label, 0.0) + cpu - threads_before.get(key, 0.0)
    r.update(run=name, cluster_cpu_s=groups, cpu_s=total, idle_share_s=idle_share,
             cpu_minus_idle_s=total - idle_share, workers_sys_cpu_s=workers_sys,
             workers_minor_faults=faults, workers_peak_rss_mb_so_far=cluster.peak_rss_mb(),
             worker_threads_cpu_s=dict(sorted(per_thread.items(), key=lambda kv: -kv[1])))
    print(f"{name}: wall {r['wall_s']:.1f} s, CPU {total:.1f} s (launcher "
          f"{r['launcher_cpu_s']:.1f}, " + ", ".join(f"{k} {v:.1f}" for k, v in groups.items())
          + f"), minus idle {idle_share:.1f}: {total - idle_share:.1f}; load before "
          f"{r['load_before'][0]:.2f}", flush=True)
    print(f"  workers' system CPU {workers_sys:.1f} s, {faults / 1e6:.2f} M minor page faults; "
          f"peak RSS so far {[round(m) for m in r['workers_peak_rss_mb_so_far']]} MB; "
          f"worker threads, CPU s: " + ", ".join(
        f"{k} {v:.1f}" for k, v in r["worker_threads_cpu_s"].items() if v >= 0.05), flush=True)
    return r


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=0.02, help="corpus size in GB (soak.py's)")
    parser.add_argument("--pairs", type=int, default=2,
                        help="rounds of direct, then each --clusters variant")
    parser.add_argument("--clusters", nargs="+", default=["dask", "dask-glibc"],
                        choices=["dask", "dask-glibc", "dask-glibc-noprofile"],
                        help="dask: dask's defaults (nannies set MALLOC_TRIM_THRESHOLD_=65536); "
                        "dask-glibc: that variable unset, glibc's defaults as DirectRunner's "
                        "workers have (what pipeline.beam.dask_runner gives a LocalCluster); "
                        "dask-glibc-noprofile: also without the workers' statistical profiler "
                        "(distributed.worker.profile.enabled=False)")
    parser.add_argument("--idle_s", type=float, default=30.0)
    parser.add_argument("--cluster_env", action="append", default=[], metavar="KEY=VALUE",
                        help="more environment for every cluster's processes")
    parser.add_argument("--job_flags", nargs="*", default=[])
    parser.add_argument("--out", type=Path, default=WORK / "dask_cost.json")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    soak.WORK.mkdir(parents=True, exist_ok=True)
    files = soak.build_corpus(args.gb, soak.WORK / f"corpus-{args.gb}")
    input_mb = sum(f.stat().st_size for f in files) / 1e6
    from pipeline.default_segmenter.cache import default_model_dir

    default_model_dir()  # built before anything is timed
    env = dict(os.environ)
    cluster_env = dict(env, **dict(kv.split("=", 1) for kv in args.cluster_env))
    print(f"corpus: {len(files)} files, {input_mb:.1f} MB; clusters {args.clusters}; more "
          f"cluster env: {args.cluster_env}", flush=True)
    result = {"input_mb": input_mb, "cluster_env": args.cluster_env, "cpus": os.cpu_count(),
              "job_flags": soak.JOB_FLAGS + args.job_flags, "runs": []}
    clusters = {}
    try:
        for name in args.clusters:
            cenv = glibc_config(cluster_env) if "glibc" in name else dict(cluster_env)
            if name.endswith("noprofile"):
                cenv["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] = "False"
            clusters[name] = Cluster(cenv)
        result["worker_MALLOC_TRIM_THRESHOLD_"] = {n: c.malloc_env()
                                                   for n, c in clusters.items()}
        print(f"workers' MALLOC_TRIM_THRESHOLD_: {result['worker_MALLOC_TRIM_THRESHOLD_']}",
              flush=True)
        idle = result["idle_rate"] = idle_rates(clusters, args.idle_s)
        for pair in range(args.pairs):
            r = run_job("direct", files, ["--runner=DirectRunner",
                                          "--direct_running_mode=multi_processing",
                                          "--direct_num_workers=2", *args.job_flags], env)
            r.update(run="direct", pair=pair, cpu_s=r["launcher_cpu_s"])
            result["runs"].append(r)
            print(f"direct: wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s (system "
                  f"{r['launcher_sys_cpu_s']:.1f}, {r['launcher_minor_faults'] / 1e6:.2f} M "
                  "minor page faults; sampled: launcher "
                  f"{r['launcher_own_cpu_s_sampled']:.1f}, workers "
                  f"{r['descendants_cpu_s_sampled']:.1f}), load before "
                  f"{r['load_before'][0]:.2f}", flush=True)
            for name, cluster in clusters.items():
                r = dask_run(name, cluster, idle[name], files, args.job_flags, env)
                r["pair"] = pair
                result["runs"].append(r)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1))
        result["idle_rate_after"] = idle_rates(clusters, args.idle_s)
    finally:
        for cluster in clusters.values():
            cluster.stop()
    direct = [r["cpu_s"] for r in result["runs"] if r["run"] == "direct"]
    mean_direct = sum(direct) / len(direct)
    summary = {"direct_cpu_s": direct, "byte_identical":
               len({r["shards_digest"] for r in result["runs"]}) == 1,
               "load_after": os.getloadavg()}
    print(f"\n{input_mb:.1f} MB: direct CPU s {[round(x, 1) for x in direct]}")
    for name in clusters:
        got = [r["cpu_minus_idle_s"] for r in result["runs"] if r["run"] == name]
        ratio = sum(got) / len(got) / mean_direct
        summary[name] = {"cpu_minus_idle_s": got, "ratio_to_direct": ratio}
        print(f"{name}: CPU s minus the idle share {[round(x, 1) for x in got]}: "
              f"{ratio:.3f}x direct (means)")
    result["summary"] = summary
    args.out.write_text(json.dumps(result, indent=1))
    print(f"byte-identical: {summary['byte_identical']}; load now {os.getloadavg()}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
