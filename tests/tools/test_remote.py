"""The tools on an object store, through Beam's filesystems: an output copied to S3 (moto's
server on 127.0.0.1), read with the same filesystem flags the job takes."""
import os

import pytest

from pipeline.tools import inspect, verify
from pipeline.tools.report import __main__ as report
from tests import servers

BUCKET = "tools-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory, output_dir):
    """(the output's s3:// URI, the flags, a boto3 client), the output uploaded."""
    import boto3

    port = servers.free_port()
    log = str(tmp_path_factory.mktemp("moto") / "moto.log")
    cmd = [servers.console_script("moto_server"), "-H", servers.LOOPBACK, "-p", str(port)]
    with servers.server(cmd, ready=lambda: servers.listening(port), log_path=log):
        endpoint = f"http://{servers.LOOPBACK}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        for base, _, names in os.walk(output_dir):
            for name in names:
                path = os.path.join(base, name)
                key = "out/" + os.path.relpath(path, output_dir).replace(os.sep, "/")
                with open(path, "rb") as f:
                    client.put_object(Bucket=BUCKET, Key=key, Body=f.read())
        flags = [f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=testing",
                 "--s3_secret_access_key=testing", "--s3_region_name=us-east-1"]
        yield f"s3://{BUCKET}/out", flags, client


@pytest.mark.slow  # ~25 s: an S3 server, Beam's S3 client, every tool twice
def test_verify_inspect_and_report_read_an_object_store(s3, output_dir, capsys, tmp_path):
    uri, flags, client = s3
    assert verify.main(["--output_dir", uri, "--quiet", *flags]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {uri}: 2 tfrecord, 2 parquet shards")

    assert inspect.main(["--output_dir", uri, "--record", "3", *flags]) == 0
    remote = capsys.readouterr().out
    assert inspect.main(["--output_dir", str(output_dir), "--record", "3"]) == 0
    local = capsys.readouterr().out
    assert remote.split("\n", 1)[1] == local.split("\n", 1)[1] and "record 3 " in remote

    page = tmp_path / "r.html"
    assert report.main(["--output_dir", uri, "--out", str(page), "--quiet", *flags]) == 0
    assert f"Data report: {uri}" in page.read_text(encoding="utf-8")

    # A damaged object is found as on a local disk.
    key = "out/tfrecord/part-00001-of-00002.tfrecord"
    data = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(data[:-7]))
    assert verify.main(["--output_dir", uri, "--quiet", *flags]) == 1
    text = capsys.readouterr().out
    assert "tfrecord/part-00001-of-00002.tfrecord, record" in text and "ends inside" in text
    client.delete_object(Bucket=BUCKET, Key="out/manifest.json")
    assert verify.main(["--output_dir", uri, "--quiet", *flags]) == 1
    assert "has no manifest.json" in capsys.readouterr().err
