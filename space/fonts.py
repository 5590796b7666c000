"""Noto subsets for the target languages' scripts, served with the app (`space/static/fonts`, OFL).

A visitor without system fonts for Bengali, Tamil, Telugu, Odia, Tibetan, Uyghur (Arabic script)
or Mongolian would see boxes; each `@font-face` below carries its script's `unicode-range`, so a
browser downloads only the fonts a page needs (about 25-150 kB each).
"""

from __future__ import annotations

from pathlib import Path

FONTS_DIR = Path(__file__).resolve().parent / "static" / "fonts"

# (family, file, unicode-range): one per script, in the order the stack lists them.
FONTS = (
    ("Mergeling Bengali", "NotoSansBengali.woff2", "U+0964-0965, U+0980-09FF, U+200C-200D, U+25CC"),
    ("Mergeling Tamil", "NotoSansTamil.woff2", "U+0B80-0BFF"),
    ("Mergeling Telugu", "NotoSansTelugu.woff2", "U+0C00-0C7F"),
    ("Mergeling Odia", "NotoSansOriya.woff2", "U+0B00-0B7F"),
    ("Mergeling Tibetan", "NotoSerifTibetan.woff2", "U+0F00-0FFF"),
    ("Mergeling Arabic", "NotoSansArabic.woff2", "U+0600-06FF"),
    ("Mergeling Mongolian", "NotoSansMongolian.woff2", "U+1800-18AF, U+202F"),
)


def font_css(url_of: str) -> str:
    """`@font-face` rules and a font stack that puts them before the theme's font on every text element.

    Args:
        url_of: the URL prefix a file name is appended to (Gradio's `/gradio_api/file=<dir>/`).
    """
    faces = "\n".join(
        f"@font-face {{ font-family: '{family}'; src: url('{url_of}{file}') format('woff2'); "
        f"unicode-range: {ranges}; font-display: swap; }}"
        for family, file, ranges in FONTS
    )
    families = ", ".join(f"'{family}'" for family, _, _ in FONTS)
    # Ours first: each covers only its script (unicode-range), so Latin text keeps the theme's font.
    stack = (
        "body, .gradio-container, textarea, input, table, button, .prose, option, li "
        f"{{ font-family: {families}, var(--font), sans-serif !important; }}"
    )
    return f"{faces}\n{stack}"


# Phones (390 px): the five tab buttons fit on one line (Gradio otherwise folds them into a "…"
# menu), long ids wrap instead of widening the page, tables scroll inside their own box.
LAYOUT_CSS = """
@media (max-width: 600px) {
  [role=tablist] button, [role=tab] { padding: 4px 7px !important; font-size: 13px !important; min-width: 0 !important; }
}
.prose, .prose a, .prose code { overflow-wrap: anywhere; word-break: break-word; }
.gradio-container { overflow-x: hidden; }
.table-wrap, .table-container { max-width: 100%; overflow-x: auto; }
"""
