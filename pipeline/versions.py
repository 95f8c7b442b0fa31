"""Installed package versions, for the manifest and for model build records (no framework
imports: the core, the writers and the trainers all use it)."""
from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata

# What the data depends on: recorded in every manifest.
DATA_PACKAGES = ("apache-beam", "ltp", "ltp-extension", "tokenizers", "pyarrow", "numpy",
                 "opencc", "rensa", "bert-wwm-pipeline")


def version(package: str) -> str | None:
    """The installed version of ``package`` (``_`` and ``-`` alike), None if not installed."""
    try:
        return metadata.version(package.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


def versions(packages: Iterable[str] = DATA_PACKAGES) -> dict[str, str | None]:
    return {"python": platform.python_version(), **{p: version(p) for p in packages}}
