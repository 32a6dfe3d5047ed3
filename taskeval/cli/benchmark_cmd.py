"""``taskeval benchmark``: methods x tasks x seeds in one resumable run."""

from taskeval.cli.common import planned


def register(sub) -> None:
    planned(sub, "benchmark", "methods x tasks x seeds in one resumable run with tables, figures, report",
            "run every (method, task, seed) cell of a config once, resumable, and write tables, figures and "
            "an HTML report", 6)
