"""Dataflow without a cloud: ``--dry_run`` translates the whole job for DataflowRunner offline,
and ``--template_location`` writes a classic template (to a GCS emulator on loopback). Neither
touches the output directory or reads the inputs; the template holds the input patterns, not
a file list frozen at creation time.
"""
import json
import subprocess
import sys

import pytest

from pipeline.run import run
from tests import realdata, servers

DATAFLOW = ["--runner=DataflowRunner", "--project=test-project", "--region=us-central1",
            "--temp_location=gs://bert-wwm-test/tmp"]
STEPS = ("List files", "MakeInstances/Plan ranges",
         "MakeInstances/Read, segment, tokenize, make instances", "WriteShards/Write",
         "Write manifest")


def test_dry_run_translates_the_job_offline_and_touches_nothing(tmp_path):
    out = tmp_path / "out"
    built = run(DATAFLOW + ["--dry_run=True", "--input=gs://bert-wwm-test/corpus/*.txt",
                            f"--output_dir={out}"])
    assert built["built"] == "dry run" and built["runner"] == "DataflowRunner"
    for step in STEPS:
        assert any(label.endswith(step) for label in built["transforms"]), step
    assert built["job_bytes"] > 10_000
    assert not out.exists()


def test_dry_run_on_the_command_line_says_so_and_exits_0(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.run", *DATAFLOW, "--dry_run=True",
         "--input=gs://bert-wwm-test/corpus/*.txt", f"--output_dir={out}"],
        capture_output=True, text=True, timeout=300, cwd=realdata.REPO,
        env={**__import__("os").environ, "NO_GCE_CHECK": "true"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dry run: the job was built for DataflowRunner" in done.stderr
    assert "nothing was submitted" in done.stderr and not out.exists()


def test_dry_run_on_another_runner_builds_without_running(tmp_path):
    built = run(["--dry_run=True", f"--input={tmp_path}/nothing-yet/*.txt",
                 f"--output_dir={tmp_path / 'out'}"])
    assert built["built"] == "dry run" and built["runner"] == "DirectRunner"
    assert not (tmp_path / "out").exists()


def test_template_needs_dataflow(tmp_path):
    with pytest.raises(ValueError, match="DataflowRunner"):
        run([f"--template_location={tmp_path / 't.json'}", f"--output_dir={tmp_path / 'o'}"])


@pytest.mark.slow
def test_template_is_written_and_holds_patterns_not_files(tmp_path):
    """The corpus need not exist when the template is made: inputs are listed when it runs."""
    with servers.gcs_emulator(str(tmp_path / "gcs.log")):
        client = servers.gcs_client()
        bucket = client.create_bucket("bert-wwm-test")
        built = run(DATAFLOW + [
            "--template_location=gs://bert-wwm-test/templates/job.json",
            "--sdk_location=container", "--input=gs://bert-wwm-test/corpus/2024-*.txt",
            "--output_dir=gs://bert-wwm-test/out"])
        names = sorted(b.name for b in client.list_blobs("bert-wwm-test"))
        template = bucket.blob("templates/job.json").download_as_text()
    assert built["built"] == "template"
    assert "templates/job.json" in names
    assert not [n for n in names if n.startswith("out/")]
    job = json.loads(template)
    assert "gs://bert-wwm-test/corpus/2024-*.txt" in json.dumps(job)
