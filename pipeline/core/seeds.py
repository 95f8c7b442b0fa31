"""Stable seeds and hashes.

Every random choice in the pipeline draws from a ``random.Random`` seeded by :func:`stable_seed`
over the global ``--random_seed`` and stable keys (document id, dupe pass, ...), never from
arrival order, process ids or Python's salted ``hash``. So any runner, any number of workers and
any bundle split produce the same bytes.
"""
from __future__ import annotations

import hashlib
import random


def stable_hash64(*parts: object) -> int:
    """A 64-bit hash of ``parts`` that is the same on every machine and Python process."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(str(part).encode("utf-8"))
        h.update(b"\x1f")  # separator: ("ab", "c") and ("a", "bc") must differ
    return int.from_bytes(h.digest(), "little")


def stable_seed(*parts: object) -> int:
    return stable_hash64("seed", *parts)


def rng_for(*parts: object) -> random.Random:
    """A private generator for one unit of work (e.g. seed, document id, dupe pass)."""
    return random.Random(stable_seed(*parts))
