"""Corpus curation before segmentation, as pure steps: script conversion, quality filters,
duplicate sketches and the duplicate rule, per-source weights.

Order, per document of a range (``curate``): convert (OpenCC, ``--convert``) → quality filters
(``--filters``) → duplicates (``--dedup``; the decisions come from the whole corpus, see below)
→ the source's weight (``;weight=`` on an ``--input``). Everything after (``--normalize``, LTP,
WordPiece) sees the converted text, so word offsets index the text that is segmented.

Duplicates are decided across the corpus in two passes over the ranges (``pipeline.beam``
wires them): each range's surviving documents are sketched (:func:`sketch_range`: an exact hash,
and with ``near`` a MinHash signature and its LSH band keys), the band keys are grouped across
ranges (by partition files, not by memory), and :func:`find_duplicates` decides, bucket by
bucket, which documents go. The rule, exactly:

* order: documents in (input file, byte offset) order; a document's key is its range's number
  in that order and its row among the range's documents that passed the filters;
* ``exact``: a document whose normalized text (NFKC, whitespace runs collapsed to one space,
  trimmed) equals an earlier document's (a 128-bit hash) is dropped;
* ``near``: a document is dropped if some **earlier** document shares at least one LSH band
  with it and their estimated Jaccard similarity (the share of equal MinHash values) is at
  least the threshold, whether that earlier document is kept or dropped itself. So in a chain
  A~B, B~C with A and C not similar, B and C both go (C because of B) and A stays: every
  dropped document has a similar earlier one, and a run of edits never survives as more than
  its first version. Exact duplicates are found (and counted as ``exact``) too.

The MinHash signatures come from `rensa <https://github.com/beowolx/rensa>`_ (Rust): from our
shingle ids it computes 128 values per document at about 100 M characters/s on one core here,
where datasketch, hashing each shingle in Python, did 0.35-1.3 M characters/s: the difference
between a few percent and about half of the job's CPU. Shingles are character n-grams (3 by
default) of the normalized, case-folded text, packed exactly into 63 bits (no hash
collisions), so ``rensa`` sees integers, not strings.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import struct
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from pipeline.core.seeds import stable_hash64
from pipeline.core.text import CJK_RANGES

# --filters: name → (default threshold, what the value means). A document fails a filter:
FILTERS = {
    # ... when it has fewer non-whitespace characters than this;
    "min_chars": (20.0, "fewest non-whitespace characters a document must have"),
    # ... when more than this share of its lines repeat an earlier line of the document
    # (lines: each line of a google-format document, each sentence of a lines/jsonl one);
    "repeated_lines": (0.3, "largest share of a document's lines that repeat an earlier one"),
    # ... when more than this share of its non-whitespace characters are none of: CJK
    # ideographs, ASCII (and full-width) letters and digits, Unicode digits, punctuation.
    "other_chars": (0.25, "largest share of characters that are not CJK, ASCII letters, digits "
                          "or punctuation (mojibake, binary debris, symbol runs)"),
}
# --convert: OpenCC's configurations to simplified Chinese (t2s: characters; tw2s/hk2s: Taiwan
# and Hong Kong variants; tw2sp: Taiwan phrases too, e.g. 軟體 → 软件).
CONVERSIONS = ("none", "t2s", "tw2s", "hk2s", "tw2sp")
DEDUP_MODES = ("none", "exact", "near")
DROP_REASONS = tuple(FILTERS) + ("dedup_exact", "dedup_near", "weight")

NUM_PERM = 128
BANDS, ROWS = 16, 8  # 16 bands of 8 values: candidates at J=0.80 95%, at 0.85 99.4%, at 0.5 6%
MAX_COMPARISONS = 1000  # earlier members of a bucket a document is compared with, at most
# A band key: the top bit marks the exact-hash "band"; a MinHash band's key has its band's
# index in bits 58-62 and the hash of its values below.
_EXACT_BAND = np.uint64(1 << 63)
_MASK63 = np.uint64((1 << 63) - 1)
_BAND_SHIFT = np.uint64(58)
_MASK58 = np.uint64((1 << 58) - 1)


class CurationError(ValueError):
    """Curation settings that cannot work (unknown filter, bad threshold or weight)."""


def parse_filters(spec: str | None) -> tuple[tuple[str, float], ...]:
    """``--filters`` (``name[=value],...``) → ((name, threshold), ...) in FILTERS order; a name
    without a value takes its default. CurationError for an unknown name or a bad value."""
    if not spec or spec.strip() in ("", "none"):
        return ()
    chosen: dict[str, float] = {}
    for item in spec.split(","):
        name, eq, value = (part.strip() for part in item.partition("="))
        if not name:
            continue
        if name == "all" and not eq:
            chosen.update({n: d for n, (d, _) in FILTERS.items() if n not in chosen})
            continue
        if name not in FILTERS:
            close = difflib.get_close_matches(name, list(FILTERS), n=1)
            raise CurationError(f"--filters: unknown filter {name!r}"
                                + (f" (did you mean {close[0]}?)" if close else "")
                                + f"; the filters are {', '.join(FILTERS)} (or all), each "
                                  "optionally =VALUE")
        try:
            threshold = float(value) if eq else FILTERS[name][0]
        except ValueError:
            raise CurationError(f"--filters: {name}={value!r} is not a number") from None
        if not math.isfinite(threshold) or threshold < 0 or \
                (name != "min_chars" and threshold > 1):
            raise CurationError(f"--filters: {name}={value} is out of range ("
                                + ("a count >= 0" if name == "min_chars" else "a share in [0, 1]")
                                + ")")
        chosen[name] = threshold
    return tuple((n, chosen[n]) for n in FILTERS if n in chosen)


def parse_weight(value: str) -> float:
    """An ``--input`` weight: a finite number > 0, else CurationError."""
    try:
        weight = float(value)
    except ValueError:
        raise CurationError(f"weight={value!r} is not a number") from None
    if not math.isfinite(weight) or weight <= 0:
        raise CurationError(f"weight={value} must be a finite number > 0 (0.5 keeps about "
                            "half of a source's documents, 2 repeats each twice)")
    return weight


@dataclasses.dataclass(frozen=True)
class CurationConfig:
    """What the curation flags ask for; the default does nothing."""
    convert: str = "none"
    filters: tuple[tuple[str, float], ...] = ()
    dedup: str = "none"
    near_dup_threshold: float = 0.8
    shingle: int = 3
    seed: int = 12345

    def __post_init__(self):
        if self.convert not in CONVERSIONS:
            raise CurationError(f"--convert must be one of {', '.join(CONVERSIONS)}, not "
                                f"{self.convert!r}")
        if self.dedup not in DEDUP_MODES:
            raise CurationError(f"--dedup must be one of {', '.join(DEDUP_MODES)}, not "
                                f"{self.dedup!r}")
        if not (0 < self.near_dup_threshold <= 1):
            raise CurationError(f"--near_dup_threshold must be in (0, 1], not "
                                f"{self.near_dup_threshold}")
        if self.shingle not in (1, 2, 3):
            raise CurationError(f"--near_dup_shingle must be 1, 2 or 3 characters, not "
                                f"{self.shingle}")

    @property
    def active(self) -> bool:
        return self.convert != "none" or bool(self.filters) or self.dedup != "none"


# ---------------------------------------------------------------------------------------------
# Conversion and filters (per document)

def _allowed_table() -> np.ndarray:
    """For each BMP code point: 1 if it counts as ordinary text for ``other_chars`` (CJK
    ideograph, ASCII or full-width letter or digit, Unicode digit, punctuation), 2 if
    whitespace (not counted at all), 0 otherwise."""
    table = np.zeros(0x10000, dtype=np.uint8)
    for cp in range(0x10000):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if ch.isspace():
            table[cp] = 2
        elif cat == "Nd" or cat.startswith("P") or (ch.isascii() and ch.isalnum()) or \
                (0xFF10 <= cp <= 0xFF19 or 0xFF21 <= cp <= 0xFF3A or 0xFF41 <= cp <= 0xFF5A):
            table[cp] = 1
    for lo, hi in CJK_RANGES:
        if lo < 0x10000:
            table[lo:hi + 1] = 1
    return table


_TABLE: np.ndarray | None = None


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def char_classes(text: str) -> tuple[int, int]:
    """(non-whitespace characters, of them "other" characters) of ``text`` (``other_chars``)."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _allowed_table()
    cps = _code_points(text)
    bmp = cps < 0x10000
    classes = np.zeros(len(cps), dtype=np.uint8)
    classes[bmp] = _TABLE[cps[bmp]]
    if not bmp.all():  # astral: CJK extensions are text, everything else "other"
        astral = cps[~bmp]
        cjk = np.zeros(len(astral), dtype=bool)
        for lo, hi in CJK_RANGES:
            cjk |= (astral >= lo) & (astral <= hi)
        classes[~bmp] = cjk.astype(np.uint8)
    counted = int((classes != 2).sum())
    return counted, int((classes == 0).sum())


def failed_filter(sentences: Sequence[str], filters: Sequence[tuple[str, float]]) -> str | None:
    """The first filter (in FILTERS order) the document fails, or None."""
    if not filters:
        return None
    text = "\n".join(sentences)
    counted, other = char_classes(text)
    for name, threshold in filters:
        if name == "min_chars" and counted < threshold:
            return name
        if name == "repeated_lines" and len(sentences) > 1:
            seen, repeated = set(), 0
            for s in sentences:
                key = " ".join(s.split())
                repeated += key in seen
                seen.add(key)
            if repeated / len(sentences) > threshold:
                return name
        if name == "other_chars" and counted and other / counted > threshold:
            return name
    return None


class Converter:
    """OpenCC to simplified Chinese; counts what it changed."""

    def __init__(self, conversion: str):
        import opencc

        self._cc = opencc.OpenCC(conversion)

    def __call__(self, sentences: list[str], stats: Counter) -> list[str]:
        out = [self._cc.convert(s) for s in sentences]
        changed = 0
        for before, after in zip(sentences, out):
            if before != after:
                changed += (sum(a != b for a, b in zip(before, after))
                            + abs(len(before) - len(after)))
        if changed:
            stats["convert_documents_changed"] += 1
            stats["convert_chars_changed"] += changed
        return out


def converter_for(conversion: str) -> Converter | None:
    """The converter for ``--convert`` (None for none)."""
    return None if conversion == "none" else Converter(conversion)


def doc_chars(sentences: Sequence[str]) -> int:
    return sum(len(s) for s in sentences)


def filtered_documents(docs: Iterable[tuple[str, list[str]]], *, config: CurationConfig,
                       converter: Converter | None, stats: Counter
                       ) -> Iterator[tuple[int, str, list[str]]]:
    """(row, doc id, sentences) of the documents that pass conversion and the filters, ``row``
    counting them from 0 (the row a duplicate decision names). Drops are counted per reason:
    ``dropped_documents:NAME`` and ``dropped_chars:NAME``."""
    row = 0
    for doc_id, sentences in docs:
        if converter is not None:
            sentences = converter(sentences, stats)
        reason = failed_filter(sentences, config.filters)
        if reason:
            count_drop(stats, reason, sentences)
            continue
        yield row, doc_id, sentences
        row += 1


def count_drop(stats: Counter, reason: str, sentences: Sequence[str]) -> None:
    stats[f"dropped_documents:{reason}"] += 1
    stats[f"dropped_chars:{reason}"] += doc_chars(sentences)


def weighted(docs: Iterable[tuple[str, list[str]]], *, weight: float, seed: int,
             key: tuple[str, int], stats: Counter) -> Iterator[tuple[str, list[str]]]:
    """Each document ``floor(weight)`` times, plus once more with probability
    ``weight - floor(weight)`` (a draw seeded by the seed, the range's key and the document's
    place in it): on average ``weight`` copies. Copies after the first get ids ``ID~2``, ...;
    added copies are counted (``weight_copies``), sampled-out documents dropped and counted
    (reason ``weight``)."""
    whole, fraction = int(weight), weight - int(weight)
    for index, (doc_id, sentences) in enumerate(docs):
        copies = whole
        if fraction:
            u = stable_hash64("weight", seed, *key, index) / 2.0 ** 64
            copies += u < fraction
        if not copies:
            count_drop(stats, "weight", sentences)
            continue
        stats["weight_copies"] += copies - 1
        yield doc_id, sentences
        for c in range(2, copies + 1):
            yield f"{doc_id}~{c}", sentences


def curate(docs: Iterable[tuple[str, list[str]]], *, config: CurationConfig,
           converter: Converter | None, drops: Mapping[int, str], weight: float,
           key: tuple[str, int], stats: Counter) -> Iterator[tuple[str, list[str]]]:
    """A range's documents after conversion, filters, the duplicate decisions ``drops`` (row →
    ``exact``/``near``, from :func:`find_duplicates`) and the source's weight."""
    def kept():
        for row, doc_id, sentences in filtered_documents(docs, config=config,
                                                         converter=converter, stats=stats):
            reason = drops.get(row)
            if reason:
                count_drop(stats, f"dedup_{reason}", sentences)
                continue
            yield doc_id, sentences

    if weight == 1:
        yield from kept()
    else:
        yield from weighted(kept(), weight=weight, seed=config.seed, key=key, stats=stats)


# ---------------------------------------------------------------------------------------------
# Sketches

_SPACE = re.compile(r"\s+")


def normalized_text(sentences: Sequence[str]) -> str:
    """The text exact duplicates are compared by: NFKC, whitespace runs one space, trimmed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", " ".join(sentences))).strip()


def exact_hash(text: str) -> tuple[int, int]:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return struct.unpack("<QQ", digest)


def shingle_ids(text: str, n: int) -> np.ndarray:
    """The character n-grams of ``text`` (n <= 3) as exact 63-bit ids (21 bits a code point);
    a text shorter than n is one shingle."""
    cps = _code_points(text).astype(np.uint64)
    if len(cps) < n:
        cps = np.concatenate([cps, np.zeros(n - len(cps), dtype=np.uint64)]) if len(cps) \
            else np.zeros(n, dtype=np.uint64)
    ids = cps[:len(cps) - n + 1].copy()
    for k in range(1, n):
        ids = (ids << np.uint64(21)) | cps[k:len(cps) - n + 1 + k]
    return ids


def signatures(texts: Sequence[str], *, shingle: int, seed: int) -> np.ndarray:
    """MinHash signatures (len(texts) x NUM_PERM, uint32) of the texts' shingle sets."""
    import rensa

    if not texts:
        return np.zeros((0, NUM_PERM), dtype=np.uint32)
    ids = [shingle_ids(t, shingle) for t in texts]
    offsets = np.zeros(len(ids) + 1, dtype=np.uint64)
    np.cumsum([len(i) for i in ids], out=offsets[1:])
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
        np.concatenate(ids), offsets, NUM_PERM, seed % (1 << 64))
    return np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(len(texts), NUM_PERM)


def _mix(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, vectorized (uint64 arithmetic wraps)."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def band_keys(sigs: np.ndarray) -> np.ndarray:
    """(documents x BANDS) uint64 keys of each band of ROWS signature values: the band's
    index in bits 58-62, a 58-bit hash of its values below (top bit 0)."""
    with np.errstate(over="ignore"):
        keys = np.empty((len(sigs), BANDS), dtype=np.uint64)
        for b in range(BANDS):
            h = np.full(len(sigs), np.uint64(b + 1) * np.uint64(0x9E3779B97F4A7C15),
                        dtype=np.uint64)
            for r in range(ROWS):
                h = _mix(h ^ sigs[:, b * ROWS + r].astype(np.uint64))
            keys[:, b] = (h & _MASK58) | (np.uint64(b) << _BAND_SHIFT)
    return keys


@dataclasses.dataclass
class Sketch:
    """One range's duplicate sketch: for each of its rows (documents that passed the filters)
    the exact hash and (near) the signature; and its band entries (band key, document key)
    split into ``partitions`` by band key."""
    exact: np.ndarray                 # rows x 2, uint64
    sigs: np.ndarray                  # rows x NUM_PERM uint32 (rows x 0 for exact)
    parts: list[np.ndarray]           # per partition: entries x 2 uint64 (band key, doc key)


def doc_key(range_no: int, row: int) -> int:
    return (range_no << 32) | row


def sketch_range(rows: Sequence[list[str]], *, range_no: int, config: CurationConfig,
                 partitions: int) -> Sketch:
    """The sketch of a range's filtered documents (``rows`` in row order)."""
    texts = [normalized_text(s) for s in rows]
    exact = np.array([exact_hash(t) for t in texts], dtype=np.uint64).reshape(len(texts), 2)
    keys = np.array([doc_key(range_no, r) for r in range(len(texts))], dtype=np.uint64)
    band = [(exact[:, 0] & _MASK63) | _EXACT_BAND]
    if config.dedup == "near":
        sigs = signatures([t.casefold() for t in texts], shingle=config.shingle,
                          seed=config.seed)
        band += list(band_keys(sigs).T)
    else:
        sigs = np.zeros((len(texts), 0), dtype=np.uint32)
    entries = np.stack([np.concatenate(band), np.tile(keys, len(band))], axis=1) \
        if len(texts) else np.zeros((0, 2), dtype=np.uint64)
    part = entries[:, 0] % np.uint64(partitions)
    parts = []
    for p in range(partitions):
        mine = entries[part == p]
        parts.append(mine[np.lexsort((mine[:, 1], mine[:, 0]))])
    return Sketch(exact, sigs, parts)


_MAGIC = b"BWSK1\n"


def encode_sketch(sketch: Sketch) -> bytes:
    """The sketch file's bytes: a JSON header line (after a magic line), then the arrays."""
    blobs = [np.ascontiguousarray(sketch.exact).tobytes(),
             np.ascontiguousarray(sketch.sigs).tobytes()]
    blobs += [np.ascontiguousarray(p).tobytes() for p in sketch.parts]
    header = {"rows": int(len(sketch.exact)), "num_perm": int(sketch.sigs.shape[1]),
              "sizes": [len(b) for b in blobs]}
    head = _MAGIC + json.dumps(header).encode("ascii") + b"\n"
    return head + b"".join(blobs)


@dataclasses.dataclass(frozen=True)
class SketchIndex:
    """Where each part of a sketch file is: offsets of exact, sigs, and each partition."""
    rows: int
    num_perm: int
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]

    @classmethod
    def parse(cls, head: bytes) -> "SketchIndex":
        if not head.startswith(_MAGIC):
            raise ValueError("not a sketch file")
        line_end = head.index(b"\n", len(_MAGIC))
        header = json.loads(head[len(_MAGIC):line_end])
        start = line_end + 1
        offsets = tuple(int(x) for x in np.cumsum([start] + header["sizes"][:-1]))
        return cls(header["rows"], header["num_perm"], offsets, tuple(header["sizes"]))

    def part(self, p: int) -> tuple[int, int]:
        return self.offsets[2 + p], self.sizes[2 + p]


def read_part(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint64).reshape(-1, 2)


# ---------------------------------------------------------------------------------------------
# The duplicate rule, per partition of band entries

def find_duplicates(entries: np.ndarray, fetch: Callable[[np.ndarray], tuple[np.ndarray,
                                                                             np.ndarray]], *,
                    threshold: float, stats: Counter) -> dict[int, str]:
    """Document key → ``exact`` or ``near`` for the documents the rule drops, from one
    partition's band entries (rows of (band key, document key); every entry of a band key is
    in the same partition). ``fetch(keys)`` gives the exact hashes and signatures of documents
    (rows in the order of ``keys``). A document is compared with at most MAX_COMPARISONS
    earlier members of a bucket (the earliest ones); a bucket where that limit cut comparisons
    is counted (``near_dup_buckets_capped``). The union of the partitions' results is the
    rule's decision; a dropped document is in about one of them (an exact copy in the exact
    band's, a near copy in that of the lowest band it is found in), so what crosses the
    shuffle grows with the documents dropped, not with them times the bands."""
    if not len(entries):
        return {}
    entries = entries[np.lexsort((entries[:, 1], entries[:, 0]))]
    bands = entries[:, 0]
    starts = np.flatnonzero(np.concatenate([[True], bands[1:] != bands[:-1]]))
    ends = np.concatenate([starts[1:], [len(bands)]])
    multi = (ends - starts) > 1
    if not multi.any():
        return {}
    needed = np.unique(np.concatenate([entries[s:e, 1] for s, e in
                                       zip(starts[multi], ends[multi])]))
    exact, sigs = fetch(needed)
    where = {int(k): i for i, k in enumerate(needed)}
    drops: dict[int, str] = {}
    for s, e in zip(starts[multi], ends[multi]):
        members = entries[s:e, 1]  # sorted: earliest first
        rows = np.array([where[int(k)] for k in members])
        stats["dedup_buckets"] += 1
        # Exact copies of an earlier member: every member but the first of each exact hash.
        _, first = np.unique(exact[rows], axis=0, return_index=True)
        is_first = np.zeros(len(members), dtype=bool)
        is_first[first] = True
        if bands[s] & _EXACT_BAND:
            for k in members[~is_first]:
                drops[int(k)] = "exact"
            continue
        # Near copies, among the first occurrences of each text (an exact copy has its
        # original's signature; the exact band reports exact copies). Each is reported by the
        # lowest band it is found in, so it crosses the shuffle about once, not once per band.
        band = int(bands[s] >> _BAND_SHIFT)
        unique_members, unique_rows = members[is_first], rows[is_first]
        if len(unique_members) > MAX_COMPARISONS + 1:
            stats["near_dup_buckets_capped"] += 1
        for i in range(1, len(unique_members)):
            earlier = unique_rows[:min(i, MAX_COMPARISONS)]
            mine = sigs[unique_rows[i]]
            similar = earlier[(sigs[earlier] == mine).mean(axis=1) >= threshold]
            if not len(similar):
                continue
            if band:  # found in a lower band too (same values there: the same bucket)?
                lower = sigs[similar, :band * ROWS].reshape(len(similar), band, ROWS)
                if (lower == mine[:band * ROWS].reshape(band, ROWS)).all(axis=2).any():
                    continue
            drops[int(unique_members[i])] = "near"
    return drops


def partitions_for(total_bytes: int, requested: int = 0) -> int:
    """How many partitions the band entries are grouped in: ``requested`` if given, else one
    per 8 MB of input (1 to 2,048): a partition holds the signatures of the documents in its
    buckets of more than one, so on a corpus of mostly duplicates memory per partition grows
    with input per partition. The result never changes which documents are dropped."""
    if requested:
        return requested
    return max(1, min(2048, math.ceil(total_bytes / 8e6)))
