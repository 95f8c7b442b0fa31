"""Files the trainers read and write, on a local disk or behind a URL (``gs://...``).

Framework-free: local paths (``file://`` included: ``pipeline.common.paths``) use the standard
library. URLs go through ``tf.io.gfile`` when
TensorFlow is already imported (the TF trainer, whose data and output_dir live on GCS on a TPU
VM). Without TensorFlow, URLs can be read through ``fsspec`` (it needs the protocol's package,
e.g. gcsfs: the PyTorch trainer streaming shards from a bucket); writing a run directory behind
a URL is the TF trainer's alone (the PyTorch trainer refuses a remote --output_dir, since
``torch.save`` writes local files).
"""
from __future__ import annotations

import os
import shutil
import sys
from typing import IO

from pipeline.common.paths import is_remote, local_path  # one meaning: file:// is local

__all__ = ["is_remote", "local_path", "join", "open_binary", "exists", "read_text", "write_text",
           "append_text", "make_dirs", "remove"]


def join(base: str, *parts: str) -> str:
    """os.path.join for local paths (made absolute; ``file://`` stripped), '/'-join for URLs."""
    if is_remote(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.abspath(os.path.join(local_path(base), *parts))


def _gfile():
    """TensorFlow's file API if TensorFlow is imported, else None (never imports it)."""
    tf = sys.modules.get("tensorflow")
    return tf.io.gfile if tf is not None else None


def _remote_writer(path: str):
    gfile = _gfile()
    if gfile is None:
        raise ValueError(f"{path}: writing behind a URL needs TensorFlow's file system "
                         "(the TF trainer); use a local directory")
    return gfile


def open_binary(path: str) -> IO[bytes]:
    """A readable binary file object for a local path or a URL (see module docstring)."""
    if not is_remote(path):
        return open(local_path(path), "rb")
    gfile = _gfile()
    if gfile is not None:
        return gfile.GFile(path, "rb")
    import fsspec  # deferred: only remote reads without TensorFlow need it

    return fsspec.open(path, "rb").open()


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(local_path(path))
    gfile = _gfile()
    if gfile is not None:
        return gfile.exists(path)
    import fsspec

    fs, inner = fsspec.core.url_to_fs(path)
    return fs.exists(inner)


def read_text(path: str) -> str:
    with open_binary(path) as f:
        return f.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    """Replace ``path``'s content with ``text`` (UTF-8), creating its directory."""
    if not is_remote(path):
        path = local_path(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    gfile = _remote_writer(path)
    if gfile.exists(path):  # not every file system truncates on "w" (TF's ram:// does not)
        gfile.remove(path)
    with gfile.GFile(path, "w") as f:
        f.write(text)


def append_text(path: str, text: str) -> None:
    """Add ``text`` at the end of ``path``, creating it and its directory. Object stores have
    no append: a remote file is rewritten whole (fine for a log written every few hundred
    steps)."""
    if not is_remote(path):
        path = local_path(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
        return
    write_text(path, (read_text(path) if exists(path) else "") + text)


def make_dirs(path: str) -> None:
    if is_remote(path):
        _remote_writer(path).makedirs(path)
    else:
        os.makedirs(local_path(path), exist_ok=True)


def remove(path: str) -> None:
    """Delete a file or a directory tree; nothing if ``path`` does not exist."""
    if not is_remote(path):
        path = local_path(path)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        return
    gfile = _remote_writer(path)
    if gfile.isdir(path):
        gfile.rmtree(path)
    elif gfile.exists(path):
        gfile.remove(path)
