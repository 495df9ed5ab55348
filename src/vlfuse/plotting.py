"""Shared matplotlib setup for every figure vlfuse writes (reports, compare, explain).

matplotlib is imported inside these functions only: `import vlfuse` must stay light.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator

# Fonts with CJK glyphs, best first; used as a per-glyph fallback after DejaVu Sans.
_CJK_FONTS = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Noto Sans SC",
    "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
    "Droid Sans Fallback", "AR PL UMing CN", "Microsoft YaHei", "SimHei", "PingFang SC",
)


@contextlib.contextmanager
def pyplot() -> Iterator[object]:
    """Yield pyplot with the Agg backend, a CJK fallback font and no glyph warnings.

    rc_context keeps the font settings local, so a caller's own matplotlib setup
    is left alone. The glyph warnings fire at draw time, hence the wide scope.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with warnings.catch_warnings(), plt.rc_context(_rc_params()):
        warnings.filterwarnings("ignore", message=r"Glyph .*missing", category=UserWarning)
        yield plt


def _rc_params() -> dict:
    fonts = ["DejaVu Sans"]
    cjk = _cjk_font()
    if cjk:
        fonts.append(cjk)
    return {"font.family": "sans-serif", "font.sans-serif": fonts, "axes.unicode_minus": False}


def _cjk_font() -> str | None:
    """Name of an installed font with CJK glyphs, or None (then CJK renders as boxes)."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in _CJK_FONTS:
        if name in installed:
            return name
    # Anything else that advertises CJK in its name, e.g. "Noto Serif CJK KR".
    return next((n for n in sorted(installed) if "CJK" in n), None)


def save_figure(fig, out_png: Path) -> Path:
    """Write `fig` as a PNG (parent folders made) and close it."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out_png, dpi=120, bbox_inches="tight", facecolor="white")
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)  # long eval runs write many reports; figures must not pile up
    return out_png
