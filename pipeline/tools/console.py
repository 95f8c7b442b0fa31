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
import os
import re
import sys
from collections.abc import Iterable, Sequence

# Messages logged at import time by third-party packages, harmless for this job.
IMPORT_NOISE = ("apitools not found",)
FORMAT = "%(asctime)s %(levelname)s %(message)s"
_held: list[logging.LogRecord] = []


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


# Flags and environment variables whose values are credentials: never printed.
SECRET_NAME = re.compile(r"secret|token|password|passwd|credential|private_key|access_key",
                         re.IGNORECASE)
# "'s3_secret_access_key': 'value'", "s3_session_token=value" and the like, quoted or not.
_SECRET_PAIR = re.compile(
    r"(?P<key>[\w.-]*(?:secret|token|password|passwd|private_key|access_key)[\w.-]*"
    r"\\?['\"]?\s*[:=]\s*)(?P<q>\\?['\"]?)(?P<value>[^'\"\s,}\\]+)", re.IGNORECASE)
MASK = "***"


def secret_values(argv: Sequence[str], environ: dict | None = None) -> set[str]:
    """The values of credential flags in ``argv`` (``--s3_secret_access_key=...`` or
    ``--s3_session_token ...``) and of credential environment variables."""
    values = set()
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        name, eq, value = arg[2:].partition("=")
        if not SECRET_NAME.search(name):
            continue
        if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
        if value:
            values.add(value)
    for name, value in (os.environ if environ is None else environ).items():
        if SECRET_NAME.search(name) and len(value) >= 6:
            values.add(value)
    return values


def redact(text: str, values: Iterable[str] = ()) -> str:
    """``text`` with every known secret value and every credential-named pair's value masked."""
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    return _SECRET_PAIR.sub(lambda m: m.group("key") + m.group("q") + MASK, text)


class _Redact(logging.Filter):
    """Masks credentials in every record a handler prints (ours, Beam's, its workers')."""

    def __init__(self, values: Iterable[str]):
        super().__init__()
        self.values = set(values)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        clean = redact(text, self.values)
        if clean != text:
            record.msg, record.args = clean, ()
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.values)
        return True


def setup(*, verbose: bool = False, quiet: bool = False,
          argv: Sequence[str] | None = None) -> None:
    """Configure logging for an entry point: INFO for ours, WARNING for Beam (INFO and the held
    import noise with ``verbose``), WARNING for everything with ``quiet``. Credentials (the
    values of ``argv``'s credential flags, default ``sys.argv``, and of credential environment
    variables) are masked in everything printed, with or without ``verbose``."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format=FORMAT,
                        force=True)
    redacting = _Redact(secret_values(list(sys.argv[1:] if argv is None else argv)))
    for handler in logging.getLogger().handlers:
        handler.addFilter(redacting)
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
