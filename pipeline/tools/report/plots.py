"""The report's figures: matplotlib (Agg, no display), embedded in the page as PNG data URIs so
the page opens offline. Text in the figures is ASCII (a machine may lack CJK fonts for
matplotlib); tokens are listed in HTML tables, where the browser draws them."""
from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np

BLUE, ORANGE, GREEN, RED, GREY = "#3b6fb6", "#e39b3b", "#4c9a5a", "#c8453c", "#8a93a5"


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:  # the "report" extra
        raise SystemExit("the report needs matplotlib: pip install "
                         "'bert-wwm-pipeline[report]' (or pip install matplotlib)") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.titlesize": 10, "figure.dpi": 110})
    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _trimmed(counts: np.ndarray) -> np.ndarray:
    """Indices from the first to the last non-zero count (the range worth drawing)."""
    nz = np.flatnonzero(counts)
    return np.arange(nz[0], nz[-1] + 1) if len(nz) else np.arange(0)


def histogram(counts: np.ndarray, *, title: str, xlabel: str, color: str = BLUE,
              mark: float | None = None, mark_label: str = "",
              bounds: Sequence[float] = ()) -> str:
    """A bar per value (``counts[v]`` instances have value v); ``bounds``: dotted lines (the
    length bins' bounds below ``mark``)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5.6, 2.9))
    x = _trimmed(counts)
    ax.bar(x, counts[x], width=1.0, color=color, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ylabel = "instances"
    top = np.sort(counts)[::-1]
    if len(top) > 1 and top[1] and top[0] > 8 * top[1]:  # one bar would flatten the rest
        ax.set_yscale("log")
        ylabel += " (log scale)"
    for i, bound in enumerate(bounds):
        ax.axvline(bound + 0.5, color=GREY, linestyle=":", linewidth=1,
                   label="length bins' bounds" if i == 0 else None)
    if mark is not None:
        ax.axvline(mark, color=RED, linestyle="--", linewidth=1, label=f"{mark_label} {mark}")
    if mark is not None or len(bounds):
        ax.legend(frameon=False, loc="upper left")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _png(fig)


def two_histograms(a: np.ndarray, b: np.ndarray, *, title: str, labels: Sequence[str],
                   xlabel: str) -> str:
    """Two distributions over the same values, as outlined step histograms."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 2.9))
    x = _trimmed(a + b)
    for counts, label, color in ((a, labels[0], BLUE), (b, labels[1], ORANGE)):
        ax.fill_between(x, counts[x], step="mid", alpha=0.35, color=color, linewidth=0)
        ax.step(x, counts[x], where="mid", color=color, label=label, linewidth=1.2)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("instances")
    ax.legend(frameon=False)
    return _png(fig)


def bars(values: dict[str, float], *, title: str, ylabel: str, colors: Sequence[str],
         percent_of: float | None = None) -> str:
    """Labelled bars, each annotated with its value (and share of ``percent_of``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 2.9))
    names = list(values)
    heights = [values[n] for n in names]
    drawn = ax.bar(names, heights, color=list(colors)[:len(names)], width=0.6)
    for rect, h in zip(drawn, heights):
        text = f"{h:,.0f}" + (f"\n{100 * h / percent_of:.1f}%" if percent_of else "")
        ax.annotate(text, (rect.get_x() + rect.get_width() / 2, h), ha="center", va="bottom",
                    xytext=(0, 2), textcoords="offset points")
    ax.set_ylim(0, max(heights + [1]) * 1.3)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return _png(fig)


def rank_frequency(counts: np.ndarray, *, title: str) -> str:
    """Token frequency against rank, log-log (Zipf's law shows as a straight line)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 2.9))
    ranked = np.sort(counts[counts > 0])[::-1]
    ax.loglog(np.arange(1, len(ranked) + 1), ranked, color=BLUE, linewidth=1.2)
    ax.set_title(title)
    ax.set_xlabel("rank of the token")
    ax.set_ylabel("occurrences")
    return _png(fig)
