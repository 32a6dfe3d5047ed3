"""Keys, caches and resume across processes, as users run them: other hash seeds, ``kill -9``, copied folders.

Every command here runs in its own Python process with its own ``PYTHONHASHSEED``, because the defects
this guards against (set order, ``repr``, absolute paths or file times inside a key) only show across
processes and machines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from taskeval.data.synth import SynthConfig, generate

TINY = SynthConfig(n_train=8, n_test=4, height=64, width=80, objects_min=2, objects_max=3)
KEYS_SCRIPT = r"""
import json, sys
from taskeval.data import PairedDataset, load_card
from taskeval.fingerprint import dataset_fingerprint, digest
from taskeval.fusedset import cache_key_parts, precomputed_set
from taskeval.store import Cell
from detectors.protocol import load_protocol as det
from segmenters.protocol import load_protocol as seg, protocol_id

root = sys.argv[1]
card = load_card(root + "/card.yaml")
out = {}
for split in ("train", "test"):
    ds = PairedDataset(card, split)
    out[split] = {"labels": dataset_fingerprint(ds, labels=True), "images": dataset_fingerprint(ds, labels=False),
                  "fuse_average": digest(cache_key_parts("average", "none", ds)),
                  "fuse_seafusion": digest(cache_key_parts("seafusion", "file:abc", ds, {"text": None}))}
out["precomputed"] = precomputed_set(root + "/test/ir", PairedDataset(card, "test"), check_sizes=False).key
out["cell"] = Cell("seafusion@joint-seg", "segmentation", card.name, protocol_id(seg("quick")), 1).id
out["det_protocol"] = det("quick").id
print(json.dumps(out, sort_keys=True))
"""


def _env(seed: int, cache: Path) -> dict:
    env = dict(os.environ, PYTHONHASHSEED=str(seed), TASKEVAL_CACHE_DIR=str(cache), OMP_NUM_THREADS="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _python(args, seed: int, cache: Path, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=_env(seed, cache), cwd=cwd, capture_output=True, text=True,
                          **kw)


def _copy_fresh_times(src: Path, dest: Path) -> None:
    """A copy that keeps no modification time (as rsync without -t, a backup restore or some cluster file
    systems): every file gets a new, different time."""
    shutil.copytree(src, dest, copy_function=shutil.copyfile, symlinks=True)
    stamp = time.time() + 3600
    for p in sorted(dest.rglob("*")):
        if p.is_file() and not p.is_symlink():
            os.utime(p, (stamp, stamp))


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("keys") / "synth"
    generate(root, TINY, progress=False)
    return root


def test_keys_are_the_same_in_every_process_and_after_a_copy(tiny_synth, tmp_path):
    script = tmp_path / "keys.py"
    script.write_text(KEYS_SCRIPT)
    copy = tmp_path / "elsewhere" / "synth"
    _copy_fresh_times(tiny_synth, copy)
    runs = [(tiny_synth, 1, tmp_path / "memo1"), (tiny_synth, 2, tmp_path / "memo1"),  # memo cold, then warm
            (copy, 3, tmp_path / "memo2"), (copy, 4, tmp_path / "memo1")]
    outputs = []
    for root, seed, memo in runs:
        res = _python([str(script), str(root)], seed, memo, tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        outputs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    assert all(o == outputs[0] for o in outputs[1:]), outputs
    assert outputs[0]["train"]["labels"] != outputs[0]["test"]["labels"]
    # a changed image changes the fingerprint (content, not size or time, decides)
    img = sorted((copy / "test" / "ir").glob("*.png"))[0]
    data = bytearray(img.read_bytes())
    st = img.stat()
    from taskeval.imageio import read_raw, write_png

    pixels = read_raw(img)
    pixels[0, 0] ^= 1
    write_png(img, pixels)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert img.read_bytes() != bytes(data)
    res = _python([str(script), str(copy)], 5, tmp_path / "memo1", tmp_path)
    changed = json.loads(res.stdout.strip().splitlines()[-1])
    assert changed["test"]["images"] != outputs[0]["test"]["images"]
    assert changed["train"] == outputs[0]["train"]


def test_second_fuse_process_uses_the_cache(tiny_synth, tmp_path):
    cache = tmp_path / "cache"
    args = ["-m", "taskeval.cli.main", "fuse", "--method", "average", "--ir", str(tiny_synth / "test" / "ir"),
            "--vis", str(tiny_synth / "test" / "vi"), "--cache", str(cache), "--device", "cpu"]
    first = _python([*args, "--out", str(tmp_path / "o1")], 11, tmp_path / "memo", tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "fused 4 pair(s)" in first.stdout
    second = _python([*args, "--out", str(tmp_path / "o2")], 12, tmp_path / "memo", tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "all 4 pairs from the cache, nothing fused" in second.stdout, second.stdout
    assert len(list(cache.rglob("*.h5"))) == 1
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == sorted(p.name for p in (tmp_path / "o2").iterdir())


def _benchmark_config(path: Path) -> Path:
    cfg = {"name": "resume", "data": {"card": "synth", "synth": {k: getattr(TINY, k) for k in (
               "n_train", "n_test", "height", "width", "objects_min", "objects_max")}},
           "methods": ["ir", "average"], "tasks": ["segmentation"], "seeds": [0],
           "seg": {"crop_size": [64, 80], "epochs": 6, "batch": 4}, "device": "cpu"}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _benchmark(cfg: Path, out: Path, seed: int, memo: Path) -> subprocess.CompletedProcess:
    res = _python(["-m", "taskeval.cli.main", "benchmark", str(cfg), "--out", str(out), "--no-report", "--quiet",
                   "--threads", "1"], seed, memo, out.parent, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def test_kill_9_mid_training_resumes_in_a_new_process_and_in_a_copy(tmp_path):
    """kill -9 while a segmentation cell trains (after its first epoch checkpoint), then the same command
    in a new process, and in a copy of the run folder made without file times: both resume from
    ``last.pt``, fuse nothing again, and end with the results of an uninterrupted run."""
    cfg = _benchmark_config(tmp_path / "resume.yaml")
    memo = tmp_path / "memo"
    _benchmark(cfg, tmp_path / "whole", 21, memo)
    expected = (tmp_path / "whole" / "results.csv").read_text()

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "taskeval.cli.main", "benchmark", str(cfg), "--out", str(out),
                             "--no-report", "--quiet", "--threads", "1"], env=_env(22, memo), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    last = None
    while time.time() < deadline and proc.poll() is None:
        found = [p for p in (out / "cells").glob("*/work/last.pt")] if (out / "cells").is_dir() else []
        if found:
            last = found[0]
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last is not None, "the benchmark finished or failed before a training checkpoint was written"
    assert not (last.parent / "model.pt").exists() and not (out / "results.csv").exists()
    h5_before = sorted(p.name for p in (out / "fused").rglob("*.h5"))

    copy = tmp_path / "moved" / "killed-copy"
    _copy_fresh_times(out, copy)

    for run, seed in ((out, 23), (copy, 24)):
        _benchmark(cfg, run, seed, memo)
        assert (run / "results.csv").read_text() == expected
        log = (run / "taskeval.log").read_text()
        assert "resuming" in log and "from epoch" in log, log[-2000:]
        # the interrupted cell's images and the other method's caches were reused, not fused again
        h5 = sorted(p.name for p in (run / "fused").rglob("*.h5"))
        assert set(h5_before) <= set(h5) and len(h5) == 4, (h5_before, h5)   # 2 methods x 2 splits, one cache each
