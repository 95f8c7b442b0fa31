"""LTP word segmentation returned as character offsets into the original text.

Why offsets: LTP may drop or keep whitespace (the neural models drop it, the legacy model glues it
to the neighbouring word), so its words cannot simply be concatenated back. Every word is found
again in the original text from a cursor; the caller gets ``(start, end)`` spans it can map onto
WordPiece offsets for whole-word masking (``word_spans``), or the same as flat arrays
(``word_bounds``, what the job uses: no Python tuple per word).

Span conventions (same for legacy and neural models):
- only texts with at least one CJK ideograph are segmented; other texts get ``[]``;
- no span contains whitespace: an LTP word such as ``"hello world"`` or ``"中国\\u3000"`` gives
  the spans of its whitespace-free pieces, whitespace-only words give none;
- spans are strictly increasing, non-overlapping and within ``[0, len(text)]``;
- a word that cannot be found (LTP normalised it) is resynchronised: first by a bounded search
  ahead, else by taking the same number of characters at the cursor; each such word is counted in
  ``stats["unaligned_words"]``. Nothing raises on odd input; a text LTP itself fails on gets
  ``[]`` and is counted in ``stats["failed_texts"]``.

User dictionary: LTP 4.2's ``add_word`` hook, which works for legacy and neural models alike (it
is applied inside ``pipeline``): it merges *adjacent* model words whose concatenation is a
dictionary word; it never splits a model word.

Speed and loading: legacy directories are loaded straight into ``ltp_extension``'s
``CWSModel`` (what ``ltp.LTP(path)`` does internally) because importing the ``ltp`` package pulls
in torch + transformers (seconds and ~1 GB per worker). Segmentation then calls the model's
``batch_predict`` plus the same user-dict hook ``pipeline`` applies. On 2000 People's Daily
paragraphs ``batch_predict`` and ``pipeline(texts, tasks=["cws"])`` ran at the same speed within
the noise of a shared 2-core machine (0.15-0.54 M chars/s each depending on load); alignment
adds ~15%. Neural models go through ``pipeline``. Measure with
``python -m pipeline.tools.ltp_model --benchmark``.

The segmenter takes a local model directory or a hub name, nothing else: a ``scheme://`` path
is copied to local disk by the Beam layer, and the built-in model ("default") is built and
cached outside the core (``pipeline.default_segmenter.cache.default_model_dir`` gives its
directory). The model is read whole at construction: its files may be removed after.

Model directories: ``config.json`` says which loader LTP uses, by the key ``"nerual"`` (sic,
LTP's spelling): true for neural models, false or absent for legacy (perceptron) ones. Only
:func:`is_neural` reads it and :func:`legacy_config` writes it.

Devices: a neural model is a torch module and runs where ``device`` says (``"cpu"``, ``"cuda"``,
``"cuda:1"``: any torch device string; moved with ``.to(device)`` once, at construction). The
core does not import torch, so ``"auto"`` is resolved by the caller (the Beam layer:
``pipeline.beam.ltp_device``). A legacy model runs on the CPU only and refuses any other device.
The spans do not depend on the device but for rounding: a GPU's kernels round differently from
the CPU's, so a character whose two tag scores are within rounding of each other may start a
word on one and not on the other.

Neural models and transformers 5: ltp 4.2's ``pipeline`` calls the tokenizer's
``batch_encode_plus``, which transformers 5 removed; where it is missing the segmenter gives
LTP the tokenizer wrapped in :class:`_BatchEncodeCompat`, whose ``batch_encode_plus`` is the
tokenizer's ``__call__`` (which takes the same arguments and returns the same encodings).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.common.digest import directory_sha256
from pipeline.core.instance import ragged_index
from pipeline.core.text import cut_long, has_cjk
from pipeline.versions import version

Spans = list[tuple[int, int]]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
NEURAL_MAX_CHARS = 500
LEGACY_MAX_CHARS = 20_000
_LOOKAHEAD = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s")


def model_safe(text: str) -> str:
    """Replace lone surrogates (which cannot cross into LTP's Rust/tokenizer code) by U+FFFD;
    length is unchanged, so offsets into the result are offsets into ``text``."""
    return _SURROGATE.sub("\ufffd", text)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def tiles(text: str, words: Sequence[str]) -> bool:
    """Whether ``words`` laid end to end are ``text``, which has no whitespace: the common
    case (legacy LTP on text without spaces), where a word's span follows from the lengths."""
    return _WHITESPACE.search(text) is None and "".join(words) == text


def align_words(text: str, words: Sequence[str], *, lookahead: int = _LOOKAHEAD
                ) -> tuple[Spans, int]:
    """Spans of ``words`` (in order) inside ``text`` and the number of unaligned words.

    See the module docstring for the conventions. Never raises for any str input.
    """
    spans: Spans = []
    unaligned = 0
    cursor = 0
    for word in words:
        for piece in str(word).split():
            pos = _skip_space(text, cursor)
            if pos >= len(text):
                unaligned += 1
                continue
            if text.startswith(piece, pos):
                start, end = pos, pos + len(piece)
            else:
                unaligned += 1
                found = text.find(piece, pos, pos + lookahead + len(piece))
                if found >= 0:
                    start, end = found, found + len(piece)
                else:
                    start, end = pos, _take_non_space(text, pos, len(piece))
            spans.append((start, end))
            cursor = end
    return spans, unaligned


def _take_non_space(text: str, pos: int, count: int) -> int:
    """End of up to ``count`` characters from ``pos``, stopping at whitespace (>= pos + 1)."""
    end = pos
    limit = min(len(text), pos + max(count, 1))
    while end < limit and not text[end].isspace():
        end += 1
    return max(end, pos + 1)


class WordBounds(NamedTuple):
    """Segmented words of a batch of texts, flat: text ``i`` has ``counts[i]`` words, whose
    [start, end) character offsets in that text are the next ``counts[i]`` entries of
    ``starts`` and ``ends`` (int64 arrays)."""
    counts: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def from_spans(cls, spans: Sequence[Sequence[tuple[int, int]]]) -> "WordBounds":
        counts = np.fromiter(map(len, spans), dtype=np.int64, count=len(spans))
        flat = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(spans)),
                           dtype=np.int64, count=2 * int(counts.sum()))
        return cls(counts, flat[0::2], flat[1::2])

    def spans(self) -> list[Spans]:
        pairs = list(zip(self.starts.tolist(), self.ends.tolist()))
        out, k = [], 0
        for count in self.counts.tolist():
            out.append(pairs[k:k + count])
            k += count
        return out


class _Chunks:
    """Segmented chunks collected in the order they come back, then laid out per text."""

    def __init__(self):
        self.text: list[int] = []  # per chunk: its text,
        self.offset: list[int] = []  # its offset in the text,
        self.count: list[int] = []  # its number of words,
        self.tiled: list[bool] = []  # whether its words tile it (lengths) or were aligned
        self.words: list[list[str]] = []  # the tiled chunks' words
        self.spans: list[Spans] = []  # the aligned chunks' spans

    def add_tiled(self, i: int, offset: int, words: list[str]) -> None:
        self._add(i, offset, len(words), True)
        self.words.append(words)

    def add_spans(self, i: int, offset: int, spans: Spans) -> None:
        self._add(i, offset, len(spans), False)
        self.spans.append(spans)

    def _add(self, i, offset, count, tiled) -> None:
        self.text.append(i)
        self.offset.append(offset)
        self.count.append(count)
        self.tiled.append(tiled)

    def bounds(self, texts: int, failed: set[int], *, ordered: bool) -> WordBounds:
        """Every text's words, its chunks in offset order (``ordered``: the chunks came in
        text and offset order); the texts in ``failed`` get none."""
        chain = itertools.chain.from_iterable
        text = np.array(self.text, dtype=np.int64)
        offset = np.array(self.offset, dtype=np.int64)
        count = np.array(self.count, dtype=np.int64)
        tiled = np.array(self.tiled, dtype=bool)
        first = np.zeros(len(count) + 1, dtype=np.int64)  # each chunk's words in the arrays below
        np.cumsum(count, out=first[1:])
        starts = np.empty(int(first[-1]), dtype=np.int64)
        ends = np.empty_like(starts)
        # Tiled chunks: each word ends where its chunk's word lengths so far add up to.
        n = count[tiled]
        lengths = np.fromiter(map(len, chain(self.words)), dtype=np.int64, count=int(n.sum()))
        total = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=total[1:])
        at = ragged_index(first, np.flatnonzero(tiled))
        ends[at] = total[1:] - np.repeat(total[np.cumsum(n) - n] - offset[tiled], n)
        starts[at] = ends[at] - lengths
        # Aligned chunks: their spans, moved by the chunk's offset.
        n = count[~tiled]
        flat = np.fromiter(chain(chain(self.spans)), dtype=np.int64, count=2 * int(n.sum()))
        at = ragged_index(first, np.flatnonzero(~tiled))
        shift = np.repeat(offset[~tiled], n)
        starts[at], ends[at] = flat[0::2] + shift, flat[1::2] + shift
        keep = ~np.isin(text, np.fromiter(failed, dtype=np.int64, count=len(failed)))
        order = np.flatnonzero(keep)
        if not ordered:
            order = order[np.lexsort((offset[order], text[order]))]
        words = ragged_index(first, order)
        return WordBounds(np.bincount(text[order], weights=count[order],
                                      minlength=texts).astype(np.int64),
                          starts[words], ends[words])


def load_user_dict(path: str | Path) -> list[tuple[str, int | None]]:
    """Read ``word [freq]`` lines (UTF-8); blank lines and ``#`` comments are skipped."""
    entries = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            freq = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
            entries.append((fields[0], freq))
    return entries


def resolve_model(spec: str) -> tuple[str, str]:
    """Map a model spec to (source kind, location): ("dir", path) or ("hub", name).

    Remote ``scheme://`` paths are refused: the Beam layer copies them to local disk first.
    The built-in model is a directory too: "default" is refused here, pass its directory
    (``pipeline.default_segmenter.cache.default_model_dir``).
    """
    if spec == "default":
        raise ValueError("'default' names the job's built-in model: pass its directory, "
                         "pipeline.default_segmenter.cache.default_model_dir()")
    if _SCHEME.match(spec):
        raise ValueError(f"LTP model path {spec!r} is remote; copy it to a local directory "
                         "first (the Beam layer does this) and pass that directory")
    if os.path.isdir(spec):
        if not os.path.isfile(os.path.join(spec, "config.json")):
            raise ValueError(f"{spec!r} is a directory without config.json: not an LTP model")
        return "dir", os.path.abspath(spec)
    if os.path.exists(spec):
        raise ValueError(f"{spec!r} is a file; pass the LTP model directory that holds it")
    return "hub", spec


def read_config(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        return json.load(handle)


# The config.json key that selects LTP's loader, spelt as LTP spells it (ltp/interface.py).
NEURAL_KEY = "nerual"


def is_neural(config: dict) -> bool:
    """Whether a model directory's ``config.json`` (parsed) is a neural model's: LTP loads it
    with torch; otherwise it is a legacy (perceptron) model."""
    return bool(config.get(NEURAL_KEY, False))


def model_kind(spec: str) -> str:
    """"legacy" or "neural" for a model directory (read from its ``config.json``, nothing
    loaded), "hub" for a hub name (known only once loaded). Refuses what
    :func:`resolve_model` refuses."""
    source, location = resolve_model(spec)
    if source == "hub":
        return "hub"
    return "neural" if is_neural(read_config(location)) else "legacy"


def legacy_config(cws_file: str) -> dict:
    """The ``config.json`` of a legacy model directory with only the ``cws`` task, stored in
    the file ``cws_file`` of the directory (as ``ltp.LTP(path)`` and this module load it)."""
    return {NEURAL_KEY: False, "tasks": {"cws": cws_file}}


def _load_legacy_dir(model_dir: str, config: dict):
    """(CWSModel, Hook) of a legacy directory, loaded the way ``ltp.legacy.LTP`` loads it
    (``config["tasks"]["cws"]`` is the file name) but without importing ``ltp``, whose package
    import pulls in torch and transformers (seconds and ~1 GB per worker process)."""
    from ltp_extension.algorithms import Hook
    from ltp_extension.perceptron import CWSModel

    cws_file = config.get("tasks", {}).get("cws")
    if not cws_file:
        raise ValueError(f"LTP model {model_dir!r} has no cws task in config.json")
    return CWSModel.load(os.path.join(model_dir, cws_file)), Hook()


def _load_ltp(source: str, location: str):
    """``ltp.LTP`` for neural directories and hub names (the only way to load those)."""
    from ltp import LTP

    if source == "dir":
        return LTP(location)
    try:
        return LTP(location)
    except Exception as exc:  # offline hub access fails in many library-specific ways
        raise RuntimeError(f"could not load LTP model {location!r} from the model hub ({exc}); "
                           "without hub access pass a local LTP model directory "
                           "(one with config.json) instead") from exc


class _BatchEncodeCompat:
    """A tokenizer with ``batch_encode_plus`` (removed in transformers 5), which ltp 4.2's neural
    ``pipeline`` calls: it is the tokenizer's ``__call__``; everything else is the tokenizer's."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def batch_encode_plus(self, inputs, **kwargs):
        return self.tokenizer(inputs, **kwargs)

    def __getattr__(self, name):
        if name == "tokenizer":  # not set yet (a copy in the making): no recursion
            raise AttributeError(name)
        return getattr(self.tokenizer, name)


def _with_batch_encode(ltp) -> None:
    """Give a neural ``ltp.LTP`` a tokenizer that has ``batch_encode_plus`` (see above)."""
    try:
        ltp.tokenizer.batch_encode_plus
    except AttributeError:
        ltp.tokenizer = _BatchEncodeCompat(ltp.tokenizer)


def _legacy_device(model: str, device: str) -> None:
    if device != "cpu":
        raise ValueError(f"LTP model {model!r} is a legacy (perceptron) model: it runs on the "
                         f"CPU only, not on {device!r}; pass device 'cpu' "
                         "(--ltp_device=cpu or auto), or a neural model")


def _rebuild(model: str, options: dict) -> "LtpSegmenter":
    return LtpSegmenter(model, **options)


class LtpSegmenter:
    """Loads one LTP model at construction (meant for ``DoFn.setup``) and segments batches.

    Holds no global state. Pickling stores only the constructor arguments and unpickling loads
    the model again (the Rust model object itself cannot be pickled); ``stats`` start at zero.
    """

    def __init__(self, model: str, *, user_dict: str | Path | None = None,
                 batch_size: int = 256, max_chars: int | None = None,
                 parallelism: bool = True, device: str = "cpu"):
        self.spec = model
        self.source, self.location = resolve_model(model)
        if device == "auto":
            raise ValueError("device 'auto' needs torch to resolve: pass 'cpu' or a torch device "
                             "('cuda', 'cuda:0'); the job resolves --ltp_device=auto on each "
                             "worker (pipeline.beam.ltp_device)")
        self.ltp = None  # the ltp.LTP object; stays None for legacy directories
        if self.source == "dir" and not is_neural(read_config(self.location)):
            self.kind = "legacy"
            _legacy_device(model, device)
            self.cws_model, self.hook = _load_legacy_dir(self.location,
                                                         read_config(self.location))
        else:
            self.ltp = _load_ltp(self.source, self.location)
            self.kind = "legacy" if type(self.ltp).__module__.endswith("legacy") else "neural"
            if "cws" not in self.ltp.supported_tasks:
                raise ValueError(f"LTP model {model!r} has no cws task")
            if self.kind == "legacy":
                _legacy_device(model, device)
            else:
                _with_batch_encode(self.ltp)
                if device != "cpu":
                    self.ltp.to(device)
            self.cws_model = getattr(self.ltp, "cws_model", None)
            self.hook = self.ltp.hook
        self.device = device
        self.batch_size = max(1, batch_size)
        default_cap = NEURAL_MAX_CHARS if self.kind == "neural" else LEGACY_MAX_CHARS
        self.max_chars = max(1, max_chars or default_cap)
        self.parallelism = parallelism
        self.user_dict = str(user_dict) if user_dict is not None else None
        self.user_words = load_user_dict(user_dict) if user_dict is not None else []
        for word, freq in self.user_words:  # what LTP.add_word does, for both kinds
            self.hook.add_word(word, 1 if freq is None else freq)
        self._options = {"user_dict": self.user_dict, "batch_size": batch_size,
                         "max_chars": max_chars, "parallelism": parallelism, "device": device}
        self.stats = {"texts": 0, "segmented_texts": 0, "chars": 0, "chunks": 0,
                      "unaligned_words": 0, "failed_texts": 0}

    def __reduce__(self):
        return _rebuild, (self.spec, dict(self._options))

    def _predict(self, chunks: list[str]) -> list[list[str]]:
        """Legacy: the Rust model's ``batch_predict`` plus the user-dict hook, i.e. exactly what
        ``pipeline(tasks=["cws"])`` does minus its output wrapping (measurably faster).
        Neural: ``pipeline``."""
        if self.kind != "legacy":
            return list(self.ltp.pipeline(chunks, tasks=["cws"]).cws)
        words = self.cws_model.batch_predict(chunks, parallelism=self.parallelism)
        if len(self.hook):
            words = [self.hook.hook(chunk, w) for chunk, w in zip(chunks, words)]
        return list(words)

    def _cws(self, chunks: list[str]) -> list[list[str] | None]:
        """LTP words per chunk; a failing batch is retried one chunk at a time (None = failed)."""
        try:
            return self._predict(chunks)
        except Exception:
            if len(chunks) == 1:
                return [None]
            return [words for chunk in chunks for words in self._cws([chunk])]

    def word_spans(self, texts: Sequence[str]) -> list[Spans]:
        """For each text, the (start, end) offsets of LTP's words in that text."""
        return self.word_bounds(texts).spans()

    def word_bounds(self, texts: Sequence[str]) -> WordBounds:
        """:meth:`word_spans` as flat arrays (what the job's WordPiece step takes): no tuple
        per word."""
        jobs: list[tuple[int, int, str]] = []  # (text index, offset, chunk)
        for i, text in enumerate(texts):
            self.stats["texts"] += 1
            if not isinstance(text, str) or not has_cjk(text):
                continue
            self.stats["segmented_texts"] += 1
            self.stats["chars"] += len(text)
            jobs.extend((i, off, chunk) for off, chunk
                        in cut_long(model_safe(text), self.max_chars)
                        if not chunk.isspace())
        if self.kind == "neural":
            # A neural batch is padded to its longest chunk: batches of similar lengths waste
            # less (1.8x on CPU, bench/neural_ltp.py). Spans do not depend on the batch.
            jobs.sort(key=lambda job: len(job[2]))
        failed: set[int] = set()
        done = _Chunks()
        for b in range(0, len(jobs), self.batch_size):
            batch = jobs[b:b + self.batch_size]
            self.stats["chunks"] += len(batch)
            for (i, off, chunk), words in zip(batch, self._cws([c for _, _, c in batch])):
                if words is None:
                    failed.add(i)
                elif tiles(chunk, words):  # their lengths are all there is to know
                    done.add_tiled(i, off, [w for w in words if w] if "" in words else words)
                else:
                    spans, missed = align_words(chunk, words)
                    self.stats["unaligned_words"] += missed
                    done.add_spans(i, off, spans)
        self.stats["failed_texts"] += len(failed)
        return done.bounds(len(texts), failed, ordered=self.kind != "neural")

    def model_identity(self) -> dict:
        """What the run manifest records about the segmenter."""
        identity = describe_model(self.spec, user_dict=self.user_dict)
        identity.update(kind=self.kind, max_chars=self.max_chars)
        return identity


def describe_model(spec: str, *, user_dict: str | Path | None = None) -> dict:
    """The manifest's record of a model spec, without loading the model (hashes its files:
    ``pipeline.common.digest``). Like :func:`resolve_model` it refuses ``"default"``: the
    launcher builds the default model first and describes its directory."""
    source, location = resolve_model(spec)
    identity = {"spec": spec, "ltp_version": version("ltp")}
    if source == "dir":
        identity.update(kind=model_kind(location), path=location,
                        sha256=directory_sha256(location))
    else:
        identity.update(kind="hub", name=location, sha256=None)
    if user_dict is not None:
        with open(user_dict, "rb") as handle:
            identity["user_dict_sha256"] = hashlib.sha256(handle.read()).hexdigest()
        identity["user_dict_words"] = len(load_user_dict(user_dict))
    return identity

