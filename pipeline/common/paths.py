"""Where a path says a file is: on this machine's disk, or behind a filesystem library.

One meaning in the whole pipeline (the job, its Beam filesystem layer, the readers, the tools):

* A path is **remote** when it carries a URL scheme (``gs://``, ``s3://``, ``hdfs://``, ...)
  other than ``file://``: it is reached through Beam's FileSystems.
* ``file://`` names the local disk, like a plain path: :func:`local_path` strips the scheme
  and the OS opens the file (which is what Beam's local filesystem does too).

The trainers' files (``trainer/storage.py``) use the same two functions. One test elsewhere
means something else on purpose: ``core.segment.resolve_model`` refuses any ``scheme://``
model path, ``file://`` included (the job hands the segmenter plain local directories).
"""
from __future__ import annotations

# Beam's option groups that configure its filesystems (S3 endpoint and credentials, GCS
# project, HDFS host, Azure account), by class name so that a missing extra is no error: the
# job hands them to its workers, the tools accept them as flags.
FILESYSTEM_OPTION_GROUPS = ("S3Options", "GoogleCloudOptions", "HadoopFileSystemOptions",
                            "AzureOptions")


def is_remote(path: str) -> bool:
    """Whether ``path`` must go through a filesystem library: a URL, but not ``file://``."""
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    """The OS path of a local ``path``: ``file:///data/x`` → ``/data/x``; others as given."""
    return path[len("file://"):] if path.startswith("file://") else path
