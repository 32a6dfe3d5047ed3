"""Published per-method results (``data/published/results.yaml``): a validating reader.

The file holds tables transcribed from papers: per method the per-class values and the headline metric
(AP@0.5 / mAP@.5 for detection, IoU / mIoU for segmentation, in %), with the paper, venue, table and
repository they come from and the detector/segmenter and protocol behind them. A table names its
columns as the paper prints them; ``class_map`` maps those that differ from the dataset card's class
names (``Motor -> Motorcycle``), so that every published value lands on a card class explicitly or
the reader stops with an error naming the table and the names that do not fit.

Published numbers are another protocol (their own split, detector settings and unknown seeds): callers
show them beside measured numbers and never mix them into statistics.

Example::

    card = load_card("m3fd")
    for row in published_rows("m3fd", "detection", card.det_classes):
        print(row.label, row.headline, row.per_class["Motorcycle"], row.source)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from taskeval.config import read_yaml_mapping
from taskeval.errors import ConfigError
from taskeval.registry import suggest

TASKS = ("detection", "segmentation")
_SOURCE_KEYS = {"paper", "short", "venue", "url", "repository", "arxiv"}
_TABLE_KEYS = {"id", "source", "table", "dataset", "task", "metric", "definition", "network", "protocol",
               "columns", "class_map", "decimals", "verified", "note", "rows"}
_ROW_KEYS = {"method", "label", "values", "headline"}


@dataclass(frozen=True)
class PublishedRow:
    """One method's published result on one dataset and task.

    Attributes:
        dataset, task: card name (``m3fd``) and task (``detection`` / ``segmentation``).
        method: taskeval's name of the method (``ir``, ``vis``, ``tardal``, ``cddfuse``...).
        label: the method's name as the paper prints it.
        metric: headline metric (``mAP50``, ``mIoU``); ``definition`` says over which classes.
        headline: the headline value in %.
        per_class: card class name -> value in %, in the card's class order; empty when the table's
            per-class values were not transcribed.
        classes: the card classes the headline averages over.
        network, protocol: the detector/segmenter and the paper's protocol.
        source: citation (authors: title, venue); table: which table; url, repository: where.
        verified: whether the value was re-read from the paper itself; note: what was checked.
        table_id: the id of the table in the data file.
        cite: a short citation for table rows, ``"CDDFuse paper, CVPR 2023"`` (the source's ``short`` name,
            else its key, and the venue up to its first comma).
    """

    dataset: str
    task: str
    method: str
    label: str
    metric: str
    definition: str
    headline: float
    per_class: dict
    classes: tuple
    network: str
    protocol: str
    source: str
    table: str
    url: str
    repository: str
    verified: bool
    note: str
    table_id: str
    cite: str = ""


def default_path() -> Path:
    return Path(str(resources.files("taskeval_data"))) / "published" / "results.yaml"


def _require(mapping: dict, keys, where: str) -> None:
    missing = sorted(k for k in keys if k not in mapping)
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")


def _no_unknown(mapping: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}{suggest(unknown[0], allowed)}")


def _percent(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 100:
        raise ConfigError(f"{where}: expected a number in 0..100 (%), got {value!r}")
    return float(value)


def _check_table(t: dict, sources: dict, where: str) -> None:
    _no_unknown(t, _TABLE_KEYS, where)
    _require(t, _TABLE_KEYS - {"class_map", "note"}, where)
    if t["source"] not in sources:
        raise ConfigError(f"{where}: unknown source {t['source']!r}{suggest(str(t['source']), sources)}; "
                          f"sources: {', '.join(sources)}")
    if t["task"] not in TASKS:
        raise ConfigError(f"{where}: task must be one of {list(TASKS)}, got {t['task']!r}")
    cols = t["columns"]
    if not isinstance(cols, list) or not cols or len(set(cols)) != len(cols) or \
            not all(isinstance(c, str) for c in cols):
        raise ConfigError(f"{where}: columns must be a non-empty list of distinct names, got {cols!r}")
    cmap = t.get("class_map") or {}
    stray = sorted(set(cmap) - set(cols))
    if stray:
        raise ConfigError(f"{where}: class_map names {stray} that are not columns {cols}")
    if not isinstance(t["decimals"], int) or not 0 <= t["decimals"] <= 4:
        raise ConfigError(f"{where}: decimals must be an integer 0..4, got {t['decimals']!r}")
    if not isinstance(t["verified"], bool):
        raise ConfigError(f"{where}: verified must be true or false, got {t['verified']!r}")
    if not isinstance(t["rows"], list) or not t["rows"]:
        raise ConfigError(f"{where}: rows must be a non-empty list")
    # rounding: each printed value is off by up to half a unit, so the mean of the printed per-class
    # values and the printed headline differ by up to one unit of the last decimal
    tol = 10.0 ** -t["decimals"] + 1e-9
    seen = set()
    for k, row in enumerate(t["rows"]):
        rwhere = f"{where}: row {k + 1}"
        if not isinstance(row, dict):
            raise ConfigError(f"{rwhere}: expected a mapping, got {row!r}")
        _no_unknown(row, _ROW_KEYS, rwhere)
        _require(row, ("method", "label", "headline"), rwhere)
        rwhere = f"{where}: method {row['method']!r}"
        if row["method"] in seen:
            raise ConfigError(f"{rwhere}: listed twice")
        seen.add(row["method"])
        head = _percent(row["headline"], f"{rwhere}: headline")
        if "values" in row:
            vals = row["values"]
            if not isinstance(vals, list) or len(vals) != len(cols):
                raise ConfigError(f"{rwhere}: {len(vals) if isinstance(vals, list) else vals!r} values for "
                                  f"{len(cols)} columns {cols}")
            vals = [_percent(v, f"{rwhere}: value of {c}") for v, c in zip(vals, cols)]
            mean = sum(vals) / len(vals)
            if abs(mean - head) > tol:
                raise ConfigError(f"{rwhere}: headline {head} is not the mean of its per-class values "
                                  f"({mean:.{t['decimals'] + 2}f}); a transcription error?")


def load_published(path: str | Path | None = None) -> tuple[dict, list[dict]]:
    """Read and validate the whole file: ``(sources, tables)`` as plain mappings.

    Raises:
        ConfigError: naming the file, table and row of any missing or unknown key, duplicate id or method,
            value outside 0..100 %, value count that differs from the columns, or headline that is not
            the mean of its per-class values.
    """
    path = Path(path) if path is not None else default_path()
    raw = read_yaml_mapping(path, "published results")
    if raw.get("version") != 1:
        raise ConfigError(f"{path}: version must be 1, got {raw.get('version')!r}")
    _no_unknown(raw, {"version", "sources", "tables"}, str(path))
    sources, tables = raw.get("sources") or {}, raw.get("tables") or []
    if not isinstance(sources, dict) or not isinstance(tables, list):
        raise ConfigError(f"{path}: 'sources' must be a mapping and 'tables' a list")
    for name, src in sources.items():
        where = f"{path}: source {name!r}"
        if not isinstance(src, dict):
            raise ConfigError(f"{where}: expected a mapping")
        _no_unknown(src, _SOURCE_KEYS, where)
        _require(src, ("paper", "venue", "url", "repository"), where)
    ids = set()
    for k, t in enumerate(tables):
        if not isinstance(t, dict):
            raise ConfigError(f"{path}: table {k + 1}: expected a mapping")
        where = f"{path}: table {t.get('id', k + 1)!r}"
        _check_table(t, sources, where)
        if t["id"] in ids:
            raise ConfigError(f"{where}: id used twice")
        ids.add(t["id"])
    return sources, tables


def published_rows(dataset: str, task: str, classes, path: str | Path | None = None) -> list[PublishedRow]:
    """The published rows of ``dataset`` and ``task``, with per-class values under the card's class names.

    Args:
        dataset: card name (``"m3fd"``, ``"msrs"``...).
        task: ``"detection"`` or ``"segmentation"``.
        classes: the card's class list (``card.det_classes`` / ``card.seg_classes``), in its order.
        path: the data file (default: the one installed with taskeval).

    Returns:
        One :class:`PublishedRow` per method and table, in file order; ``[]`` if nothing is published.

    Raises:
        ConfigError: the file is invalid (see :func:`load_published`), or a table's classes do not match
            ``classes`` (a column that maps to no card class, or card classes the table lacks).
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {list(TASKS)}, got {task!r}")
    path = Path(path) if path is not None else default_path()
    sources, tables = load_published(path)
    classes = tuple(classes)
    out = []
    for t in tables:
        if t["dataset"] != dataset or t["task"] != task:
            continue
        where = f"{path}: table {t['id']!r}"
        cmap = t.get("class_map") or {}
        mapped = [cmap.get(c, c) for c in t["columns"]]
        unknown = [(c, m) for c, m in zip(t["columns"], mapped) if m not in classes]
        if unknown:
            col, name = unknown[0]
            raise ConfigError(f"{where}: column(s) {[c for c, _ in unknown]} name no class of the {dataset} "
                              f"card ({', '.join(classes)}){suggest(name, classes)}; map each explicitly in "
                              f"the table's class_map (e.g. {col}: <card class>)")
        if len(set(mapped)) != len(mapped):
            raise ConfigError(f"{where}: class_map sends two columns to one class: {mapped}")
        lacking = [c for c in classes if c not in mapped]
        if lacking:
            raise ConfigError(f"{where}: the table has no column for the {dataset} card's class(es) {lacking}: "
                              f"its class list differs from the card's, so its numbers are not comparable")
        src = sources[t["source"]]
        for row in t["rows"]:
            per_class = {}
            if "values" in row:
                by_name = dict(zip(mapped, (float(v) for v in row["values"])))
                per_class = {c: by_name[c] for c in classes}
            out.append(PublishedRow(
                dataset=dataset, task=task, method=str(row["method"]), label=str(row["label"]),
                metric=str(t["metric"]), definition=str(t["definition"]), headline=float(row["headline"]),
                per_class=per_class, classes=classes, network=str(t["network"]), protocol=str(t["protocol"]),
                source=f"{' '.join(str(src['paper']).split())}, {src['venue']}", table=str(t["table"]),
                url=str(src["url"]), repository=str(src["repository"]), verified=t["verified"],
                note=str(t.get("note", "")), table_id=str(t["id"]),
                cite=f"{src.get('short', t['source'])} paper, {str(src['venue']).split(',')[0].strip()}"))
    return out
