"""The sha256 of a tree of files (an LTP model directory, for the manifest): one algorithm,
so that the same files give the same digest wherever they are stored.

Algorithm: the files sorted by relative name (``/``-separated, compared as strings); for each,
the UTF-8 bytes of ``"{name}\\0{size}\\0"`` and then its content; the hex digest of it all.
:func:`files_sha256` runs it over ``(relative name, size, opener)`` entries:
:func:`directory_sha256` gives it a local directory's files, ``beam.fs.tree_sha256`` a
directory on any Beam filesystem (``gs://``, ``s3://``, ...).
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import BinaryIO

# Opens one file for reading, as a context manager.
Opener = Callable[[], ContextManager[BinaryIO]]
_BLOCK = 1 << 20


def files_sha256(files: Iterable[tuple[str, int, Opener]]) -> str:
    """sha256 over (relative name, size, content) of ``files``, sorted by name."""
    digest = hashlib.sha256()
    for name, size, opener in sorted(files, key=lambda entry: entry[0]):
        digest.update(f"{name}\0{size}\0".encode())
        with opener() as handle:
            for block in iter(lambda: handle.read(_BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def directory_sha256(path: str | Path) -> str:
    """:func:`files_sha256` of every file below the local directory ``path``."""
    root = Path(path)
    return files_sha256((file.relative_to(root).as_posix(), file.stat().st_size,
                         functools.partial(open, file, "rb"))
                        for file in root.rglob("*") if file.is_file())
