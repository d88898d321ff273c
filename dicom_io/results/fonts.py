"""Fonts for text drawn into result images (the summary card, the QSM series' end-slice label):
DejaVu Sans from the system, else matplotlib's copy, else Pillow's bundled scalable font."""
from __future__ import annotations

import functools
from pathlib import Path

from PIL import ImageFont

_FONT_FILES = {
    False: ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"),
    True: ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf"),
}


@functools.lru_cache(maxsize=16)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at ``size`` px (the system's, else matplotlib's copy), else Pillow's bundled
    scalable font: always a TrueType font, so ``size`` is what is rendered."""
    for candidate in _FONT_FILES[bold]:
        if Path(candidate).exists():
            return ImageFont.truetype(candidate, size)
    try:
        import matplotlib
        p = Path(matplotlib.get_data_path()) / "fonts/ttf" / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
        if p.exists():
            return ImageFont.truetype(str(p), size)
    except ImportError:
        pass
    return ImageFont.load_default(size=size)
