"""Where the main job's time goes: ``taskeval benchmark CONFIG`` under cProfile, timed in process CPU time.

    python bench/profile_main_job.py [--config quick] [--out runs/profile-quick] [--threads 1] [key=value ...]
    python bench/profile_main_job.py --stats runs/profile-quick/profile.pstats      # the table again

The benchmark runs in this process (``--jobs 1``: every cell here, none in local jobs) as the command would,
with the profiler's clock set to ``time.process_time``: on a machine shared with other jobs, CPU time keeps
the shares meaningful where wall-clock time does not. With ``--threads 1`` the CPU time is the work itself;
with more threads it also counts OpenMP's spinning. The profiler adds a fixed cost to every Python call,
so Python-heavy phases (ultralytics' data pipeline, its per-batch bookkeeping) read a little high.

Prints one line per phase: inclusive CPU seconds, calls and share of the whole run; indented phases are
parts of the phase above them. Then the most expensive quality metrics.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path


def _phases() -> list[tuple[int, str, object]]:
    """(indent, label, function): the functions whose inclusive time is a phase of a cell."""
    import ultralytics.data.base as ubase
    import ultralytics.data.dataset as udataset
    import ultralytics.engine.model as umodel
    import ultralytics.engine.trainer as utrainer
    import ultralytics.engine.validator as uvalidator
    import ultralytics.models.yolo.detect.train as udettrain
    import ultralytics.nn.tasks as utasks
    import ultralytics.utils.torch_utils as utorch

    import segmenters.train as segtrain
    import segmenters.transforms as segtf
    import taskeval.metrics.detection as detmetrics
    from detectors import yolo, yolo_data
    from segmenters import deeplab
    from taskeval import fusedset, fusion_train, quality_eval, runner
    from taskeval.data import synth
    from taskeval.reporting import finalize
    from taskeval.tasks.detection import DetectionTask
    from taskeval.tasks.quality import QualityTask
    from taskeval.tasks.segmentation import SegmentationTask

    return [
        (0, "dataset generation", synth.generate),
        (0, "plan (read and check labels)", runner.Plan.__init__),
        (0, "fusion training (seafusion)", fusion_train.train_fusion),
        (0, "fusion of both splits", fusedset.fuse_split),
        (0, "cell inputs (content fingerprints)", runner.Runner.inputs),
        (0, "detection: train", DetectionTask.train),
        (1, "YOLO folder (links, labels)", yolo_data.write_yolo_dataset),
        (1, "YOLO(model.yaml)", umodel.Model.__init__),
        (1, "Model.train", umodel.Model.train),
        (2, "trainer setup (model, dataloaders, label caches)", utrainer.BaseTrainer._setup_train),
        (3, "dataset build + label cache", udettrain.DetectionTrainer.build_dataset),
        (3, "label cache scan", udataset.YOLODataset.cache_labels),
        (2, "batches: load + augment", ubase.BaseDataset.__getitem__),
        (2, "training forward + loss", utasks.BaseModel.loss),
        (2, "preprocess batch", udettrain.DetectionTrainer.preprocess_batch),
        (2, "optimizer step (+ EMA)", utrainer.BaseTrainer.optimizer_step),
        (2, "EMA update", utorch.ModelEMA.update),
        (2, "validation (last epoch + final_eval)", uvalidator.BaseValidator.__call__),
        (2, "final_eval (strip + validate best.pt)", utrainer.BaseTrainer.final_eval),
        (2, "save_model (every epoch)", utrainer.BaseTrainer.save_model),
        (2, "strip_optimizer", utorch.strip_optimizer),
        (0, "detection: evaluate", DetectionTask.evaluate),
        (1, "predict", yolo.predict),
        (1, "COCO scoring", detmetrics.score_predictions),
        (0, "segmentation: train", SegmentationTask.train),
        (1, "fit", segtrain.fit),
        (2, "batches: read + augment", segtrain.TrainPairs.__getitem__),
        (3, "read fused image + mask", segtrain.TrainPairs.load),
        (3, "scale/crop/flip/normalise", segtf.random_scale_crop_flip),
        (2, "checkpoint per epoch", segtrain._atomic_save),
        (0, "segmentation: evaluate", SegmentationTask.evaluate),
        (1, "predict", deeplab.predict),
        (1, "label PNGs", deeplab.write_label_pngs),
        (0, "quality: evaluate", QualityTask.evaluate),
        (1, "score_fused_set", quality_eval.score_fused_set),
        (0, "report (tables, figures, statistics, HTML)", finalize.finalize),
    ]


def _key(fn) -> tuple[str, int, str]:
    code = getattr(fn, "__code__", None)
    if code is None:
        raise TypeError(f"{fn!r} has no code object")
    return (code.co_filename, code.co_firstlineno, code.co_name)


def _torch_backward(stats) -> tuple[float, int]:
    """CPU seconds inside ``Tensor.backward`` / ``torch.autograd.backward`` (all callers)."""
    import torch

    return _cum(stats, _key(torch.autograd.backward))


def _cum(stats, key) -> tuple[float, int]:
    entry = stats.stats.get(key)
    if entry is None:
        return 0.0, 0
    return entry[3], entry[1]  # (cumulative time, calls) of pstats' (cc, nc, tt, ct, callers)


def report(stats_path: Path) -> None:
    stats = pstats.Stats(str(stats_path))
    total = stats.total_tt
    print(f"total CPU time in the profiled call: {total:.1f} s ({stats_path})")
    print(f"{'phase':<56} {'CPU s':>8} {'calls':>7} {'share':>6}")
    for indent, label, fn in _phases():
        try:
            ct, nc = _cum(stats, _key(fn))
        except TypeError:
            continue
        print(f"{'  ' * indent + label:<56} {ct:8.1f} {nc:7d} {100 * ct / total:5.1f}%")
    ct, nc = _torch_backward(stats)
    print(f"{'autograd backward (detection + segmentation + fusion)':<56} {ct:8.1f} {nc:7d} {100 * ct / total:5.1f}%")
    import taskeval.metrics.quality_functional as qf

    rows = []
    for name in dir(qf):
        fn = getattr(qf, name)
        if callable(fn) and getattr(fn, "__module__", "") == qf.__name__ and hasattr(fn, "__code__"):
            ct, nc = _cum(stats, _key(fn))
            if nc:
                rows.append((ct, nc, name))
    if rows:
        print("quality_functional functions (inclusive; nested ones overlap):")
        for ct, nc, name in sorted(rows, reverse=True)[:12]:
            print(f"  {name:<40} {ct:8.1f} {nc:7d} {100 * ct / total:5.1f}%")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="quick")
    ap.add_argument("--out", default="runs/profile-quick")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stats", help="print the table of an earlier profile and exit")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the benchmark config")
    args = ap.parse_args()
    if args.stats:
        report(Path(args.stats))
        return 0
    from taskeval.cli.main import main as cli

    out = Path(args.out)
    # --jobs 1: every cell in this process, where the profiler sees it (the quick config computes them in 2 jobs)
    argv = ["benchmark", args.config, "--out", str(out), "--threads", str(args.threads), "--jobs", "1", "--quiet",
            *args.overrides]
    prof = cProfile.Profile(time.process_time)
    t0, c0 = time.perf_counter(), time.process_time()
    rc = prof.runcall(cli, argv)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    path = out / "profile.pstats"
    prof.dump_stats(str(path))
    print(f"taskeval {' '.join(argv)}: exit {rc}, {cpu:.1f} s CPU, {wall:.1f} s wall (shared machine: wall is not a timing)")
    report(path)
    return rc


if __name__ == "__main__":
    sys.exit(main())
