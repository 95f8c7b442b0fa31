"""The report's Chinese, readable on a machine without a CJK font: the page embeds the glyphs
it shows, cut from Noto Sans CJK SC (SIL Open Font License 1.1).

The page is mailed and opened anywhere, and a browser without a CJK font draws every Chinese
character as an empty box. So the page carries a subset of the font holding exactly the CJK
characters it shows (a few hundred for a default job: tens of KB, where the whole font is
20 MB), as a WOFF data URL in an ``@font-face``. The font comes from the PyPI package
``noto-cjk-sans-otc`` (in the ``report`` extra), else from Debian/Ubuntu's ``fonts-noto-cjk``.
Without either the page still works and says at its top what to install.

The figures need no CJK font: their text is ASCII (``plots``).
"""
from __future__ import annotations

import base64
import io
import os
from typing import BinaryIO

FACE = "Noto Sans CJK SC"  # the simplified-Chinese face of the collection
FAMILY = "report-cjk"  # what the page calls the subset
PACKAGE, PACKAGE_FILE = "noto_cjk_sans_otc", "NotoSansCJK-Regular.ttc"
PIP_NAME = "noto-cjk-sans-otc"
# Debian/Ubuntu's fonts-noto-cjk: the same collection.
SYSTEM_FILES = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",)
# Scripts that Latin system fonts lack: Hangul Jamo, CJK radicals to the unified ideographs
# (punctuation, kana, bopomofo, extension A), Hangul, compatibility ideographs, vertical and
# compatibility forms, full-width forms, enclosed ideographs, extensions B and later.
CJK_RANGES = ((0x1100, 0x11FF), (0x2E80, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7FF),
              (0xF900, 0xFAFF), (0xFE10, 0xFE1F), (0xFE30, 0xFE4F), (0xFF00, 0xFFEF),
              (0x1F200, 0x1F2FF), (0x20000, 0x3FFFF))


def cjk_chars(text: str) -> list[str]:
    """The distinct characters of ``text`` that need a CJK font, sorted."""
    return sorted(c for c in set(text)
                  if any(lo <= ord(c) <= hi for lo, hi in CJK_RANGES))


def _package_font() -> BinaryIO | None:
    try:
        from importlib.resources import files
        return (files(PACKAGE) / PACKAGE_FILE).open("rb")
    except (ImportError, OSError):
        return None


def _system_font() -> BinaryIO | None:
    for path in SYSTEM_FILES:
        if os.path.isfile(path):
            return open(path, "rb")
    return None


def open_font() -> BinaryIO | None:
    """The Noto Sans CJK collection, opened (the caller closes it), or None."""
    return _package_font() or _system_font()


def subset_woff(source: BinaryIO, chars: list[str]) -> bytes:
    """The SC face of the collection as WOFF, with the glyphs of those of ``chars`` it has
    (a character it lacks, rare, stays a box without a system font that has it)."""
    from fontTools import subset
    from fontTools.ttLib import TTCollection

    faces = TTCollection(source, lazy=True).fonts
    font = next(f for f in faces if f["name"].getDebugName(4) == FACE)
    options = subset.Options()
    # No OpenType features: they pull in the Japanese, Korean and traditional forms (locl)
    # and vertical ones (vert), 40% more glyphs, none of which horizontal SC text shows.
    options.layout_features = []
    # Keep the copyright and the licence (OFL 1.1) with the glyphs.
    options.name_IDs = [0, 1, 2, 3, 4, 5, 6, 13, 14]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=[ord(c) for c in chars])
    subsetter.subset(font)
    # Line height from the ideographic em box (the typographic metrics: 0.88 up, 0.12 down)
    # rather than the font's 1.45 em lines: first in the page's stacks, its lines would
    # otherwise be a quarter taller than those of the Latin fonts the page had.
    os2, hhea = font["OS/2"], font["hhea"]
    hhea.ascent, hhea.descent, hhea.lineGap = (os2.sTypoAscender, os2.sTypoDescender,
                                               os2.sTypoLineGap)
    os2.usWinAscent, os2.usWinDescent = os2.sTypoAscender, -os2.sTypoDescender
    font.flavor = "woff"  # zlib-compressed; WOFF2 would need brotli, for a few KB less
    buffer = io.BytesIO()
    font.save(buffer)
    return buffer.getvalue()


def embed(text: str) -> tuple[str, str]:
    """(CSS, notice HTML) for a page showing ``text``: an ``@font-face`` with the CJK
    characters of ``text``, or, where no font is found, a notice saying what to install.
    Both empty for a page without CJK characters."""
    chars = cjk_chars(text)
    if not chars:
        return "", ""
    source = open_font()
    if source is None:
        return "", notice()
    try:
        with source:
            woff = subset_woff(source, chars)
    except Exception:  # a damaged or unexpected font file: the page goes out without it
        return "", notice()
    url = "data:font/woff;base64," + base64.b64encode(woff).decode("ascii")
    # The subset comes first in the stacks. It has no Latin, so Latin text keeps the fonts
    # it had (pipeline.tools.inspect.CSS; code: monospace, at the 13px browsers give it alone).
    # Listed later, as a fallback, Chromium loads it only when the first Chinese text is
    # laid out, and draws that text as boxes.
    return (f'@font-face{{font-family:"{FAMILY}";src:url({url}) format("woff")}}'
            f'body{{font-family:"{FAMILY}",system-ui,-apple-system,"Segoe UI",sans-serif}}'
            f'code{{font-family:"{FAMILY}",monospace;font-size:13px}}'), ""


NOTICE_START = "No CJK font is embedded in this page"


def notice() -> str:
    return (f"<p class='warn'>{NOTICE_START}: where Chinese shows as "
            "boxes, install one (<code>fonts-noto-cjk</code> on Debian/Ubuntu), or install "
            f"<code>{PIP_NAME}</code> (<code>pip install "
            "'bert-wwm-pipeline[report]'</code>) and write the report again.</p>")
