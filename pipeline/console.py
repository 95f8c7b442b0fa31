"""What the command-line entry points print: our own lines by default, third-party noise only
with ``--verbose``, warnings and errors only with ``--quiet``.

Noise: Beam warns on import when an optional client library is missing (``apitools not
found...`` without the GCP extra), which says nothing about this job. Call
:func:`hold_import_noise` before importing Beam: such records are held back, and printed by
:func:`setup` only when ``verbose``. Beam's workers also log their own start-up ("Discarding
unparseable args", ...) through the runner: dropped unless ``verbose``, while what the job's
DoFns log in the workers still shows.
"""
from __future__ import annotations

import logging
import re
from typing import List

# Messages logged at import time by third-party packages, harmless for this job.
IMPORT_NOISE = ("apitools not found",)
FORMAT = "%(asctime)s %(levelname)s %(message)s"
_held: List[logging.LogRecord] = []


class _HoldNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if any(text in str(record.msg) for text in IMPORT_NOISE):
            _held.append(record)
            return False
        return True


_FILTER = _HoldNoise()
# Beam's portable runners (DirectRunner's multi_processing mode among them) forward what the
# SDK workers log through this logger, as "Worker: severity: ... log_location: ...".
WORKER_LOGGER = "apache_beam.runners.portability.local_job_service"
_BEAM_LOCATION = re.compile(r'log_location: "[^"]*[/\\]apache_beam[/\\]')


_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


class _BeamWorkerNoise(logging.Filter):
    """Drops what Beam's own worker code logs (argument parsing, directories); what the job's
    DoFns log in the workers (a skipped file, ...) stays, as its message alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if _BEAM_LOCATION.search(text):
            return False
        found = _MESSAGE.search(text)
        if found:
            record.msg, record.args = "worker: " + re.sub(r"\\(.)", r"\1", found.group(1)), ()
        return True


_WORKER_FILTER = _BeamWorkerNoise()


def hold_import_noise() -> None:
    """Hold back known import-time noise logged on the root logger (see the module doc)."""
    root = logging.getLogger()
    if _FILTER not in root.filters:
        root.addFilter(_FILTER)


def setup(*, verbose: bool = False, quiet: bool = False) -> None:
    """Configure logging for an entry point: INFO for ours, WARNING for Beam (INFO and the held
    import noise with ``verbose``), WARNING for everything with ``quiet``."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format=FORMAT,
                        force=True)
    logging.getLogger("apache_beam").setLevel(
        logging.INFO if verbose else logging.WARNING)
    workers = logging.getLogger(WORKER_LOGGER)
    workers.removeFilter(_WORKER_FILTER)
    if not verbose:
        workers.addFilter(_WORKER_FILTER)
    if verbose:
        root = logging.getLogger()
        root.removeFilter(_FILTER)
        for record in _held:
            root.handle(record)
        _held.clear()
