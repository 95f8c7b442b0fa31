"""A finished job's output directory, read back: its manifest, vocabulary, statistics and
files, on a local disk or any filesystem Beam has (gs://, s3://, hdfs://).

Remote paths (``pipeline.common.paths``: a URL other than ``file://``) go through Beam's
FileSystems, configured by the tools' filesystem flags (``pipeline.tools.cli``); local paths
through the OS directly, which is what Beam's local filesystem does too, without the seconds
of importing Beam.

An output without ``manifest.json`` is not finished (the manifest is written last): opening it
raises :class:`NotAnOutput`, whose message says what is there instead; so does a manifest the
tools cannot use (damaged, or naming a file outside the directory: see :func:`usable_manifest`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO

from pipeline import schema
from pipeline.common.paths import is_remote, local_path
from pipeline.common.sizes import human_bytes


def _beam():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def list_files(directory: str) -> dict[str, int]:
    """relative path → size of every file below ``directory`` ({} if there is none)."""
    directory = directory.rstrip("/")
    if not is_remote(directory):
        root = local_path(directory)
        found = {}
        for base, _, names in os.walk(root):
            for name in names:
                path = os.path.join(base, name)
                try:
                    size = os.path.getsize(path)
                except OSError:  # a dangling symbolic link: nothing there to read
                    continue
                found[os.path.relpath(path, root).replace(os.sep, "/")] = size
        return found
    result = _beam().match([directory + "/**"])[0]
    return {m.path[len(directory) + 1:]: m.size_in_bytes for m in result.metadata_list}


def open_read(path: str) -> BinaryIO:
    if not is_remote(path):
        return open(local_path(path), "rb")
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


def warning_messages(stats) -> list[str]:
    """The messages of stats.json's ``warnings`` (``writers.manifest.data_warnings``): what in
    the counts says the data is probably not what was meant. Anything else there is skipped,
    so a damaged stats.json gives fewer messages, never an error."""
    warnings = stats.get("warnings") if isinstance(stats, dict) else None
    if not isinstance(warnings, list):
        return []
    return [str(w.get("message", w)) if isinstance(w, dict) else str(w) for w in warnings
            if isinstance(w, (dict, str))]


class NotAnOutput(Exception):
    """The directory holds no finished output, or its manifest cannot be used; the message
    says what the directory holds, or (in one line) what is wrong with the manifest."""


class UnsafePath(ValueError):
    """A path the manifest names that would lead out of the output directory."""


def check_relative(relative) -> str:
    """``relative`` if its text keeps it inside the output directory, else :class:`UnsafePath`
    (``schema.relative_path_problem``)."""
    if not isinstance(relative, str):
        why = f"{_json_type(relative)}, not a string"
    else:
        why = schema.relative_path_problem(relative)
    if why:
        raise UnsafePath(f"{_show(relative)} is not a path inside the output directory: {why}")
    return relative


def _json_type(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _show(value, limit: int = 60) -> str:
    """``value`` for a one-line message: repr escapes newlines and control characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _whole(low: int, high: int | None = None) -> tuple[Callable[[object], bool], str]:
    """(test, description) of a JSON whole number from ``low`` to ``high``."""
    return ((lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v
             and (high is None or v <= high)),
            f"a whole number from {low} to {high}" if high is not None else
            f"a whole number, {low} or more")


# Bounds on the lengths and sizes the tools allocate arrays for: a damaged value is refused,
# not a MemoryError (a million tokens per instance, 16 million vocabulary entries).
MAX_LENGTH = 1 << 20
MAX_VOCAB = 1 << 24
LAST_TIMESTAMP = 253402300800  # 10000-01-01: datetime's range ends there
# The values the tools read, when present (the required keys: schema.validate_manifest).
_VALUES = {
    "max_seq_length": _whole(1, MAX_LENGTH),
    "max_predictions_per_seq": _whole(0, MAX_LENGTH),
    "vocab_size": _whole(0, MAX_VOCAB),
    "total_instances": _whole(0),
    "num_shards": _whole(0),
    "next_sentence": (lambda v: v in schema.SENTENCE_TASKS,
                      f"one of {', '.join(schema.SENTENCE_TASKS)}"),
    "tfrecord_compression": (lambda v: v in ("", "GZIP"), "'' or 'GZIP'"),
    "created_unix": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                     and 0 <= v < LAST_TIMESTAMP, "seconds since 1970"),
    "config": (lambda v: isinstance(v, dict), "an object"),
    "ltp_model": (lambda v: isinstance(v, dict), "an object"),
    "versions": (lambda v: isinstance(v, dict), "an object"),
    "masking": (lambda v: isinstance(v, dict) and v.get("mode", "static") in
                schema.MASKING_MODES, f"an object whose mode is one of "
                                      f"{', '.join(schema.MASKING_MODES)}"),
}
# What dynamic data's ``masking`` must hold: the trainers mask with these settings
# (``pipeline.core.masking.MaskingConfig.from_manifest``).
_NUMBER = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")
_DYNAMIC_MASKING_VALUES = {
    "masked_lm_prob": (lambda v: _NUMBER[0](v) and 0 <= v <= 1, "a number from 0 to 1"),
    "max_predictions_per_seq": _whole(0, MAX_LENGTH),
    "whole_word": (lambda v: isinstance(v, bool), "true or false"),
    "mask_id": _whole(0, MAX_VOCAB),
    "ngram_lengths": (lambda v: isinstance(v, list) and bool(v) and all(
        _whole(1, MAX_LENGTH)[0](n) for n in v), "a non-empty array of whole numbers >= 1"),
    "ngram_weights": (lambda v: isinstance(v, list) and bool(v) and all(
        _NUMBER[0](w) and w >= 0 for w in v), "a non-empty array of numbers >= 0"),
}
_SHARD_VALUES = {
    "instances": _whole(0),
    "bytes": _whole(0),
    "sha256": (lambda v: isinstance(v, str), "a string"),
}
_BIN_VALUES = {
    "bound": _whole(1, MAX_LENGTH),
    "max_predictions_per_seq": _whole(0, MAX_LENGTH),
    "instances": _whole(0),
    "shards": (lambda v: isinstance(v, dict), "an object {format: [shard, ...]}"),
}
FORMATS = ("tfrecord", "parquet")


def usable_manifest(manifest) -> dict:
    """``manifest`` (parsed JSON) if the tools can use it: the keys trainers rely on
    (``schema.validate_manifest``), every value the tools read of the right type and range,
    every path it names inside the output (:func:`check_relative`). Else ValueError naming
    the first problem (and how many more there are), in one line."""
    if not isinstance(manifest, dict):
        raise ValueError(f"it holds {_json_type(manifest)}, not an object")
    schema.validate_manifest(manifest)
    problems = list(_manifest_problems(manifest))
    if problems:
        more = len(problems) - 1
        raise ValueError(problems[0] + (f" (and {more} more problem{'s' if more > 1 else ''})"
                                        if more else ""))
    return manifest


def _manifest_problems(m: dict) -> Iterator[str]:
    for key, (test, what) in _VALUES.items():
        if key in m and not test(m[key]):
            yield f"{key} is {_show(m[key])}: it must be {what}"
    masking = m.get("masking")
    if isinstance(masking, dict) and masking.get("mode") == "dynamic":
        for key, (test, what) in _DYNAMIC_MASKING_VALUES.items():
            if key not in masking:
                yield f"masking lacks {key} (dynamic data: the trainers mask with it)"
            elif not test(masking[key]):
                yield f"masking.{key} is {_show(masking[key])}: it must be {what}"
        lengths, weights = masking.get("ngram_lengths"), masking.get("ngram_weights")
        if isinstance(lengths, list) and isinstance(weights, list) and \
                len(lengths) != len(weights):
            yield (f"masking has {len(weights)} ngram_weights for {len(lengths)} "
                   f"ngram_lengths")
    yield from _path_problems("vocab_file", m["vocab_file"])
    yield from _shards_problems("shards", m["shards"])
    if "bins" in m:
        yield from _bins_problems(m["bins"])


def _shards_problems(where: str, shards) -> Iterator[str]:
    """A ``shards`` object ({format: [shard entry, ...]}: the top level's, or a bin's)."""
    if not isinstance(shards, dict):
        yield f"{where} is {_json_type(shards)}: it must be an object {{format: [shard, ...]}}"
        return
    for fmt in FORMATS:
        entries = shards.get(fmt, [])
        if not isinstance(entries, list):
            yield f"{where}.{fmt} is {_json_type(entries)}: it must be an array of shards"
            continue
        for i, entry in enumerate(entries):
            at = f"{where}.{fmt}[{i}]"
            if not isinstance(entry, dict):
                yield (f"{at} is {_json_type(entry)}: it must be an object {{path, "
                       f"instances, ...}}")
                continue
            missing = [key for key in ("path", "instances") if key not in entry]
            if missing:
                yield f"{at} lacks {' and '.join(missing)}"
            for key, (test, what) in _SHARD_VALUES.items():
                if key in entry and not test(entry[key]):
                    yield f"{at}.{key} is {_show(entry[key])}: it must be {what}"
            if "path" in entry:
                yield from _path_problems(f"{at}.path", entry["path"])


def _bins_problems(bins) -> Iterator[str]:
    """The length bins (format_version 2): what the tools read of each, of the right types.
    Whether they agree with the shards and each other is ``verify``'s to say."""
    if not isinstance(bins, list):
        yield f"bins is {_json_type(bins)}: it must be an array of length bins"
        return
    for b, entry in enumerate(bins):
        where = f"bins[{b}]"
        if not isinstance(entry, dict):
            yield f"{where} is {_json_type(entry)}: it must be an object {{bound, ...}}"
            continue
        for key, (test, what) in _BIN_VALUES.items():
            if key not in entry:
                yield f"{where} lacks {key}"
            elif not test(entry[key]):
                yield f"{where}.{key} is {_show(entry[key])}: it must be {what}"
        if "shards" in entry:
            yield from _shards_problems(f"{where}.shards", entry["shards"])


def _path_problems(where: str, relative) -> Iterator[str]:
    try:
        check_relative(relative)
    except UnsafePath as e:
        yield f"{where} {e}"


@dataclasses.dataclass(frozen=True)
class LengthBin:
    """One length bin of a binned output (``--length_bins``, manifest format_version 2): its
    instances have ``low`` + 1 to ``bound`` tokens ([CLS] and [SEP]s included; ``low`` is the
    bound of the bin before it, 0 for the first), its TFRecords are padded to ``bound`` and
    ``max_predictions_per_seq`` (the bin's, not the manifest's top-level one)."""
    index: int
    bound: int
    low: int
    max_predictions_per_seq: int
    instances: int

    @property
    def name(self) -> str:
        """Its directory under tfrecord/ and parquet/: ``len-0064``."""
        return schema.bin_dir(self.bound)


@dataclasses.dataclass
class Output:
    """A finished output directory: ``files`` maps every relative path below it to its size."""
    root: str
    manifest: dict
    files: dict[str, int]

    def resolve(self, relative: str) -> str:
        """The full path of ``relative``, a file of the output; :class:`UnsafePath` if it is
        not inside the output directory, by its text (:func:`check_relative`) or, on a local
        disk, through a symbolic link (object stores have none)."""
        path = f"{self.root.rstrip('/')}/{check_relative(relative)}"
        if not is_remote(self.root):
            top = os.path.realpath(local_path(self.root))
            real = os.path.realpath(local_path(path))
            if os.path.commonpath([top, real]) != top:
                raise UnsafePath(f"{_show(relative)} is not a path inside the output "
                                 f"directory: a symbolic link leads to {_show(real, 120)}")
        return path

    def read(self, relative: str) -> bytes:
        with open_read(self.resolve(relative)) as f:
            return f.read()

    def named(self) -> Iterator[tuple[str, str]]:
        """(where, relative path) of every file a tool may read: the manifest's vocab_file
        and shard paths (its bins' too), and stats.json if there is one."""
        yield "vocab_file", self.manifest["vocab_file"]
        for fmt in self.formats:
            for i, entry in enumerate(self.shards(fmt)):
                yield f"shards.{fmt}[{i}].path", entry["path"]
        for b in range(len(self.bins)):
            for fmt in FORMATS:
                for i, entry in enumerate(self.bin_shards(b, fmt)):
                    yield f"bins[{b}].shards.{fmt}[{i}].path", entry["path"]
        if schema.STATS_FILE in self.files:
            yield "", schema.STATS_FILE

    @property
    def task(self) -> str:
        """nsp, sop or none (``schema.sentence_task``)."""
        return schema.sentence_task(self.manifest)

    @property
    def masking(self) -> str:
        """static or dynamic (``schema.masking_mode``; older manifests: static)."""
        return schema.masking_mode(self.manifest)

    @property
    def dynamic(self) -> bool:
        return self.masking == "dynamic"

    def index_offsets(self, fmt: str) -> list[int]:
        """The stable index of each shard's first instance: the instances of the shards
        before it, in manifest order (instance k of shard i has index offsets[i] + k, the
        same in both formats; the trainers' dynamic masks are keyed by it)."""
        sizes = [entry["instances"] for entry in self.shards(fmt)]
        return [sum(sizes[:i]) for i in range(len(sizes))]

    @property
    def binned(self) -> bool:
        """Written with ``--length_bins`` (manifest format_version 2, ``bins`` listed)."""
        return bool(self.manifest.get("bins"))

    @functools.cached_property
    def bins(self) -> list[LengthBin]:
        """The length bins in manifest order ([] for an unbinned output)."""
        out, low = [], 0
        for b, entry in enumerate(schema.length_bins(self.manifest)):
            out.append(LengthBin(index=b, bound=entry["bound"], low=low,
                                 max_predictions_per_seq=entry["max_predictions_per_seq"],
                                 instances=entry["instances"]))
            low = entry["bound"]
        return out

    def bin_shards(self, b: int, fmt: str) -> list[dict]:
        """The shard entries bin ``b`` lists for ``fmt`` (none for an empty bin)."""
        return list(schema.length_bins(self.manifest)[b]["shards"].get(fmt, []))

    @functools.cached_property
    def _bin_of_path(self) -> dict[str, int]:
        return {entry["path"]: b for b in range(len(self.bins)) for fmt in FORMATS
                for entry in self.bin_shards(b, fmt) if isinstance(entry.get("path"), str)}

    def shard_bin(self, fmt: str, index: int) -> LengthBin | None:
        """The bin of shard ``index`` of the manifest's top-level ``fmt`` list
        (:meth:`bin_of_path`)."""
        return self.bin_of_path(self.shards(fmt)[index]["path"])

    def bin_of_path(self, path: str) -> LengthBin | None:
        """The bin of the shard at ``path``: the bin that lists it (else the bin whose
        directory holds it); None when unbinned, or when no bin claims it (``verify`` says
        so)."""
        if not self.binned:
            return None
        b = self._bin_of_path.get(path)
        if b is None:
            parts = path.split("/")
            b = next((x.index for x in self.bins if len(parts) > 2
                      and parts[-2] == x.name), None)
        return None if b is None else self.bins[b]

    @functools.cached_property
    def listed_sha256(self) -> dict[str, str]:
        """sha256 → the path of the shard the manifest records it for (a file that holds
        another shard's bytes was moved or copied)."""
        return {entry["sha256"]: entry["path"] for fmt in FORMATS
                for entry in self.shards(fmt) if isinstance(entry.get("sha256"), str)}

    @property
    def formats(self) -> list[str]:
        return [fmt for fmt in FORMATS if self.manifest["shards"].get(fmt)]

    def shards(self, fmt: str) -> list[dict]:
        return list(self.manifest["shards"].get(fmt, []))

    @property
    def compressed(self) -> bool:
        return self.manifest.get("tfrecord_compression", "") == "GZIP"

    @functools.cached_property
    def vocab(self) -> list[str]:
        """The data's own vocabulary (one token per line, id = line number)."""
        text = self.read(self.manifest.get("vocab_file", schema.VOCAB_FILE)).decode("utf-8")
        return text.rstrip("\n").split("\n")

    @functools.cached_property
    def stats(self) -> dict | None:
        if schema.STATS_FILE not in self.files:
            return None
        return json.loads(self.read(schema.STATS_FILE))

    def dtypes(self) -> dict[str, str]:
        """The features the shards must hold (name → dtype), label absent for "none",
        ``word_starts`` instead of masked_lm_* for dynamic data."""
        return {name: dtype for name, dtype, _ in schema.features(self.task, self.masking)}

    def lengths(self, length_bin: LengthBin | None = None) -> dict[str, int]:
        """Fixed TFRecord length of every feature (in ``length_bin``: at its lengths)."""
        m = self.manifest
        seq, pred = (m["max_seq_length"], m["max_predictions_per_seq"]) if length_bin is None \
            else (length_bin.bound, length_bin.max_predictions_per_seq)
        return {name: schema.feature_length(kind, seq, pred)
                for name, _, kind in schema.features(self.task, self.masking)}


def open_output(root: str) -> Output:
    """The output under ``root``. Raises :class:`NotAnOutput` when it has no manifest, or one
    the tools cannot use (:func:`usable_manifest`), or when a file it names, or stats.json, is
    reached through a symbolic link that leads out of the directory: every tool refuses the
    same outputs, before reading anything else."""
    files = list_files(root)
    if schema.MANIFEST_FILE not in files:
        raise NotAnOutput(describe_unfinished(root, files))
    output = Output(root=root, manifest={}, files=files)
    try:
        with open_read(output.resolve(schema.MANIFEST_FILE)) as f:
            output.manifest = usable_manifest(json.loads(f.read()))
        for where, relative in output.named():
            try:
                output.resolve(relative)
            except UnsafePath as e:
                raise UnsafePath(f"{where} {e}" if where else str(e)) from None
    # JSONDecodeError, UnicodeDecodeError and UnsafePath are ValueErrors; nesting deeper
    # than Python's recursion limit is a RecursionError.
    except (ValueError, RecursionError) as e:
        raise NotAnOutput(f"{root.rstrip('/')}/{schema.MANIFEST_FILE} cannot be used: "
                          f"{e}") from e
    return output


# What a file or directory left in an unfinished output means.
_MEANINGS = {
    schema.PIECES_DIR: "instances parked between the job's two halves: it stopped before or "
                       "while writing the shards",
    schema.TFRECORD_DIR: "TFRecord shards (each appears only when complete)",
    schema.PARQUET_DIR: "Parquet shards (each appears only when complete)",
    schema.STATS_FILE: "written just before the manifest",
    schema.VOCAB_FILE: "written just before the manifest",
}


def describe_unfinished(root: str, files: dict[str, int]) -> str:
    """Why ``root`` is not a finished output, and a summary of what it holds."""
    head = (f"{root} has no {schema.MANIFEST_FILE}: the job that writes there has not "
            f"finished (the manifest is written last), it crashed, or this is not a "
            f"pipeline output directory.")
    if not files:
        exists = is_remote(root) or os.path.isdir(local_path(root))
        return head + (" The directory is empty." if exists else " The directory does not "
                                                                  "exist.")
    groups: dict[str, list[int]] = {}
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
