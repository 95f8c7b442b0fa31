"""What the command-line entry points print: our own lines by default, third-party noise only
with ``--verbose``, warnings and errors only with ``--quiet``.

Noise: Beam warns on import when an optional client library is missing (``apitools not
found...`` without the GCP extra), which says nothing about this job. Call
:func:`hold_import_noise` before importing Beam: such records are held back, and printed by
:func:`setup` only when ``verbose``.
"""
from __future__ import annotations

import logging
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
    if verbose:
        root = logging.getLogger()
        root.removeFilter(_FILTER)
        for record in _held:
            root.handle(record)
        _held.clear()
