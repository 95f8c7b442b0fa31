"""WordPiece with HF ``tokenizers``, each piece tagged with the word it belongs to.

A sentence is tokenized whole (BERT normalizer, BERT pre-tokenizer, WordPiece), and word
boundaries come from two sources, both by character offsets, never by re-matching strings:

* the pre-tokenizer's words (``Encoding.word_ids``): a Latin word and its ``##`` pieces are one
  word, as in Google's whole-word masking;
* segmentation spans (LTP) for Chinese: consecutive CJK characters inside one segmented word
  are one word. Only CJK characters are joined; digits and Latin inside a Chinese word keep
  their own WordPiece words, so mixed text can never misalign.

The ids are the plain vocabulary ids of the pieces: a Chinese character inside a word keeps its
own id (never the ``##X`` entry), so grouping leaks nothing into the data.

Tokenization is memoized: a sentence splits into units that tokenize independently (each CJK
ideograph, and each run of other characters between ASCII spaces and ideographs), and
``tokenizers`` only ever sees units not seen before (``_UnitCache``). The result is identical to
tokenizing whole sentences, which ``memoize=False`` still does (the tests compare the two).
"""
from __future__ import annotations

import itertools
import threading
from array import array
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from pipeline import schema
from pipeline.core.segment import WordBounds
from pipeline.core.text import is_cjk_char

# Flags per token (one byte each), the one definition of their bits.
WORD_START = 1  # first piece of a word: masking groups begin here
CJK = 2  # the piece is a single CJK ideograph
SPECIAL = 4  # [CLS]/[SEP], set while an instance is assembled: never masked, ends any group


class Sentence(NamedTuple):
    """Token ids and per-token flags of one sentence (both of equal length)."""
    ids: array  # array('i')
    flags: bytes


def read_vocab(text: str) -> list[str]:
    """Vocabulary lines → tokens in id order (a vocab.txt holds one token per line)."""
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    tokens = [t.rstrip("\r") for t in tokens]
    missing = [t for t in (schema.CLS, schema.SEP, schema.MASK, schema.UNK, schema.PAD)
               if t not in tokens]
    if missing:
        raise ValueError(f"vocabulary lacks special tokens {missing}: not a BERT vocab.txt?")
    return tokens


class WordPieceTokenizer:
    """BERT tokenization (as Google's ``FullTokenizer``) through HF ``tokenizers``.

    With ``memoize`` (the default) sentences are cut into independent units whose tokens are
    cached (see ``_UnitCache``); without it every sentence goes through ``tokenizers`` whole.
    Both give identical results.
    """

    def __init__(self, vocab: Sequence[str], *, do_lower_case: bool = True,
                 memoize: bool = True):
        from tokenizers import Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import WordPiece

        self.vocab = list(vocab)
        index = {}
        for i, tok in enumerate(self.vocab):
            index.setdefault(tok, i)  # first occurrence wins, like Google's load_vocab order
        self._tok = Tokenizer(WordPiece(index, unk_token=schema.UNK,
                                        max_input_chars_per_word=100))
        self._tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None,
            lowercase=do_lower_case)
        self._tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self.cls_id, self.sep_id = index[schema.CLS], index[schema.SEP]
        self.mask_id, self.unk_id = index[schema.MASK], index[schema.UNK]
        # Per id: is it a single CJK ideograph (a Chinese character that segmentation groups)?
        self._cjk_table = np.array([len(t) == 1 and is_cjk_char(t) for t in self.vocab],
                                   dtype=bool)
        self._units = _UnitCache(self._tok) if memoize else None

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, sentences: Sequence[str],
               word_spans: Sequence[Sequence[tuple[int, int]]] | WordBounds | None = None,
               *, stats: Counter | None = None) -> list[Sentence]:
        """Tokenize sentences; ``word_spans[i]`` are (start, end) offsets of segmented words
        (or the same as ``WordBounds``, as ``LtpSegmenter.word_bounds`` gives them).

        Sentences that tokenize to nothing come back empty; the caller drops them (Google
        drops lines that tokenize to nothing too).
        """
        # Where each sentence starts in the sentences joined by one separator character.
        text_base = np.zeros(len(sentences) + 1, dtype=np.int64)
        np.cumsum([len(t) + 1 for t in sentences], out=text_base[1:])
        if self._units is None:
            tokens = self._tokens_exact(sentences, text_base)
        else:
            tokens = self._units.tokens(sentences, text_base)
        if stats is not None:
            self._count_unknown(sentences, tokens, text_base, stats)
        return self._tag_batch(tokens, text_base, word_spans, stats)

    def _count_unknown(self, sentences, tokens: "_Tokens", text_base: np.ndarray,
                       stats: Counter) -> None:
        """``unk_char:X``: how often a token starting with character X became [UNK] (what the
        vocabulary misses; stats.json lists the most frequent)."""
        unknown = tokens.position[tokens.ids == self.unk_id]
        if not len(unknown):
            return
        sentence = np.searchsorted(text_base, unknown, side="right") - 1
        offset = unknown - text_base[sentence]
        for s, o in zip(sentence.tolist(), offset.tolist()):
            stats["unk_char:" + sentences[s][o]] += 1

    def _tokens_exact(self, sentences: Sequence[str], text_base: np.ndarray) -> _Tokens:
        """``_Tokens`` of the batch straight from ``tokenizers``, one sentence at a time."""
        encodings = self._tok.encode_batch(list(sentences), add_special_tokens=False)
        chain = itertools.chain.from_iterable
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64,
                              count=len(encodings))
        total = int(lengths.sum())
        ids = np.fromiter(chain(e.ids for e in encodings), dtype=np.int32, count=total)
        word = np.fromiter(chain(e.word_ids for e in encodings), dtype=np.int64, count=total)
        offsets = np.fromiter(chain(chain(e.offsets for e in encodings)), dtype=np.int64,
                              count=2 * total)[0::2]
        position = offsets + np.repeat(text_base[:-1], lengths)
        return _Tokens(ids, word, position, lengths)

    def _tag_batch(self, tokens: _Tokens, text_base: np.ndarray, word_spans,
                   stats) -> list[Sentence]:
        """Word flags for a whole batch at once, with numpy over the concatenated tokens.

        Positions are global (sentence base + offset), so one ``searchsorted`` finds the
        segmented word of every CJK token of the batch.
        """
        ids, word, position, lengths = tokens
        total = len(ids)
        sentence_of = np.repeat(np.arange(len(lengths)), lengths)
        cjk = self._cjk_table[ids]
        span = np.full(total, -1, dtype=np.int64)
        if word_spans is not None and total:
            words = (word_spans if isinstance(word_spans, WordBounds)
                     else WordBounds.from_spans(word_spans))
            base = np.repeat(text_base[:len(words.counts)], words.counts)
            starts, ends = words.starts + base, words.ends + base
            if len(starts):
                k = np.searchsorted(starts, position, side="right") - 1
                inside = (k >= 0) & cjk
                inside[inside] &= position[inside] < ends[k[inside]]
                span[inside] = k[inside]
        joins = np.zeros(total, dtype=bool)
        if total > 1:
            joins[1:] = (sentence_of[1:] == sentence_of[:-1]) & (
                (word[1:] == word[:-1]) | ((span[1:] == span[:-1]) & (span[1:] >= 0)))
        flags = np.where(joins, 0, WORD_START).astype(np.uint8) | np.where(cjk, CJK, 0).astype(
            np.uint8)
        if stats is not None:
            stats["tokens"] += total
            stats["unk_tokens"] += int((ids == self.unk_id).sum())
            stats["words"] += int(total - joins.sum())
            # A multi-piece word: a start whose next token joins it.
            stats["multi_piece_words"] += int((~joins[:-1] & joins[1:]).sum()) if total else 0
        out = []
        bounds = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        id_bytes, flag_bytes = ids.tobytes(), flags.tobytes()
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            piece = array("i")
            piece.frombytes(id_bytes[4 * a:4 * b])
            out.append(Sentence(piece, flag_bytes[a:b]))
        return out


class _Tokens(NamedTuple):
    """The tokens of a batch, concatenated over its sentences."""
    ids: np.ndarray  # vocabulary ids
    word: np.ndarray  # equal for consecutive pieces of one pre-tokenizer word, else different
    position: np.ndarray  # start of the token's first character in the joined sentences
    lengths: np.ndarray  # tokens per sentence


# The code points BertNormalizer surrounds with spaces (``is_chinese_char`` of ``tokenizers``;
# note the gap 0x2B820-0x2B91F, which it does not pad). A test checks every one of them.
PADDED_CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF),
                     (0x2A700, 0x2B81F), (0x2B920, 0x2CEAF), (0x2F800, 0x2FA1F))
# Certain pre-tokenizer word boundaries besides those ideographs. Other whitespace stays inside
# runs, which is always exact: "whitespace" differs between Python and Rust, and some of it is
# control characters that cleaning deletes ("a\x0bb" and "a\x85b" are one word "ab").
_ASCII_SPACES = (ord(" "), ord("\t"), ord("\n"), ord("\r"))
# Codes of the per-code-point table (vocabulary ids are >= 0 and mean "a one-token ideograph").
_SPACE, _RUN, _ALONE, _UNSEEN = -1, -2, -3, -4


class _UnitCache:
    """Tokenization memoized per independent unit, with ``tokenizers`` filling the caches.

    BertNormalizer puts spaces around every CJK ideograph and the pre-tokenizer splits on
    spaces, so a sentence's tokens are the concatenation of the tokens of its units, each
    tokenized alone: every padded ideograph, and every maximal run of characters between
    ASCII spaces and those ideographs. Normalization (cleaning, NFD, lowercasing) and WordPiece
    never look across a unit's ends, so offsets and words within a unit are the same alone as
    in the sentence.

    * An ideograph's id comes from a table over code points, filled the first time the
      character is seen, by encoding it alone. One that does not encode to exactly one token
      at its own offset (none in BERT's vocabularies) is made a run of its own (``_ALONE``).
    * A run's tokens (id, offset in the run, word in the run) are cached per run string; new
      runs of a batch are encoded together. The cache is emptied when it would exceed
      ``max_runs`` runs or ``max_run_chars`` characters, so memory stays bounded on any
      corpus (text without spaces or ideographs, such as Thai, has long runs).

    One lock guards the caches: a Beam worker shares the tokenizer between threads.
    """

    def __init__(self, tok, max_runs: int = 500_000, max_run_chars: int = 20_000_000):
        self._tok = tok
        self.max_runs, self.max_run_chars = max_runs, max_run_chars
        self._lock = threading.Lock()
        self._code = np.full(0x110000, _RUN, dtype=np.int32)  # every code point
        self._code[list(_ASCII_SPACES)] = _SPACE
        for lo, hi in PADDED_CJK_RANGES:
            self._code[lo:hi + 1] = _UNSEEN
        self._clear_runs()

    def __reduce__(self):  # pickles as an empty cache (a lock cannot be pickled)
        return _UnitCache, (self._tok, self.max_runs, self.max_run_chars)

    def _clear_runs(self) -> None:
        self._run_index: dict[str, int] = {}  # run string → row in _run_rows
        self._run_chars = 0  # characters of the run strings in _run_index
        self._run_rows = _Rows(2, np.int64)  # per run: first row in _token_rows, token count
        self._token_rows = _Rows(3, np.int32)  # per token: id, offset in run, word in run

    def tokens(self, sentences: Sequence[str], text_base: np.ndarray) -> _Tokens:
        """The batch's ``_Tokens``, as ``WordPieceTokenizer._tokens_exact`` finds them."""
        with self._lock:
            return self._tokens(sentences, text_base)

    def _tokens(self, sentences: Sequence[str], text_base: np.ndarray) -> _Tokens:
        # Python str indexes are code points, so positions in `points` are str offsets. A lone
        # surrogate passes (as a run character) to fail in tokenizers, as without the cache.
        text = "\n".join(sentences)
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        code = self._code[points]
        unseen = code == _UNSEEN
        if unseen.any():
            self._learn_ideographs(np.unique(points[unseen]).tolist())
            code = self._code[points]
        # Runs: maximal stretches of _RUN characters; an _ALONE character is a run by itself.
        in_run = code <= _RUN
        alone = code == _ALONE
        run_start = in_run.copy()
        run_start[1:] &= ~in_run[:-1] | alone[1:] | alone[:-1]
        run_stop = in_run.copy()  # last character of a run
        run_stop[:-1] &= ~in_run[1:] | run_start[1:]
        keys = [text[a:b] for a, b in zip(np.flatnonzero(run_start).tolist(),
                                          (np.flatnonzero(run_stop) + 1).tolist())]
        run_rows = self._learn_runs(keys)  # (may grow the row arrays: index them after)
        run = self._run_rows.data[run_rows]  # (first token row, token count) per run

        # Units in text order: one-token ideographs (code >= 0) and runs.
        unit_pos = np.flatnonzero(run_start | (code >= 0))
        unit_is_run = run_start[unit_pos]
        unit_len = np.ones(len(unit_pos), dtype=np.int64)
        unit_len[unit_is_run] = run[:, 1]
        unit_first = np.zeros(len(unit_pos) + 1, dtype=np.int64)  # first token of each unit
        np.cumsum(unit_len, out=unit_first[1:])
        total = int(unit_first[-1])
        unit_of = np.repeat(np.arange(len(unit_pos), dtype=np.int64), unit_len)
        position = unit_pos[unit_of]
        ids = code[position]  # right for ideographs; run tokens are overwritten below
        word = unit_of << 32  # distinct per unit; a run adds its own word numbers
        run_token = unit_is_run[unit_of]
        run_unit_of = unit_of[run_token]
        # Row of each run token: its run's first row + its index within the run.
        first_row = np.zeros(len(unit_pos), dtype=np.int64)
        first_row[unit_is_run] = run[:, 0]
        rows = self._token_rows.data[first_row[run_unit_of] + np.arange(total)[run_token]
                                     - unit_first[run_unit_of]]
        ids[run_token] = rows[:, 0]
        position[run_token] += rows[:, 1]
        word[run_token] += rows[:, 2]
        lengths = np.diff(unit_first[np.searchsorted(unit_pos, text_base)])
        return _Tokens(ids, word, position, lengths)

    def _learn_ideographs(self, points: list[int]) -> None:
        for point, e in zip(points, self._tok.encode_batch([chr(p) for p in points],
                                                           add_special_tokens=False)):
            single = len(e.ids) == 1 and e.offsets[0][0] == 0
            self._code[point] = e.ids[0] if single else _ALONE

    def _learn_runs(self, keys: list[str]) -> np.ndarray:
        """Row in ``_run_rows`` of every key, encoding the runs not cached yet."""
        index = self._run_index
        new = list(dict.fromkeys(k for k in keys if k not in index))
        new_chars = sum(map(len, new))
        if (len(index) + len(new) > self.max_runs
                or self._run_chars + new_chars > self.max_run_chars):
            self._clear_runs()
            index = self._run_index
            new = list(dict.fromkeys(keys))
            new_chars = sum(map(len, new))
        if new:
            encodings = self._tok.encode_batch(new, add_special_tokens=False)
            chain = itertools.chain.from_iterable
            counts = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64,
                                 count=len(new))
            total = int(counts.sum())
            tokens = np.empty((total, 3), dtype=np.int32)
            tokens[:, 0] = np.fromiter(chain(e.ids for e in encodings), np.int32, total)
            tokens[:, 1] = np.fromiter(chain(chain(e.offsets for e in encodings)), np.int32,
                                       2 * total)[0::2]
            tokens[:, 2] = np.fromiter(chain(e.word_ids for e in encodings), np.int32, total)
            first = self._token_rows.size + np.cumsum(counts) - counts
            index.update(zip(new, range(self._run_rows.size, self._run_rows.size + len(new))))
            self._run_rows.extend(np.stack([first, counts], axis=1))
            self._token_rows.extend(tokens)
            self._run_chars += new_chars
        return np.fromiter(map(index.__getitem__, keys), dtype=np.int64, count=len(keys))


class _Rows:
    """A 2-D numpy array that grows by appending rows (amortized O(1) per row)."""

    def __init__(self, width: int, dtype):
        self.data = np.empty((1024, width), dtype=dtype)
        self.size = 0

    def extend(self, rows: np.ndarray) -> None:
        end = self.size + len(rows)
        if end > len(self.data):
            grown = np.empty((max(end, 2 * len(self.data)), self.data.shape[1]),
                             dtype=self.data.dtype)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[self.size:end] = rows
        self.size = end
