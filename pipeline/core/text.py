"""Raw text → documents of sentences: decoding, cleaning, document and sentence splitting.

Pure Python over binary streams, so it runs the same inside any Beam worker and in tests.
Every repair is counted in a ``collections.Counter`` the caller passes in (``stats``): bad input
gets a defined behaviour and a number, never a crash and never a silent loss.

Formats (``--input_format``):
  google  one sentence per line, a blank line between documents (Google's format)
  lines   one document per line
  jsonl   one JSON object per line; the document text is in ``text_field``
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

FORMATS = ("google", "lines", "jsonl")

# Removed from text: C0/C1 controls except tab/newline/CR, U+FFFD (what invalid UTF-8 bytes decode
# to) and stray BOMs (files concatenated with `cat`). Tab becomes a space.
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd\ufeff]")
# A line that loses more than this share of its characters to cleaning is binary garbage, not
# text with a few bad bytes: it is skipped whole (and counted) instead of emitting debris.
_BINARY_SHARE = 0.3
SNIFF_BYTES = 8192
# What corrupt or truncated files raise while being read (gzip/bz2 errors are OSError/EOFError).
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error)

# Sentence ends: Chinese 。！？；… (full-width and ASCII !?), English . ! ? before whitespace;
# closing quotes and brackets stay with their sentence.
_SENTENCE_END = re.compile(
    r"(?:[。！？；!?]+|…+|\.+(?=\s|$))[”’\"'」』）)\]】》]*")
# Where an overlong sentence may be cut, best first: after a comma-like mark, then whitespace.
_SOFT_BREAK = re.compile(r"[，,、：:]|\s")


# CJK ideographs: unified (and extensions A-G), compatibility ideographs and their supplement.
# BERT's tokenizer splits these into single characters; LTP segments runs of them.
CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF),
               (0x2A700, 0x2EBEF), (0x2F800, 0x2FA1F), (0x30000, 0x323AF))
_CJK = re.compile("[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in CJK_RANGES) + "]")


def is_cjk_char(ch: str) -> bool:
    return _CJK.match(ch) is not None


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


class CorruptInputError(ValueError):
    """A file that cannot be read or decompressed; the message names the file."""


def clean_text(text: str, stats: Counter) -> str | None:
    """Remove control characters and decoding debris; None for a binary-garbage line."""
    text = text.replace("\t", " ")
    cleaned, removed = _BAD_CHARS.subn("", text)
    if removed:
        stats["chars_removed"] += removed
        if len(text) >= 8 and removed > _BINARY_SHARE * len(text):
            stats["binary_lines_skipped"] += 1
            return None
    return cleaned


def decompressed(raw: BinaryIO, path: str) -> BinaryIO:
    """``raw`` decompressed by the file's extension (.gz, .bz2), else as is.

    Python's own gzip/bz2 readers are used because they raise on a truncated stream, where a
    lenient reader would silently return the part before the cut.
    """
    lowered = path.lower()
    if lowered.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if lowered.endswith(".bz2"):
        return bz2.BZ2File(raw, mode="rb")
    return raw


class RangeReader(io.RawIOBase):
    """An object with just ``read(n)`` as a raw io stream (TextIOWrapper needs more), limited to
    ``length`` bytes from where it stands (a document-aligned range) when given."""

    def __init__(self, stream, length: int | None = None):
        super().__init__()
        self._stream = stream
        self._left = float("inf") if length is None else length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        want = int(min(len(buffer), self._left))
        data = self._stream.read(want) if want > 0 else b""
        buffer[:len(data)] = data
        self._left -= len(data)
        return len(data)


def document_boundary(stream: BinaryIO, position: int, input_format: str,
                      block: int = 1 << 16) -> int | None:
    """The first offset >= ``position`` where a document surely starts, or None (end of file).

    ``google``: just after an empty line (``\n\n`` or ``\n\r\n``), which ends a document
    whatever surrounds it; whitespace-only lines also end documents but are not used as cuts,
    which only makes ranges longer. ``lines``/``jsonl``: the start of a line. ``stream`` must
    be seekable and uncompressed. Cutting a file at these offsets gives ranges of whole
    documents: none is lost or split.
    """
    if position <= 0:
        return 0
    patterns = (b"\n\n", b"\n\r\n") if input_format == "google" else (b"\n",)
    start = position - 1  # a pattern may begin with the byte before ``position``
    stream.seek(start)
    carry = b""
    while True:
        data = stream.read(block)
        if not data:
            return None
        window = carry + data
        base = start - len(carry)
        hits = [(i, len(pat)) for pat in patterns for i in [window.find(pat)] if i >= 0]
        if hits:
            index, size = min(hits)
            return base + index + size
        carry = window[-2:]
        start += len(data)


def _buffered(stream):
    if isinstance(stream, io.BufferedReader):
        return stream
    raw = stream if isinstance(stream, io.RawIOBase) else RangeReader(stream)
    return io.BufferedReader(raw, buffer_size=1 << 16)


def looks_binary(head: bytes) -> bool:
    """True for a file start that is not UTF-8 text: a UTF-16 byte-order mark, many NUL bytes,
    or mostly undecodable bytes and controls. Such a file is skipped whole (and counted), not
    read as debris; a few bad bytes in real text are cleaned line by line instead."""
    if not head:
        return False
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or head.count(b"\x00") > 0.1 * len(head):
        return True
    if len(head) < 64:
        return False  # too little to judge: such a file is cleaned line by line
    text = head.decode("utf-8", errors="replace")
    if len(head) == SNIFF_BYTES:
        text = text[:-3]  # the sample may end inside a multi-byte character
    bad = len(_BAD_CHARS.findall(text))
    return bad > _BINARY_SHARE * max(1, len(text))


def iter_lines(stream: BinaryIO, *, source: str, max_line_chars: int,
               stats: Counter) -> Iterator[tuple[str, bool]]:
    """Decode ``stream`` as UTF-8 (BOM and CRLF tolerated) and yield (line, continues).

    A line longer than ``max_line_chars`` comes out in pieces of that size, all but the last
    with ``continues=True``: memory stays bounded even for a multi-GB single-line file.
    Invalid bytes become U+FFFD here and are removed and counted by :func:`clean_text`.
    """
    text = io.TextIOWrapper(_buffered(stream), encoding="utf-8-sig", errors="replace",
                            newline=None)
    try:
        while True:
            line = text.readline(max_line_chars)
            if not line:
                return
            if line.endswith("\n"):
                yield line[:-1], False
            else:
                stats["lines_cut"] += 1 if len(line) >= max_line_chars else 0
                yield line, len(line) >= max_line_chars
    except _READ_ERRORS as e:
        raise CorruptInputError(f"cannot read {source}: {type(e).__name__}: {e}") from e


def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph after sentence-final punctuation; whitespace-only pieces are dropped."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(paragraph):
        piece = paragraph[start:m.end()].strip()
        if piece:
            out.append(piece)
        start = m.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return out


def cut_long(text: str, max_chars: int) -> list[tuple[int, str]]:
    """``text`` as (offset, piece) pieces of at most ``max_chars`` characters, unstripped.

    The one cut rule of the project (overlong sentences, and texts longer than a segmentation
    model takes): after the last comma-like mark or whitespace in the second half of the
    window, else hard at ``max_chars`` (which may split a word). No later step (LTP,
    WordPiece) ever sees unbounded input.
    """
    pieces, start = [], 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cut = end
        for m in _SOFT_BREAK.finditer(text, start + max_chars // 2, end):
            cut = m.end()
        pieces.append((start, text[start:cut]))
        start = cut
    if start < len(text):
        pieces.append((start, text[start:]))
    return pieces


def cap_sentence(sentence: str, max_chars: int) -> list[str]:
    """An overlong sentence cut by :func:`cut_long`, pieces stripped, empty ones dropped."""
    return [p for p in (piece.strip() for _, piece in cut_long(sentence, max_chars)) if p]


def _sentences(text: str, *, split: bool, max_sentence_chars: int, stats: Counter) -> list[str]:
    out = []
    for s in (split_sentences(text) if split else [text.strip()]):
        if len(s) > max_sentence_chars:
            stats["sentences_cut"] += 1
            out.extend(cap_sentence(s, max_sentence_chars))
        elif s:
            out.append(s)
    return out


def iter_documents(stream: BinaryIO, *, source: str, input_format: str,
                   text_field: str = "text", max_sentence_chars: int = 1000,
                   max_line_chars: int = 1 << 20, whole_file: bool = True,
                   stats: Counter) -> Iterator[tuple[str, list[str]]]:
    """Yield (doc_id, sentences) for every non-empty document of one file, in file order.

    ``doc_id`` is ``"{source}:{n}"``: n counts documents in ``google`` format and lines
    (1-based) otherwise, so ids are stable and say where a document came from.
    Empty and whitespace-only documents are counted (``empty_documents``) and not yielded.
    ``whole_file=False``: ``stream`` is a later range of a file (see ``document_boundary``);
    the file was counted and sniffed for binary content with its first range.
    """
    if input_format not in FORMATS:
        raise ValueError(f"input_format must be one of {FORMATS}, not {input_format!r}")
    stream = _buffered(stream)
    if whole_file:
        stats["files"] += 1
        try:
            head = stream.peek(SNIFF_BYTES)[:SNIFF_BYTES]
        except _READ_ERRORS as e:
            raise CorruptInputError(f"cannot read {source}: {type(e).__name__}: {e}") from e
        if looks_binary(head):
            stats["binary_files_skipped"] += 1
            return
    lines = iter_lines(stream, source=source, max_line_chars=max_line_chars, stats=stats)
    if input_format == "google":
        yield from _google_documents(lines, source=source,
                                     max_sentence_chars=max_sentence_chars, stats=stats)
    else:
        yield from _line_documents(lines, source=source, input_format=input_format,
                                   text_field=text_field, max_sentence_chars=max_sentence_chars,
                                   stats=stats)


def _emit(doc_id: str, sentences: list[str], stats: Counter):
    if sentences:
        stats["documents"] += 1
        stats["sentences"] += len(sentences)
        return doc_id, sentences
    stats["empty_documents"] += 1
    return None


# A google-format range with this many lines and no blank line is most likely a file of one
# document per line read in the wrong format: it becomes ONE document (stats.json warns).
LINES_WITHOUT_BLANK_WARNING = 200


def _google_documents(lines, *, source, max_sentence_chars, stats):
    doc_index, sentences, seen_any, prev_continues = 0, [], False, False
    first_line, blank_seen = stats["lines"], False
    for line, continues in lines:
        after_cut, prev_continues = prev_continues, continues
        if after_cut and not line:
            continue  # the newline that ended a line delivered in pieces, not a blank line
        stats["lines"] += 0 if after_cut else 1
        cleaned = clean_text(line, stats)
        if cleaned is None:
            continue
        if not cleaned.strip():
            # Blank line: end of document. Runs of blank lines are one boundary.
            blank_seen = True
            if seen_any:
                doc = _emit(f"{source}:{doc_index}", sentences, stats)
                if doc:
                    yield doc
                doc_index += 1
            sentences, seen_any = [], False
            continue
        seen_any = True
        sentences.extend(_sentences(cleaned, split=False, max_sentence_chars=max_sentence_chars,
                                    stats=stats))
    if seen_any:
        doc = _emit(f"{source}:{doc_index}", sentences, stats)
        if doc:
            yield doc
    if not blank_seen and stats["lines"] - first_line >= LINES_WITHOUT_BLANK_WARNING:
        stats["google_ranges_without_blank_lines"] += 1


def _line_documents(lines, *, source, input_format, text_field, max_sentence_chars, stats):
    def rejected():
        return stats["jsonl_bad_lines"] + stats["jsonl_missing_text_field"]

    documents_before, rejected_before = stats["documents"], rejected()
    yield from _line_documents_of(lines, source=source, input_format=input_format,
                                  text_field=text_field, max_sentence_chars=max_sentence_chars,
                                  stats=stats)
    if input_format == "jsonl" and stats["documents"] == documents_before and \
            rejected() > rejected_before:
        # Every line with text rejected: wrong format or --text_field? (stats.json warns)
        stats["jsonl_ranges_all_rejected"] += 1


def _line_documents_of(lines, *, source, input_format, text_field, max_sentence_chars,
                       stats):
    line_no, sentences, pending = 0, [], False
    for line, continues in lines:
        if not pending:
            line_no += 1
            stats["lines"] += 1
        if input_format == "jsonl":
            if continues or pending:
                # A JSON line longer than max_line_chars cannot be parsed piecewise: skip it.
                if not continues:
                    stats["jsonl_lines_too_long"] += 1
                pending = continues
                continue
            line = _json_text(line, text_field=text_field, where=f"{source}:{line_no}",
                              stats=stats)
            if line is None:
                continue
        cleaned = clean_text(line, stats)
        if cleaned is not None:
            sentences.extend(_sentences(cleaned, split=True,
                                        max_sentence_chars=max_sentence_chars, stats=stats))
        pending = continues
        if not continues:
            doc = _emit(f"{source}:{line_no}", sentences, stats)
            if doc:
                yield doc
            sentences = []
    if pending and input_format == "lines":
        doc = _emit(f"{source}:{line_no}", sentences, stats)
        if doc:
            yield doc


def _json_text(line: str, *, text_field: str, where: str, stats: Counter) -> str | None:
    if not line.strip():
        stats["empty_documents"] += 1
        return None
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python can
        stats["jsonl_bad_lines"] += 1
        return None
    value = obj.get(text_field) if isinstance(obj, dict) else None
    if not isinstance(value, str):
        stats["jsonl_missing_text_field"] += 1
        return None
    return value
