"""What the job may do to --output_dir, and when: the rules that keep a user's data safe.

A run never deletes a file it cannot name as this pipeline's, and never loses the previous
output before the new one is complete:

* **Guards, before anything is touched.** ``/``, the home directory and a directory holding
  an input are refused as --output_dir; a pipeline subpath (``tfrecord/``, ``_pieces/``, ...)
  that is a symbolic link leaving the output directory is refused (``--temp_dir`` puts the
  pieces elsewhere); a second job on the same directory is refused by a lock.
* **Exact names.** A file is the pipeline's only if the previous manifest lists it or its
  relative path matches the pipeline's own naming exactly (:func:`classify`); everything else
  under the directory is kept and named in a warning.
* **Swap at the end.** With a previous output there, the new shards are written under
  ``_staging/run-<id>/`` and the old files stay; only when every new shard exists does the
  last step delete the old manifest, then the old files, rename the new shards into place and
  write the new manifest last. A run that fails before that leaves the previous output as it
  was. Into an output directory without previous output the shards are written in place.
* **Run identity.** Each run has an id (:func:`new_run_id`); its pieces live under
  ``run-<id>/`` and only that run's pieces are deleted at its end, so two runs never mix.

Locks: ``.bert-wwm.lock`` is created only if absent: ``O_CREAT | O_EXCL`` on local disks, a
conditional PUT (``If-None-Match: *``) on S3, ``ifGenerationMatch=0`` on GCS. Other stores have
no create-if-absent: there the lock is checked then written, a race of a few milliseconds.
"""
from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Sequence

from pipeline import schema
from pipeline.beam import fs, pieces
from pipeline.common.paths import is_remote, local_path

LOG = logging.getLogger(__name__)

RUN_PREFIX = "run-"
_RUN = r"run-[0-9]{8}-[0-9]{6}-[0-9a-f]{8}"
_TMP = rf"(?:{fs.TEMPORARY_PREFIX})?"  # fs.atomic_writer's temporary names
_SHARD = r"part-[0-9]{5}-of-[0-9]{5}"
_BIN_NAME = r"len-[0-9]{4,}"  # a length bin's directory (schema.bin_dir)
_BIN = rf"(?:{_BIN_NAME}/)?"
_SHARDS = (rf"(?:{schema.TFRECORD_DIR}/{_BIN}{_TMP}{_SHARD}\.tfrecord(?:\.gz)?"
           rf"|{schema.PARQUET_DIR}/{_BIN}{_TMP}{_SHARD}\.parquet)")
_FILES = "|".join(re.escape(name) for name in schema.OUTPUT_FILES)
# A finished output's own files (what a previous run left as its result).
_RESULT = re.compile(rf"(?:{_TMP}(?:{_FILES})|{_SHARDS})")
_RUN_FILE = rf"(?:{pieces.NAME}|{pieces.SKETCH_NAME})"  # a run's piece or sketch file
# Temporary files of a run (pieces, staged shards): never part of a finished output.
_TEMPORARY = re.compile(
    rf"(?:{re.escape(schema.PIECES_DIR)}/(?:{_RUN}/)?{_TMP}{_RUN_FILE}"
    rf"|{re.escape(schema.STAGING_DIR)}/{_RUN}/{_SHARDS})")
# Subpaths whose symbolic links must not leave the output directory.
_SUBPATHS = (schema.TFRECORD_DIR, schema.PARQUET_DIR, schema.PIECES_DIR, schema.STAGING_DIR,
             schema.LOCK_FILE) + schema.OUTPUT_FILES


class OutputDirError(ValueError):
    """The output directory cannot be used as asked; nothing was touched."""


class LockedError(FileExistsError):
    """Another job holds the output directory's lock."""


def new_run_id() -> str:
    """``run-20261206-103000-1a2b3c4d``: sortable by start time, unique by its random part.
    Only temporary names use it: the data does not depend on it."""
    return time.strftime("run-%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:8]


def is_relative_inside(path: object) -> bool:
    """Whether ``path`` names a file below a directory and nothing else (a manifest may have
    been edited: ``schema.relative_path_problem``)."""
    return isinstance(path, str) and not schema.relative_path_problem(path)


def classify(relative: str, previous_manifest: dict | None = None) -> str:
    """"result" (a previous output's file), "temporary" (a run's pieces, staged shards or
    partly written files), "lock", or "foreign" (not this pipeline's: never deleted)."""
    if relative == schema.LOCK_FILE:
        return "lock"
    if relative in manifest_files(previous_manifest) or _RESULT.fullmatch(relative):
        return "result"
    if _TEMPORARY.fullmatch(relative):
        return "temporary"
    return "foreign"


def manifest_files(manifest: dict | None) -> list[str]:
    """The relative paths a manifest names (shards, vocab), only those inside the directory:
    a path that climbs out (``../x``, ``/etc/x``) is not the pipeline's to delete."""
    if not isinstance(manifest, dict):
        return []
    named = [manifest.get("vocab_file")]
    shards = manifest.get("shards")
    if isinstance(shards, dict):
        for entries in shards.values():
            if isinstance(entries, list):
                named += [e.get("path") for e in entries if isinstance(e, dict)]
    return [p for p in named if is_relative_inside(p)]


def list_below(directory: str) -> dict[str, int]:
    """relative path → size of every file below ``directory``. On a local disk the walk does
    not enter symbolic links to directories (a link is listed as the file it is); object
    stores have no links."""
    directory = directory.rstrip("/")
    if is_remote(directory):
        prefix = directory + "/"
        return {path[len(prefix):]: size for path, size in fs.list_tree(directory)}
    root = local_path(directory)
    found = {}
    for base, dirs, names in os.walk(root, followlinks=False):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(base, d))]:
            path = os.path.join(base, name)
            found[os.path.relpath(path, root).replace(os.sep, "/")] = os.path.getsize(path) \
                if not os.path.islink(path) else 0
    return found


def check_location(output_dir: str, *, inputs: Sequence[str]) -> None:
    """Refuse ``/``, the home directory, a directory holding an input (``inputs``: the files
    the job will read) and pipeline subpaths that are symbolic links leaving the directory."""
    if is_remote(output_dir):
        prefix = output_dir.rstrip("/") + "/"
        inside = [p for p in inputs if p.startswith(prefix)]
    else:
        root = os.path.realpath(local_path(output_dir))
        if root == os.path.realpath(os.sep):
            raise OutputDirError(f"--output_dir {output_dir} is the root directory: refused")
        if root == os.path.realpath(os.path.expanduser("~")):
            raise OutputDirError(f"--output_dir {output_dir} is the home directory: refused; "
                                 "name a directory of its own")
        inside = [p for p in inputs if not is_remote(p) and
                  os.path.realpath(local_path(p)).startswith(root.rstrip(os.sep) + os.sep)]
        for sub in _SUBPATHS:
            path = os.path.join(root, sub)
            if os.path.islink(path):
                target = os.path.realpath(path)
                if not target.startswith(root.rstrip(os.sep) + os.sep):
                    hint = (" (to keep the pieces on another disk, pass --temp_dir there)"
                            if sub == schema.PIECES_DIR else "")
                    raise OutputDirError(
                        f"{path} is a symbolic link to {target}, outside --output_dir: refused,"
                        f" the job deletes and replaces files there{hint}")
    if inside:
        raise OutputDirError(
            f"--output_dir {output_dir} holds {len(inside)} of the input files (e.g. "
            f"{inside[0]}): refused; write the output to a directory of its own")


def _ours_in(directory: str, relative: str, *, current: str, cache: dict[str, bool]) -> bool:
    """Whether ``directory`` is a pipeline output directory (the current one, or one holding a
    manifest or a lock) in which ``relative`` is a file of the pipeline's naming."""
    if classify(relative) == "foreign":
        return False
    if directory.rstrip("/") == current.rstrip("/"):
        return True
    if directory not in cache:
        cache[directory] = any(fs.exists(fs.join(directory, name))
                               for name in (schema.MANIFEST_FILE, schema.LOCK_FILE))
    return cache[directory]


def skip_outputs(files: Sequence[tuple[str, int]], *, current: str
                 ) -> tuple[list[tuple[str, int]], list[str]]:
    """(files to read, files skipped): an input pattern that reaches into a pipeline output
    directory (``--input='data/**'`` over an earlier output under ``data/``) must not read
    its vocab.txt, manifest.json or shards as corpus text. A file is skipped only when its
    name is the pipeline's and its directory is an output directory (see ``_ours_in``)."""
    keep, skipped, cache = [], [], {}
    for path, size in files:
        parts = path.split("/")
        candidates = []
        # vocab.txt; tfrecord/part-..; _pieces/run-../piece-..; _staging/run-../tfrecord/..
        for depth in (1, 2, 3, 4):
            if len(parts) > depth:
                candidates.append(("/".join(parts[:-depth]), "/".join(parts[-depth:])))
        if any(_ours_in(d, rel, current=current, cache=cache) for d, rel in candidates):
            skipped.append(path)
        else:
            keep.append((path, size))
    return keep, skipped


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run will do to the output directory (relative paths)."""
    previous: tuple[str, ...]  # a previous output's files: deleted only once the new is done
    temporary: tuple[str, ...]  # earlier runs' leftovers: deleted before this run starts
    foreign: tuple[str, ...]  # not the pipeline's: kept


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one run writes: its pieces, its shards (in place, or staged until the swap), and
    the previous output's files the swap replaces."""
    output_dir: str
    run_id: str
    pieces_dir: str
    shard_root: str
    previous: tuple[str, ...] = ()

    @property
    def staged(self) -> bool:
        return self.shard_root.rstrip("/") != self.output_dir.rstrip("/")


def layout(output_dir: str, run_id: str, *, temp_dir: str | None = None,
           previous: Sequence[str] = ()) -> Layout:
    """The run's layout: pieces under ``temp_dir`` (default ``output_dir/_pieces``)/run-<id>;
    shards staged under ``_staging/run-<id>`` when there is a previous output to keep."""
    base = (temp_dir or fs.join(output_dir, schema.PIECES_DIR)).rstrip("/")
    shard_root = (fs.join(output_dir, schema.STAGING_DIR, run_id) if previous
                  else output_dir.rstrip("/"))
    return Layout(output_dir=output_dir.rstrip("/"), run_id=run_id,
                  pieces_dir=f"{base}/{run_id}", shard_root=shard_root,
                  previous=tuple(previous))


def read_previous_manifest(output_dir: str) -> dict | None:
    """The previous output's manifest, or None if absent or unreadable (a damaged manifest
    names nothing; the pipeline's exact naming still applies)."""
    path = fs.join(output_dir, schema.MANIFEST_FILE)
    try:
        manifest = json.loads(fs.read_bytes(path))
    except Exception:  # absent, unreadable, not JSON: it lists nothing
        return None
    return manifest if isinstance(manifest, dict) else None


def plan(output_dir: str, *, overwrite: bool) -> Plan:
    """Classify what is under ``output_dir``; refuse a non-empty one without --overwrite."""
    files = {rel: size for rel, size in list_below(output_dir).items()
             if rel != schema.LOCK_FILE}
    if files and not overwrite:
        raise FileExistsError(
            f"--output_dir {output_dir} is not empty ({len(files)} files); pass --overwrite "
            "to replace the pipeline's files there (other files are kept)")
    previous = read_previous_manifest(output_dir) if files else None
    kinds: dict[str, list[str]] = {"result": [], "temporary": [], "foreign": []}
    for rel in sorted(files):
        kinds[classify(rel, previous)].append(rel)
    return Plan(previous=tuple(kinds["result"]), temporary=tuple(kinds["temporary"]),
                foreign=tuple(kinds["foreign"]))


def warn_foreign(output_dir: str, foreign: Sequence[str]) -> None:
    if foreign:
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more"
                                            if len(foreign) > 10 else "")
        LOG.warning("--overwrite keeps %d file(s) under %s that are not this pipeline's: %s",
                    len(foreign), output_dir, shown)


# ---- the lock ----------------------------------------------------------------------------

def lock_path(output_dir: str) -> str:
    return fs.join(output_dir, schema.LOCK_FILE)


def lock_record(run_id: str) -> dict:
    """Who holds the lock (no command line: it may carry credentials)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = None
    return {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(), "user": user,
            "started_unix": int(time.time()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def read_lock(path: str) -> dict | None:
    """The lock's record; None when there is no lock, {} when it cannot be read. (Asked first:
    each store reports a missing object with an exception of its own.)"""
    if not fs.exists(path):
        return None
    try:
        record = json.loads(fs.read_bytes(path))
    except Exception:  # vanished since, or not ours to parse: a lock all the same
        return {}
    return record if isinstance(record, dict) else {}


def _alive_here(record: dict) -> bool | None:
    """Whether the lock's process still runs: True/False on the host that took it, None
    elsewhere (another machine's processes cannot be seen from here)."""
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return None
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_lock(path: str, record: dict | None) -> str:
    if not record:
        return f"{path} exists but cannot be read"
    age = time.time() - record.get("started_unix", time.time())
    who = (f"run {record.get('run_id')} (host {record.get('host')}, pid {record.get('pid')}, "
           f"user {record.get('user')}, started {record.get('started')}, "
           f"{age / 60:.0f} min ago)")
    alive = _alive_here(record)
    if alive is False:
        return (f"{path} is a stale lock: {who}; that process is gone (the job crashed or was "
                f"killed). If no job is writing there, rerun with --break_lock to remove it")
    return (f"another job holds {path}: {who}. Wait for it to finish; if it is known to be "
            f"dead, rerun with --break_lock")


def _create_if_absent(path: str, data: bytes, options) -> bool:
    """Create ``path`` holding ``data`` only if it does not exist; False if it does."""
    if not is_remote(path):
        try:
            fd = os.open(local_path(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    scheme, rest = path.split("://", 1)
    bucket, _, key = rest.partition("/")
    if scheme == "s3":
        from apache_beam.io.aws.clients.s3 import boto3_client
        from botocore.exceptions import ClientError

        client = boto3_client.Client(options).client
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                return False
            raise
        return True
    if scheme == "gs":
        from apache_beam.io.gcp import gcsio
        from google.api_core.exceptions import PreconditionFailed

        client = gcsio.GcsIO(pipeline_options=options).client
        try:
            client.bucket(bucket).blob(key).upload_from_string(data, if_generation_match=0)
        except PreconditionFailed:
            return False
        return True
    if fs.exists(path):  # no create-if-absent on this store: check, then write
        return False
    fs.write_atomic(path, data)
    return True


def acquire_lock(output_dir: str, run_id: str, *, options=None,
                 break_lock: bool = False) -> dict:
    """Take the output directory's lock for ``run_id``; LockedError naming the holder if
    another job has it. ``break_lock`` removes a lock left by a dead job first (never one whose
    process is seen running on this host)."""
    fs.make_dirs(output_dir)
    path = lock_path(output_dir)
    record = lock_record(run_id)
    data = json.dumps(record, indent=2).encode("utf-8")
    if break_lock:
        held = read_lock(path)
        if held is not None:
            if _alive_here(held):
                raise LockedError(describe_lock(path, held).split(". Wait")[0]
                                  + ": its process is running, the lock is not broken")
            LOG.warning("--break_lock: removing %s", describe_lock(path, held).split(";")[0])
            fs.delete_files([path])
    if not _create_if_absent(path, data, options):
        raise LockedError(describe_lock(path, read_lock(path)))
    if is_remote(path) and (read_lock(path) or {}).get("run_id") != run_id:
        raise LockedError(describe_lock(path, read_lock(path)))  # lost a race
    return record


def release_lock(output_dir: str, run_id: str) -> None:
    """Remove the lock if it is still this run's."""
    path = lock_path(output_dir)
    held = read_lock(path)
    if held is not None and held.get("run_id") == run_id:
        fs.delete_files([path])
    elif held is not None:
        LOG.warning("%s now belongs to run %s, not this run (%s): left in place", path,
                    held.get("run_id"), run_id)


# ---- the end of a run (in the job's last step) -----------------------------------------

def delete_run_pieces(pieces_dir: str) -> None:
    """Delete this run's piece and sketch files (by their exact names) and, if then empty,
    its folder and the default ``_pieces`` folder above it. Nothing else there is touched."""
    inside = list_below(pieces_dir)
    fs.delete_files([fs.join(pieces_dir, rel) for rel in inside
                     if re.fullmatch(rf"{_TMP}{_RUN_FILE}", rel)])
    _remove_empty_dirs(pieces_dir, levels=2)


def delete_below(output_dir: str, relatives: Sequence[str]) -> None:
    """Delete these files under ``output_dir``, then the directories they leave empty (up to,
    not including, ``output_dir``)."""
    fs.delete_files([fs.join(output_dir, rel) for rel in relatives])
    parents = sorted({rel.rsplit("/", 1)[0] for rel in relatives if "/" in rel},
                     key=lambda d: -d.count("/"))
    for parent in parents:
        _remove_empty_dirs(fs.join(output_dir, parent), levels=parent.count("/") + 1)


def discard_run(layout: Layout) -> None:
    """After a failed run: delete its pieces and shards (exact names only). The previous
    output, if any, was never touched. (A run that fails within the swap itself, a few
    renames, has no manifest: it is unfinished, as ``inspect`` and ``verify`` say.)"""
    try:
        delete_run_pieces(layout.pieces_dir)
        # Staged shards; or, without a previous output, shards this run wrote in place (the
        # plan found no file of such a name when the run began, and the lock kept others out).
        written = list_below(layout.shard_root)
        fs.delete_files([fs.join(layout.shard_root, rel) for rel in written
                         if re.fullmatch(_SHARDS, rel)])
        _remove_empty_shard_dirs(layout.shard_root)
        if layout.staged:
            _remove_empty_dirs(layout.shard_root, levels=2)
    except Exception as e:  # the run's own error matters more; leftovers go at the next run
        LOG.warning("could not remove the failed run's temporary files: %s", e)


def remove_if_empty(output_dir: str) -> None:
    """rmdir an output directory left empty (a run that failed before writing anything)."""
    _remove_empty_dirs(output_dir, levels=1)


def _remove_empty_shard_dirs(root: str, *, keep_formats: bool = False) -> None:
    """rmdir the empty length-bin directories (``tfrecord/len-0128``) under ``root``, then
    its empty ``tfrecord/`` and ``parquet/`` unless ``keep_formats`` (local disks only)."""
    if is_remote(root):
        return
    for sub in (schema.TFRECORD_DIR, schema.PARQUET_DIR):
        directory = os.path.join(local_path(root), sub)
        if not os.path.isdir(directory) or os.path.islink(directory):
            continue
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if re.fullmatch(_BIN_NAME, name) and not os.path.islink(path):
                _remove_empty_dirs(path, levels=1)
        if not keep_formats:
            _remove_empty_dirs(directory, levels=1)


def _remove_empty_dirs(directory: str, levels: int) -> None:
    """rmdir ``directory`` and up to ``levels - 1`` parents while they are empty (local disks;
    object stores have no directories)."""
    if is_remote(directory):
        return
    path = local_path(directory).rstrip("/")
    for _ in range(levels):
        try:
            os.rmdir(path)
        except OSError:
            return
        path = os.path.dirname(path)


def swap_in(output_dir: str, *, staging: str, previous: Iterable[str],
            new_files: Iterable[str]) -> None:
    """Replace a previous output by the staged one: the old manifest goes first (from then on
    the directory is visibly unfinished, never a manifest describing files that changed), then
    the old files, then each staged file is renamed to its final name. The caller writes the
    new manifest last."""
    manifest = fs.join(output_dir, schema.MANIFEST_FILE)
    if fs.exists(manifest):
        fs.delete_files([manifest])
    new_files = list(new_files)
    old = [fs.join(output_dir, rel) for rel in previous
           if rel != schema.MANIFEST_FILE and rel not in new_files]
    fs.delete_files([p for p in old if fs.exists(p)])
    for rel in new_files:
        target = fs.join(output_dir, rel)
        if fs.exists(target):
            fs.delete_files([target])
        parent = target.rsplit("/", 1)[0]
        fs.make_dirs(parent)
        fs.rename(fs.join(staging, rel), target)
    _remove_empty_shard_dirs(staging)
    _remove_empty_shard_dirs(output_dir, keep_formats=True)
    _remove_empty_dirs(staging, levels=2)
