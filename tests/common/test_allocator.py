"""The worker processes' malloc settings (pipeline.common.allocator), checked by their effect:
page faults of a loop that makes and drops a 1 MB array, in a process started the way dask's
nannies start their workers (MALLOC_TRIM_THRESHOLD_=65536)."""
import json
import os
import subprocess
import sys

import pytest

LOOP = """
import json, resource, sys
import numpy as np
from pipeline.common import allocator
tuned = allocator.tune() if sys.argv[1] == "tune" else None
np.ones(1 << 17)  # numpy's own first-use allocations, outside the count
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    a = np.ones(1 << 17)  # 1 MiB
    del a
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tuned": tuned, "faults": faults, "again": allocator.tune() if tuned else None}))
"""


def _faults(mode):
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", LOOP, mode], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_tuned_workers_reuse_memory_that_dask_settings_would_map_afresh():
    plain, tuned = _faults("plain"), _faults("tune")
    assert tuned["tuned"] is True and tuned["again"] is True
    # each fresh 1 MiB mmap faults its 256 pages in again: about 51,200 faults in all
    assert plain["faults"] > 200 * 200
    assert tuned["faults"] < plain["faults"] / 20
