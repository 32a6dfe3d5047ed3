"""Terminal output: tables are printed whole, never cut to the terminal's width.

rich fits a table to the console (80 columns when output goes to a file or a pipe) by wrapping or
cutting cells, which turns ``71.2 ± 4.6`` into ``71…``. :func:`print_table` widens the console to the
table's natural width instead, so numbers stay complete in logs and narrow terminals alike.
"""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement


def print_table(renderable, console: Console | None = None) -> None:
    """Print a rich renderable (usually a ``rich.table.Table``) at no less than its natural width."""
    console = console or Console()
    need = Measurement.get(console, console.options.update(width=10_000), renderable).maximum
    if need > console.width:
        console = Console(width=need, file=console.file, force_terminal=console.is_terminal,
                          color_system=console.color_system, highlight=False)
    console.print(renderable)
