"""Small shared pieces: device names, whole-width tables, preset/YAML loading."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console
from rich.table import Table

from detectors.protocol import PRESETS as DET_PRESETS
from detectors.protocol import load_protocol as load_det
from segmenters.protocol import PRESETS as SEG_PRESETS
from segmenters.protocol import load_protocol as load_seg
from taskeval.console import print_table
from taskeval.devices import pick_device, resolve_device, tensor_device
from taskeval.errors import ConfigError


def test_pick_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == pick_device(None) == pick_device("") == "cpu"
    assert pick_device("CPU") == "cpu"
    with pytest.raises(ConfigError, match="no GPU"):
        pick_device("0")
    with pytest.raises(ConfigError, match="unknown device"):
        pick_device("gpu")
    with pytest.raises(ConfigError, match="CUDA indices"):
        pick_device("0,cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda:0"
    assert pick_device("1") == "cuda:1" and pick_device("cuda") == "cuda:0"
    assert pick_device("0, 1") == "0,1"                       # ultralytics DDP list, kept for detection
    assert tensor_device("0,1") == torch.device("cuda:0")     # tensors go to the first device
    assert tensor_device("cpu") == torch.device("cpu")
    assert resolve_device("0,1") == torch.device("cuda:0") and resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_print_table_never_cuts_numbers():
    t = Table(title="wide")
    for k in range(12):
        t.add_column(f"metric{k}", justify="right", no_wrap=True)
    t.add_row(*[f"{k}1.23 ± 4.56" for k in range(12)])
    buf = io.StringIO()
    narrow = Console(file=buf, width=80)
    print_table(t, narrow)
    text = buf.getvalue()
    assert "…" not in text
    for k in range(12):
        assert f"{k}1.23 ± 4.56" in text
    buf2 = io.StringIO()
    Console(file=buf2, width=80).print(t)                     # what rich alone does at 80 columns
    assert "…" in buf2.getvalue() or "111.23 ± 4.56" not in buf2.getvalue()


@pytest.mark.parametrize("load, presets, what", [(load_det, DET_PRESETS, "detection"),
                                                 (load_seg, SEG_PRESETS, "segmentation")])
def test_protocol_presets_and_yaml(tmp_path, load, presets, what):
    assert load("quick") == presets["quick"]
    f = tmp_path / "longer.yaml"
    f.write_text("preset: paper\nepochs: 3\n")
    p = load(str(f))
    assert p.name == "longer" and p.epochs == 3
    assert p.batch == presets["paper"].batch                 # the rest comes from the named base preset
    with pytest.raises(ConfigError, match=f"unknown {what} protocol 'qiuck'.*did you mean 'quick'"):
        load("qiuck")
    with pytest.raises(ConfigError, match="file not found"):
        load(str(tmp_path / "absent.yaml"))
    (tmp_path / "bad.yaml").write_text("preset: papr\n")
    with pytest.raises(ConfigError, match="did you mean 'paper'"):
        load(str(tmp_path / "bad.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load(str(tmp_path / "list.yaml"))
