"""``--runner=DirectRunner``: Beam's DirectRunner, always on its FnApiRunner.

Beam 2.77's DirectRunner first tries Prism, a Go runner it downloads from GitHub at run time
(``apache_beam/runners/direct/direct_runner.py``), and falls back to its FnApiRunner only when
that fails. So the same command ran on two different engines depending on the network: offline
(CI, an air-gapped cluster) on the FnApiRunner with ``--direct_running_mode`` and
``--direct_num_workers`` honoured, online on Prism, which has its own worker settings; and a
download that hangs holds the job up. The job is measured, tested and documented on the
FnApiRunner, so the short name ``DirectRunner`` means that here, on every machine, with nothing
downloaded. ``--runner=PrismRunner`` still picks Prism explicitly.

At the end of a job Beam closes its worker processes one after the other, each close waiting
for its process to exit (0.5-0.6 s of interpreter teardown here, with Beam and LTP loaded);
this runner closes them all at once (``_WorkerHandlers``), which takes the job's end from about
1.3 s to 0.7-0.8 s with 2 workers. The output does not depend on it.

With ``--direct_running_mode=multi_processing``, Beam starts each worker as a new interpreter
that imports Beam, numpy and the job's modules again before it does any work: about 3 s with
both cores busy, on top of the launcher's own imports, and about 0.5 s of interpreter teardown
per worker at the end. ``workers_forked(p)`` forks those workers from the launcher instead,
once its imports are done and before it starts any thread or gRPC server; each child waits on
a pipe until Beam asks for a worker, then runs Beam's own worker (``sdk_worker_main``) with the
environment Beam gives a worker process, and leaves with ``os._exit`` (no teardown: Beam has
closed the DoFns and flushed the logs by then). Where forking is not safe or not possible (not
Linux, a thread already running, torch or TensorFlow loaded, a worker command that is not
Beam's), the workers are Beam's subprocesses as before. The output does not depend on it
either.

With several workers, a stage's input goes to them as they free up (``_BundlesOnDemand``)
rather than in one part per worker dealt out up front.
"""
from __future__ import annotations

import collections
import contextlib
import gc
import itertools
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor

import grpc
from apache_beam.metrics import monitoring_infos
from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.portability import python_urns
from apache_beam.portability.api import (
    beam_fn_api_pb2,
    beam_fn_api_pb2_grpc,
    beam_provision_api_pb2,
    endpoints_pb2,
)
from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner
from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.utils import thread_pool_executor
from google.protobuf import json_format, text_format

_LOG = logging.getLogger(__name__)


class _WorkerHandlers(worker_handlers.WorkerHandlerManager):
    """Beam's worker handler manager, closing every worker at the same time."""

    def close_all(self):
        handlers = {h for hs in self._cached_handlers.values() for h in hs}
        if handlers:
            with ThreadPoolExecutor(len(handlers), thread_name_prefix="close_worker") as pool:
                for handler, done in [(h, pool.submit(h.close)) for h in handlers]:
                    try:
                        done.result()
                    except Exception:  # as Beam's: logged, the others still closed
                        _LOG.error("Error closing worker handler %s", handler, exc_info=True)
        self._cached_handlers = collections.defaultdict(list)  # closed: Beam's loop skips
        super().close_all()  # forgets the workers, stops the gRPC servers


class _OneWorker:
    """A stage's bundle context with one of its worker handlers: Beam's BundleManager sends
    its bundle to that one."""

    def __init__(self, context, handler):
        self._context, self.worker_handlers = context, [handler]

    def __getattr__(self, name):
        return getattr(self._context, name)


class _Tokens:
    """A cache-token generator that threads may share (a generator may not run twice at
    once)."""

    def __init__(self, generator):
        self._generator, self._lock = generator, threading.Lock()

    def __iter__(self):
        return self

    def __next__(self):
        with self._lock:
            return next(self._generator)


class _BundlesOnDemand(fn_runner.ParallelBundleManager):
    """Beam's manager of a stage on several workers, with work handed out as workers free
    up. Beam cuts a stage's input into one part per worker, dealt out up front, so the stage
    lasts as long as its slowest part (with 20 ranges of 1.5-3.5 s on 2 workers, one core
    idled for 2-4 s at the end of the range stage). Here the input is cut into
    ``PARTS_PER_WORKER`` parts per worker, the same way (Beam's partition of the buffer),
    and each worker takes the next part as soon as it is done with one. Part 0 carries the
    stage's timers, as in Beam; empty parts are skipped. Outputs do not depend on it: every
    element goes through the same code, in a bundle of its own or with others."""

    PARTS_PER_WORKER = 8

    def process_bundle(self, inputs, expected_outputs, fired_timers, expected_output_timers,
                       dry_run=False):
        handlers = self.bundle_context_manager.worker_handlers
        count = len(handlers) * self.PARTS_PER_WORKER
        parts = [{} for _ in range(count)]
        for name, buffer in inputs.items():
            for ix, part in enumerate(buffer.partition(count)):
                parts[ix][name] = part
        todo = collections.deque(ix for ix, part in enumerate(parts)
                                 if ix == 0 or any(any(p) for p in part.values()))
        tokens = _Tokens(self._cache_token_generator)

        def work(handler):
            done = []
            manager = fn_runner.BundleManager(_OneWorker(self.bundle_context_manager, handler),
                                              self._progress_frequency,
                                              cache_token_generator=tokens)
            while True:
                try:
                    ix = todo.popleft()  # atomic: the threads share the queue
                except IndexError:
                    return done
                done.append(manager.process_bundle(
                    parts[ix], expected_outputs, fired_timers if ix == 0 else {},
                    expected_output_timers, dry_run))

        with ThreadPoolExecutor(len(handlers), thread_name_prefix="bundles") as pool:
            results = [r for rs in pool.map(work, handlers) for r in rs]
        splits = [split for _, found in results for split in found]
        responses = [result for result, _ in results]
        merged = beam_fn_api_pb2.InstructionResponse(
            process_bundle=beam_fn_api_pb2.ProcessBundleResponse(
                monitoring_infos=monitoring_infos.consolidate(itertools.chain.from_iterable(
                    r.process_bundle.monitoring_infos for r in responses))),
            error=next((r.error for r in responses if r.error), ""))
        return merged, splits


@contextlib.contextmanager
def _closing_workers_together():
    """FnApiRunner with ``_WorkerHandlers`` and ``_BundlesOnDemand`` (its module's names for
    them, swapped for the run and put back)."""
    manager, bundles = fn_runner.WorkerHandlerManager, fn_runner.ParallelBundleManager
    fn_runner.WorkerHandlerManager = _WorkerHandlers
    fn_runner.ParallelBundleManager = _BundlesOnDemand
    try:
        yield
    finally:
        fn_runner.WorkerHandlerManager, fn_runner.ParallelBundleManager = manager, bundles


def _beam_worker_command() -> bytes:
    """The command FnApiRunner gives its worker processes in multi_processing mode."""
    return f"{sys.executable} -m apache_beam.runners.worker.sdk_worker_main".encode()


def _fork_refusal() -> str | None:
    """Why the launcher may not fork its workers now; None if it may."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return "not Linux"  # macOS: system frameworks are not fork-safe; Windows: no fork
    if threading.active_count() != 1:
        return "another thread is running"  # its locks would stay locked in the child
    for library in ("torch", "tensorflow"):
        if library in sys.modules:
            return f"{library} is loaded"  # its thread pools and CUDA state do not survive it
    return None


_forked_worker = False  # True in a worker forked by ForkedWorkers


def in_forked_worker() -> bool:
    """Whether this process is a Beam worker forked by ``ForkedWorkers``."""
    return _forked_worker


class ForkedWorkers:
    """Worker processes forked from the launcher, each waiting for the environment of a
    Beam worker (a JSON object on its pipe): ``take()`` hands one out, ``close()`` ends those
    never taken and reaps them."""

    def __init__(self, count: int):
        self._idle: list[tuple[int, int]] = []  # (pid, write end of its pipe)
        # The children keep the launcher's objects out of their garbage collector: its
        # passes would walk them all (more than a new worker holds) and, writing to them,
        # copy the pages they share with the launcher.
        gc.freeze()
        try:
            for _ in range(count):
                read, write = os.pipe()
                pid = os.fork()
                if pid == 0:  # the child: never returns
                    os.close(write)
                    for _, other in self._idle:
                        os.close(other)
                    _serve(read)
                os.close(read)
                self._idle.append((pid, write))
        except BaseException:
            self.close()  # a fork failed: end the children made so far
            raise
        finally:
            gc.unfreeze()

    def take(self) -> tuple[int, int] | None:
        return self._idle.pop(0) if self._idle else None

    def close(self) -> None:
        """End the children no worker was asked of (an empty message: they exit)."""
        while self._idle:
            pid, write = self._idle.pop()
            os.close(write)
            os.waitpid(pid, 0)


def _serve(read: int) -> None:
    """A forked child: read the worker environment, run Beam's worker, exit without the
    launcher's teardown (its atexit handlers, its ``finally`` blocks) ever running here."""
    global _forked_worker
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the launcher ends us
        chunks = []
        while chunk := os.read(read, 1 << 16):
            chunks.append(chunk)
        os.close(read)
        if not chunks:  # not needed
            code = 0
        else:
            os.environ.update(json.loads(b"".join(chunks)))
            sys.argv = sys.argv[:1]  # a worker has no flags: its options come in PIPELINE_OPTIONS
            signal.signal(signal.SIGINT, signal.default_int_handler)  # as a new process's
            _forked_worker = True
            # A fresh worker has no handlers of its own: its logs go to the launcher through
            # Beam's logging service, which the worker sets up (not twice through stderr).
            logging.getLogger().handlers.clear()
            from apache_beam.runners.worker import sdk_worker_main

            sdk_worker_main.main([])
            code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


class _ForkedWorker:
    """Beam's ``SubprocessSdkWorker`` (a logging service, the worker's environment, wait
    for its exit) with a forked child in place of a new process."""

    def __init__(self, child: tuple[int, int], control_address, provision_info, worker_id):
        self._child, self._control_address = child, control_address
        self._provision_info, self._worker_id = provision_info, worker_id

    def run(self):
        pid, write = self._child
        logging_server = grpc.server(thread_pool_executor.shared_unbounded_instance(), options=[
            ("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)])
        beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(
            local_job_service.BeamFnLoggingServicer(), logging_server)
        logging_port = logging_server.add_insecure_port("localhost:0")
        logging_server.start()
        env = {
            "CONTROL_API_SERVICE_DESCRIPTOR": text_format.MessageToString(
                endpoints_pb2.ApiServiceDescriptor(url=self._control_address)),
            "LOGGING_API_SERVICE_DESCRIPTOR": text_format.MessageToString(
                endpoints_pb2.ApiServiceDescriptor(url=f"localhost:{logging_port}")),
            "PIPELINE_OPTIONS": json_format.MessageToJson(
                self._provision_info.provision_info.pipeline_options)}
        if self._worker_id:
            env["WORKER_ID"] = self._worker_id
        try:
            try:
                os.write(write, json.dumps(env).encode())  # far below a pipe's buffer
            finally:
                os.close(write)
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status):
                raise RuntimeError("Worker process exited with return code %s"
                                   % os.waitstatus_to_exitcode(status))
        finally:
            logging_server.stop(0)


def _handler_class(workers: ForkedWorkers):
    """Beam's handler for subprocess workers, taking a forked child while there is one."""

    class Handler(worker_handlers.SubprocessSdkWorkerHandler):
        def start_worker(self):
            child = workers.take() if self._worker_command_line == _beam_worker_command() \
                else None
            if child is None:
                return super().start_worker()
            self.worker = _ForkedWorker(child, self.control_address, self.provision_info,
                                        self.worker_id)
            self.worker_thread = threading.Thread(name="run_worker", target=self.worker.run)
            self.worker_thread.start()

    return Handler


@contextlib.contextmanager
def _with_forked(workers: ForkedWorkers | None):
    """Beam's registry of worker handlers, with ``workers`` taken first (put back after)."""
    if workers is None:
        yield
        return
    registry = worker_handlers.WorkerHandler._registered_environments
    original = registry[python_urns.SUBPROCESS_SDK]
    registry[python_urns.SUBPROCESS_SDK] = (_handler_class(workers), bytes)
    try:
        yield
    finally:
        registry[python_urns.SUBPROCESS_SDK] = original


def worker_count(options) -> int:
    """The worker processes FnApiRunner starts for these options (0 if it runs in-process)."""
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing":
        return 0
    return multiprocessing.cpu_count() if direct.direct_num_workers == 0 \
        else direct.direct_num_workers or 1


@contextlib.contextmanager
def workers_forked(pipeline):
    """Fork the workers ``pipeline`` will ask for now, when its runner is this DirectRunner
    in multi_processing mode and forking is safe (see the module's docstring); call before
    starting any thread. The children not used by the end are ended."""
    runner = pipeline.runner
    count = worker_count(pipeline.options) if isinstance(runner, DirectRunner) else 0
    refusal = _fork_refusal() if count else None
    if refusal:
        _LOG.info("worker processes started by Beam, not forked: %s", refusal)
    if not count or refusal:
        yield
        return
    workers = ForkedWorkers(count)
    runner.forked = workers
    try:
        yield
    finally:
        runner.forked = None
        workers.close()


class DirectRunner(SwitchingDirectRunner):
    """Beam's DirectRunner without the Prism attempt: the FnApiRunner, given the job's
    options as Beam's DirectRunner gives them (its workers read them); with the worker
    processes forked by ``workers_forked`` when it was used."""

    forked: ForkedWorkers | None = None

    def run_pipeline(self, pipeline, options):
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        info = fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        with _closing_workers_together(), _with_forked(self.forked):
            return fn_runner.FnApiRunner(provision_info=info).run_pipeline(pipeline, options)
