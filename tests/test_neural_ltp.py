"""The neural LTP path: a real ``ltp`` 4.2 neural model (random weights, built offline by
``pipeline.dev.neural_ltp``: ``ltp_core``'s LTPModule, an ELECTRA backbone, the shipped Chinese
vocabulary) through the segmenter and through the whole job, and ``--ltp_device``.

Random weights segment at random, so these tests check the mechanics, not the words: offsets
valid and aligned, multi-character words that become multi-token masking groups, batches equal
to single texts, texts past the model's 512-token window cut and segmented whole. Where torch
sees a GPU, the job runs the model there (``--ltp_device=auto``).
"""
import json
import pickle

import pytest

from pipeline.core.segment import NEURAL_MAX_CHARS, LtpSegmenter, describe_model, model_kind
from pipeline.core.text import cut_long, has_cjk
from pipeline.default_segmenter import peoples_daily
from pipeline.run import run
from tests import realdata
from tests.core.test_segment import check_spans

ODD = [
    "中国\u3000人民 银行\t今天\n开门",
    "iPhone 15 Pro售价7999元，ABC-123测试 hello world  e-mail: x@y.com",
    "😀中国人民🇨🇳万岁👍🏽",
    "ｅｍａｉｌ：中文ＡＢＣ１２３",
    "\u200b中\u200b国\ufeff",
    "\ud800中文",
    "   中   ",
]


@pytest.fixture(scope="module")
def seg(neural_ltp_model_dir):
    return LtpSegmenter(neural_ltp_model_dir)


@pytest.fixture(scope="module")
def paragraphs():
    return ["".join(p.words) for _, p in zip(range(300), peoples_daily.held_out_paragraphs())]


def long_text(paragraphs, n=1300):
    """Real running text (held-out People's Daily paragraphs joined) of ``n`` characters."""
    text = "".join(paragraphs)[:n]
    assert len(text) == n
    return text


def test_the_directory_is_a_neural_model_ltp_loads_with_its_saved_weights(
        neural_ltp_model_dir, seg):
    import torch
    from ltp import LTP

    with open(f"{neural_ltp_model_dir}/config.json", encoding="utf-8") as f:
        assert json.load(f)["nerual"] is True
    model = LTP(neural_ltp_model_dir)
    assert type(model).__module__ == "ltp.nerual" and "cws" in model.supported_tasks
    # ltp loads with strict=False: a key it did not find would silently stay random.
    saved = torch.load(f"{neural_ltp_model_dir}/pytorch_model.bin")
    loaded = model.model.state_dict()
    assert set(saved) <= set(loaded)
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert (seg.kind, seg.device, seg.max_chars) == ("neural", "cpu", NEURAL_MAX_CHARS)
    assert model_kind(neural_ltp_model_dir) == "neural"
    assert describe_model(neural_ltp_model_dir)["kind"] == "neural"


def test_the_same_seed_builds_the_same_files(neural_ltp_model_dir, tmp_path):
    from pipeline.common.digest import directory_sha256
    from pipeline.dev.neural_ltp import build_neural_model

    again = build_neural_model(tmp_path / "again")
    assert directory_sha256(again) == directory_sha256(neural_ltp_model_dir)
    assert directory_sha256(build_neural_model(tmp_path / "other", seed=1)) != \
        directory_sha256(again)


def test_spans_are_offsets_of_the_text_and_form_multicharacter_words(seg, paragraphs):
    before = dict(seg.stats)
    results = seg.word_spans(paragraphs)
    assert seg.stats["unaligned_words"] == before["unaligned_words"]  # the words are slices
    texts = paragraphs + ODD
    results += seg.word_spans(ODD)  # LTP drops zero-width characters: such words resync
    assert len(results) == len(texts)
    for i, (text, spans) in enumerate(zip(texts, results)):
        check_spans(text, spans)
        if not has_cjk(text):
            assert spans == []
        elif i < len(paragraphs) and not any(c.isspace() for c in text):
            # LTP's neural words are slices of the text: they tile it (but for characters its
            # tokenizer drops: whitespace, zero-width and control characters).
            assert spans[0][0] == 0 and spans[-1][1] == len(text), text[:40]
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    lengths = [e - s for spans in results for s, e in spans]
    assert min(lengths) == 1 and sum(n >= 2 for n in lengths) > len(lengths) // 10
    assert seg.stats["failed_texts"] == before["failed_texts"]
    # Words split at whitespace; Latin words come out whole.
    words = [ODD[1][s:e] for s, e in results[len(paragraphs) + 1]]
    assert "hello" in words and "world" in words


def test_a_batch_gives_what_single_texts_give(neural_ltp_model_dir, paragraphs):
    seg = LtpSegmenter(neural_ltp_model_dir, batch_size=16)  # padded batches of mixed lengths
    texts = paragraphs[:80] + ODD
    assert seg.word_spans(texts) == [seg.word_spans([t])[0] for t in texts]


def test_texts_longer_than_the_neural_cap_are_cut_and_segmented_whole(seg, paragraphs,
                                                                      neural_ltp_model_dir):
    text = long_text(paragraphs)
    chunks = cut_long(text, NEURAL_MAX_CHARS)
    assert len(chunks) >= 3 and all(len(c) <= NEURAL_MAX_CHARS for _, c in chunks)
    before = dict(seg.stats)
    spans = seg.word_spans([text])[0]
    assert seg.stats["chunks"] - before["chunks"] == len(chunks)
    assert seg.stats["failed_texts"] == before["failed_texts"]
    check_spans(text, spans)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)  # every character is in a word
    assert max(e - s for s, e in spans) < 50
    # The same words as each chunk segmented alone, at the chunk's offset.
    expected = [(off + s, off + e) for off, chunk in chunks for s, e in seg.word_spans([chunk])[0]]
    assert spans == expected
    # Why the cap: uncut, LTP's 512-token window (510 characters) makes the rest one "word".
    uncut = LtpSegmenter(neural_ltp_model_dir, max_chars=len(text)).word_spans([text])[0]
    assert uncut[-1] == (uncut[-1][0], len(text)) and uncut[-1][0] <= 510


def test_a_user_dictionary_applies_to_neural_words(neural_ltp_model_dir, seg, paragraphs,
                                                   tmp_path):
    words = tmp_path / "dict.txt"
    words.write_text("人民银行\n中国人民\n经济\n发展\n", encoding="utf-8")
    with_dict = LtpSegmenter(neural_ltp_model_dir, user_dict=words)
    texts = paragraphs[:100]
    results = with_dict.word_spans(texts)
    for text, spans in zip(texts, results):
        check_spans(text, spans)
    assert with_dict.stats["failed_texts"] == 0
    assert results != seg.word_spans(texts)  # LTP's hook merged some model words


def test_pickling_keeps_the_model_options_and_device(seg, paragraphs):
    again = pickle.loads(pickle.dumps(seg))
    assert (again.kind, again.device, again.max_chars) == ("neural", "cpu", seg.max_chars)
    assert again.word_spans(paragraphs[:20]) == seg.word_spans(paragraphs[:20])


# --ltp_device

def test_device_values(neural_ltp_model_dir, small_ltp_model_dir):
    import torch

    from pipeline.beam.ltp_device import check_device, worker_device

    for good in ("cpu", "cuda", "cuda:0", "cuda:12", "auto"):
        assert check_device(good) == good
    for bad in ("gpu", "CUDA", "cuda:", "cuda:x", "mps", "", "cpu "):
        with pytest.raises(ValueError, match="--ltp_device"):
            check_device(bad)
    threads = torch.get_num_threads()
    try:
        gpu = torch.cuda.is_available()
        assert worker_device("auto", neural=True) == ("cuda" if gpu else "cpu")
        if not gpu:
            assert torch.get_num_threads() == 1  # one worker per core: one torch thread
            with pytest.raises(RuntimeError, match="sees no GPU"):
                worker_device("cuda", neural=True)
        assert worker_device("auto", neural=False) == "cpu"
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="legacy"):
        LtpSegmenter(small_ltp_model_dir, device="cuda")
    with pytest.raises(ValueError, match="auto"):
        LtpSegmenter(neural_ltp_model_dir, device="auto")


def test_a_legacy_model_refuses_a_gpu_before_anything_runs(tmp_path, small_ltp_model_dir):
    corpus = realdata.SAMPLE_CORPUS
    cases = {
        "gpu": [f"--ltp_model={small_ltp_model_dir}", "--ltp_device=gpu"],  # no such device
        "legacy": [f"--ltp_model={small_ltp_model_dir}", "--ltp_device=cuda:0"],
        "default": ["--ltp_device=cuda"],  # refused before the built-in model is built
    }
    for name, flags in cases.items():
        out = tmp_path / name
        with pytest.raises(ValueError, match="--ltp_device"):
            run([f"--input={corpus}", f"--output_dir={out}"] + flags)
        assert not out.exists()


# The whole job

def job_corpus(root, paragraphs):
    """Google format: 30 sample documents, then one document holding a sentence longer than
    the neural cap (and a short one)."""
    with open(realdata.SAMPLE_CORPUS, encoding="utf-8") as f:
        docs = f.read().strip().split("\n\n")[:30]
    docs.append(long_text(paragraphs) + "\n中国人民银行今天开门。")
    path = root / "corpus.txt"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    sentences = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    return path, sum(map(has_cjk, sentences))


@pytest.fixture(scope="module")
def neural_job(tmp_path_factory, neural_ltp_model_dir, paragraphs):
    import torch

    root = tmp_path_factory.mktemp("neural_job")
    corpus, cjk_sentences = job_corpus(root, paragraphs)
    common = [f"--input={corpus}", f"--ltp_model={neural_ltp_model_dir}", "--masking=dynamic",
              "--output_formats=parquet", "--num_shards=2", "--max_sentence_chars=2000"]
    threads = torch.get_num_threads()  # the job's worker sets one torch thread in this process
    try:
        manifests = {size: run(common + [f"--output_dir={root / f'batch{size}'}",
                                         f"--tokenize_batch_size={size}", "--ltp_device=auto"])
                     for size in (4, 1)}
    finally:
        torch.set_num_threads(threads)
    return root, manifests, cjk_sentences


def parquet_rows(out, manifest):
    import pyarrow.parquet as pq

    rows = []
    for shard in manifest["shards"]["parquet"]:
        rows += pq.read_table(out / shard["path"]).to_pylist()
    return rows


def test_the_job_segments_every_sentence_with_the_neural_model(neural_job,
                                                               neural_ltp_model_dir):
    from pipeline.common.digest import directory_sha256

    root, manifests, cjk_sentences = neural_job
    manifest = manifests[4]
    assert manifest["total_instances"] > 50
    assert manifest["ltp_model"]["kind"] == "neural"
    assert manifest["ltp_model"]["sha256"] == directory_sha256(neural_ltp_model_dir)
    assert manifest["config"]["ltp_device"] == "auto"
    with open(root / "batch4" / "stats.json", encoding="utf-8") as f:
        counts = json.load(f)["counts"]
    # Every sentence with Chinese was segmented, the 1,300-character one too, and nothing failed
    # or went unaligned.
    assert counts["sentences_segmented"] == cjk_sentences
    assert counts["ltp_failed_sentences"] == 0 and counts["ltp_unaligned_words"] == 0
    assert counts["sentences_cut"] == 0
    assert 0 < counts["multi_piece_words"] and counts["words"] < counts["tokens"]


def test_whole_word_groups_span_several_chinese_tokens(neural_job):
    from pipeline.core.wordpiece import read_vocab

    root, manifests, _ = neural_job
    vocab = read_vocab((root / "batch4" / "vocab.txt").read_text(encoding="utf-8"))
    cjk = {i for i, token in enumerate(vocab) if len(token) == 1 and has_cjk(token)}
    special = {vocab.index("[CLS]"), vocab.index("[SEP]")}
    groups = []  # word_starts: 1 starts a masking group, 0 continues it (or is [CLS]/[SEP])
    for row in parquet_rows(root / "batch4", manifests[4]):
        for token, start in zip(row["input_ids"], row["word_starts"]):
            if start:
                groups.append([token])
            elif token not in special:
                groups[-1].append(token)
    sizes = [len(g) for g in groups if all(t in cjk for t in g)]
    assert sizes and 1 in sizes
    assert sum(n >= 2 for n in sizes) > len(sizes) // 10  # multi-character words: one group


def test_batches_of_documents_give_the_data_of_single_documents(neural_job):
    root, manifests, _ = neural_job
    assert parquet_rows(root / "batch4", manifests[4]) == \
        parquet_rows(root / "batch1", manifests[1])
