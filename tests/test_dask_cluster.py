"""The job on a real dask.distributed cluster: a scheduler and two worker processes started here
on 127.0.0.1, driven by ``--runner=DaskRunner`` (Beam's DaskRunner with a redistributing
Reshuffle, ``pipeline.beam.dask_runner``).

Checked: the shards equal DirectRunner's byte for byte; every range is segmented exactly once
(no side input recomputed per task, no mixed outputs); ranges run on both workers; the workers'
malloc is set back from dask's (``pipeline.common.allocator``); and a worker
SIGKILLed in the middle of the job is replaced and the job still writes the same bytes.
"""
import filecmp
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from pipeline.run import run
from tests import realdata, servers

PRELOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cluster", "dask_preload.py")
RANGE_LINE = re.compile(r"^range (.+@\d+): ")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask-corpus")
    with open(realdata.SAMPLE_CORPUS, encoding="utf-8") as f:
        docs = f.read().split("\n\n")
    (root / "a.txt").write_text("\n\n".join(docs[:60]) + "\n", encoding="utf-8")
    (root / "b.txt").write_text("\n\n".join(docs[60:120]) + "\n", encoding="utf-8")
    return str(root / "*.txt")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(scheduler address, trace directory): a scheduler and 2 single-threaded workers."""
    root = tmp_path_factory.mktemp("dask-cluster")
    trace = root / "trace"
    trace.mkdir()
    port = servers.free_port()
    env = dict(os.environ, BERT_WWM_TEST_TRACE=str(trace))
    dask = servers.console_script("dask")
    scheduler = [dask, "scheduler", "--host", servers.LOOPBACK, "--port", str(port),
                 "--dashboard-address", f"{servers.LOOPBACK}:0"]
    workers = [dask, "worker", f"tcp://{servers.LOOPBACK}:{port}", "--nworkers", "2",
               "--nthreads", "1", "--host", servers.LOOPBACK,
               "--dashboard-address", f"{servers.LOOPBACK}:0", "--preload", PRELOAD]
    with servers.server(scheduler, ready=lambda: servers.listening(port),
                        log_path=str(root / "scheduler.log"), env=env):
        with servers.server(workers, ready=lambda: len(list(trace.glob("*.pid"))) >= 2,
                            log_path=str(root / "workers.log"), env=env, timeout=120):
            yield f"tcp://{servers.LOOPBACK}:{port}", trace


def range_runs(trace) -> Counter:
    """How many times each range was turned into instances, over all worker processes."""
    runs = Counter()
    for log in trace.glob("worker-*.log"):
        for line in log.read_text(encoding="utf-8").splitlines():
            m = RANGE_LINE.match(line)
            if m:
                runs[(log.name, m.group(1))] += 1
    return runs


def reset(trace):
    for log in trace.glob("worker-*.log"):
        log.write_text("")


def job_flags(corpus, small_ltp_model_dir, out):
    return [f"--input={corpus}", f"--output_dir={out}", f"--ltp_model={small_ltp_model_dir}",
            "--dupe_factor=2", "--num_shards=3", "--range_mb=0.02"]


def same_shards(a, b):
    names = sorted(f"{d}/{f}" for d in ("tfrecord", "parquet") for f in os.listdir(a / d))
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return len(names) == 6 and match == names


@pytest.fixture(scope="module")
def direct(tmp_path_factory, corpus, small_ltp_model_dir):
    out = tmp_path_factory.mktemp("direct") / "out"
    manifest = run(job_flags(corpus, small_ltp_model_dir, out))
    return out, manifest


def test_dask_matches_direct_runner_and_segments_each_range_once(cluster, corpus, direct,
                                                                 small_ltp_model_dir, tmp_path):
    address, trace = cluster
    reset(trace)
    out = tmp_path / "dask"
    manifest = run(job_flags(corpus, small_ltp_model_dir, out)
                   + ["--runner=DaskRunner", f"--dask_client_address={address}"])
    direct_out, direct_manifest = direct
    assert same_shards(direct_out, out)
    assert manifest["shards"] == direct_manifest["shards"]
    runs = range_runs(trace)
    ranges = Counter(r for _, r in runs.elements())
    with open(out / "stats.json", encoding="utf-8") as f:
        import json
        assert len(ranges) == json.load(f)["counts"]["ranges"] > 10
    assert set(ranges.values()) == {1}, "a range was segmented more than once"
    assert len({worker for worker, _ in runs}) == 2, "ranges ran on one worker only"
    # dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536 (every array over 128 KB
    # a fresh mmap); the job's DoFns set glibc's thresholds back (pipeline.common.allocator)
    from distributed import Client

    def malloc_state():
        from pipeline.common import allocator
        return os.environ.get("MALLOC_TRIM_THRESHOLD_"), tuple(allocator._state)

    with Client(address, timeout=30) as client:
        assert set(client.run(malloc_state).values()) == {("65536", (True,))}


def test_a_killed_worker_is_replaced_and_the_output_is_the_same(cluster, corpus, direct,
                                                                small_ltp_model_dir, tmp_path):
    address, trace = cluster
    reset(trace)
    out = tmp_path / "dask-kill"
    cmd = [sys.executable, "-m", "pipeline.run", "--runner=DaskRunner",
           f"--dask_client_address={address}"] + job_flags(corpus, small_ltp_model_dir, out)
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           cwd=realdata.REPO)
    try:
        # Wait until a worker has made instances of some range, then SIGKILL that worker.
        deadline, victim = time.time() + 120, None
        while victim is None and time.time() < deadline and job.poll() is None:
            busy = [w for w, _ in range_runs(trace)]
            if busy:
                victim = int(busy[0].split("-")[1].split(".")[0])
            time.sleep(0.05)
        assert victim is not None, "no range was processed before the job ended"
        os.kill(victim, signal.SIGKILL)
        output, _ = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output[-3000:]
    assert same_shards(direct[0], out)
    assert f"worker-{victim}.pid" in os.listdir(trace)
    assert len(list(trace.glob("*.pid"))) >= 3  # the nanny started a replacement worker


def test_curation_on_dask_matches_direct_runner(cluster, corpus, small_ltp_model_dir,
                                                tmp_path):
    """--dedup=near (sketch files, partitions grouped by key, decisions joined back to the
    ranges), --convert, --filters and a weight on the cluster: the same bytes and counts."""
    import json

    address, _ = cluster
    root = os.path.dirname(corpus)
    with open(os.path.join(root, "a.txt"), encoding="utf-8") as f:
        docs = f.read().split("\n\n")
    copies = tmp_path / "copies.txt"  # an exact copy and an edited copy of a.txt's articles
    copies.write_text("\n\n".join([docs[2], docs[4].replace("的", "地", 2)]) + "\n",
                      encoding="utf-8")
    flags = [f"--input={corpus}", f"--input={copies};weight=2", "--dedup=near",
             "--convert=t2s", "--filters=all", "--dedup_partitions=2"]
    outs = {}
    for name, extra in (("direct", []), ("dask", ["--runner=DaskRunner",
                                                  f"--dask_client_address={address}"])):
        outs[name] = tmp_path / name
        run([f for f in job_flags(corpus, small_ltp_model_dir, outs[name])
             if not f.startswith("--input")] + flags + extra)
    assert same_shards(outs["direct"], outs["dask"])
    stats = [json.loads((outs[n] / "stats.json").read_text(encoding="utf-8"))
             for n in ("direct", "dask")]
    assert stats[0] == stats[1]
    dropped = stats[0]["curation"]["dropped"]
    assert dropped["dedup_exact"]["documents"] == 1 and dropped["dedup_near"]["documents"] == 1
