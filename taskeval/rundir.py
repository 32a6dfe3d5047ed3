"""Run directories: every command writes into its own folder with its resolved config, versions, git
commit, hardware, seeds and a log. Files are written atomically; nothing is overwritten silently."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from taskeval.errors import TaskevalError

PACKAGES = ("taskeval", "torch", "torchvision", "ultralytics-opencv-headless", "ultralytics",
            "segmentation-models-pytorch", "torchmetrics", "pycocotools", "faster-coco-eval", "numpy",
            "opencv-python-headless", "h5py", "timm")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The file gets the usual permissions (0666 minus the umask), not mkstemp's owner-only 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n")


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` says; "" when unknown)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def hardware(threads: int | None = None) -> dict:
    """The machine and the float path: CPU model, the SIMD kernels torch picked for it (results differ in the
    last bits between them, and training amplifies that), CPU threads (``threads``, the run's setting, else
    torch's current number), GPUs."""
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "cpu_model": cpu_model()}
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        info["aten_cpu_capability_env"] = os.environ["ATEN_CPU_CAPABILITY"]
    try:
        import torch

        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["torch_threads"] = threads or torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def git_commit(path: Path | None = None) -> dict:
    """Commit and dirty flag of the taskeval checkout (empty when not installed from git)."""
    path = path or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {}


def provenance(config: dict | None = None, seeds=None, extra: dict | None = None, threads: int | None = None) -> dict:
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "versions": versions(),
        "git": git_commit(),
        "hardware": hardware(threads),
        "seeds": list(seeds) if seeds is not None else None,
        "config": config,
        **(extra or {}),
    }


@dataclass
class RunDir:
    """A run's folder. ``create`` refuses an existing non-empty folder unless ``resume=True``."""

    path: Path

    @classmethod
    def create(cls, out: str | Path | None, command: str, resume: bool = False, base: str | Path = "runs") -> "RunDir":
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path(base) / command / stamp
            k = 1
            while out.exists():
                out = Path(base) / command / f"{stamp}-{k}"
                k += 1
        out = Path(out)
        if out.exists() and any(out.iterdir()) and not resume:
            raise TaskevalError(f"run directory {out} exists and is not empty; pass --resume to continue it "
                                "or choose another --out (results are never overwritten silently)")
        out.mkdir(parents=True, exist_ok=True)
        return cls(out)

    def write_provenance(self, config: dict | None, seeds=None, extra: dict | None = None,
                         threads: int | None = None) -> None:
        """``config.yaml`` (the configuration alone: it can be loaded again) and ``provenance.json`` (it, the
        command line, versions, git commit, hardware with the CPU model and ``threads``, seeds and ``extra``,
        e.g. weight hashes)."""
        prov = provenance(config, seeds, extra, threads)
        text = yaml.safe_dump(config or {}, sort_keys=False)
        if not (self.path / "provenance.json").exists():
            atomic_write_text(self.path / "config.yaml", text)
            atomic_write_json(self.path / "provenance.json", prov)
            return
        # a resumed run keeps the first records and adds one per resume (the config only when it changed)
        k = 1
        while (self.path / f"provenance.resume{k}.json").exists():
            k += 1
        atomic_write_json(self.path / f"provenance.resume{k}.json", prov)
        first = self.path / "config.yaml"
        if first.is_file() and first.read_text() != text:
            atomic_write_text(self.path / f"config.resume{k}.yaml", text)

    def attach_log(self, level: int = logging.INFO) -> logging.Handler:
        handler = logging.FileHandler(self.path / "taskeval.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(level)
        root = logging.getLogger()
        root.addHandler(handler)
        if root.level > level or root.level == logging.NOTSET:
            root.setLevel(level)
        return handler

    def third_party_dir(self) -> Path:
        """Where ultralytics' settings, fonts and caches live for this run."""
        p = self.path / "third_party"
        p.mkdir(exist_ok=True)
        return p


def latest_config_path(run_dir: str | Path) -> Path:
    """The configuration the run was last started with: ``config.resume<k>.yaml`` with the largest k, else
    ``config.yaml`` (which keeps the first one)."""
    run_dir = Path(run_dir)
    resumed = sorted(run_dir.glob("config.resume*.yaml"),
                     key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    return resumed[-1] if resumed else run_dir / "config.yaml"


def latest_config(run_dir: str | Path) -> dict:
    """The mapping in :func:`latest_config_path` (empty when the run has none)."""
    path = latest_config_path(run_dir)
    loaded = yaml.safe_load(path.read_text()) if path.is_file() else None
    return loaded if isinstance(loaded, dict) else {}
