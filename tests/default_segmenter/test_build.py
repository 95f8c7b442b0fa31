"""The built-in default model: built once into the cache, loadable by LTP itself, safe under
concurrent builders, and laid out as core.segment reads it."""
import json
import os
import subprocess
import sys
import time

import pytest

from pipeline.core.segment import is_neural, legacy_config
from pipeline.default_segmenter import cache
from pipeline.default_segmenter.train import CWS_FILE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow  # builds the default model (~30 s) once per session
def test_default_model_builds_and_loads_with_ltp(default_ltp_model_dir):
    from ltp import LTP

    config = json.loads((default_ltp_model_dir / "config.json").read_text())
    assert config == {"nerual": False, "tasks": {"cws": "cws_model.bin"}}
    assert config == legacy_config(CWS_FILE) and not is_neural(config)
    model = LTP(str(default_ltp_model_dir))
    assert model.supported_tasks == {"cws"}
    words = model.pipeline(["他叫汤姆去拿外衣。"], tasks=["cws"]).cws[0]
    assert "".join(words) == "他叫汤姆去拿外衣。" and "外衣" in words
    assert not list(default_ltp_model_dir.parent.glob(".tmp-*"))


BUILD = ("import sys, time; from pipeline.default_segmenter.cache import build_model; "
         "t = time.time(); build_model(sys.argv[1], epochs=1, max_train_paragraphs=1500); "
         "print(time.time() - t)")


def test_concurrent_build_yields_one_good_model(tmp_path):
    from ltp import LTP

    target = tmp_path / "cache" / "tiny-model"
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(target)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert cache.is_complete(target)
    assert sorted(os.listdir(target.parent)) == [".tiny-model.lock", "tiny-model"]
    info = json.loads((target / "build_info.json").read_text())
    assert info["train_paragraphs"] == 1500
    words = LTP(str(target)).pipeline(["他叫汤姆去拿外衣。"], tasks=["cws"]).cws[0]
    assert "".join(words) == "他叫汤姆去拿外衣。"
    before = (target / "cws_model.bin").stat().st_mtime_ns
    time.sleep(0.01)
    cache.build_model(target, epochs=1, max_train_paragraphs=1500)  # cached: no rebuild
    assert (target / "cws_model.bin").stat().st_mtime_ns == before
