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
"""
from __future__ import annotations

import bisect
from array import array
from collections import Counter
from typing import List, NamedTuple, Optional, Sequence, Tuple

from pipeline import schema

# Flags per token (one byte each).
WORD_START = 1  # first piece of a word: masking groups begin here
CJK = 2  # the piece is a single CJK ideograph


class Sentence(NamedTuple):
    """Token ids and per-token flags of one sentence (both of equal length)."""
    ids: array  # array('i')
    flags: bytes


def is_cjk_char(ch: str) -> bool:
    """CJK Unified Ideographs and extensions, compatibility ideographs (Google's ranges)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def has_cjk(text: str) -> bool:
    return any(is_cjk_char(ch) for ch in text)


def read_vocab(text: str) -> List[str]:
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
    """BERT tokenization (as Google's ``FullTokenizer``) through HF ``tokenizers``."""

    def __init__(self, vocab: Sequence[str], *, do_lower_case: bool = True):
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
        self._cjk_ids = frozenset(i for i, t in enumerate(self.vocab)
                                  if len(t) == 1 and is_cjk_char(t))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, sentences: Sequence[str],
               word_spans: Optional[Sequence[Sequence[Tuple[int, int]]]] = None,
               *, stats: Optional[Counter] = None) -> List[Sentence]:
        """Tokenize sentences; ``word_spans[i]`` are (start, end) offsets of segmented words.

        Sentences that tokenize to nothing come back empty; the caller drops them (Google
        drops lines that tokenize to nothing too).
        """
        encodings = self._tok.encode_batch(list(sentences), add_special_tokens=False)
        out = []
        for i, enc in enumerate(encodings):
            spans = word_spans[i] if word_spans is not None else ()
            out.append(self._tag(enc, spans, stats))
        return out

    def _tag(self, enc, spans, stats) -> Sentence:
        ids = enc.ids
        word_ids = enc.word_ids
        offsets = enc.offsets
        cjk_ids = self._cjk_ids
        span_starts = [s for s, _ in spans]
        flags = bytearray(len(ids))
        prev_word, prev_span = None, -1
        words = multi = 0
        group_len = 0
        for j, tid in enumerate(ids):
            is_cjk = tid in cjk_ids
            span = -1
            if is_cjk and spans:
                k = bisect.bisect_right(span_starts, offsets[j][0]) - 1
                if k >= 0 and offsets[j][0] < spans[k][1]:
                    span = k
            joins = j > 0 and (word_ids[j] == prev_word
                               or (span >= 0 and span == prev_span))
            if not joins:
                if group_len > 1 and stats is not None:
                    multi += 1
                words += 1
                group_len = 0
            group_len += 1
            flags[j] = (0 if joins else WORD_START) | (CJK if is_cjk else 0)
            prev_word, prev_span = word_ids[j], span
        if stats is not None:
            if group_len > 1:
                multi += 1
            stats["tokens"] += len(ids)
            stats["unk_tokens"] += ids.count(self.unk_id) if isinstance(ids, list) else 0
            stats["words"] += words
            stats["multi_piece_words"] += multi
        return Sentence(array("i", ids), bytes(flags))
