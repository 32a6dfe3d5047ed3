"""The DIDFuse port reproduces the official code (Zhaozixiang1228/IVIF-DIDFuse @ 5f28730) with its weights.

References: ``shared/reference/DIDFuse/`` (``RECIPE.md``, section DIDFuse), produced by running the
official ``test.py`` on CPU: per pair the tensors handed to the network (``_in.npz``: ``img_test1`` = IR,
``img_test2`` = visible, both Pillow ``convert('L')`` / 255), the raw sigmoid output (``_out.npy``) and the
grey PNG written by the authors' writer (imageio's legacy PNG writer: rounding, no min-max).

Tolerances, from the RECIPE: the official code against itself moves the raw output by up to 2.6e-7
(1 vs 2 threads 0, float64 vs float32 2.6e-7) and its PNG not at all; its suggested acceptance is a raw
max abs diff <= 1e-5 and a PNG max diff <= 1. Here the PNG must also agree on at least 99.9% of the
pixels. Measured (00016N / 00091D / M3FD_00000): network inputs identical to the official tensors, raw
output max abs diff 1.2e-7 / 1.8e-7 / 1.2e-7, :func:`official_image` equal to the official PNG on every
pixel.

The harness's float path (``apply_fusion``, recolouring off) feeds the float BT.601 luma of the visible
image instead of Pillow's integer luma: measured against the official PNG, max 2 grey levels (either
sign), mean 0.021 / 0.092 / 0.168.

Only the fidelity test of 00016N runs by default (one 640x480 forward, ~5 s on 2 idle cores); the other
pairs and the float-path comparison are slow.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusion_models import create_fusion_model, get_fusion_spec
from fusion_models.didfuse import DIDFuse, official_image, official_png_values
from fusion_models.registry import with_spec
from fusion_models.weights import load_weights
from taskeval.errors import WeightsError
from taskeval.fusing import apply_fusion
from taskeval.imageio import gray_to_tensor, read_gray, read_rgb, rgb_to_tensor, tensor_to_uint8

PAIRS = ("00016N", "00091D", "M3FD_00000")
FAST = "00016N"
IDS = [p if p == FAST else pytest.param(p, marks=pytest.mark.slow) for p in PAIRS]

RAW_TOL = 1e-5         # RECIPE.md, DIDFuse: "Suggested acceptance: max abs diff <= 1e-5 on _out.npy"
PNG_MAX_DIFF = 1       # RECIPE.md, DIDFuse: "PNG max diff <= 1"
PNG_MAX_SHARE = 1e-3   # at least 99.9% of the pixels equal
HARNESS_TOL = (2, 0.2)  # float path vs official PNG: max, mean abs diff in grey levels (measured, see above)


def _weights(shared: Path, part: str = "Encoder") -> Path:
    return shared / "weights" / "DIDFuse" / f"{part}.pkl"


def _reference(shared: Path, pair: str, suffix: str):
    path = shared / "reference" / "DIDFuse" / f"{pair}{suffix}"
    if suffix == ".png":
        return np.array(Image.open(path))
    return np.load(path)


def _sources(shared: Path, pair: str) -> tuple[Path, Path]:
    folder = shared / "data" / ("m3fd_pairs" if pair.startswith("M3FD") else "msrs_det")
    return folder / "ir" / f"{pair}.png", folder / "vi" / f"{pair}.png"


def _harness_inputs(shared: Path, pair: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What the harness hands a fusion method: taskeval's readers (8-bit file / 255)."""
    ir_path, vi_path = _sources(shared, pair)
    return gray_to_tensor(read_gray(ir_path)), rgb_to_tensor(read_rgb(vi_path))


def _official_state(shared: Path, part: str) -> dict[str, torch.Tensor]:
    return torch.load(_weights(shared, part), map_location="cpu", weights_only=True)["weight"]


@pytest.fixture(scope="module")
def model(shared) -> DIDFuse:
    return create_fusion_model("didfuse", weights=str(_weights(shared)))


@pytest.fixture(scope="module")
def official_run(shared, model):
    """pair -> (official_image output (H,W), {network inputs and raw output recorded during that call})."""
    cache: dict[str, tuple[np.ndarray, dict]] = {}

    def run(pair: str):
        if pair not in cache:
            seen: dict[str, torch.Tensor] = {}
            real = model.forward

            def recording(ir, vis):
                out = real(ir, vis)
                seen.update(ir=ir.clone(), vis=vis.clone(), raw=out.clone())
                return out

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(model, "forward", recording)
                png = official_image(model, *_harness_inputs(shared, pair))
            cache[pair] = (png[0], seen)
        return cache[pair]

    return run


# ---------------------------------------------------------------- fidelity


@pytest.mark.parametrize("pair", IDS)
def test_official_pipeline_reproduced(shared, official_run, pair):
    """Inputs as the official run made them, raw output within 1e-5, official PNG within 1 level."""
    png, seen = official_run(pair)
    captured = _reference(shared, pair, "_in.npz")
    assert np.array_equal(seen["ir"].numpy(), captured["img_test1"])
    assert np.array_equal(seen["vis"].numpy(), captured["img_test2"])
    diff = float(np.abs(seen["raw"].numpy() - _reference(shared, pair, "_out.npy")).max())
    assert diff <= RAW_TOL, f"{pair}: raw output differs from the official one by {diff:.2e}"
    ref = _reference(shared, pair, ".png")
    assert png.shape == ref.shape and png.dtype == np.uint8
    levels = np.abs(png.astype(np.int16) - ref.astype(np.int16))
    assert levels.max() <= PNG_MAX_DIFF, f"{pair}: max diff {levels.max()} grey levels"
    assert (levels > 0).mean() <= PNG_MAX_SHARE, f"{pair}: {(levels > 0).sum()} pixels differ"


@pytest.mark.parametrize("pair", PAIRS)
def test_writer_is_the_official_one(shared, pair):
    """The official raw output through :func:`official_png_values` gives the official PNG exactly (no
    forward), and so does imageio's own ``image_as_uint`` (the legacy writer's conversion)."""
    raw = _reference(shared, pair, "_out.npy")[0, 0]
    ref = _reference(shared, pair, ".png")
    assert np.array_equal(official_png_values(raw), ref)
    assert not np.array_equal((raw * 255).astype(np.uint8), ref)  # truncation would not do
    util = pytest.importorskip("imageio.core.util")
    assert np.array_equal(util.image_as_uint(raw, bitdepth=8), ref)


@pytest.mark.slow  # one more full-size forward per pair; the float path is also in the contract tests
@pytest.mark.parametrize("pair", PAIRS)
def test_harness_path_close_to_official_png(shared, model, pair):
    """The float path (what apply_fusion gives the task networks before recolouring) vs the official PNG."""
    ir, vis = _harness_inputs(shared, pair)
    with torch.no_grad():
        out = apply_fusion(model, ir, vis, spec=with_spec(model.spec, recolor=False))
    ref = _reference(shared, pair, ".png")
    diff = np.abs(tensor_to_uint8(out[0]).astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= HARNESS_TOL[0] and diff.mean() <= HARNESS_TOL[1], (diff.max(), diff.mean())


# ---------------------------------------------------------------- official_image and forward on tiny inputs


def _tiny_pair(shared: Path, pair: str = "00091D", box=(200, 300, 40, 56)):
    y, x, h, w = box
    ir, vis = _harness_inputs(shared, pair)
    return ir[..., y:y + h, x:x + w], vis[..., y:y + h, x:x + w]


def test_official_image_batch_mode_and_8bit_check(shared, model):
    """A batch gives each image's own result; the model's mode is restored; non-8-bit input is refused."""
    a, b = _tiny_pair(shared), _tiny_pair(shared, "00016N")
    ir, vis = torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])
    model.train()
    try:
        both = official_image(model, ir, vis)
        assert model.training
    finally:
        model.eval()
    assert both.shape == (2, 40, 56) and both.dtype == np.uint8
    assert np.array_equal(both[1], official_image(model, *b)[0])
    with pytest.raises(ValueError, match="8-bit"):
        official_image(model, ir + 0.3 / 255, vis)
    with pytest.raises(ValueError, match="RGB"):
        official_image(model, ir, vis[:, :1])


def test_inference_sum_in_place_equals_the_autograd_path(shared, model):
    ir, vis = _tiny_pair(shared)
    vis_y = vis.mean(dim=1, keepdim=True)
    with torch.no_grad():
        inference = model(ir, vis_y)
    assert torch.equal(inference, model(ir, vis_y).detach())


def test_input_checks():
    model = create_fusion_model("didfuse")
    with pytest.raises(ValueError, match="luminance"):
        model(torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="at least 2x2"):
        model(torch.rand(1, 1, 1, 16), torch.rand(1, 1, 1, 16))


# ---------------------------------------------------------------- weights, metadata, training


def test_official_layout_loads_strictly_with_weights_only(shared, monkeypatch):
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    model = DIDFuse()
    official = {f"{part.lower()}.{k}": v for part in ("Encoder", "Decoder")
                for k, v in _official_state(shared, part).items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in official.items()}
    calls.clear()
    load_weights(model, _weights(shared), strict=True)
    assert calls == [True, True]  # Encoder.pkl and its partner Decoder.pkl
    assert all(torch.equal(model.state_dict()[k], v) for k, v in official.items())


@pytest.mark.parametrize("given", ["Encoder", "Decoder"])
def test_official_repository_names_and_either_file(shared, tmp_path, given):
    """The repository's own names (Models/*_weight_IJCAI.pkl) work, starting from either file."""
    for part in ("Encoder", "Decoder"):
        shutil.copy(_weights(shared, part), tmp_path / f"{part}_weight_IJCAI.pkl")
    model = create_fusion_model("didfuse", weights=str(tmp_path / f"{given}_weight_IJCAI.pkl"))
    decoder, encoder = _official_state(shared, "Decoder"), _official_state(shared, "Encoder")
    assert torch.equal(model.decoder.cov7.cov7[1].weight, decoder["cov7.cov7.1.weight"])
    assert torch.equal(model.encoder.cov1.cov1[1].weight, encoder["cov1.cov1.1.weight"])


def test_missing_partner_file_is_named(shared, tmp_path):
    shutil.copy(_weights(shared), tmp_path / "Encoder.pkl")
    with pytest.raises(WeightsError, match=r"Decoder\.pkl"):
        create_fusion_model("didfuse", weights=str(tmp_path / "Encoder.pkl"))
    shutil.copy(_weights(shared), tmp_path / "Decoder.pkl")  # an encoder under the decoder's name
    with pytest.raises(WeightsError, match="expected the official DIDFuse decoder"):
        create_fusion_model("didfuse", weights=str(tmp_path / "Encoder.pkl"))


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_missing_or_extra_key_is_an_error_naming_it(shared, tmp_path, change):
    encoder = torch.load(_weights(shared), map_location="cpu", weights_only=True)
    decoder = torch.load(_weights(shared, "Decoder"), map_location="cpu", weights_only=True)
    if change == "missing":
        del encoder["weight"]["cov2.cov2.1.running_var"]
        message = r"missing keys \(1\): encoder\.cov2\.cov2\.1\.running_var"
    else:
        decoder["weight"]["cov8.cov8.0.weight"] = torch.zeros(1)
        message = r"unexpected keys \(1\): decoder\.cov8\.cov8\.0\.weight"
    torch.save(encoder, tmp_path / "Encoder.pkl")
    torch.save(decoder, tmp_path / "Decoder.pkl")
    with pytest.raises(WeightsError, match=message):
        create_fusion_model("didfuse", weights=str(tmp_path / "Encoder.pkl"))


def test_official_weights_lookup_and_metadata(shared, monkeypatch):
    monkeypatch.setenv("TASKEVAL_WEIGHTS_DIR", str(shared / "weights"))
    model = create_fusion_model("didfuse", weights="official")
    encoder = _official_state(shared, "Encoder")
    assert torch.equal(model.encoder.cov4.cov4[1].running_var, encoder["cov4.cov4.1.running_var"])
    spec = get_fusion_spec("didfuse")
    assert (spec.vis_input, spec.output, spec.normalize, spec.trainable) == ("y", "y", "clip", True)
    assert spec.weights_file == "Encoder.pkl" and spec.official_image is official_image
    assert "IJCAI 2020" in spec.paper and spec.licence and spec.url.endswith("IVIF-DIDFuse")


def test_saved_weights_round_trip(tmp_path):
    """What fuse train / joint training save (a plain state dict) loads back strictly."""
    model = DIDFuse()
    torch.save(model.state_dict(), tmp_path / "fusion.pth")
    again = create_fusion_model("didfuse", weights=str(tmp_path / "fusion.pth"))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


def test_gradients_reach_every_layer():
    model = create_fusion_model("didfuse").train()
    g = torch.Generator().manual_seed(0)
    ir, vis = torch.rand(2, 1, 24, 32, generator=g), torch.rand(2, 1, 24, 32, generator=g)
    model(ir, vis).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
