"""One self-contained HTML report of a run directory (any command's: detect, segment, benchmark, joint).

The page embeds every figure as a base64 PNG (the PDFs stay in ``RUN/figures``), the result tables of
:mod:`taskeval.reporting.tables` (summary, per class, per-task metrics) with the paired comparisons as
footnotes (:mod:`taskeval.reporting.comparisons`, computed when missing or out of date), notes such as
"weights trained by taskeval", failed cells with their error, the protocols and, per task, its metric
definitions (from its spec) and the docstrings of the modules that define it, and the provenance record
(versions, git commit, hardware, configuration). Where the task networks learned nothing
(:mod:`taskeval.reporting.guard`) the summary and the results say so first; where published results of the
dataset and class list exist (:mod:`taskeval.reporting.published`), the per-class tables show them as
another protocol and a section "Measured vs published" lists measured minus published per method. It
loads nothing from the network: no scripts, fonts or style sheets from elsewhere, so it opens offline and
can be archived or mailed as one file.

Existing reports are never replaced silently: the default file is ``RUN/report.html`` and an existing
one is only replaced with ``overwrite=True`` (``taskeval report --overwrite``); the file is written
atomically (temporary file + rename).
"""

from __future__ import annotations

import ast
import base64
import html
import importlib.util
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from taskeval.errors import RegistryError, TaskevalError
from taskeval.reporting import guard
from taskeval.reporting import published as P
from taskeval.reporting.comparisons import update_comparisons
from taskeval.reporting.figures import FigureFile, render_all
from taskeval.reporting.run import RunData
from taskeval.reporting.tables import run_tables, split_label
from taskeval.rundir import atomic_write_text, latest_config_path

NO_PROTOCOL = "-"  # the protocol id of a task that has no protocol (nothing trained, nothing to describe)
CSS = """
body { font-family: "DejaVu Sans", Verdana, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child, table.kv td { text-align: left; }
thead th { background: #f2f2f2; }
td.best { font-weight: bold; } td.second { text-decoration: underline; }
tr.last-reference td { border-bottom: 2px solid #888; }
tbody.published { font-style: italic; color: #555; }
tbody.published th { text-align: left; font-weight: normal; background: #f7f7f7; border-top: 2px solid #888; }
.warning { background: #fde8e8; border-left: 4px solid #c00; padding: .4em .8em; }
p.caption, ul.footnotes { font-size: .85em; color: #444; max-width: 60em; margin-top: -.6em; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #444; margin-top: .3em; }
pre, .doc { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .85em; white-space: pre-wrap; }
code { background: #f2f2f2; padding: 0 .2em; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: .4em .8em; }
nav ul { columns: 2; }
"""


# ------------------------------------------------------------------------------------------ helpers
def esc(text) -> str:
    return html.escape(str(text), quote=True)


def doc_html(text: str) -> str:
    """A reStructuredText-ish docstring as preformatted HTML: ``literals`` and :role:`refs` as <code>,
    **strong** as <b>."""
    out = re.sub(r"``(.+?)``", r"<code>\1</code>", esc(text))
    out = re.sub(r":[a-z]+:`~?(.+?)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)


def module_docstring(module: str) -> str | None:
    """The docstring of ``module`` read from its source file without importing it (None if absent)."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text()))


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def table(header: Sequence[str] | None, body: Iterable[Sequence[str]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then each is a ``<td>`` already). Without a
    header it is a key-value table."""
    rows = "".join("<tr>" + "".join(c if raw else f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in body)
    if header is None:
        return f'<table class="kv"><tbody>{rows}</tbody></table>'
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


# ------------------------------------------------------------------------------------------- tables
RANK_CLASS = {1: ' class="best"', 2: ' class="second"', 0: ""}


def table_html(t) -> str:
    """A :class:`taskeval.reporting.tables.Table` as HTML: its warning on top, best bold, second underlined,
    a rule under the reference rows, the published rows in their own ``tbody`` (never marked), the caption
    and footnotes below."""
    ranks = [t.ranks(j) for j in range(len(t.columns))]
    head = "<th>Method</th>" + "".join(f"<th>{esc(c.header)}</th>" for c in t.columns)
    body = []
    for i, m in enumerate(t.methods):
        name = esc(t.label(m)) + (f"<sup>{esc(t.markers(m))}</sup>" if t.markers(m) else "")
        cells = "".join(f"<td{RANK_CLASS[ranks[j][m]]}>{esc(t.value_text(m, j))}</td>"
                        for j in range(len(t.columns)))
        rule = ' class="last-reference"' if t.is_last_reference(i) else ""
        body.append(f"<tr{rule}><td>{name}</td>{cells}</tr>")
    published = ""
    if t.published:
        rows = [f'<tr><th colspan="{len(t.columns) + 1}">{esc(P.GROUP)}</th></tr>']
        rows += [f"<tr><td>{esc(line.label)}</td>" + "".join(f"<td>{esc(t.published_text(line, j))}</td>"
                                                              for j in range(len(t.columns))) + "</tr>"
                 for line in t.published]
        published = f'<tbody class="published">{"".join(rows)}</tbody>'
    notes = "".join(f"<li>{esc(mk + ' ' if mk else '')}{esc(text)}</li>" for mk, text in t.footnotes)
    foot = f'<ul class="footnotes">{notes}</ul>' if notes else ""
    warning = f'<p class="warning"><b>Warning:</b> {esc(t.warning)}</p>' if t.warning else ""
    return (f"<h3>{esc(t.title)}</h3>{warning}<table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody>{published}</table>"
            f'<p class="caption">{esc(t.caption)}</p>{foot}')


def tables_html(run: RunData, published: bool = True) -> str:
    """Every table of the run (:func:`taskeval.reporting.tables.run_tables`), methods in the run's order,
    after the learned-nothing warnings of the run."""
    return warnings_html(run) + "\n".join(table_html(t) for _, t in run_tables(run, published=published))


def warnings_html(run: RunData) -> str:
    """The learned-nothing warnings of the run, one paragraph per (task, dataset, protocol); "" when none."""
    return "".join(f'<p class="warning"><b>Warning:</b> {esc(text)}</p>'
                   for text in guard.warnings(run).values())


def published_html(run: RunData) -> str:
    """The "Measured vs published" section: per table group with published results, measured minus
    published on the published headline metric for every method in both, and how the protocols differ;
    "" when no group of the run has published results (nor a reason why they are not shown)."""
    out = []
    have = {r.method for r in run.rows}
    methods = [m for m in run.method_order if m in have]
    warnings = guard.warnings(run)
    for task, dataset, protocol in dict.fromkeys((r.task, r.dataset, r.protocol) for r in run.rows
                                                 if r.task in run.specs):
        spec = run.spec(task)
        pub = P.published_for(run, spec, dataset, protocol) if spec.per_class is not None else P.Published()
        if pub.reason:
            out.append(f'<p class="note">{esc(pub.reason)}</p>')
        if not pub.rows:
            continue
        out.append(f"<h3>{esc(dataset)} {esc(task)}, protocol <code>{esc(protocol)}</code></h3>")
        gaps = P.gaps(run.rows, spec, dataset, protocol, methods, pub.rows)
        if not gaps:
            out.append(f"<p>No measured method of this run is in the published {esc(dataset)} {esc(task)} "
                       f"results ({esc(', '.join(r.label for r in pub.rows))}; names match "
                       "case-insensitively, IR or infrared for ir and VI or visible for vis).</p>")
            continue
        if (task, dataset, protocol) in warnings:
            out.append('<p class="warning">The task networks of these measured rows learned nothing (see the '
                       "warning above the results): the differences below say nothing about the methods.</p>")
        header = ["method", "metric", "measured (%)", "published (%)", "measured − published (points)",
                  "published row"]
        out.append(table(header, [_gap_cells(spec, g) for g in gaps]))
        notes = sorted({f"{g.method}: {r.note}" for g in gaps for r in run.rows
                        if r.note and (r.method, r.task) == (g.method, task)})
        if notes:
            out.append(f"<p>Measured rows with a note (other weights than the papers'?): "
                       f"{esc('; '.join(notes))}.</p>")
        out.append("<p>The protocols differ, so these differences are not paired comparisons and enter no "
                   f"statistic:</p><ul>{_protocol_items(run, task, dataset, protocol, gaps)}</ul>")
    return "\n".join(out)


def _gap_cells(spec, g) -> tuple[str, ...]:
    metric = next((m.label for m in spec.metrics if m.name == g.row.metric), g.row.metric)
    delta = "–" if math.isnan(g.delta) else f"{g.delta:+.1f}"
    return (g.method, metric, _measured_text(g), f"{g.row.headline:.{_decimals(g.row)}f}", delta,
            f"{g.row.label} ({g.row.cite})")


def _protocol_items(run: RunData, task: str, dataset: str, protocol: str, gaps) -> str:
    """List items: the measured protocol, then each published table the gaps come from."""
    split = split_label(run, [(task, dataset, protocol)])
    seeds = len({c.get("seed") for c in run.group_cells(task, dataset, protocol)})
    items = [f"<li><b>measured</b>: protocol <code>{esc(protocol)}</code> (its fields under Protocols), "
             + (f"mean ± sd over {seeds} seeds" if seeds > 1 else "one seed")
             + (f", test split {esc(split)}" if split else "") + "</li>"]
    for tid in dict.fromkeys(g.row.table_id for g in gaps):
        r = next(g.row for g in gaps if g.row.table_id == tid)
        items.append(f"<li><b>{esc(r.cite)}</b>: {esc(' '.join(r.protocol.split()))} Network: "
                     f"{esc(r.network)}. Metric: {esc(r.definition)}. Source: {esc(r.source)}; "
                     f"{esc(' '.join(r.table.split()))} (<code>{esc(r.url)}</code>)"
                     + ("" if r.verified else "; not re-read from the paper") + ".</li>")
    return "".join(items)


def _measured_text(g) -> str:
    s = g.measured
    if s is None or s.mean != s.mean:
        return "–"
    text = f"{100 * s.mean:.1f}"
    if s.n > 1:
        text += f" ± {100 * s.std:.1f} ({s.n} seeds)"
    return text


def _decimals(row) -> int:
    """Decimals of a published value as its source prints them (at least 1)."""
    text = f"{row.headline:.4f}".rstrip("0")
    return max(1, len(text.split(".")[1]))


# ------------------------------------------------------------------------------------------ sections
def figure_html(fig) -> str:
    """The figure's PNG inline, shown at about 120 px per inch (its pixels are 200 per inch)."""
    png = Path(fig.png).read_bytes()
    width = int.from_bytes(png[16:20], "big") * 120 // 200  # IHDR width
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="fig-{esc(fig.name)}"><img src="data:image/png;base64,{data}" width="{width}" '
            f'alt="{esc(fig.title)}">'
            f"<figcaption><b>{esc(fig.title)}.</b> {esc(fig.caption)} "
            f"(PDF: <code>{esc(Path(fig.pdf).name)}</code> in the run's <code>figures/</code>)</figcaption>"
            "</figure>")


def summary_html(run: RunData, prov: dict | None, config: dict) -> str:
    cells = run.cells
    tasks = run.tasks
    seeds = sorted({c["seed"] for c in cells if c.get("seed") is not None})
    dataset = read_json(run.path / "dataset.json") or {}
    lines = [
        ("run directory", str(run.path.resolve())),
        ("run name", str(config.get("name", "–"))),
        ("dataset", (f"{dataset.get('card', '–')} (test split {dataset.get('test_split', '–')!r}, root "
                     f"{dataset.get('root', '–')})")),
        ("methods", ", ".join(run.method_order) or "–"),
        ("tasks", ", ".join(tasks) or "–"),
        ("seeds", ", ".join(map(str, seeds)) or "–"),
        ("finished cells", str(len(cells))),
        ("failed cells", str(len(run.failed))),
        ("run started", (prov or {}).get("created", "–")),
        ("report written", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
    ]
    out = [warnings_html(run), table(None, lines)]
    notes: dict[str, set[str]] = {}
    for c in cells:
        if c.get("note"):
            notes.setdefault(c["method"], set()).add(c["note"])
    for r in run.rows:
        if r.note:
            notes.setdefault(r.method, set()).add(r.note)
    if notes:
        items = "".join(f"<li><b>{esc(m)}</b>: {esc('; '.join(sorted(notes[m])))}</li>"
                        for m in run.ordered(notes))
        out.append(f'<div class="note"><p>Notes on methods:</p><ul>{items}</ul></div>')
    if run.failed:
        items = "".join(f"<li><b>{esc(f.method)}</b>, {esc(f.task)}, protocol <code>{esc(f.protocol)}</code>"
                        + ("" if f.seed is None else f", seed {esc(f.seed)}")
                        + f": {esc(f.error or 'no error recorded')} "
                        f"(<code>cells/{esc(f.id)}/error.txt</code>)</li>"
                        for f in run.failed)
        out.append(f'<div class="note" id="failed-cells"><p>Failed cells (not in the tables and figures; '
                   f"re-run the command with --resume to compute them again):</p><ul>{items}</ul></div>")
    return "\n".join(out)


def joint_html(run: RunData) -> str:
    """The "Joint training vs fusion loss alone" section of a ``taskeval joint`` experiment, from
    ``RUN/stats/joint.json`` (:func:`taskeval.joint_experiment.compare`): per task and joint arm, the paired
    bootstrap of (joint - fusion-only) per seed with its interval, mean ± sd over seeds, the classes that
    carry it and the fusion updates of each arm; "" for any other run."""
    saved = read_json(run.path / "stats" / "joint.json")
    records = saved.get("records") if isinstance(saved, dict) else None
    if not records:
        return ""
    out = []
    for r in records:
        scale, unit = (100.0, " pp") if r.get("percent") else (1.0, "")
        conf = f"{100 * r['confidence']:g}%"
        out.append(f"<h3>{esc(r['task'])}: {esc(r['method'])} − {esc(r['reference'])}</h3>")
        body = [(str(p["seed"]), f"{scale * p['estimate']:+.1f}{unit}",
                 f"[{scale * p['low']:+.1f}, {scale * p['high']:+.1f}]",
                 "–" if p.get("p_value") is None else f"{p['p_value']:.3f}") for p in r["per_seed"]]
        sd = "" if r.get("sd") is None else f" ± {scale * r['sd']:.1f}"
        body.append(("mean ± sd", f"{scale * r['mean']:+.1f}{sd}{unit}", "", ""))
        out.append(table(["seed", f"Δ{r['metric']}", f"{conf} interval (paired bootstrap)", "p"], body))
        classes = ", ".join(f"{c['class']} {scale * c['mean']:+.1f}"
                            + ("" if c.get("sd") is None else f" ± {scale * c['sd']:.1f}")
                            for c in r.get("per_class", [])[:5])
        better = "yes" if r.get("every_seed_better") else "no"
        out.append(f'<p class="caption">Paired bootstrap over the {r["n_images"]} test images '
                   f"({r['n_boot']} resamplings), task network retrained per fusion network and seed under one "
                   f"protocol. Better with {conf} confidence on every seed: {better}."
                   + (f" Per class (mean ± sd over seeds): {esc(classes)}." if classes else "") + "</p>")
    updates = saved.get("fusion_updates") or {}
    if updates:
        items = "".join(f"<li>joint-{esc(t)}: {u['joint']['updates']} updates / {u['joint']['images']} images; "
                        f"fusion-only: {u['fusion-only']['updates']} / {u['fusion-only']['images']}</li>"
                        for t, u in updates.items())
        out.append(f'<div class="note"><p>Fusion-network updates / training images per arm:</p><ul>{items}'
                   "</ul></div>")
    return "\n".join(out)


def protocols_html(run: RunData) -> str:
    out = []
    protocols = sorted({(c["task"], c["protocol"]) for c in run.cells if c["protocol"] != NO_PROTOCOL})
    recorded = read_json(run.path / "protocols.json") or {}
    for task, pid in protocols:
        out.append(f"<h3>{esc(task)}: <code>{esc(pid)}</code></h3>")
        if pid.startswith("fixed:"):
            out.append("<p>A fixed task network (not retrained per method) scored on every method's fused "
                       "test images: a screening protocol, not the protocol of the papers.</p>")
        if pid in recorded:
            out.append(table(["field", "value"], [(k, json.dumps(v)) for k, v in recorded[pid].items()]))
        elif not pid.startswith("fixed:"):
            out.append("<p>The resolved protocol fields are not recorded in this run directory "
                       "(<code>protocols.json</code>); its id hashes them, and the configuration below names "
                       "the preset and overrides.</p>")
    for task in run.tasks:
        out.append(task_definitions_html(run, task))
    text = module_docstring("taskeval.stats")
    if text:
        out.append(f"<h3>Statistics</h3><div class=\"doc\">{doc_html(text)}</div>")
    return "\n".join(out)


def task_definitions_html(run: RunData, task: str) -> str:
    """A task's metrics as its spec defines them, then the docstrings of the modules that define the task
    where it is registered in this process: its module, the modules that docstring refers to
    (``:mod:`...```) and its protocol's module."""
    spec = run.spec(task)
    out = [f"<h3>Task {esc(task)}</h3>"]
    if spec.caption:
        out.append(f"<p>{esc(spec.caption)}</p>")
    out.append(table(["metric", "column", "better", "unit", "definition"], [
        (m.name, m.label, "higher" if m.higher_is_better else "lower", "% (stored as a fraction)" if m.percent
         else "as is", m.definition or "–") for m in spec.metrics]))
    for module in definition_modules(task):
        text = module_docstring(module)
        if text:
            out.append(f"<h4><code>{esc(module)}</code></h4><div class=\"doc\">{doc_html(text)}</div>")
    return "\n".join(out)


def definition_modules(task: str) -> list[str]:
    """Modules documenting ``task`` (read from source, never imported here: torchmetrics takes seconds):
    the task's module, those its docstring names with ``:mod:`` and the module of its default protocol;
    empty when the task is not registered in this process."""
    from taskeval.tasks import get_task

    try:
        adapter = get_task(task)
    except RegistryError:
        return []
    first = type(adapter).__module__
    modules = [first] + re.findall(r":mod:`~?([\w.]+)`", module_docstring(first) or "")
    try:
        protocol = adapter.load_protocol(None)
    except (TaskevalError, NotImplementedError, ImportError, OSError, ValueError):  # documentation only
        protocol = None
    if protocol is not None:
        modules.append(type(protocol).__module__)
    return list(dict.fromkeys(modules))


def provenance_html(run: RunData, config_text: str) -> str:
    out = []
    records = [("provenance.json", read_json(run.path / "provenance.json"))]
    records += [(p.name, read_json(p)) for p in sorted(run.path.glob("provenance.resume*.json"))]
    records = [(n, r) for n, r in records if isinstance(r, dict)]
    if not records:
        out.append("<p>No provenance record (<code>provenance.json</code>) in the run directory.</p>")
    commits = {json.dumps(r.get("git", {}), sort_keys=True) for _, r in records}
    if len(commits) > 1:
        out.append('<p class="note">The run was resumed with different code versions (git commits differ '
                   "between the records below).</p>")
    for name, rec in records:
        git = rec.get("git") or {}
        git_text = "not installed from git"
        if git:
            git_text = str(git.get("commit", "?")) + (" (uncommitted changes)" if git.get("dirty") else "")
        lines = [("record", name), ("created", rec.get("created", "–")),
                 ("command", " ".join(map(str, rec.get("command") or []))), ("git commit", git_text),
                 ("seeds", json.dumps(rec.get("seeds")))]
        lines += [(f"hardware: {k}", json.dumps(v) if not isinstance(v, str) else v)
                  for k, v in (rec.get("hardware") or {}).items()]
        lines += [(f"version: {k}", v) for k, v in (rec.get("versions") or {}).items()]
        hashes = rec.get("weight_hashes") or (rec.get("config") or {}).get("weight_hashes") or {}
        lines += [(f"weights: {k}", v) for k, v in hashes.items()]
        out.append(table(None, lines))
    if config_text:
        out.append(f"<h3>Configuration (<code>config.yaml</code>)</h3><pre>{esc(config_text)}</pre>")
    cells = [(c["method"], c["task"], c["protocol"], "" if c.get("seed") is None else str(c["seed"]),
              f"{c['seconds']:.1f}" if isinstance(c.get("seconds"), (int, float)) else "–", "done", c["id"])
             for c in run.cells]
    cells += [(f.method, f.task, f.protocol, "" if f.seed is None else str(f.seed), "–", "failed", f.id)
              for f in run.failed]
    cells.sort(key=lambda c: (c[1], c[0], c[3], c[6]))
    header = ["method", "task", "protocol", "seed", "seconds", "status", "cell"]
    out.append("<h3>Cells</h3>" + table(header, cells))
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- page
def render_html(run_dir: str | Path, figures: Sequence[FigureFile] | None = None, compare: bool = True,
                published: bool = True, **figure_options) -> str:
    """The report page as a string.

    Args:
        run_dir: a run directory (any command's: detect, segment, benchmark, joint).
        figures: :class:`taskeval.reporting.figures.FigureFile` list already drawn; None draws them now with
            :func:`taskeval.reporting.figures.render_all` (``figure_options`` are passed on) into
            ``RUN/figures``.
        compare: compute the paired comparisons that are missing or out of date first
            (:func:`taskeval.reporting.comparisons.update_comparisons`); False shows those saved.
        published: show the published results of the dataset (another protocol) beside the measured ones
            and the "Measured vs published" section.

    Raises:
        DataError: what :meth:`RunData.open` raises (not a run directory, a run in the layout before the
            results store, a task whose spec is unknown).
    """
    run = RunData.open(run_dir)
    if compare:
        update_comparisons(run)
    if figures is None:
        figures = render_all(run.path, **figure_options)
    conf = latest_config_path(run.path)
    config_text = conf.read_text() if conf.is_file() else ""
    config = yaml.safe_load(config_text) if config_text else {}
    config = config if isinstance(config, dict) else {}
    prov = read_json(run.path / "provenance.json")
    title = f"taskeval report: {config.get('name', run.path.name)}"
    versus = published_html(run) if published and run.rows else ""
    joint = joint_html(run)
    sections = [
        ("summary", "Summary", summary_html(run, prov, config)),
        ("results", "Results", tables_html(run, published) if run.rows else "<p>No finished cells yet.</p>"),
        *([("joint", "Joint training vs fusion loss alone", joint)] if joint else []),
        *([("published", "Measured vs published", versus)] if versus else []),
        ("figures", "Figures", "\n".join(figure_html(f) for f in figures) or "<p>No figures.</p>"),
        ("definitions", "Protocols and metric definitions", protocols_html(run)),
        ("provenance", "Provenance", provenance_html(run, config_text)),
    ]
    nav = "".join(f'<li><a href="#{sid}">{esc(name)}</a></li>' for sid, name, _ in sections)
    body = "\n".join(f'<section id="{sid}"><h2>{esc(name)}</h2>\n{content}\n</section>'
                     for sid, name, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n<h1>{esc(title)}</h1>"
            f"<nav><ul>{nav}</ul></nav>\n{body}\n</body></html>\n")


def render_report(run_dir: str | Path, out: str | Path | None = None, overwrite: bool = False,
                  figures: Sequence[FigureFile] | None = None, compare: bool = True, published: bool = True,
                  **figure_options) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN/report.html``) and return its path.

    Raises:
        TaskevalError: ``out`` exists and ``overwrite`` is False.
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    if out.exists() and not overwrite:
        raise TaskevalError(f"{out} exists; pass --overwrite (overwrite=True) to replace it, or choose "
                            "another --out (reports are never replaced silently)")
    page = render_html(run_dir, figures, compare, published, **figure_options)
    atomic_write_text(out, page)
    return out
