"""Keep ultralytics offline and its state inside a folder taskeval chooses (the run directory).

What ultralytics does by default and what stops it (see TOOLCHAIN.md):

* reads ``YOLO_CONFIG_DIR`` once, at import, for ``settings.json`` and fonts: set before the first import;
* probes DNS at import: ``YOLO_OFFLINE=1`` (its ``ONLINE`` and ``AUTOINSTALL`` flags are forced off if it
  was imported earlier in the process without them);
* downloads ``Arial.ttf`` at every dataset check: matplotlib's DejaVuSans.ttf is copied in its place;
* telemetry, hub and experiment-tracker callbacks (MLflow writes ``./mlruns``): disabled in its settings;
* ``pip install`` of missing packages: ``YOLO_AUTOINSTALL=0``;
* checkpoints (``--fixed-checkpoint``, ``pretrained=``, our own ``last.pt``) are pickles: ``ULTRALYTICS_SAFE_LOAD=1``
  makes ultralytics load them with ``torch.load(weights_only=True)`` and an allow-list of its own classes;
* threads: it trains on ``ultralytics.utils.torch_utils.NUM_THREADS`` threads on the CPU (1 on a 2-core
  machine); taskeval sets that number explicitly;
* its AMP sanity check on CUDA loads ``yolo26n.pt`` (a download when absent): replaced by a logged skip, so
  ``amp=True`` trains with mixed precision without touching the network.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

_INTEGRATIONS = ("sync", "hub", "clearml", "comet", "dvc", "mlflow", "neptune", "raytune", "tensorboard",
                 "wandb", "vscode_msg", "openvino_msg")


_warned = False


def _copy_font(config_dir: Path) -> None:
    target = config_dir / "Arial.ttf"
    if target.is_file():
        return
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    config_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def prepare(state_dir: str | Path | None = None, threads: int | None = None):
    """Configure ultralytics for an offline run and return the imported ``ultralytics`` module.

    Args:
        state_dir: folder for ultralytics' settings, font and matplotlib cache (normally
            ``<run>/third_party``). Only honoured if ultralytics is not imported yet in this process;
            otherwise the folder it already uses gets the font and settings (logged). None keeps
            ``$YOLO_CONFIG_DIR`` (or ultralytics' default).
        threads: CPU threads for training and inference (None: ``torch.get_num_threads()``).
    """
    import torch

    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"  # checkpoints load with weights_only=True (known classes only)
    if state_dir is not None:
        state_dir = Path(state_dir).resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        if "ultralytics" not in sys.modules:
            os.environ["YOLO_CONFIG_DIR"] = str(state_dir)
        os.environ.setdefault("MPLCONFIGDIR", str(state_dir / "matplotlib"))
    import ultralytics
    import ultralytics.utils as uu
    import ultralytics.utils.torch_utils as tu

    global _warned
    if state_dir is not None and not Path(uu.USER_CONFIG_DIR).is_relative_to(state_dir) and not _warned:
        _warned = True
        log.info("ultralytics was imported before taskeval set its state folder; it keeps using %s",
                 uu.USER_CONFIG_DIR)
    for name, module in list(sys.modules.items()):  # flags read at import, if it was imported before
        if not name.startswith("ultralytics"):
            continue
        for flag, value in (("ONLINE", False), ("AUTOINSTALL", False), ("SAFE_LOAD", True)):
            if hasattr(module, flag) and getattr(module, flag) is not value:
                setattr(module, flag, value)
    _copy_font(Path(uu.USER_CONFIG_DIR))
    off = {k: False for k in _INTEGRATIONS if k in uu.SETTINGS and uu.SETTINGS[k] is not False}
    if off:
        uu.SETTINGS.update(off)
    import ultralytics.engine.trainer as trainer

    if getattr(trainer.check_amp, "__module__", "") != __name__:
        trainer.check_amp = _amp_without_download
    n = threads or torch.get_num_threads()
    tu.NUM_THREADS = n  # select_device() calls torch.set_num_threads(NUM_THREADS) on the CPU
    torch.set_num_threads(n)
    return ultralytics


def _amp_without_download(model) -> bool:
    """ultralytics' AMP check minus its model download: AMP on for CUDA (off elsewhere), logged."""
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    log.info("ultralytics' AMP sanity check skipped (it downloads a model): training %s with mixed precision",
             torch.cuda.get_device_name(device))
    return True


@contextlib.contextmanager
def quiet(enabled: bool = True):
    """Silence ultralytics' per-epoch progress bars and INFO lines (its bars switch off when its logger is
    above INFO); warnings still show. Used where taskeval draws one overall progress bar itself."""
    logger = logging.getLogger("ultralytics")
    level = logger.level
    if enabled:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
