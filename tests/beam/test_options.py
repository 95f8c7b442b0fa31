"""The command line: one flag declaration, runner short names, and typos refused before work."""
import subprocess
import sys

import pytest

from pipeline.beam.options import UnknownFlagError, check_flags, resolve_runner
from tests import realdata


def test_misspelled_flags_are_refused_with_a_suggestion():
    with pytest.raises(UnknownFlagError) as refused:
        check_flags(resolve_runner(["--dupe_factr=1", "--num_shard=2", "--input=x"]))
    message = str(refused.value)
    assert "'--dupe_factr=1' (did you mean --dupe_factor?)" in message
    assert "'--num_shard=2' (did you mean --num_shards?)" in message


def test_flags_of_the_job_beam_and_the_runner_are_accepted():
    check_flags(resolve_runner([
        "--runner=DaskRunner", "--dask_client_address=tcp://127.0.0.1:1", "--input=a",
        "--input=b", "--overwrite", "--exact_google_draws", "--config=c.yaml", "--project=p",
        "--s3_endpoint_url=http://127.0.0.1:1", "--direct_num_workers=2", "--dry_run=True",
        "--temp_location=gs://b/t"]))


def test_stray_values_are_refused():
    with pytest.raises(UnknownFlagError, match="'stray'"):
        check_flags(["--input", "a", "stray"])


def test_runner_short_names():
    assert resolve_runner(["--input=x"])[-1] == "--runner=pipeline.beam.direct_runner.DirectRunner"
    assert resolve_runner(["--runner=DirectRunner"]) == [
        "--runner=pipeline.beam.direct_runner.DirectRunner"]
    assert resolve_runner(["--runner=DaskRunner"]) == [
        "--runner=pipeline.beam.dask_runner.DaskRunner"]
    assert resolve_runner(["--runner", "DaskRunner"]) == [
        "--runner", "pipeline.beam.dask_runner.DaskRunner"]
    assert resolve_runner(["--runner=DataflowRunner"]) == ["--runner=DataflowRunner"]


def test_command_line_refuses_a_typo_with_exit_code_2_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "pipeline.run", "--dupe_factr=1",
                           f"--output_dir={out}"], capture_output=True, text=True,
                          timeout=300, cwd=realdata.REPO)
    assert done.returncode == 2
    assert "did you mean --dupe_factor?" in done.stderr and not out.exists()


def test_help_lists_the_job_flags():
    done = subprocess.run([sys.executable, "-m", "pipeline.run", "--help"], capture_output=True,
                          text=True, timeout=300, cwd=realdata.REPO)
    assert done.returncode == 0
    assert "--dupe_factor" in done.stdout and "--dask_client_address" in done.stdout


def test_direct_runner_runs_on_the_fn_api_runner_and_never_tries_prism(caplog):
    """Beam's DirectRunner tries to download and run Prism first; ours never does."""
    import logging

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    caplog.set_level(logging.INFO)
    options = PipelineOptions(resolve_runner(["--direct_running_mode=in_memory"]))
    with beam.Pipeline(options=options) as p:
        assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2), equal_to([2, 4, 6]))
    assert type(p.runner).__module__ == "pipeline.beam.direct_runner"
    assert not [r for r in caplog.records if "prism" in r.getMessage().lower()]


def test_the_jobs_options_survive_the_way_a_worker_reads_them():
    """A Beam worker rebuilds the options from a dictionary, where a true boolean becomes a
    bare flag: with the job's options defined in the worker (a forked worker has them), every
    boolean flag must take that form."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.beam.options import JobConfig

    options = PipelineOptions(["--do_whole_word_mask=true", "--do_lower_case=true",
                               "--overwrite", "--input=a.txt", "--input=b.txt"])
    again = PipelineOptions.from_dictionary(options.get_all_options()).get_all_options()
    assert again["do_whole_word_mask"] is True and again["do_lower_case"] is True
    assert again["overwrite"] is True and again["input"] == ["a.txt", "b.txt"]
    config = JobConfig.from_options(PipelineOptions(["--do_whole_word_mask"]))
    assert config.do_whole_word_mask is True
