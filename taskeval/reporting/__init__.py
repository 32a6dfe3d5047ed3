"""The reporting layer: reads one run directory (the results store, :mod:`taskeval.store`) and nothing else.

Modules, each importing only those listed before it (tested: no cycle, no runner, no CLI)::

    options      the figures: section of a run configuration (no matplotlib)
    run          RunData: finished and failed cells, rows, task specs (RUN/tasks.json or the registry)
    comparisons  saved paired comparisons (RUN/stats/<task>_vs_reference.json), via taskeval.stats
    guard        the learned-nothing guard: did a table's networks score above chance (Task.chance_level)?
    published    published results of the run's dataset and class list, and measured minus published
    tables       paper-style tables from rows and specs (warnings, published rows); every table of a run
    style        matplotlib style and colours shared by the figures
    grids        example grids: boxes (detection) and masks (segmentation) over chosen scenes
    charts       per-class bars and the radar chart
    figures      every figure of a run (PNG + PDF), figure options from the run's config
    report       the self-contained HTML report
    finalize     after the cells: results.csv, comparisons, tables (terminal and files), figures, report

Task knowledge comes only from each task's :class:`~taskeval.tasks.TaskSpec` (metric directions, percent
or raw, headline, per-class breakdown, label kind, radar axes), never from a task's name.
"""
