"""The PyTorch trainer's CPU threads (trainer.pt.threads): how many per process, OpenMP's wait
policy, one thread per DataLoader worker. Why: bench/bench_cpu_contention.py."""
import logging

import pyarrow as pa
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from trainer.pt import threads


@pytest.fixture
def torch_threads():
    """Restore torch's intra-op thread count after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_each_local_process_gets_its_share_of_the_cpus():
    assert threads.intra_op_threads(2, 1) == 2
    assert threads.intra_op_threads(16, 8) == 2
    assert threads.intra_op_threads(8, 3) == 2
    assert threads.intra_op_threads(1, 4) == 1


@pytest.mark.parametrize("files, limit", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_a_cgroup_quota_is_read_from_v2_or_v1_files(tmp_path, files, limit):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert threads.cgroup_cpu_limit(str(tmp_path)) == limit


def test_usable_cpus_is_the_affinity_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.usable_cpus() == 4
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.5)  # docker --cpus 1.5
    assert threads.usable_cpus() == 2


def test_configure_lowers_threads_to_the_share_and_never_raises_them(monkeypatch,
                                                                      torch_threads):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    torch.set_num_threads(4)
    info = threads.configure(2, env={})
    assert torch.get_num_threads() == 2 and info["intra_op"] == 2
    torch.set_num_threads(1)  # a caller's (or OMP_NUM_THREADS') lower count stays
    assert threads.configure(1, env={})["intra_op"] == 1
    torch.set_num_threads(3)
    assert threads.configure(4, env={"OMP_NUM_THREADS": "3"})["intra_op"] == 3
    assert "OMP_NUM_THREADS=3" in threads.describe(threads.configure(4, env={
        "OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}))


def test_openmp_threads_sleep_at_barriers_unless_the_environment_says(caplog):
    env = {}
    with caplog.at_level(logging.WARNING):
        threads.default_wait_policy(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert "set after torch was loaded" in caplog.text  # this test process loaded torch
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    threads.default_wait_policy(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


class WorkerThreads(IterableDataset):
    def __iter__(self):
        yield torch.get_num_threads(), pa.cpu_count()


def test_dataloader_workers_run_one_torch_and_one_arrow_thread():
    loader = DataLoader(WorkerThreads(), batch_size=None, num_workers=2,
                        worker_init_fn=threads.init_worker)
    assert [tuple(x) for x in loader] == [(1, 1), (1, 1)]
