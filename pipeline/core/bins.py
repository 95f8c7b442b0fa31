"""Sequence-length bins (``--length_bins``): which bin an instance goes to, and each bin's
fixed lengths.

An instance goes to the first bin whose bound holds its real length ([CLS] and [SEP]s
included); the last bin always ends at max_seq_length. Binning only places instances: it
changes no instance and drops none. Each bin's TFRecords are padded to its bound, with
``max_predictions_per_seq`` lowered to the most predictions an instance of that length can
have, so each bin is a valid Google-format dataset on its own.
"""
from __future__ import annotations

import numpy as np

MIN_BOUND = 8


def parse_bins(spec: str | None, max_seq_length: int) -> tuple[int, ...]:
    """``--length_bins`` ("64,128,256") → bounds ending at max_seq_length; () for no bins.
    ValueError when the bounds are not increasing integers in [8, max_seq_length)."""
    if spec is None or not str(spec).strip() or str(spec).strip().lower() == "none":
        return ()
    try:
        bounds = tuple(int(v) for v in str(spec).split(","))
    except ValueError:
        raise ValueError(f"--length_bins {spec!r}: expected increasing sequence lengths, "
                         "e.g. 64,128,256") from None
    if list(bounds) != sorted(set(bounds)):
        raise ValueError(f"--length_bins {spec!r}: bounds must be strictly increasing")
    if bounds[0] < MIN_BOUND:
        raise ValueError(f"--length_bins {spec!r}: the smallest bound is {MIN_BOUND}")
    if bounds[-1] >= max_seq_length:
        raise ValueError(f"--length_bins {spec!r}: every bound must be below --max_seq_length "
                         f"{max_seq_length} (the last bin always ends there)")
    return bounds + (max_seq_length,)


def bin_of(lengths: np.ndarray, bounds: tuple[int, ...]) -> np.ndarray:
    """The bin of each instance: the first bound >= its length."""
    return np.searchsorted(np.asarray(bounds), np.asarray(lengths), side="left")


def max_predictions(bound: int, max_predictions_per_seq: int, masked_lm_prob: float) -> int:
    """The most predictions an instance of at most ``bound`` tokens gets: the masking budget
    (``core.masking.budget``) at that length, which grows with the length."""
    return int(min(max_predictions_per_seq, max(1, np.rint(bound * masked_lm_prob))))
