"""Preloaded by the test's dask workers (``dask worker --preload``): each worker process logs the
ranges it turns into instances (``pipeline.beam.dofns`` debug lines) to a file of its own under
``$BERT_WWM_TEST_TRACE``, and leaves its PID there, so a test can count how often each range
was segmented, on which worker, and kill a worker by its PID."""
import logging
import os


def dask_setup(worker):  # called by dask in the worker process
    trace = os.environ.get("BERT_WWM_TEST_TRACE")
    if not trace:
        return
    pid = os.getpid()
    handler = logging.FileHandler(os.path.join(trace, f"worker-{pid}.log"))
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("pipeline.beam.dofns")
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    with open(os.path.join(trace, f"worker-{pid}.pid"), "w") as f:
        f.write(str(pid))
