"""``taskeval report``: render a run directory as one HTML file."""

from taskeval.cli.common import planned


def register(sub) -> None:
    planned(sub, "report", "render a benchmark run directory as a self-contained HTML report",
            "render the tables and figures of a benchmark run directory into one HTML file", 6)
