"""This project's DirectRunner: Beam's FnApiRunner with its worker processes closed together."""
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


def test_the_runner_puts_beams_manager_back():
    with direct_runner._closing_workers_together():
        assert fn_runner.WorkerHandlerManager is direct_runner._WorkerHandlers
    assert fn_runner.WorkerHandlerManager is worker_handlers.WorkerHandlerManager
