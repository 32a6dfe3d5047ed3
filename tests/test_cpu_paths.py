"""The reference comparisons again on another CPU float path, so that the next machine does not surprise CI.

Tests marked ``reference`` compare float results with files computed elsewhere (official outputs,
toolbox values). Their tolerances (``tests/tolerances.py``) must hold on any CPU, but a run only
exercises its own machine's kernels: the suite once passed on an AMD EPYC and failed on an Intel Xeon.
Here the fast ones run once more in a subprocess with

- ``ATEN_CPU_CAPABILITY=default``: ATen's scalar kernels (another reduction order, libm instead of
  the vectorised transcendentals);
- ``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``: the convolution and BLAS kernels of an
  AVX2 CPU (no change where AVX2 is already the best; MKL keeps its own path on AMD CPUs);
- NumPy without its AVX512 loops;
- the other thread count (1 <-> 2): another split of the parallel reductions.

Measured on the AMD EPYC (torch 2.14.1): every fast reference test also passes under each of these
settings alone (``tests/tolerances.py`` has the float figures). The child costs about 30 s of CPU time
(one thread, 21 tests). The slow reference tests are left out (minutes each); run them by hand in
``other_cpu_path_env()`` with ``--runslow -m reference``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
AVX512_GROUPS = "X86_V4 AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"


def other_cpu_path_env() -> dict[str, str]:
    """The environment of the second run: the current one with every float path switched to another."""
    threads = "1" if torch.get_num_threads() > 1 else "2"
    return {
        **os.environ,
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "NPY_DISABLE_CPU_FEATURES": AVX512_GROUPS,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }


def reference_test_files() -> list[str]:
    """The test files with ``reference`` tests (collecting the whole suite costs more than running them)."""
    files = sorted(p for p in (REPO / "tests").glob("test_*.py")
                   if p.name != Path(__file__).name and "@pytest.mark.reference" in p.read_text())
    return [str(p) for p in files]


def test_reference_comparisons_pass_on_another_cpu_path(shared, tmp_path):
    # The child selects only ``reference`` tests, and this one is not marked: no recursion.
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "reference and not slow",
           "--basetemp", str(tmp_path / "basetemp"), "-o", "addopts=--strict-markers", "-rfE",
           *reference_test_files()]
    run = subprocess.run(cmd, cwd=REPO, env=other_cpu_path_env(), capture_output=True, text=True, check=False,
                         timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"reference tests fail on another CPU float path:\n{out[-6000:]}"
    summary = re.search(r"(\d+) passed", out)
    assert summary and int(summary.group(1)) >= 10, out[-2000:]
    assert "failed" not in out.splitlines()[-1] and "skipped" not in out.splitlines()[-1], out[-2000:]
    assert "torch CPU capability: DEFAULT" in out, out[:2000]
