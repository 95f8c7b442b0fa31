"""The whole job with every path on an object store: S3 (moto's server) and GCS (the
gcp-storage-emulator), both started here on 127.0.0.1. Inputs, the LTP model, the vocabulary,
the user dictionary and the output are all remote; the shards must equal, byte for byte, a run
on the same files on local disk. Also: a non-empty remote output is refused, ``--overwrite``
replaces only the pipeline's objects (also when the shard count changes), nothing temporary is
left, neither in the bucket nor on local disk, and the manifest names the model by its URI and
content hash.
"""
import os
import tempfile

import pytest

from pipeline.common.digest import directory_sha256
from pipeline.run import run
from tests import realdata, servers

BUCKET = "bert-wwm-test"
FLAGS = ["--dupe_factor=1", "--num_shards=3", "--range_mb=0.004", "--tokenize_batch_size=8"]


def write_inputs(root, small_ltp_model_dir):
    """Local copies of everything the job reads: two corpus files, a model, a vocab, a dict."""
    with open(realdata.SAMPLE_CORPUS, encoding="utf-8") as f:
        docs = f.read().split("\n\n")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n\n".join(docs[:8]) + "\n", encoding="utf-8")
    (corpus / "b.txt").write_text("\n\n".join(docs[8:14]) + "\n", encoding="utf-8")
    (root / "user_dict.txt").write_text("国务院总理\n", encoding="utf-8")
    (root / "vocab.txt").write_bytes(open(realdata.CHINESE_VOCAB, "rb").read())
    files = {f"corpus/{n}": corpus / n for n in ("a.txt", "b.txt")}
    files["user_dict.txt"] = root / "user_dict.txt"
    files["vocab.txt"] = root / "vocab.txt"
    for name in os.listdir(small_ltp_model_dir):
        files[f"model/{name}"] = os.path.join(small_ltp_model_dir, name)
    return files


def job_flags(base: str, model: str):
    return [f"--input={base}/corpus/*.txt", f"--ltp_model={model}",
            f"--vocab_file={base}/vocab.txt", f"--user_dict={base}/user_dict.txt"] + FLAGS


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, small_ltp_model_dir):
    root = tmp_path_factory.mktemp("stores")
    files = write_inputs(root, small_ltp_model_dir)
    out = root / "out-local"
    manifest = run(job_flags(str(root), small_ltp_model_dir) + [f"--output_dir={out}"])
    shards = {}
    for fmt in ("tfrecord", "parquet"):
        for entry in manifest["shards"][fmt]:
            shards[entry["path"]] = (out / entry["path"]).read_bytes()
    return files, shards, manifest


class S3:
    scheme = "s3"

    def __init__(self, port):
        import boto3

        self.flags = [f"--s3_endpoint_url=http://{servers.LOOPBACK}:{port}",
                      "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
                      "--s3_region_name=us-east-1"]
        self._client = boto3.client(
            "s3", endpoint_url=f"http://{servers.LOOPBACK}:{port}", region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing")
        self._client.create_bucket(Bucket=BUCKET)

    def put(self, key, data: bytes):
        self._client.put_object(Bucket=BUCKET, Key=key, Body=data)

    def get(self, key) -> bytes:
        return self._client.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def keys(self, prefix):
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                        Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


class GCS:
    scheme = "gs"

    def __init__(self):
        self.flags = []
        self._client = servers.gcs_client()
        self._bucket = self._client.create_bucket(BUCKET)

    def put(self, key, data: bytes):
        self._bucket.blob(key).upload_from_string(data)

    def get(self, key) -> bytes:
        return self._bucket.blob(key).download_as_bytes()

    def keys(self, prefix):
        return sorted(b.name for b in self._client.list_blobs(BUCKET, prefix=prefix))


@pytest.fixture(scope="module", params=["s3", "gs"])
def store(request, tmp_path_factory):
    log = str(tmp_path_factory.mktemp("logs") / f"{request.param}.log")
    if request.param == "s3":
        port = servers.free_port()
        cmd = [servers.console_script("moto_server"), "-H", servers.LOOPBACK, "-p", str(port)]
        with servers.server(cmd, ready=lambda: servers.listening(port), log_path=log):
            yield S3(port)
        return
    with servers.gcs_emulator(log):
        yield GCS()


@pytest.mark.slow
def test_remote_everything_matches_local_and_leaves_nothing(store, local_run, monkeypatch,
                                                            small_ltp_model_dir):
    files, local_shards, local_manifest = local_run
    for key, path in files.items():
        with open(path, "rb") as f:
            store.put(f"in/{key}", f.read())
    base = f"{store.scheme}://{BUCKET}/in"
    out = f"{store.scheme}://{BUCKET}/out"
    # Local copies of the remote model and dictionary must not outlive their loading: record
    # every copy made (calling through to the real mkdtemp) and check each is gone at the end.
    copies = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        path = real_mkdtemp(*args, **kwargs)
        if os.path.basename(path).startswith("bert_wwm_"):
            copies.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    manifest = run(job_flags(base, f"{base}/model") + [f"--output_dir={out}"] + store.flags)

    assert manifest["total_instances"] == local_manifest["total_instances"] > 0
    remote = {key[len("out/"):]: store.get(key) for key in store.keys("out/")}
    assert set(remote) == set(local_shards) | {"manifest.json", "stats.json", "vocab.txt"}
    for path, data in local_shards.items():
        assert remote[path] == data, path
    identity = manifest["ltp_model"]
    assert identity["uri"] == f"{base}/model" and identity["spec"] == f"{base}/model"
    assert identity["sha256"] == directory_sha256(small_ltp_model_dir)
    assert identity["user_dict"] == f"{base}/user_dict.txt" and identity["user_dict_words"] == 1
    assert len(copies) >= 2  # the model for the workers, the dictionary for the manifest
    assert not [c for c in copies if os.path.exists(c)]
    if store.scheme == "s3":  # one boto3 client for every S3 operation of the job
        from pipeline.beam import fs
        assert len(fs._S3_CLIENTS) == 1

    # A non-empty output is refused; --overwrite with fewer shards replaces only our objects.
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(job_flags(base, f"{base}/model") + [f"--output_dir={out}"] + store.flags)
    store.put("out/notes/keep.txt", b"the user's")
    store.put("out/_pieces/run-20200101-000000-00000000/piece-0000000000000000-10b-2r.bin",
              b"left by a crashed run")
    again = run(job_flags(base, f"{base}/model") + [f"--output_dir={out}", "--overwrite",
                                                    "--num_shards=2"] + store.flags)
    keys = [k[len("out/"):] for k in store.keys("out/")]
    assert "notes/keep.txt" in keys
    assert not [k for k in keys if "-of-00003" in k or k.startswith("_pieces")
                or "/.tmp-" in k or k.startswith(".tmp-")]
    assert len([k for k in keys if k.endswith(".parquet")]) == 2
    assert again["total_instances"] == manifest["total_instances"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    log = str(tmp_path_factory.mktemp("logs") / "s3-safety.log")
    port = servers.free_port()
    cmd = [servers.console_script("moto_server"), "-H", servers.LOOPBACK, "-p", str(port)]
    with servers.server(cmd, ready=lambda: servers.listening(port), log_path=log):
        yield S3(port)


@pytest.mark.slow
def test_lock_and_overwrite_rules_on_s3(s3, tmp_path, small_ltp_model_dir):
    """On an object store as on a disk: the lock is a conditional PUT a second job cannot
    repeat; --overwrite keeps the previous output until the new one is complete, and deletes
    only objects the pipeline names (never one a manifest points at outside the prefix)."""
    import gzip
    import json

    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.beam import output_dir

    write_inputs(tmp_path, small_ltp_model_dir)
    out = f"s3://{BUCKET}/safe"
    flags = [f"--input={tmp_path}/corpus/*.txt", f"--ltp_model={small_ltp_model_dir}",
             f"--output_dir={out}", "--quiet"] + FLAGS + s3.flags
    first = run(flags)
    FileSystems.set_options(PipelineOptions(s3.flags))

    # The lock: a second holder is refused by the store itself, and so is a job.
    other = "run-20261206-000000-0badc0de"
    output_dir.acquire_lock(out, other, options=PipelineOptions(s3.flags))
    with pytest.raises(output_dir.LockedError, match=other):
        output_dir.acquire_lock(out, "run-20261206-000001-0badc0df",
                                options=PipelineOptions(s3.flags))
    with pytest.raises(output_dir.LockedError, match=other):
        run(flags + ["--overwrite"])
    output_dir.release_lock(out, other)

    # The user's objects, and a manifest edited to point outside the prefix.
    for key in ("safe/tfrecord/my_own_dataset.tfrecord", "safe/_pieces/user.txt",
                "safe/.tmp-user-keep", "outside.parquet"):
        s3.put(key, b"the user's")
    manifest = json.loads(s3.get("safe/manifest.json"))
    manifest["shards"]["parquet"][0]["path"] = "../outside.parquet"
    s3.put("safe/manifest.json", json.dumps(manifest).encode())
    before = {k: s3.get(k) for k in s3.keys("")}

    # Refused flags, then a run failing midway: nothing changes.
    with pytest.raises(ValueError, match="masked_lm_prob"):
        run(flags + ["--overwrite", "--masked_lm_prob=1.5"])
    (tmp_path / "corpus" / "broken.txt.gz").write_bytes(
        gzip.compress(("一句。\n" * 20000).encode())[:300])
    with pytest.raises(Exception, match="broken.txt.gz"):
        run(flags + ["--overwrite", f"--input={tmp_path}/corpus/*.gz"])
    assert {k: s3.get(k) for k in s3.keys("")} == before
    (tmp_path / "corpus" / "broken.txt.gz").unlink()

    again = run(flags + ["--overwrite", "--num_shards=2"])
    keys = s3.keys("")
    for key in ("safe/tfrecord/my_own_dataset.tfrecord", "safe/_pieces/user.txt",
                "safe/.tmp-user-keep", "outside.parquet"):
        assert s3.get(key) == b"the user's", key
    ours = [k for k in keys if k.startswith("safe/") and "user" not in k
            and "my_own" not in k]
    assert sorted(k[len("safe/"):] for k in ours) == sorted(
        [e["path"] for fmt in ("tfrecord", "parquet") for e in again["shards"][fmt]]
        + ["manifest.json", "stats.json", "vocab.txt"])
    assert again["total_instances"] == first["total_instances"]
