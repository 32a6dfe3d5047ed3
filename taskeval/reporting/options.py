"""The ``figures:`` section of a run configuration (kept free of matplotlib: configs load it quickly)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FigureOptions:
    """Which scenes the image grids show and how (see :mod:`taskeval.reporting.figures`)."""

    scenes: tuple[str, ...] = ()   # test ids; empty = chosen where methods disagree most
    n_scenes: int = 3
    score_threshold: float = 0.25  # boxes drawn from this score
    insets: dict = field(default_factory=dict)  # test id -> [x, y, w, h] pixel region magnified in each panel
    draw_gt: bool = False          # ground-truth boxes (dashed) in the box grid
    radar: str = "minmax"          # radar axis normalisation: minmax or rank
