"""A finished job's output directory, read back: its manifest, vocabulary, statistics and
files, on a local disk or any filesystem Beam has (gs://, s3://, hdfs://).

Remote paths go through Beam's FileSystems (the tools take the same filesystem flags as the
job: ``--s3_endpoint_url``, ``--project``, ...); local paths through the OS directly, which
is what Beam's local filesystem does too, without the seconds of importing Beam.

An output without ``manifest.json`` is not finished (the manifest is written last): opening it
raises :class:`NotAnOutput`, whose message says what is there instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import json
import os
from typing import BinaryIO, Dict, List, Optional, Sequence, Tuple

from pipeline import schema

# Beam's option groups that configure its filesystems (by class name: a missing extra is fine).
_FILESYSTEM_OPTIONS = ("S3Options", "GoogleCloudOptions", "HadoopFileSystemOptions",
                       "AzureOptions")
FILESYSTEM_FLAGS_HELP = ("Flags of Beam's filesystems (--s3_endpoint_url, --project, "
                         "--hdfs_host, ...) are accepted for remote paths, as by the job.")


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def _beam():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def use_filesystem_flags(flags: Sequence[str]) -> None:
    """Hand Beam's filesystems the flags the tool did not know; refuse any Beam does not know
    either (argparse's usage error, exit code 2)."""
    if not flags:
        return
    from apache_beam.options import pipeline_options as po

    parser = po._BeamArgumentParser(allow_abbrev=False, prog="filesystem flags")
    for name in _FILESYSTEM_OPTIONS:
        group = getattr(po, name, None)
        if group is not None:
            group._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(list(flags))
    if unknown:
        parser.error(f"unknown argument(s): {' '.join(unknown)}")
    _beam().set_options(po.PipelineOptions(list(flags)))


def list_files(directory: str) -> Dict[str, int]:
    """relative path → size of every file below ``directory`` ({} if there is none)."""
    directory = directory.rstrip("/")
    if not is_remote(directory):
        root = _local(directory)
        found = {}
        for base, _, names in os.walk(root):
            for name in names:
                path = os.path.join(base, name)
                found[os.path.relpath(path, root).replace(os.sep, "/")] = os.path.getsize(path)
        return found
    result = _beam().match([directory + "/**"])[0]
    return {m.path[len(directory) + 1:]: m.size_in_bytes for m in result.metadata_list}


def open_read(path: str) -> BinaryIO:
    if not is_remote(path):
        return open(_local(path), "rb")
    from apache_beam.io.filesystem import CompressionTypes

    return _beam().open(path, compression_type=CompressionTypes.UNCOMPRESSED)


class HashingReader(io.RawIOBase):
    """Reads through to ``stream``, hashing (sha256) and counting every byte read."""

    def __init__(self, stream: BinaryIO):
        super().__init__()
        self._stream, self.digest, self.bytes = stream, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.digest.update(data)
        self.bytes += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()

    def drain(self, block: int = 8 << 20) -> None:
        """Read (and hash) whatever is left."""
        while self.read(block):
            pass


class NotAnOutput(Exception):
    """The directory holds no finished output; the message says what it does hold."""


@dataclasses.dataclass
class Output:
    """A finished output directory: ``files`` maps every relative path below it to its size."""
    root: str
    manifest: dict
    files: Dict[str, int]

    def path(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}"

    def read(self, relative: str) -> bytes:
        with open_read(self.path(relative)) as f:
            return f.read()

    @property
    def task(self) -> str:
        """nsp, sop or none (``schema.sentence_task``)."""
        return schema.sentence_task(self.manifest)

    @property
    def formats(self) -> List[str]:
        return [fmt for fmt in ("tfrecord", "parquet") if self.manifest["shards"].get(fmt)]

    def shards(self, fmt: str) -> List[dict]:
        return list(self.manifest["shards"].get(fmt, []))

    @property
    def compressed(self) -> bool:
        return self.manifest.get("tfrecord_compression", "") == "GZIP"

    @functools.cached_property
    def vocab(self) -> List[str]:
        """The data's own vocabulary (one token per line, id = line number)."""
        text = self.read(self.manifest.get("vocab_file", schema.VOCAB_FILE)).decode("utf-8")
        return text.rstrip("\n").split("\n")

    @functools.cached_property
    def stats(self) -> Optional[dict]:
        if schema.STATS_FILE not in self.files:
            return None
        return json.loads(self.read(schema.STATS_FILE))

    def dtypes(self) -> Dict[str, str]:
        """The features the shards must hold (name → dtype), label absent for "none"."""
        return {name: dtype for name, dtype, _ in schema.features(self.task)}

    def lengths(self) -> Dict[str, int]:
        """Fixed TFRecord length of every feature."""
        m = self.manifest
        return {name: schema.feature_length(kind, m["max_seq_length"],
                                            m["max_predictions_per_seq"])
                for name, _, kind in schema.features(self.task)}


def open_output(root: str) -> Output:
    """The output under ``root``; raises :class:`NotAnOutput` when it has no valid manifest."""
    files = list_files(root)
    if schema.MANIFEST_FILE not in files:
        raise NotAnOutput(describe_unfinished(root, files))
    with open_read(f"{root.rstrip('/')}/{schema.MANIFEST_FILE}") as f:
        text = f.read()
    try:
        manifest = schema.validate_manifest(json.loads(text))
        schema.sentence_task(manifest)
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise NotAnOutput(f"{root}/{schema.MANIFEST_FILE} cannot be used: {e}") from e
    return Output(root=root, manifest=manifest, files=files)


# What a file or directory left in an unfinished output means.
_MEANINGS = {
    schema.PIECES_DIR: "instances parked between the job's two halves: it stopped before or "
                       "while writing the shards",
    schema.TFRECORD_DIR: "TFRecord shards (each appears only when complete)",
    schema.PARQUET_DIR: "Parquet shards (each appears only when complete)",
    schema.STATS_FILE: "written just before the manifest",
    schema.VOCAB_FILE: "written just before the manifest",
}


def describe_unfinished(root: str, files: Dict[str, int]) -> str:
    """Why ``root`` is not a finished output, and a summary of what it holds."""
    head = (f"{root} has no {schema.MANIFEST_FILE}: the job that writes there has not "
            f"finished (the manifest is written last), it crashed, or this is not a "
            f"pipeline output directory.")
    if not files:
        exists = is_remote(root) or os.path.isdir(_local(root))
        return head + (" The directory is empty." if exists else " The directory does not "
                                                                  "exist.")
    groups: Dict[str, List[int]] = {}
    for rel, size in files.items():
        top = rel.split("/", 1)[0] + ("/" if "/" in rel else "")
        groups.setdefault(top, []).append(size)
    lines = [head, "What is there:"]
    for top in sorted(groups):
        sizes = groups[top]
        name = top.rstrip("/")
        meaning = _MEANINGS.get(name) or ("a partly written file" if name.startswith(".tmp-")
                                          else "")
        count = f"{len(sizes)} file{'s' if len(sizes) != 1 else ''}, " if top.endswith("/") \
            else ""
        lines.append(f"  {top:<24} {count}{human_bytes(sum(sizes))}"
                     + (f"  ({meaning})" if meaning else ""))
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def tool_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The common start of the three tools' command lines."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog=FILESYSTEM_FLAGS_HELP)
    parser.add_argument("--output_dir", required=True,
                        help="the job's --output_dir (local, gs://, s3://, ...)")
    return parser


def parse_tool_args(parser: argparse.ArgumentParser,
                    argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, List[str]]:
    """The tool's own flags; the rest go to Beam's filesystems (unknown ones are refused)."""
    args, rest = parser.parse_known_args(argv)
    use_filesystem_flags(rest)
    return args, rest
