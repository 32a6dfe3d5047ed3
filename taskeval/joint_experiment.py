"""A joint-training experiment (``taskeval joint --config NAME``): does semantic-guided training pay off?

Per seed s, every fusion network starts from the same initialisation (``torch.manual_seed(s)`` right before
it is built, in :class:`taskeval.joint.JointTrainer` and :func:`taskeval.fusion_train.train_fusion` alike):

* ``<fusion>@fusion-only``: trained with the unsupervised fusion loss alone (the baseline);
* ``<fusion>@joint-seg`` / ``<fusion>@joint-det``: trained with fusion loss + task loss, one arm per task,
  each with its schedule (SeAFusion's alternating rounds, TarDAL's end-to-end training).

The baseline makes as many fusion-network updates on as many training images as every arm
(:func:`fusion_updates`; a config whose arms differ there is refused), so a difference comes from the task
gradient, not from a longer training. Then every fusion network, and the reference rows (``ir``, ``vis``, an
oracle folder ...), is evaluated through the runner: a task network retrained from scratch on its fused
images under one protocol, per seed; :func:`compare` sets each joint arm against the baseline, seed by seed,
with the paired bootstrap over test images (:func:`taskeval.stats.compare_to_reference`), and lists the
classes that carry the change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from taskeval.benchmark import BenchmarkConfig, DataEntry, MethodEntry, config_from_mapping
from taskeval.config import build, deep_merge, parse_overrides, read_yaml_mapping, to_dict
from taskeval.errors import ConfigError, TaskevalError
from taskeval.joint import JointConfig, fusion_only_config, joint_name

TASK_NAMES = {"seg": "segmentation", "det": "detection"}


def baseline_name(fusion: str) -> str:
    """The derived method name of the fusion-loss-only baseline, e.g. ``seafusion@fusion-only``."""
    return f"{fusion.split('@')[0]}@fusion-only"


@dataclass(frozen=True)
class JointExperiment:
    """What ``taskeval joint`` trains and evaluates.

    Attributes:
        name: the run folder is ``runs/joint-<name>`` unless ``--out`` is given.
        fusion: a trainable fusion method.
        weights: initial fusion weights (None: each seed's random initialisation, the same in every arm).
        data: the dataset (``card: synth`` with ``synth: {variant: lost-cue}`` is generated into the run).
        seeds: training seeds (fusion networks, joint task network, evaluation networks).
        seg, det: the joint arms (None: no such arm); their ``seed`` is replaced by each seed.
        baseline: train and evaluate the fusion-loss-only baseline.
        references: further evaluated methods, e.g. ``ir``, ``vis``, ``{name: oracle, folder:
            "{root}/{split}/oracle"}`` (``{root}``: the dataset's root), with their own ``seeds``.
        protocols, options: evaluation protocol per task name (default ``quick``) and field overrides.
        n_boot: bootstrap replicates of the paired comparisons.
        device: where everything runs (``auto``: the GPU where there is one).
        jobs: on a CPU, run the fusion trainings and the evaluation cells in this many processes side by side,
            each with ``threads / jobs`` threads (``--jobs``; never part of a result).
    """

    name: str = "joint"
    fusion: str = "seafusion"
    weights: str | None = None
    data: DataEntry = field(default_factory=DataEntry)
    seeds: tuple[int, ...] = (0,)
    seg: JointConfig | None = None
    det: JointConfig | None = None
    baseline: bool = True
    references: tuple[MethodEntry, ...] = ()
    protocols: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    n_boot: int = 1000
    device: str = "auto"
    jobs: int = 1

    def arms(self) -> dict[str, JointConfig]:
        """task short name -> its joint training settings (seg first)."""
        return {t: c for t, c in (("seg", self.seg), ("det", self.det)) if c is not None}


def fusion_updates(cfg: JointConfig, n: int) -> dict:
    """Fusion-network optimiser steps and training images of a joint arm and of its baseline, on ``n`` pairs.

    Alternating: ``rounds x fusion_epochs`` epochs of fusion updates (the task stages do not touch the fusion
    network); end-to-end: ``epochs`` (warm-up epochs included: the fusion network learns from the fusion loss
    alone there). The baseline trains ``fusion_only_config(cfg).epochs`` epochs with the same batch size.
    """
    n = min(n, cfg.max_pairs) if cfg.max_pairs > 0 else n
    batches = math.ceil(n / cfg.batch)
    epochs = cfg.rounds * cfg.fusion_epochs if cfg.schedule == "alternating" else cfg.epochs
    base = fusion_only_config(cfg)
    base_batches = math.ceil((min(n, base.max_pairs) if base.max_pairs > 0 else n) / base.batch)
    return {"joint": {"updates": epochs * batches, "images": epochs * n},
            "fusion-only": {"updates": base.epochs * base_batches, "images": base.epochs * n}}


def _check(exp: JointExperiment, source: str) -> JointExperiment:
    from fusion_models import get_fusion_spec

    if not exp.arms():
        raise ConfigError(f"{source}: no joint arm; give seg: {{...}} and/or det: {{...}}")
    if not get_fusion_spec(exp.fusion).trainable:
        raise ConfigError(f"{source}: {exp.fusion!r} has no trainable parameters; joint training needs a learned "
                          "fusion")
    if not exp.seeds or len(set(exp.seeds)) != len(exp.seeds):
        raise ConfigError(f"{source}: seeds must be distinct and at least one, got {list(exp.seeds)}")
    if exp.baseline and len(exp.arms()) > 1:
        # one baseline for every arm: each arm must make the baseline's number of fusion updates
        baselines = {t: to_dict(fusion_only_config(c)) for t, c in exp.arms().items()}
        (t0, b0), *rest = baselines.items()
        for t, b in rest:
            diff = sorted(k for k in b0 if b0[k] != b[k] and k != "seed")
            if diff:
                raise ConfigError(
                    f"{source}: the arms {t0} and {t} would need different fusion-only baselines ("
                    + ", ".join(f"{k}: {b0[k]} vs {b[k]}" for k in diff) + "); give both arms the same number "
                    "of fusion epochs (alternating rounds x fusion_epochs = end2end epochs), batch, crop, "
                    "lr_fusion, fusion_loss and max_pairs, so that one baseline matches both")
    for ref in exp.references:
        if ref.name in (baseline_name(exp.fusion), *(joint_name(exp.fusion, t) for t in exp.arms())):
            raise ConfigError(f"{source}: reference {ref.name!r} has the name of a trained method")
    return exp


def experiment_from_mapping(raw: dict, source: str = "config") -> JointExperiment:
    """A checked :class:`JointExperiment` from a (YAML) mapping."""
    raw = dict(raw)
    refs = raw.get("references")
    if isinstance(refs, str):  # references=ir,vis on the command line
        refs = [r.strip() for r in refs.split(",") if r.strip()]
    if refs is not None:
        raw["references"] = [r if isinstance(r, dict) else {"name": str(r)} for r in refs]
    return _check(build(JointExperiment, raw), source)


def builtin_experiments() -> dict[str, Path]:
    folder = Path(__file__).parent / "benchmarks" / "joint"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def is_experiment(source: str | Path) -> bool:
    """Whether ``--config`` names an experiment (a built-in one, or a YAML with a ``seg:``/``det:`` arm),
    rather than a file of :class:`JointConfig` fields."""
    if str(source) in builtin_experiments():
        return True
    path = Path(source)
    return path.is_file() and bool({"seg", "det"} & set(read_yaml_mapping(path, "joint config")))


def load_experiment(source: str | Path, overrides: list[str] | None = None) -> JointExperiment:
    """A built-in experiment (``joint-synth``) or a YAML path, plus ``key=value`` overrides
    (``seeds=0,1``, ``seg.lam=2``, ``data.synth.variant=default``)."""
    path = builtin_experiments().get(str(source), Path(source))
    if not path.is_file():
        from taskeval.registry import suggest

        raise ConfigError(f"joint experiment not found: {source}{suggest(str(source), builtin_experiments())}; "
                          f"built-in: {', '.join(builtin_experiments())}")
    raw = read_yaml_mapping(path, "joint experiment")
    raw.setdefault("name", path.stem)
    return experiment_from_mapping(deep_merge(raw, parse_overrides(overrides or [])), str(path))


# ---------------------------------------------------------------------------------------------- training
def trainings(exp: JointExperiment) -> list[tuple[int, str]]:
    """Every fusion-network training of the experiment, ``(seed, arm)`` with arm ``seg``, ``det`` or
    ``fusion-only``, in the order one process runs them."""
    arms = [*exp.arms(), *(["fusion-only"] if exp.baseline else [])]
    return [(seed, arm) for seed in exp.seeds for arm in arms]


def train_one(exp: JointExperiment, seed: int, arm: str, train_ds, run_path: Path, device: str,
              progress: bool = True) -> str:
    """Train (or resume) one fusion network: arm ``seg``/``det`` (joint) or ``fusion-only`` (the baseline of
    every arm), seed ``seed``; returns its weight file. Its folder (``joint-<arm>-s<seed>``,
    ``fusion-only-s<seed>``) is its own, so trainings may run in separate processes."""
    from taskeval.fusion_train import train_fusion
    from taskeval.joint import JointTrainer

    if arm == "fusion-only":
        scfg = replace(next(iter(exp.arms().values())), seed=seed)
        return str(train_fusion(exp.fusion, train_ds, run_path / f"fusion-only-s{seed}", fusion_only_config(scfg),
                                device=device, init_weights=exp.weights, progress=progress))
    scfg = replace(exp.arms()[arm], seed=seed)
    return str(JointTrainer(exp.fusion, arm, train_ds, run_path / f"joint-{arm}-s{seed}", scfg, device=device,
                            init_weights=exp.weights, progress=progress).train())


def _start_job(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def train_arms(exp: JointExperiment, train_ds, run_path: Path, device: str, progress: bool = True, jobs: int = 1,
               threads: int = 1) -> tuple[dict[int, str], dict[str, dict[int, str]]]:
    """Train (or resume) the baseline and every joint arm for every seed, in this process (``jobs=1``) or in
    ``jobs`` processes of ``threads`` CPU threads each (a training in a process of one thread gives the
    weights it gives here with one thread). A training that fails does not stop the others: they finish and
    are kept, then the first error is raised (running the command again resumes).

    Returns:
        (baseline: seed -> fusion weights, joint: task short name -> seed -> fusion weights).
    """
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm import tqdm

    todo = trainings(exp)
    done: dict[tuple[int, str], str] = {}
    if jobs <= 1:
        for seed, arm in todo:
            done[(seed, arm)] = train_one(exp, seed, arm, train_ds, run_path, device, progress)
    else:
        errors = []
        saved = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by each spawned process's OpenMP at start-up
        try:
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_start_job,
                                     initargs=(threads,)) as pool:
                futures = {pool.submit(train_one, exp, seed, arm, train_ds, run_path, device, False): (seed, arm)
                           for seed, arm in todo}
                bar = tqdm(total=len(todo), desc=f"fusion trainings ({jobs} jobs x {threads} thread"
                           f"{'s' if threads > 1 else ''})", unit="training", disable=not progress)
                for fut in as_completed(futures):
                    try:
                        done[futures[fut]] = fut.result()
                    except Exception as exc:  # noqa: BLE001 - the others finish first, then it is raised
                        errors.append((futures[fut], exc))
                    bar.update(1)
                bar.close()
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        if errors:
            (seed, arm), exc = min(errors, key=lambda e: todo.index(e[0]))
            if isinstance(exc, TaskevalError):
                raise TaskevalError(f"fusion training {arm}, seed {seed}: {exc} (the other trainings are kept; "
                                    "running the command again resumes)") from exc
            raise exc
    base = {seed: w for (seed, arm), w in done.items() if arm == "fusion-only"}
    joint = {t: {seed: done[(seed, t)] for seed in exp.seeds} for t in exp.arms()}
    return base, joint


def evaluation_config(exp: JointExperiment, data: DataEntry, base: dict[int, str],
                      joint: dict[str, dict[int, str]]) -> BenchmarkConfig:
    """The runner's configuration: references, baseline and joint methods x the arms' tasks x seeds."""
    root = str(data.root or "")
    methods = [{**to_dict(r), "folder": r.folder.replace("{root}", root) if r.folder else None}
               for r in exp.references]
    if base:
        methods.append({"name": baseline_name(exp.fusion), "seed_weights": base})
    methods += [{"name": joint_name(exp.fusion, t), "seed_weights": w} for t, w in joint.items()]
    tasks = [TASK_NAMES[t] for t in exp.arms()]
    return config_from_mapping({
        "name": f"joint-{exp.name}", "data": to_dict(data), "methods": methods, "tasks": tasks,
        "seeds": list(exp.seeds), "protocols": {t: exp.protocols.get(t, "quick") for t in tasks},
        "options": {t: dict(exp.options.get(t) or {}) for t in tasks}, "device": exp.device}, "joint")


# ------------------------------------------------------------------------------------------- comparison
def compare(run_path: Path, exp: JointExperiment, rows, spec_of) -> list[dict]:
    """Every joint arm against the baseline, on every task of the run: per seed the paired bootstrap over
    test images of (joint - fusion-only) of the task's headline metric with its 95% interval; over seeds the
    mean and sample standard deviation; per class the mean change over seeds (and its sd).

    Args:
        run_path: the run folder (finished cells).
        exp: the experiment.
        rows: the run's result rows.
        spec_of: task name -> its TaskSpec in this run.

    Returns:
        one record per (task, joint method), JSON-able.
    """
    from taskeval.stats import compare_to_reference

    base = baseline_name(exp.fusion)
    out = []
    for task in (TASK_NAMES[t] for t in exp.arms()):
        spec = spec_of(task)
        metric = spec.headline_metric
        joints = [joint_name(exp.fusion, t) for t in exp.arms()]
        comps = compare_to_reference(run_path, task, metric, reference=base, methods=joints, n_boot=exp.n_boot,
                                     spec=spec)
        for c in comps:
            per_class = _class_changes(rows, task, spec.per_class, c.method_a, base, [p.seed for p in c.per_seed])
            out.append({
                "task": task, "metric": metric, "method": c.method_a, "reference": base,
                "percent": spec.metric(metric).percent, "n_images": c.per_seed[0].n_images,
                "n_boot": int(c.per_seed[0].replicates.size), "confidence": c.per_seed[0].confidence,
                "per_seed": [{"seed": p.seed, "estimate": p.estimate, "low": p.low, "high": p.high,
                              "p_value": p.p_value} for p in c.per_seed],
                "mean": c.mean_estimate, "sd": None if math.isnan(c.seed_std) else c.seed_std,
                "pooled_low": c.low, "pooled_high": c.high,
                "higher_is_better": c.higher_is_better,
                "every_seed_better": all(p.low > 0 if c.higher_is_better else p.high < 0 for p in c.per_seed),
                "per_class": per_class})
    return out


def _class_changes(rows, task: str, metric: str | None, method: str, base: str, seeds) -> list[dict]:
    """Per class: mean and sd over seeds of (method - base) of the per-class metric, largest change first."""
    if metric is None:
        return []
    values = {(r.method, r.seed, r.cls): r.value for r in rows
              if r.task == task and r.metric == metric and r.cls and r.method in (method, base)}
    classes = sorted({c for _, _, c in values})
    out = []
    for cls in classes:
        d = [values[(method, s, cls)] - values[(base, s, cls)] for s in seeds
             if (method, s, cls) in values and (base, s, cls) in values
             and math.isfinite(values[(method, s, cls)]) and math.isfinite(values[(base, s, cls)])]
        if d:
            out.append({"class": cls, "mean": float(np.mean(d)),
                        "sd": float(np.std(d, ddof=1)) if len(d) > 1 else None, "per_seed": d})
    return sorted(out, key=lambda r: -abs(r["mean"]))


def comparison_lines(records: list[dict]) -> list[str]:
    """Plain-text lines of :func:`compare`'s records (percentage points for percent metrics)."""
    lines = []
    for r in records:
        scale = 100.0 if r["percent"] else 1.0
        unit = " pp" if r["percent"] else ""
        lines.append(f"{r['task']}: {r['method']} - {r['reference']}, Δ{r['metric']} per seed with its "
                     f"{100 * r['confidence']:g}% paired-bootstrap interval over the {r['n_images']} test images "
                     f"({r['n_boot']} resamplings):")
        for p in r["per_seed"]:
            lines.append(f"  seed {p['seed']}: {scale * p['estimate']:+.1f}{unit} [{scale * p['low']:+.1f}, "
                         f"{scale * p['high']:+.1f}]")
        sd = "n/a" if r["sd"] is None else f"{scale * r['sd']:.1f}"
        lines.append(f"  over {len(r['per_seed'])} seeds: {scale * r['mean']:+.1f} ± {sd}{unit} (mean ± sd); "
                     f"better with 95% confidence on every seed: {'yes' if r['every_seed_better'] else 'no'}")
        carried = [c for c in r["per_class"] if abs(c["mean"]) * scale >= 1.0][:4]
        if carried:
            lines.append("  classes that carry it: " + ", ".join(
                f"{c['class']} {scale * c['mean']:+.1f}" + ("" if c["sd"] is None else f" ± {scale * c['sd']:.1f}")
                for c in carried))
    return lines
