"""The shipped resources: the sample corpora and their generator (pipeline.dev.sample_corpus),
the vocabularies, the NOTICE."""
import hashlib
import os

import pytest

from pipeline.default_segmenter import peoples_daily as pd
from pipeline.dev import sample_corpus

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RES = os.path.join(REPO, "pipeline", "resources")


@pytest.fixture(scope="module")
def paragraphs():
    return list(pd.iter_paragraphs())


def test_articles_found_by_headline_heuristic(paragraphs):
    articles = [a for a, _ in sample_corpus.iter_articles(paragraphs)]
    assert len(articles) == len(set(articles))  # contiguous
    assert 2500 < len(articles) < 4000
    first = [p for p in paragraphs if p.article_id == articles[0]]
    assert "".join(first[-1].words).endswith("（新华社北京１２月３１日电）")
    second = [p for p in paragraphs if p.article_id == articles[1]]
    assert "".join(second[0].words).startswith("在十五大精神指引下胜利前进")


def test_split_sentences_keeps_marks_and_closing_quotes():
    text = "他说：“我们赢了！”大家都笑了。真的吗？是的；好「完」』尾巴"
    sents = sample_corpus.split_sentences(text)
    assert sents == ["他说：“我们赢了！”", "大家都笑了。", "真的吗？", "是的；", "好「完」』尾巴"]
    assert "".join(sents) == text
    for p in list(pd.iter_paragraphs())[:3000]:
        raw = "".join(p.words)
        assert "".join(sample_corpus.split_sentences(raw)) == raw


def _docs(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert not text.startswith("\n") and text.endswith("\n") and "\n\n\n" not in text
    return [d.split("\n") for d in text.rstrip("\n").split("\n\n")]


def test_shipped_chinese_sample_matches_generator(tmp_path):
    shipped = os.path.join(RES, "sample", "peoples_daily_sample.txt")
    assert os.path.getsize(shipped) < 620_000
    out = tmp_path / "pd.txt"
    assert sample_corpus.main(["--write-sample", str(out)]) == 0
    assert out.read_bytes() == open(shipped, "rb").read()
    docs = _docs(shipped)
    assert 300 <= len(docs) <= 400
    assert docs[0][0] == "迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）"
    assert all(line.strip() for d in docs for line in d)


def test_shipped_english_sample():
    path = os.path.join(RES, "sample", "english_sample.txt")
    assert 200_000 < os.path.getsize(path) < 400_000
    docs = _docs(path)
    assert len(docs) > 300
    assert all(line.strip() and "{" not in line for d in docs for line in d)


def test_jargon_entries_become_documents():
    lines = ["   :foo: /foo/, n.\n", "\n", "   A word. It is {common}. See\n", "   bar.\n",
             "\n", "   :bar: n.\n", "   Another one!\n"]
    assert sample_corpus.jargon_documents(lines) == [["A word.", "It is common.", "See bar."],
                                          ["Another one!"]]


@pytest.mark.parametrize("name,lines,md5", [
    ("bert-base-chinese-vocab.txt", 21128, "3b5b76c4aef48ecf8cb3abaafe960f09"),
    ("bert-base-uncased-vocab.txt", 30522, "64800d5d8528ce344256daf115d4965e"),
])
def test_shipped_vocab_files(name, lines, md5):
    data = open(os.path.join(RES, "vocab", name), "rb").read()
    assert hashlib.md5(data).hexdigest() == md5
    assert data.count(b"\n") == lines


def test_notice_names_the_licences():
    notice = open(os.path.join(RES, "NOTICE"), encoding="utf-8").read()
    for needle in ("Apache", "research", "HIT", "People's Daily"):
        assert needle in notice
