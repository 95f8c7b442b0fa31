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

import itertools
from array import array
from collections import Counter
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pipeline import schema
from pipeline.core.text import is_cjk_char

# Flags per token (one byte each).
WORD_START = 1  # first piece of a word: masking groups begin here
CJK = 2  # the piece is a single CJK ideograph


class Sentence(NamedTuple):
    """Token ids and per-token flags of one sentence (both of equal length)."""
    ids: array  # array('i')
    flags: bytes


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
        # Per id: is it a single CJK ideograph (a Chinese character that segmentation groups)?
        self._cjk_table = np.array([len(t) == 1 and is_cjk_char(t) for t in self.vocab],
                                   dtype=bool)

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
        return self._tag_batch(encodings, sentences, word_spans, stats)

    def _tag_batch(self, encodings, sentences, word_spans, stats) -> List[Sentence]:
        """Word flags for a whole batch at once, with numpy over the concatenated tokens.

        Character offsets are made global (sentence base + offset), so one ``searchsorted``
        finds the segmented word of every CJK token of the batch.
        """
        chain = itertools.chain.from_iterable
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64,
                              count=len(encodings))
        total = int(lengths.sum())
        ids = np.fromiter(chain(e.ids for e in encodings), dtype=np.int32, count=total)
        word = np.fromiter(chain(e.word_ids for e in encodings), dtype=np.int64, count=total)
        offsets = np.fromiter(chain(chain(e.offsets for e in encodings)), dtype=np.int64,
                              count=2 * total)[0::2]
        sentence_of = np.repeat(np.arange(len(encodings)), lengths)
        text_base = np.zeros(len(encodings) + 1, dtype=np.int64)
        np.cumsum([len(t) + 1 for t in sentences], out=text_base[1:])
        cjk = self._cjk_table[ids]
        span = np.full(total, -1, dtype=np.int64)
        if word_spans is not None and total:
            starts = np.fromiter(chain((s + text_base[i] for s, _ in spans)
                                       for i, spans in enumerate(word_spans)), dtype=np.int64)
            ends = np.fromiter(chain((e + text_base[i] for _, e in spans)
                                     for i, spans in enumerate(word_spans)), dtype=np.int64)
            if len(starts):
                position = offsets + text_base[sentence_of]
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
        bounds = np.zeros(len(encodings) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        id_bytes, flag_bytes = ids.tobytes(), flags.tobytes()
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            piece = array("i")
            piece.frombytes(id_bytes[4 * a:4 * b])
            out.append(Sentence(piece, flag_bytes[a:b]))
        return out
