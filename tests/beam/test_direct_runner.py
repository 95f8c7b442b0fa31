"""This project's DirectRunner: Beam's FnApiRunner with its worker processes forked from the
launcher, given work as they free up, and closed together."""
import threading

from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers

from pipeline.beam import direct_runner


class _Handler:
    """A worker handler whose close only returns once ``barrier`` has every party: the
    closes must run at the same time (a sequential close_all would break the barrier)."""

    def __init__(self, barrier, fail=False):
        self.barrier, self.fail, self.closed = barrier, fail, False

    def close(self):
        self.barrier.wait()
        self.closed = True
        if self.fail:
            raise RuntimeError("worker gone")


def test_workers_are_closed_at_the_same_time_and_a_failure_spares_the_others(caplog):
    barrier = threading.Barrier(3, timeout=30)
    handlers = [_Handler(barrier), _Handler(barrier, fail=True), _Handler(barrier)]
    manager = direct_runner._WorkerHandlers({}, None)
    manager._cached_handlers["env"] = handlers[:2]
    manager._cached_handlers["other"] = handlers[2:] + handlers[:1]  # one handler, two lists
    manager.close_all()
    assert all(h.closed for h in handlers) and not barrier.broken
    assert "worker gone" in caplog.text
    assert not manager._cached_handlers and not manager._workers_by_id


def test_the_runner_puts_beams_managers_back():
    with direct_runner._closing_workers_together():
        assert fn_runner.WorkerHandlerManager is direct_runner._WorkerHandlers
        assert fn_runner.ParallelBundleManager is direct_runner._BundlesOnDemand
    assert fn_runner.WorkerHandlerManager is worker_handlers.WorkerHandlerManager
    assert fn_runner.ParallelBundleManager.__module__ == fn_runner.__name__


# A job on 2 workers, run in a fresh interpreter (one thread, as the launcher is when it
# forks): every element records the worker that ran it, and the first element started takes
# 5 s, the others none. Dealt out as Beam does (one part per worker, up front), the worker
# with the slow element would also run the rest of its part, 8 of the 16; handed out on
# demand, the other worker runs everything else meanwhile.
_JOB = r'''
import json, os, sys, time
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from pipeline.beam import direct_runner

out = sys.argv[1]

def work(kv):
    key, _ = kv
    try:
        os.close(os.open(os.path.join(out, "first"), os.O_CREAT | os.O_EXCL))
        time.sleep(5)
        slow = True
    except FileExistsError:
        slow = False
    with open(os.path.join(out, str(key)), "w") as f:
        json.dump({"pid": os.getpid(), "slow": slow,
                   "forked": direct_runner.in_forked_worker()}, f)
    return [key]

options = PipelineOptions(["--runner=pipeline.beam.direct_runner.DirectRunner",
                           "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
p = beam.Pipeline(options=options)
_ = (p | beam.Create([(k, k) for k in range(16)]) | beam.GroupByKey() | beam.FlatMap(work))
with direct_runner.workers_forked(p):
    assert p.runner.forked is not None
    p.run().wait_until_finish()
assert p.runner.forked is None

spare = direct_runner.ForkedWorkers(3)  # never asked for: ended and reaped
spare.close()
try:
    os.waitpid(-1, os.WNOHANG)
    print("a child process is left")
except ChildProcessError:
    print("no child left")
'''


def test_forked_workers_run_the_job_take_work_on_demand_and_leave_no_process(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "out"
    out.mkdir()
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _JOB, str(out)], cwd=repo, timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("no child left")
    ran = {int(path.name): json.loads(path.read_text()) for path in out.iterdir()
           if path.name != "first"}
    assert sorted(ran) == list(range(16))
    assert all(r["forked"] for r in ran.values())
    assert len({r["pid"] for r in ran.values()}) == 2
    (slow,) = [r["pid"] for r in ran.values() if r["slow"]]
    # 1 here; 2 if the other worker took over 5 s to start
    assert sum(r["pid"] == slow for r in ran.values()) <= 2


def test_no_fork_while_another_thread_runs():
    """(Forking when alone is the test above.)"""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert direct_runner._fork_refusal() == "another thread is running"
    finally:
        stop.set()
        thread.join()


def test_no_fork_with_torch_or_tensorflow_loaded(monkeypatch):
    import sys

    monkeypatch.setattr(threading, "active_count", lambda: 1)  # as a fresh launcher
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert direct_runner._fork_refusal() is None
    monkeypatch.setitem(sys.modules, "tensorflow", sys)
    assert direct_runner._fork_refusal() == "tensorflow is loaded"
    monkeypatch.setitem(sys.modules, "torch", sys)
    assert direct_runner._fork_refusal() == "torch is loaded"


def test_a_failed_fork_ends_the_children_made_before_it(monkeypatch):
    import os

    import pytest

    real_fork, made = os.fork, []

    def fork_once():
        if made:
            raise OSError("no more processes")
        pid = real_fork()
        if pid:
            made.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork_once)
    with pytest.raises(OSError, match="no more processes"):
        direct_runner.ForkedWorkers(3)
    (pid,) = made
    with pytest.raises(ChildProcessError):  # ended and reaped
        os.waitpid(pid, os.WNOHANG)
