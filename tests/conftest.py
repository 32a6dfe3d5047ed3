"""Shared fixtures: the location of ../shared (real samples and official references), markers, header."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """``$TASKEVAL_SHARED`` or the ``shared/`` folder beside the repository."""
    env = os.environ.get("TASKEVAL_SHARED")
    return Path(env) if env else REPO.parent / "shared"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "reference: compares a float result with a file computed elsewhere (official references, "
        "toolbox values); re-run under another CPU float path by tests/test_cpu_paths.py")


def pytest_report_header(config):
    import torch

    # Float results compared with files computed elsewhere depend on these (see tests/tolerances.py).
    capability = torch.backends.cpu.get_cpu_capability()
    return f"torch CPU capability: {capability}, threads: {torch.get_num_threads()}"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    import torch

    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared() -> Path:
    """Path of ../shared; skips when absent outside CI, fails in CI (where it must be present)."""
    root = shared_root()
    if not (root / "data").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data folder missing in CI: {root} (set TASKEVAL_SHARED)")
        pytest.skip(f"shared data folder not found at {root} (set TASKEVAL_SHARED to run this test)")
    return root


@pytest.fixture(autouse=True)
def _isolate_third_party_state(tmp_path_factory, monkeypatch):
    """Keep ultralytics/matplotlib state and our weights lookup out of the user's home."""
    cfg = tmp_path_factory.getbasetemp() / "third_party_cfg"
    cfg.mkdir(exist_ok=True)
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(cfg))
    monkeypatch.setenv("MPLCONFIGDIR", str(cfg))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_AUTOINSTALL", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node SLURM for this session (see tests/slurm_cluster.py), stopped by pid afterwards.

    Skips where SLURM/munge are not installed or this process is not root. Where they are installed but
    do not start, it skips locally and fails in CI (``CI`` set): .ci/run installs them, so a cluster
    that does not come up there is a broken configuration, not a missing tool.
    """
    import slurm_cluster as local_slurm

    try:
        cluster = local_slurm.start()
    except local_slurm.SlurmUnavailable as exc:
        pytest.skip(f"no SLURM: {exc}")
    except local_slurm.SlurmStartError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"SLURM is installed but did not start: {exc}")
        pytest.skip(f"SLURM did not start: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm(slurm_cluster, monkeypatch):
    """The session's SLURM, with ``SLURM_CONF`` set for this test so sbatch/squeue/submitit talk to it."""
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    return slurm_cluster
