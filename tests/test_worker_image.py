"""The worker image and the launcher run the same Beam: Dockerfile's base image tag, setup.py's
pin and the Beam installed here must agree (a mismatch fails only on the cluster otherwise)."""
import os
import re

import apache_beam

from tests.realdata import REPO


def read(name):
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
        return f.read()


def test_one_beam_version_everywhere():
    pinned = re.search(r'^BEAM_VERSION = "([^"]+)"', read("setup.py"), re.M).group(1)
    image = re.search(r"^FROM apache/beam_python\$\{PY_VERSION\}_sdk:(\S+)$", read("Dockerfile"),
                      re.M).group(1)
    assert image == pinned == apache_beam.__version__


def test_image_installs_a_cpu_torch_and_builds_the_default_model():
    dockerfile = read("Dockerfile")
    assert "--index-url https://download.pytorch.org/whl/cpu" in dockerfile
    assert re.search(r"^RUN python -m pipeline\.tools\.ltp_model", dockerfile, re.M)
