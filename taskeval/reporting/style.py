"""The look shared by every figure: one matplotlib style (DejaVu fonts shipped with matplotlib, TrueType in
PDFs) and one colour per method and per class.

Figures are drawn on plain :class:`matplotlib.figure.Figure` objects (Agg and PDF canvases, no pyplot
state, no display), so rendering needs no network and no X server. Set ``MPLCONFIGDIR`` before the first
import of matplotlib to keep its font cache out of the home folder (``taskeval report`` points it into
the run directory).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from matplotlib import colormaps

# matplotlib subsets the embedded fonts of every PDF with fontTools, which logs each table at INFO
logging.getLogger("fontTools").setLevel(logging.WARNING)

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays editable and searchable in papers
    "ps.fonttype": 42,
    "savefig.dpi": 200,
}



def method_colours(methods: Sequence[str]) -> dict[str, tuple]:
    """One colour per method; given every method of the run, the same in all its charts."""
    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def class_colours(n: int) -> list[tuple]:
    cmap = colormaps["tab10"]
    return [cmap(i % cmap.N) for i in range(n)]
