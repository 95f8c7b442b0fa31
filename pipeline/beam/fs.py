"""Files through Beam's FileSystems (local, gs://, s3://, hdfs://, ...): the one place the job
reads, writes, lists and deletes.

Object stores have no directories: a "directory" is a prefix, it never "exists", and deleting
one deletes nothing. So everything here works on the objects themselves: a directory is empty
when listing ``dir/**`` finds nothing, and it is cleared by deleting what the listing finds.

Workers of some runners (Dask among them) never receive the pipeline options that Beam's S3
and GCS filesystems need (endpoint, credentials, project); DoFns carry
:func:`filesystem_options` and call :func:`use_options` in ``setup`` (through ``worker.setup``).
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.common.digest import files_sha256
from pipeline.common.paths import FILESYSTEM_OPTION_GROUPS, is_remote, local_path

_UNCOMPRESSED = CompressionTypes.UNCOMPRESSED
# The temporary names ``atomic_writer`` writes under, as a regular expression (the output
# directory's rules recognise them: ``output_dir``).
TEMPORARY_PREFIX = r"\.tmp-[0-9a-f]{32}-"


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def filesystem_options(options: PipelineOptions) -> dict[str, object]:
    """The options Beam's filesystems need, as a plain dict a DoFn can carry to workers."""
    from apache_beam.options import pipeline_options as po

    wanted = {}
    for name in FILESYSTEM_OPTION_GROUPS:
        group = getattr(po, name, None)
        if group is not None:
            wanted.update(options.view_as(group).get_all_options(drop_default=True,
                                                                 current_only=True))
    return {k: v for k, v in wanted.items() if v is not None}


def use_options(options: dict[str, object] | None) -> None:
    """Give Beam's filesystems in this process the job's options (see the module docstring)."""
    if options:
        FileSystems.set_options(PipelineOptions.from_dictionary(options))


# Beam's S3 filesystem builds a new boto3 Session and client for every operation (open, exists,
# rename, delete, ...): measured 0.65 s of CPU each, 61 of a test job's 81 seconds, and at scale
# one open per piece per shard. botocore clients are thread-safe, so one per process and set
# of S3 options serves every operation; each Beam client object keeps its own download state.
_S3_CLIENTS: dict[tuple, object] = {}
_S3_LOCK = threading.Lock()


def _reuse_s3_clients() -> None:
    try:
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:  # no apache-beam[aws]: no s3:// filesystem either
        return
    if getattr(boto3_client.Client, "_bert_wwm_shared", False):
        return
    build = boto3_client.Client.__init__

    def init(self, options):
        if isinstance(options, PipelineOptions):
            key = tuple(sorted(options.view_as(_s3_options()).get_all_options(
                drop_default=True, current_only=True).items()))
        else:
            key = tuple(sorted((k, v) for k, v in dict(options).items()
                               if k.startswith("s3_")))
        with _S3_LOCK:
            shared = _S3_CLIENTS.get(key)
            if shared is None:
                build(self, options)
                _S3_CLIENTS[key] = self.client
                return
        build_state = {"_download_request": None, "_download_stream": None,
                       "_download_pos": 0}
        self.client = shared
        for name, value in build_state.items():
            setattr(self, name, value)

    boto3_client.Client.__init__ = init
    boto3_client.Client._bert_wwm_shared = True


def _s3_options():
    from apache_beam.options.pipeline_options import S3Options

    return S3Options


_reuse_s3_clients()


def open_read(path: str):
    return FileSystems.open(path, compression_type=_UNCOMPRESSED)


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def rename(source: str, target: str) -> None:
    FileSystems.rename([source], [target])


def match(pattern: str) -> list[tuple[str, int]]:
    """(path, size) of every file ``pattern`` matches (``**`` crosses directories)."""
    return [(m.path, m.size_in_bytes) for m in FileSystems.match([pattern])[0].metadata_list]


class InputFile(NamedTuple):
    path: str
    size: int
    mtime: float | None  # seconds since the epoch, where the store says


def input_files(patterns: Sequence[str]) -> list[InputFile]:
    """Every file the --input patterns match, each once, sorted by path; a pattern that
    matches nothing is an error (a typo must not silently read less)."""
    files = {}
    for pattern in patterns:
        found = FileSystems.match([pattern])[0].metadata_list
        if not found:
            raise FileNotFoundError(f"--input {pattern!r} matches no file")
        for m in found:
            files[m.path] = InputFile(m.path, m.size_in_bytes,
                                      getattr(m, "last_updated_in_seconds", None) or None)
    return [files[p] for p in sorted(files)]


def match_inputs(patterns: Sequence[str]) -> list[tuple[str, int]]:
    """(path, size) of every file the --input patterns match (see ``input_files``)."""
    return [(f.path, f.size) for f in input_files(patterns)]


def stat(path: str) -> tuple[int, float | None]:
    """(size, mtime) of one file, as ``input_files`` gives them."""
    m = FileSystems.match([path])[0].metadata_list[0]
    return m.size_in_bytes, getattr(m, "last_updated_in_seconds", None) or None


def list_tree(directory: str) -> list[tuple[str, int]]:
    """(path, size) of every file below ``directory``, sorted; [] if there is none."""
    directory = directory.rstrip("/")
    if not is_remote(directory) and not os.path.isdir(local_path(directory)):
        return []
    return sorted(match(directory + "/**"))


def delete_files(paths: list[str]) -> None:
    if paths:
        FileSystems.delete(list(paths))


def remove_tree(directory: str) -> None:
    """Delete every file below ``directory`` (and, on a local disk, the directory itself)."""
    delete_files([p for p, _ in list_tree(directory)])
    local = local_path(directory)
    if not is_remote(directory) and os.path.isdir(local):
        shutil.rmtree(local, ignore_errors=True)


def make_dirs(path: str) -> None:
    try:
        FileSystems.mkdirs(path)
    except IOError:
        pass  # exists (object stores have no directories: nothing to make there)


@contextlib.contextmanager
def atomic_writer(path: str):
    """A file object for ``path``: written under a temporary name, renamed into place on
    success (a reader never sees a partial file), removed on failure."""
    directory, name = path.rsplit("/", 1) if "/" in path else (".", path)
    tmp = join(directory, f".tmp-{uuid.uuid4().hex}-{name}")  # TEMPORARY_PREFIX
    try:
        with FileSystems.create(tmp, compression_type=_UNCOMPRESSED) as f:
            yield f
    except BaseException:
        if FileSystems.exists(tmp):
            FileSystems.delete([tmp])
        raise
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def write_atomic(path: str, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def tree_sha256(directory: str) -> str:
    """``common.digest.files_sha256`` of every file below ``directory`` on any filesystem: the
    same digest as ``common.digest.directory_sha256`` gives the same files on a local disk."""
    directory = directory.rstrip("/")
    return files_sha256((path[len(directory):].lstrip("/"), size,
                         functools.partial(open_read, path))
                        for path, size in list_tree(directory))


@contextlib.contextmanager
def localized(path: str) -> Iterator[str]:
    """A local path for ``path`` while the block runs: a remote directory (an LTP model) is
    copied whole, a remote file alone, into a fresh temporary directory that is removed when
    the block ends; a local path is given as it is."""
    if not is_remote(path):
        yield local_path(path)
        return
    base = path.rstrip("/")
    target = tempfile.mkdtemp(prefix="bert_wwm_")
    try:
        inside = list_tree(base)
        if inside:
            for remote, _ in inside:
                _copy(remote, os.path.join(target, remote[len(base):].lstrip("/")))
            yield target
        else:
            if not match(base):
                raise FileNotFoundError(f"{path} does not exist")
            local = os.path.join(target, base.rsplit("/", 1)[-1])
            _copy(base, local)
            yield local
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _copy(remote: str, local: str) -> None:
    os.makedirs(os.path.dirname(local), exist_ok=True)
    with open_read(remote) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
