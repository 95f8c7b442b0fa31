"""Beam transforms on real Beam (TestPipeline + assert_that), real LTP and tokenizers."""
import gzip
from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import schema
from pipeline.beam import dofns
from pipeline.beam.options import JobConfig, expand_config
from pipeline.beam.transforms import BalancedShards, ReadDocuments, Tokenize
from apache_beam.options.pipeline_options import PipelineOptions
from pipeline.core.wordpiece import WORD_START
from tests import realdata


def job_config(*flags):
    return JobConfig.from_options(PipelineOptions(list(flags)))


def test_source_names_are_relative_to_the_common_directory():
    from pipeline.beam.transforms import source_names
    assert source_names(["/m/c/b.txt", "/m/c/a/x.gz"]) == [("/m/c/a/x.gz", "a/x.gz"),
                                                           ("/m/c/b.txt", "b.txt")]
    assert source_names(["gs://k/d/one.txt"]) == [("gs://k/d/one.txt", "one.txt")]


def _batch(first, count):
    """``count`` one-token instances whose token ids are first, first + 1, ..."""
    return schema.InstanceBatch.from_instances(
        [schema.Instance([first + k], 1, [], [], 0) for k in range(count)], 1 << 16)


@pytest.mark.parametrize("shards", [1, 3, 4])
def test_balanced_shards_every_index_present_each_instance_once(shards):
    sizes = [7, 0, 1, 30, 2, 11]  # buckets of uneven sizes, one empty
    batches = [(b, _batch(1000 * b, n)) for b, n in enumerate(sizes)]
    expected = sorted(t for _, batch in batches for t in batch.tokens.tolist())

    def check(grouped):
        grouped = sorted(grouped, key=lambda kv: kv[0])
        assert [k for k, _ in grouped] == list(range(shards))
        real = [[v for v in values if v is not None] for _, values in grouped]
        got = [sorted(t for _, batch in r for t in batch.tokens.tolist()) for r in real]
        counts = [len(g) for g in got]
        assert max(counts) - min(counts) <= 1
        assert sorted(t for g in got for t in g) == expected
        # Google's round-robin over buckets in key order: instance g goes to shard g % shards.
        order = [t for _, batch in batches for t in batch.tokens.tolist()]
        assert got == [sorted(order[s::shards]) for s in range(shards)]

    with TestPipeline() as p:
        out = p | beam.Create(batches) | BalancedShards(shards)
        assert_that(out | beam.combiners.ToList(), lambda lists: check(lists[0]))


def test_read_documents_gzip_and_stats(tmp_path):
    path = tmp_path / "docs.txt.gz"
    path.write_bytes(gzip.compress("第一句。\n第二句。\n\n第三句。\n".encode()))
    config = job_config(f"--input={path}")
    with TestPipeline() as p:
        read = p | beam.Create([(str(path), "docs.txt.gz")]) | ReadDocuments(config)
        assert_that(read.docs, equal_to([("docs.txt.gz:0", ["第一句。", "第二句。"]),
                                         ("docs.txt.gz:1", ["第三句。"])]))
        assert_that(read[dofns.STATS] | beam.Map(lambda c: (c["documents"], c["sentences"])),
                    equal_to([(2, 3)]), label="stats")


def test_tokenize_groups_ltp_words_on_people_daily_text():
    """Real LTP (the default model) on real text: multi-character words become groups."""
    from pipeline.core.peoples_daily import iter_paragraphs

    paragraphs = [p for _, p in zip(range(40), iter_paragraphs())]
    docs = [(f"doc:{i}", ["".join(p.words)]) for i, p in enumerate(paragraphs)]
    config = job_config()
    vocab = realdata.vocab()

    def check(out):
        assert sorted(d for d, _ in out) == sorted(d for d, _ in docs)
        groups = Counter()
        for _, sentences in out:
            for s in sentences:
                starts = [i for i, f in enumerate(s.flags) if f & WORD_START] + [len(s.ids)]
                groups.update(b - a for a, b in zip(starts, starts[1:]))
        # People's Daily is mostly two-character words: most groups are longer than one.
        assert groups[2] > groups[1] * 0.5 and sum(groups.values()) > 500

    with TestPipeline() as p:
        out = p | beam.Create(docs) | Tokenize(config, vocab)
        assert_that(out.docs | beam.combiners.ToList(), lambda lists: check(lists[0]))


def test_config_yaml_is_overridden_by_flags(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("max_seq_length: 512\nmax_predictions_per_seq: 80\ndupe_factor: 5\n"
                      "output_formats: [parquet]\n")
    argv = expand_config([f"--config={preset}", "--dupe_factor=2"])
    config = JobConfig.from_options(PipelineOptions(argv))
    assert (config.max_seq_length, config.max_predictions_per_seq, config.dupe_factor) == \
        (512, 80, 2)
    assert config.output_formats == ("parquet",)


@pytest.mark.parametrize("flag", ["--output_formats=csv", "--num_shards=0",
                                  "--max_predictions_per_seq=600"])
def test_bad_flags_are_refused(flag):
    with pytest.raises(ValueError):
        job_config(flag)


@pytest.mark.parametrize("name", ["zh-128", "zh-512", "en-128", "en-512"])
def test_presets_load_and_name_a_real_vocab(name):
    import os
    from tests.realdata import REPO
    config = JobConfig.from_options(PipelineOptions(expand_config(
        [f"--config={os.path.join(REPO, 'configs', 'data', name + '.yaml')}"])))
    assert config.max_seq_length == int(name.split("-")[1])
    assert config.max_predictions_per_seq == {128: 20, 512: 80}[config.max_seq_length]
    assert os.path.exists(config.vocab_file)
    assert ("chinese" in config.vocab_file) == name.startswith("zh")


def test_progress_metrics_are_reported(tmp_path):
    from apache_beam.metrics.metric import MetricsFilter

    path = tmp_path / "docs.txt"
    path.write_text("一。\n二。\n\n三。\n", encoding="utf-8")
    p = TestPipeline()
    read = p | beam.Create([(str(path), "docs.txt")]) | ReadDocuments(
        job_config(f"--input={path}"))
    read.docs | Tokenize(job_config(), realdata.vocab())
    result = p.run()
    result.wait_until_finish()
    counters = {r.key.metric.name: r.committed for r in
                result.metrics().query(MetricsFilter().with_namespace(dofns.NAMESPACE))[
                    "counters"]}
    assert counters["documents"] == 2 and counters["sentences"] == 3 and counters["tokens"] == 6
    dists = result.metrics().query(MetricsFilter().with_name("batch_sentences"))["distributions"]
    assert sum(d.committed.sum for d in dists) == 3
