"""Manifests the tools must not trust: paths that lead out of the output directory (``..``,
absolute, a URL, a symbolic link) and values of the wrong type or range. inspect, report and
verify refuse them all the same way (``pipeline.readers.output.open_output``): one line on
stderr, exit code 1 (what each answers to a directory that holds no output), no traceback,
and no file outside the output directory opened. The file outside is one the tools would
accept: a copy of the output's own vocab.txt or shards."""
import builtins
import os
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.readers import output as out_mod
from pipeline.tools import inspect, verify
from pipeline.tools.report import __main__ as report
from tests.tools.conftest import rewrite_manifest

TOOLS = ("inspect", "report", "verify")
SHARDS = ("tfrecord/part-00000-of-00002.tfrecord", "parquet/part-00000-of-00002.parquet")
INSIDE = "is not a path inside the output directory"


def run_tool(tool, out, capsys, page):
    argv = ["--output_dir", str(out)]
    if tool == "inspect":
        code = inspect.main(argv)
    elif tool == "report":
        code = report.main(argv + ["--out", str(page), "--quiet"])
    else:
        code = verify.main(argv + ["--quiet", "--workers=1"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(result, says, page):
    """Exit code 1 and one line on stderr naming the manifest and ``says``; nothing written."""
    code, out, err = result
    assert code == 1, out + err
    assert out == "" and not page.exists()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "manifest.json cannot be used: " in err and says in err, err


@pytest.fixture
def elsewhere(tmp_path, output_dir):
    """A directory beside the copy, holding files the tools would accept: the vocabulary and
    the first shard of each format."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    shutil.copy(output_dir / "vocab.txt", path / "vocab.txt")
    for shard in SHARDS:
        shutil.copy(output_dir / shard, path / os.path.basename(shard))
    return path


@pytest.fixture
def opened_outside(monkeypatch, elsewhere):
    """Every file opened below ``elsewhere`` (through open() or pyarrow), as it is opened."""
    top = os.path.realpath(elsewhere)
    seen = []

    def note(source):
        if isinstance(source, (str, os.PathLike)) and \
                os.path.realpath(source).startswith(top + os.sep):
            seen.append(str(source))

    real_open, real_parquet = builtins.open, pq.ParquetFile

    def spy_open(file, *args, **kwargs):
        note(file)
        return real_open(file, *args, **kwargs)

    def spy_parquet(source, *args, **kwargs):
        note(source)
        return real_parquet(source, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(pq, "ParquetFile", spy_parquet)
    return seen


def set_shard_paths(tfrecord, parquet):
    def change(m):
        m["shards"]["tfrecord"][0]["path"] = tfrecord
        m["shards"]["parquet"][0]["path"] = parquet
    return change


# Each: (change the manifest given the outside directory, what the refusal says).
ESCAPES = {
    "vocab_file ../../etc/passwd": (
        lambda m, far: m.update(vocab_file="../../etc/passwd"),
        f"vocab_file '../../etc/passwd' {INSIDE}: a '..' segment"),
    "vocab_file climbs out to a real vocabulary": (
        lambda m, far: m.update(vocab_file="../elsewhere/vocab.txt"),
        f"vocab_file '../elsewhere/vocab.txt' {INSIDE}: a '..' segment"),
    "shard paths climb out to real shards": (
        lambda m, far: set_shard_paths("../elsewhere/" + os.path.basename(SHARDS[0]),
                                       "../elsewhere/" + os.path.basename(SHARDS[1]))(m),
        f"shards.tfrecord[0].path '../elsewhere/part-00000-of-00002.tfrecord' {INSIDE}: a "
        f"'..' segment (and 1 more problem)"),
    "vocab_file absolute": (
        lambda m, far: m.update(vocab_file=str(far / "vocab.txt")),
        f"{INSIDE}: an absolute path"),
    "shard paths absolute": (
        lambda m, far: set_shard_paths(str(far / os.path.basename(SHARDS[0])),
                                       str(far / os.path.basename(SHARDS[1])))(m),
        f"shards.tfrecord[0].path '{os.sep}"),
    "vocab_file a URL": (
        lambda m, far: m.update(vocab_file="s3://other/x"),
        f"vocab_file 's3://other/x' {INSIDE}: a ':'"),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
@pytest.mark.parametrize("tool", TOOLS)
def test_a_path_that_leaves_the_output_is_refused(tool, case, damaged, elsewhere,
                                                  opened_outside, capsys, tmp_path):
    change, says = ESCAPES[case]
    rewrite_manifest(damaged, lambda m: change(m, elsewhere))
    page = tmp_path / "report.html"
    assert_refused(run_tool(tool, damaged, capsys, page), says, page)
    assert opened_outside == []


def link_vocab(out, far):
    os.remove(out / "vocab.txt")
    os.symlink(far / "vocab.txt", out / "vocab.txt")


def link_shard_dirs(out, far):
    for fmt in ("tfrecord", "parquet"):
        shutil.move(str(out / fmt), str(far / fmt))
        os.symlink(far / fmt, out / fmt, target_is_directory=True)


LINKS = {
    "vocab.txt a link out": (link_vocab, f"vocab_file 'vocab.txt' {INSIDE}: a symbolic link "
                                         f"leads to"),
    "shard directories links out": (link_shard_dirs, f"shards.tfrecord[0].path '{SHARDS[0]}' "
                                                     f"{INSIDE}: a symbolic link leads to"),
}


@pytest.mark.parametrize("case", sorted(LINKS))
@pytest.mark.parametrize("tool", TOOLS)
def test_a_symbolic_link_out_of_the_output_is_refused(tool, case, damaged, elsewhere,
                                                      opened_outside, capsys, tmp_path):
    link, says = LINKS[case]
    link(damaged, elsewhere)
    page = tmp_path / "report.html"
    assert_refused(run_tool(tool, damaged, capsys, page), says, page)
    assert opened_outside == []


def on_shard(**values):
    return lambda m: m["shards"]["tfrecord"][0].update(values)


def without(*keys):
    def change(m):
        for key in keys:
            m["shards"]["tfrecord"][0].pop(key)
    return change


# Each: (change the manifest, or the bytes to write as manifest.json; what the refusal says).
DAMAGED = {
    "shards a list": (lambda m: m.update(shards=[]), "shards is an array: it must be an "
                                                     "object"),
    "shards a string": (lambda m: m.update(shards="tfrecord"), "shards is a string"),
    "shards.tfrecord a string": (lambda m: m["shards"].update(tfrecord=SHARDS[0]),
                                 "shards.tfrecord is a string: it must be an array"),
    "shard entry a string": (lambda m: m["shards"]["tfrecord"].__setitem__(0, SHARDS[0]),
                             "shards.tfrecord[0] is a string: it must be an object"),
    "shard entry without path": (without("path"), "shards.tfrecord[0] lacks path"),
    "shard entry without instances": (without("instances"),
                                      "shards.tfrecord[0] lacks instances"),
    "instances a string": (on_shard(instances="12"),
                           "shards.tfrecord[0].instances is '12': it must be a whole number"),
    "instances negative": (on_shard(instances=-3), "shards.tfrecord[0].instances is -3"),
    "bytes a string": (on_shard(bytes="1 MB"), "shards.tfrecord[0].bytes is '1 MB'"),
    "sha256 a number": (on_shard(sha256=0), "shards.tfrecord[0].sha256 is 0: it must be a "
                                            "string"),
    "vocab_file a number": (lambda m: m.update(vocab_file=7),
                            f"vocab_file 7 {INSIDE}: a number, not a string"),
    "vocab_file null": (lambda m: m.update(vocab_file=None), f"vocab_file None {INSIDE}"),
    "max_seq_length negative": (lambda m: m.update(max_seq_length=-128),
                                "max_seq_length is -128: it must be a whole number from 1"),
    "max_seq_length a string": (lambda m: m.update(max_seq_length="128"),
                                "max_seq_length is '128'"),
    "max_seq_length a boolean": (lambda m: m.update(max_seq_length=True),
                                 "max_seq_length is True"),
    "max_predictions_per_seq huge": (lambda m: m.update(max_predictions_per_seq=10 ** 12),
                                     "max_predictions_per_seq is 1000000000000"),
    "vocab_size a float": (lambda m: m.update(vocab_size=21128.5), "vocab_size is 21128.5"),
    "total_instances a string": (lambda m: m.update(total_instances="many"),
                                 "total_instances is 'many'"),
    "next_sentence unknown": (lambda m: m.update(next_sentence="mlm"),
                              "next_sentence is 'mlm': it must be one of nsp, sop, none"),
    "tfrecord_compression unknown": (lambda m: m.update(tfrecord_compression="ZLIB"),
                                     "tfrecord_compression is 'ZLIB'"),
    "created_unix a string": (lambda m: m.update(created_unix="yesterday"),
                              "created_unix is 'yesterday': it must be seconds since 1970"),
    "config a list": (lambda m: m.update(config=["--dupe_factor=2"]),
                      "config is ['--dupe_factor=2']: it must be an object"),
    "format_version missing": (lambda m: m.pop("format_version"), "lacks ['format_version']"),
    "a JSON array": (b"[]", "it holds an array, not an object"),
    "JSON null": (b"null", "it holds null, not an object"),
    "truncated JSON": (None, "Unterminated string"),
    "an empty file": (b"", "Expecting value"),
    "not UTF-8": ('{"vocab_file": "vocab\xe9.txt"}'.encode("latin-1"), "can't decode byte"),
    "nested too deep": (b"[" * 100000, "recursion"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
@pytest.mark.parametrize("tool", TOOLS)
def test_a_damaged_manifest_is_refused_in_one_line(tool, case, damaged, capsys, tmp_path):
    change, says = DAMAGED[case]
    path = damaged / schema.MANIFEST_FILE
    if change is None:  # cut inside a string value
        text = path.read_bytes()
        path.write_bytes(text[:text.index(b'"vocab_file"') + 5])
    elif isinstance(change, bytes):
        path.write_bytes(change)
    else:
        rewrite_manifest(damaged, change)
    page = tmp_path / "report.html"
    assert_refused(run_tool(tool, damaged, capsys, page), says, page)


@pytest.mark.parametrize("path", [
    "../../etc/passwd", "/etc/passwd", "s3://other/x", "gs://bucket/data/vocab.txt",
    "file:///etc/passwd", "C:/vocab.txt", "..\\..\\etc\\passwd", "tfrecord\\part.tfrecord",
    "tfrecord/../../x", "tfrecord/..", "..", "", ".", "./vocab.txt", "tfrecord//part",
    "tfrecord/", "vocab.txt\x00.png", "vocab\n.txt", 7, None, ["vocab.txt"]])
def test_check_relative_refuses_what_could_leave_the_directory(path):
    with pytest.raises(out_mod.UnsafePath) as e:
        out_mod.check_relative(path)
    assert str(e.value).startswith(repr(path)[:20]) and INSIDE in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_check_relative_accepts_what_the_pipeline_writes():
    for path in (schema.VOCAB_FILE, schema.STATS_FILE, schema.shard_path("tfrecord", 3, 10),
                 schema.shard_path("tfrecord", 0, 1, gzip=True),
                 schema.shard_path("parquet", 9, 10), "词表/vocab..txt", "..hidden"):
        assert out_mod.check_relative(path) == path


def test_resolve_follows_links_inside_and_refuses_links_out(tmp_path):
    real, far = tmp_path / "real", tmp_path / "far"
    (real / "sub").mkdir(parents=True)
    far.mkdir()
    (real / "sub" / "a.txt").write_text("a")
    (far / "b.txt").write_text("b")
    os.symlink(real / "sub" / "a.txt", real / "inside.txt")
    os.symlink(far / "b.txt", real / "out.txt")
    os.symlink(far, real / "outdir", target_is_directory=True)
    os.symlink(real, tmp_path / "link", target_is_directory=True)
    for root in (real, tmp_path / "link", f"file://{real}"):  # the root itself may be a link
        output = out_mod.Output(root=str(root), manifest={}, files={})
        assert output.resolve("inside.txt") == f"{root}/inside.txt"
        assert output.resolve("sub/a.txt") == f"{root}/sub/a.txt"
        for escape in ("out.txt", "outdir/b.txt"):
            with pytest.raises(out_mod.UnsafePath, match="a symbolic link leads to"):
                output.resolve(escape)
    # Object stores have no links: only the text is checked.
    remote = out_mod.Output(root="s3://bucket/out/", manifest={}, files={})
    assert remote.resolve(SHARDS[0]) == f"s3://bucket/out/{SHARDS[0]}"
    with pytest.raises(out_mod.UnsafePath):
        remote.resolve("../other/x")


def test_an_output_reached_through_links_that_stay_inside_is_read(damaged, tmp_path, capsys):
    shutil.move(str(damaged / "vocab.txt"), str(damaged / "vocab-copy.txt"))
    os.symlink("vocab-copy.txt", damaged / "vocab.txt")
    os.symlink(damaged, tmp_path / "link", target_is_directory=True)
    page = tmp_path / "report.html"
    for tool in TOOLS:
        code, out, err = run_tool(tool, tmp_path / "link", capsys, page)
        assert code == 0, err


def test_an_output_without_shards_is_said_not_a_traceback(damaged, capsys, tmp_path):
    rewrite_manifest(damaged, lambda m: m.update(shards={}, total_instances=0))
    code, out, err = run_tool("inspect", damaged, capsys, tmp_path / "report.html")
    assert code == 1 and len(err.splitlines()) == 1 and "has no tfrecord shards" in err
    code, out, err = run_tool("report", damaged, capsys, tmp_path / "report.html")
    assert code == 0 and "0 instances counted" in out, err
