"""python -m pipeline.vocab: a WordPiece vocabulary trained on the corpus, loaded by the
pipeline, by transformers and by Google's tokenizer, with fewer [UNK] than the built-in one."""
import json
import os

import pytest

from pipeline.run import run
from pipeline.tools import vocab as vocab_tool
from tests import realdata
from tests.google_reference import load_google_module


def articles(n):
    with open(realdata.SAMPLE_CORPUS, encoding="utf-8") as f:
        return f.read().split("\n\n")[:n]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab")
    docs = articles(400)
    (root / "a.txt").write_text("\n\n".join(docs[:200]) + "\n", encoding="utf-8")
    (root / "b.txt").write_text("\n\n".join(docs[200:]) + "\n", encoding="utf-8")
    out = root / "model" / "vocab.txt"
    assert vocab_tool.main([f"--input={root}/*.txt", f"--output={out}", "--vocab_size=8000",
                            "--held_out=0.1"]) == 0
    with open(root / "model" / "vocab.stats.json", encoding="utf-8") as f:
        return root, out, json.load(f)


def test_vocabulary_has_berts_special_tokens_and_characters(trained):
    _, out, stats = trained
    tokens = out.read_text(encoding="utf-8").splitlines()
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(tokens) == stats["vocab_size"] <= 8000 and len(set(tokens)) == len(tokens)
    assert "中" in tokens and stats["characters_covered"] == stats["characters"]
    assert stats["held_out_sentences"] > 0 and stats["documents"] == len(articles(400)) == 357


def test_fewer_unknown_tokens_than_the_built_in_vocabulary(trained):
    _, out, stats = trained
    assert stats["held_out_unk_rate"] < stats["compare_vocab_held_out_unk_rate"]
    # On the text it was trained on, every character is known.
    train_text = articles(50)
    sentences = [s for d in train_text for s in d.splitlines() if s]
    tokens = out.read_text(encoding="utf-8").splitlines()
    assert vocab_tool.unk_rate(tokens, sentences, True) < vocab_tool.unk_rate(
        realdata.vocab(), sentences, True)


def test_transformers_and_googles_tokenizer_load_it(trained):
    from transformers import BertTokenizerFast

    _, out, _ = trained
    text = "国务院总理李鹏今天会见了代表团，ＡＢＣ１９９８。"
    hf = BertTokenizerFast.from_pretrained(str(out.parent))
    assert hf.tokenize(text)[:6] == ["国", "务", "院", "总", "理", "李"]
    assert hf.convert_tokens_to_ids("[MASK]") == 4 and hf.mask_token == "[MASK]"
    tokenization = load_google_module("bert.tokenization")
    if not tokenization.FLAGS.is_parsed():
        tokenization.FLAGS.mark_as_parsed()
    google = tokenization.FullTokenizer(str(out), do_lower_case=True)
    assert google.tokenize(text) == hf.tokenize(text)


def test_the_pipeline_runs_with_it(trained, tmp_path, small_ltp_model_dir):
    root, out, _ = trained
    manifest = run([f"--input={root}/a.txt", f"--output_dir={tmp_path / 'out'}",
                    f"--vocab_file={out}", "--dupe_factor=1", "--num_shards=1",
                    f"--ltp_model={small_ltp_model_dir}"])
    assert manifest["vocab_size"] == len(out.read_text(encoding="utf-8").splitlines())
    assert manifest["total_instances"] > 100


def test_a_vocab_size_below_the_character_set_is_trained_and_costs_unknowns(trained, tmp_path):
    root, _, stats = trained
    small = tmp_path / "small.txt"
    assert vocab_tool.main([f"--input={root}/*.txt", f"--output={small}", "--vocab_size=500",
                            "--held_out=0.1"]) == 0
    with open(tmp_path / "small.stats.json", encoding="utf-8") as f:
        cut = json.load(f)
    assert cut["vocab_size"] <= 500 and cut["characters_covered"] < cut["characters"]
    assert cut["held_out_unk_rate"] > stats["held_out_unk_rate"]


def test_the_sample_is_bounded_and_spread_over_the_corpus(tmp_path):
    docs = articles(300)
    files = []
    for k in range(4):
        path = tmp_path / f"part{k}.txt"
        path.write_text("\n\n".join(docs[k * 75:(k + 1) * 75]) + "\n", encoding="utf-8")
        files.append((str(path), os.path.getsize(path)))
    total = sum(size for _, size in files)
    ranges = vocab_tool.sample_ranges(files, input_format="google", sample_bytes=total // 4,
                                      seed=1, range_bytes=5000)
    taken = sum(r[3] for r in ranges)
    assert total // 4 <= taken <= total // 4 + 10_000  # one range of slack
    assert len({r[0] for r in ranges}) >= 3  # from across the corpus, not its start
    again = vocab_tool.sample_ranges(files, input_format="google", sample_bytes=total // 4,
                                     seed=1, range_bytes=5000)
    assert again == ranges


def test_no_input_is_a_clear_error(tmp_path, capsys):
    assert vocab_tool.main([f"--input={tmp_path}/none-*.txt",
                            f"--output={tmp_path / 'v.txt'}"]) == 2
    assert "matches no file" in capsys.readouterr().err
