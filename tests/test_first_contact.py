"""First contact without traps: inputs whose format cannot silently collapse, per-input formats,
runner names and presets checked before anything is created, and a --help that says the
defaults. Real Beam, LTP (the throw-away model) and tokenizers on real text."""
import gzip
import json
import os

import pytest

from pipeline import schema
from pipeline.beam import options
from pipeline.beam.sinks import DataWarningsError
from pipeline.run import run
from tests import realdata


def documents():
    with open(realdata.SAMPLE_CORPUS, encoding="utf-8") as f:
        return [d for d in f.read().split("\n\n") if d.strip()]


@pytest.fixture(scope="module")
def one_per_line(tmp_path_factory):
    """A real file of one document per line, no blank line (357 People's Daily articles):
    what a user has when the paragraphs of a crawl are joined per line."""
    path = tmp_path_factory.mktemp("corpus") / "paragraphs.txt"
    path.write_text("\n".join(d.replace("\n", "") for d in documents()) + "\n",
                    encoding="utf-8")
    return path


def job(out, *flags, ltp):
    return run([f"--output_dir={out}", "--dupe_factor=1", "--num_shards=2", f"--ltp_model={ltp}",
                "--quiet", *flags])


def stats_of(out):
    return json.loads((out / schema.STATS_FILE).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def collapsed(one_per_line, small_ltp_model_dir, tmp_path_factory):
    """The trap: the zh-128 preset (google format) on that file."""
    out = tmp_path_factory.mktemp("collapsed") / "out"
    job(out, "--config=zh-128", f"--input={one_per_line}", ltp=small_ltp_model_dir)
    return out


def test_a_file_without_blank_lines_read_as_google_format_is_warned(collapsed):
    stats = stats_of(collapsed)
    codes = {w["code"] for w in stats["warnings"]}
    assert stats["counts"]["documents"] == 1
    assert {"google_without_blank_lines", "few_random_next"} <= codes
    message = next(w["message"] for w in stats["warnings"]
                   if w["code"] == "google_without_blank_lines")
    assert "format=lines" in message


def test_the_same_file_read_per_line_has_its_documents_and_no_warning(
        one_per_line, small_ltp_model_dir, tmp_path):
    job(tmp_path / "out", f"--input={one_per_line};format=lines", "--config=zh-128",
        ltp=small_ltp_model_dir)
    stats = stats_of(tmp_path / "out")
    assert stats["counts"]["documents"] == len(documents()) and stats["warnings"] == []
    assert 0.3 < stats["derived"]["nsp_random_share"] < 0.7


def test_strict_fails_before_the_manifest_and_keeps_the_previous_output(
        one_per_line, small_ltp_model_dir, tmp_path):
    out = tmp_path / "out"
    job(out, f"--input={one_per_line};format=lines", ltp=small_ltp_model_dir)
    before = (out / schema.MANIFEST_FILE).read_bytes()
    with pytest.raises(Exception, match="--strict.*format=lines"):
        job(out, f"--input={one_per_line}", "--strict", "--overwrite", ltp=small_ltp_model_dir)
    assert (out / schema.MANIFEST_FILE).read_bytes() == before
    assert not (out / schema.STAGING_DIR).exists() and not (out / schema.PIECES_DIR).exists()
    assert issubclass(DataWarningsError, ValueError)


def test_verify_and_the_report_show_the_warnings(collapsed, tmp_path, capsys):
    from pipeline.tools import verify
    from pipeline.tools.report.__main__ import main as report_main

    assert verify.main(["--output_dir", str(collapsed), "--quiet", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "data warning (stats.json)" in printed and "format=lines" in printed
    page = tmp_path / "report.html"
    report_main(["--output_dir", str(collapsed), "--out", str(page)])
    html = page.read_text(encoding="utf-8")
    assert "class='warn'" in html and "format=lines" in html


def test_each_input_reads_in_its_own_format(tmp_path, small_ltp_model_dir):
    docs = documents()
    (tmp_path / "corpus").mkdir()
    (tmp_path / "more").mkdir()
    (tmp_path / "corpus" / "a.txt.gz").write_bytes(gzip.compress(
        ("\n\n".join(docs[:10]) + "\n").encode("utf-8")))
    (tmp_path / "more" / "b.jsonl").write_text("\n".join(
        json.dumps({"content": d.replace("\n", ""), "id": i}, ensure_ascii=False)
        for i, d in enumerate(docs[10:18])) + "\n", encoding="utf-8")
    flags = [f"--input={tmp_path}/corpus/*.txt.gz",
             f"--input={tmp_path}/more/*.jsonl;format=jsonl;text_field=content"]
    job(tmp_path / "out", *flags, ltp=small_ltp_model_dir)
    counts = stats_of(tmp_path / "out")["counts"]
    assert counts["documents"] == 18 and counts["jsonl_bad_lines"] == 0
    # The trap it replaces: one --input_format for every input drops the text files, and says so.
    job(tmp_path / "old", *flags[:1], f"--input={tmp_path}/more/*.jsonl",
        "--input_format=jsonl", "--text_field=content", ltp=small_ltp_model_dir)
    stats = stats_of(tmp_path / "old")
    assert stats["counts"]["documents"] == 8
    assert [w["code"] for w in stats["warnings"]] == ["jsonl_all_lines_rejected"]


def test_input_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="did you mean format"):
        options.parse_input("a/*.txt;fromat=lines")
    with pytest.raises(ValueError, match="is not one of"):
        options.parse_input("a/*.txt;format=csv")
    spec = options.parse_input("gs://b/x/*.jsonl;format=jsonl;text_field=body",
                               input_format="google")
    assert (spec.pattern, spec.input_format, spec.text_field) == (
        "gs://b/x/*.jsonl", "jsonl", "body")
    (tmp_path / "a.txt").write_text("一。\n")
    with pytest.raises(ValueError, match="make the patterns disjoint"):
        run([f"--input={tmp_path}/*.txt", f"--input={tmp_path}/a.txt;format=lines",
             f"--output_dir={tmp_path}/out"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("runner, close", [("DirectRuner", "DirectRunner"),
                                           ("DaskRuner", "DaskRunner"),
                                           ("FlinkRunnr", "FlinkRunner")])
def test_a_mistyped_runner_is_refused_before_anything_is_created(tmp_path, runner, close):
    with pytest.raises(ValueError, match=f"did you mean {close}.*DaskRunner"):
        run([f"--runner={runner}", f"--output_dir={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()


def test_runner_short_names_in_any_case():
    assert options.resolve_runner(["--runner=dask"]) == [
        "--runner=" + options.RUNNER_ALIASES["DaskRunner"]]
    assert options.resolve_runner(["--runner", "directrunner"])[1] == \
        options.RUNNER_ALIASES["DirectRunner"]
    assert options.resolve_runner(["--runner=DataflowRunner"]) == ["--runner=DataflowRunner"]


def test_help_shows_the_defaults(capsys):
    from pipeline.run import print_help

    print_help()
    text = " ".join(capsys.readouterr().out.split())
    text = text[text.index("options:"):]  # the flags' help, past the usage line
    after = text[text.index("--dupe_factor "):]
    assert "Default: 10 with static masking, 1 with --masking=dynamic" in after[:400]
    for flag, default in (("--num_shards", "4"),
                          ("--output_dir", "output"), ("--max_seq_length", "128"),
                          ("--range_mb", "1.0"), ("--on_input_change", "fail")):
        after = text[text.index(f"{flag} "):]
        assert f"(default: {default})" in after[:400], flag
    assert "zh-128" in text  # --config names the presets


def test_config_takes_a_preset_name_and_names_them_when_it_finds_none():
    expanded = options.expand_config(["--config=zh-128"])
    assert "--max_seq_length=128" in expanded and "--num_shards=64" in expanded
    assert options.expand_config(["--config=configs/data/zh-512.yaml"]) != []
    with pytest.raises(FileNotFoundError, match="presets are: en-128, en-512, zh-128"):
        options.expand_config(["--config=zh-1288"])
    assert os.path.basename(options.preset_path("zh-roberta-512")) == "zh-roberta-512.yaml"
