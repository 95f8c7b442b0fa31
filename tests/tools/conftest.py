"""Outputs of the real job for the tools' tests (the throw-away LTP model, a small corpus of
Chinese news and English prose), and helpers to damage copies of them."""
import hashlib
import json
import os
import shutil

import pytest

from pipeline.run import run
from tests.realdata import write_corpus  # Chinese news in two files, English prose in one


def make_output(root, ltp_model, *flags):
    corpus = write_corpus(root)
    out = root / "out"
    run([f"--input={corpus}", f"--output_dir={out}", f"--ltp_model={ltp_model}",
         "--dupe_factor=2", "--num_shards=2", "--range_mb=0.02", "--quiet", *flags])
    return out


@pytest.fixture(scope="session")
def output_dir(tmp_path_factory, small_ltp_model_dir):
    """A finished output (NSP, both formats, 2 shards). Do not change it: copy it."""
    return make_output(tmp_path_factory.mktemp("tools-nsp"), small_ltp_model_dir)


@pytest.fixture
def damaged(tmp_path, output_dir):
    """A fresh copy of ``output_dir`` to damage."""
    target = tmp_path / "copy"
    shutil.copytree(output_dir, target)
    return target


def manifest(out):
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def rewrite_manifest(out, change):
    m = manifest(out)
    change(m)
    with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(m, f, indent=2, ensure_ascii=False)


def refresh_checksums(out):
    """Record the shards' present sizes and sha256 in the manifest (its length bins' lists
    too), as if written so (for damage the checksums would otherwise catch first)."""
    def change(m):
        lists = list(m["shards"].values())
        lists += [entries for b in m.get("bins") or [] for entries in b["shards"].values()]
        for entries in lists:
            for entry in entries:
                with open(os.path.join(out, entry["path"]), "rb") as f:
                    data = f.read()
                entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    rewrite_manifest(out, change)
