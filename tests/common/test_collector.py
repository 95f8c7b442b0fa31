"""The worker processes' garbage collector settings (pipeline.common.collector), checked by
their effect in a fresh interpreter: how many collections a range's worth of short-lived
containers triggers, and that reference cycles are still freed without an explicit collect."""
import json
import subprocess
import sys

CHURN = """
import gc, json, sys
import numpy, pyarrow  # long-lived objects, as a worker has them
from pipeline.common import collector
mode = sys.argv[1]
first = collector.tune() if mode == "tune" else None
again = collector.tune() if mode == "tune" else None
seen = {"collections": 0, "collected": 0}
def count(phase, info):
    if phase == "stop":
        seen["collections"] += 1
        seen["collected"] += info["collected"]
gc.callbacks.append(count)
keep = [[i] for i in range(200_000)]  # like a range's word lists: alive until the range ends
del keep
class Node:
    pass
for _ in range(50_000):  # cycles, never collected explicitly
    a, b = Node(), Node()
    a.other, b.other = b, a
del a, b
print(json.dumps({**seen, "first": first, "again": again, "threshold": gc.get_threshold(),
                  "frozen": gc.get_freeze_count()}))
"""


def _run(mode):
    out = subprocess.run([sys.executable, "-c", CHURN, mode], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def test_tuned_workers_collect_far_less_often_and_still_free_cycles():
    from pipeline.common.collector import THRESHOLDS

    plain, tuned = _run("plain"), _run("tune")
    assert tuned["first"] is True and tuned["again"] is False
    assert tuned["threshold"] == list(THRESHOLDS)
    assert tuned["frozen"] > 10_000 and plain["frozen"] == 0  # imports out of the walks
    # 300,000 containers made: one collection per 700 by default, per 10,000 tuned
    assert plain["collections"] > 300
    assert tuned["collections"] < plain["collections"] / 8
    # the cycles made after tuning are freed by the collections that still run
    assert tuned["collected"] > 50_000
