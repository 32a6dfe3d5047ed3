"""CDDFuse port: official layout, strict loading, official lookup, and fidelity to the official code.

References (``shared/reference/fidelity/CDDFuse``, RECIPE.md section CDDFuse): what the official
``test_IVF.py`` produced with a random float16 checkpoint in the official layout, per dev pair: the
exact input tensors (``_in.npz``), the raw sigmoid output (``_out.npy``) and the PNG it wrote.

Measured (CPU, 2 threads, loaded machine), port vs stored official output: raw max 2.5e-6 (00016N) and
1.8e-4 (00091D); ``official_image`` from the original 8-bit files vs the official PNG: max 1 grey level
on 40 and 2804 pixels (0.013% and 0.91%). 00091D is ill-conditioned in float32 (see RAW_TOL): the
official code re-run here lands 3.8e-4 from its stored output there, with 5730 PNG pixels (1.87%) off by 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from restormer_reference import official_channel_attention

from fusion_models.cddfuse import (
    CDDFuse,
    legacy_png_uint8,
    official_grey_inputs,
    official_image,
    official_png,
)
from fusion_models.layers import base_feature_block, restormer_block
from fusion_models.registry import create_fusion_model, get_fusion_spec, with_spec
from fusion_models.weights import load_weights, read_checkpoint
from taskeval.errors import WeightsError
from taskeval.fusing import apply_fusion
from taskeval.imageio import gray_to_tensor, read_gray, read_raw, read_rgb, rgb_to_tensor, tensor_to_uint8

FIDELITY = "reference/fidelity/CDDFuse"
CHECKPOINT = "CDDFuse_IVF.pth"
PAIRS = ("00016N", "00091D")

# Max |port - official| on the raw sigmoid output. 00016N: RECIPE.md (CDDFuse) suggests 1e-5, about 4x the
# official code's own float32 error there (float64 vs float32: 2.3e-6; 1 vs 2 threads: 6.6e-7).
# 00091D is far worse conditioned in float32 (the 307200-term sums in the channel attention, see
# fusion_models.layers.pixel_gram): the stored official output is 1.7e-4 (mean 2.5e-5) from
# the same network in float64, and the official code re-run on our AMD EPYC lands 3.8e-4 from the stored
# output. The port (blocked sums) is 5.7e-6 from float64 and 1.8e-4 from the stored output. Hence 5e-4
# there (the official code's own spread across CPUs), with mean bounds that a mis-mapped tensor (moving
# the output by 1e-2 or more) cannot pass.
RAW_TOL = {"00016N": 1e-5, "00091D": 5e-4}
RAW_MEAN_TOL = {"00016N": 2e-6, "00091D": 5e-5}
# PNG: RECIPE's max 1 grey level (the brief: within 1 level on >= 99.9% of the pixels), and the share of
# pixels that differ at all: the official code against itself moves 19-36 pixels (0.012%) of 00016N; on
# 00091D the official code re-run here differs from the stored PNG on 1.87% of the pixels (the port 0.91%).
PNG_MAX_DIFF = 1
PNG_MAX_SHARE = {"00016N": 1e-3, "00091D": 2e-2}


@pytest.fixture(scope="module")
def fidelity_dir(shared) -> Path:
    return shared / FIDELITY


@pytest.fixture(scope="module")
def official_model(fidelity_dir) -> CDDFuse:
    model = CDDFuse().eval()
    load_weights(model, fidelity_dir / CHECKPOINT, strict=True)
    return model


def _pair(shared: Path, pair: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The harness's float inputs: the 8-bit files / 255, IR (1,1,H,W) and visible RGB (1,3,H,W)."""
    folder = shared / "data" / "msrs_det"
    return gray_to_tensor(read_gray(folder / "ir" / f"{pair}.png")), rgb_to_tensor(read_rgb(folder / "vi" / f"{pair}.png"))


def _flat_official(fidelity_dir: Path) -> dict[str, torch.Tensor]:
    """The official file, flattened by hand (independently of convert_official_checkpoint)."""
    raw = read_checkpoint(fidelity_dir / CHECKPOINT)
    assert sorted(raw) == sorted(("DIDF_Encoder", "DIDF_Decoder", "BaseFuseLayer", "DetailFuseLayer"))
    return {f"{top}.{key[len('module.'):]}": t for top, sd in raw.items() for key, t in sd.items()}


def test_state_dict_is_the_official_layout(fidelity_dir):
    official = _flat_official(fidelity_dir)
    model = CDDFuse()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in official.items()}
    meta = json.loads((fidelity_dir / "meta.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == meta["n_checkpoint_values"]
    assert not list(model.buffers())


def test_strict_load_copies_every_tensor(fidelity_dir, official_model):
    own = official_model.state_dict()
    for key, value in _flat_official(fidelity_dir).items():
        assert torch.equal(own[key], value.float()), key


def test_load_names_missing_and_extra_keys(fidelity_dir):
    raw = read_checkpoint(fidelity_dir / CHECKPOINT)
    del raw["DIDF_Decoder"]["module.output.2.weight"]
    with pytest.raises(WeightsError, match=r"missing keys \(1\): DIDF_Decoder\.output\.2\.weight"):
        load_weights(CDDFuse(), raw, strict=True)
    raw = read_checkpoint(fidelity_dir / CHECKPOINT)
    raw["BaseFuseLayer"]["module.attn.qkv3.weight"] = torch.zeros(3)
    with pytest.raises(WeightsError, match=r"unexpected keys \(1\): BaseFuseLayer\.attn\.qkv3\.weight"):
        load_weights(CDDFuse(), raw, strict=True)


def test_official_lookup(fidelity_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TASKEVAL_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match=f"{CHECKPOINT} not found under"):
        create_fusion_model("cddfuse", weights="official")
    (tmp_path / "CDDFuse").mkdir()
    (tmp_path / "CDDFuse" / CHECKPOINT).symlink_to(fidelity_dir / CHECKPOINT)
    model = create_fusion_model("cddfuse", weights="official")
    key = "DIDF_Encoder.baseFeature.attn.qkv2.weight"
    assert torch.equal(model.state_dict()[key], _flat_official(fidelity_dir)[key].float())


def test_registered_spec():
    spec = get_fusion_spec("cddfuse")
    assert (spec.vis_input, spec.output, spec.normalize) == ("y", "y", "minmax_y")
    assert spec.trainable and not spec.needs_text and spec.weights_file == CHECKPOINT
    assert spec.official_image is official_image
    assert "CVPR 2023" in spec.paper and spec.url.endswith("MMIF-CDDFuse")
    assert "github.com/Zhaozixiang1228/MMIF-CDDFuse" in spec.description  # where the real weights are
    assert isinstance(create_fusion_model("cddfuse"), CDDFuse)


@pytest.mark.parametrize("pair", PAIRS)
def test_official_inputs_are_exact(shared, fidelity_dir, pair):
    """The official reader's tensors (rounded OpenCV grey / 255) from the harness's float inputs, bit for bit."""
    ir, vis = official_grey_inputs(*_pair(shared, pair))
    stored = np.load(fidelity_dir / f"{pair}_in.npz")
    assert np.array_equal(ir.numpy(), stored["data_IR"]) and np.array_equal(vis.numpy(), stored["data_VIS"])


@pytest.mark.parametrize("pair", PAIRS)
def test_official_postprocessing_is_exact(fidelity_dir, pair):
    """min-max, x255 and the authors' PNG writer turn the official raw output into the official PNG exactly."""
    out = torch.from_numpy(np.load(fidelity_dir / f"{pair}_out.npy"))
    png = official_png(out)
    assert png.dtype == np.uint8 and np.array_equal(png, read_raw(fidelity_dir / f"{pair}.png"))
    # truncation (the common community fix of the writer) would differ by 1 on about half the pixels
    truncated = (((out - out.min()) / (out.max() - out.min())) * 255).numpy()[0, 0].astype(np.uint8)
    assert (truncated != png).mean() > 0.3


def test_legacy_writer_rules():
    # within [0,1]: x255 + 0.499999999, so rounding except at exact halves (127.5 -> 127)
    assert np.array_equal(legacy_png_uint8(np.array([[0.0, 0.003, 0.5, 1.0]], np.float32)), [[0, 1, 127, 255]])
    # outside [0,1]: min-max first (10.9 -> 22.95 -> 23; truncation would give 22)
    assert np.array_equal(legacy_png_uint8(np.array([[10.0, 10.9, 20.0]], np.float32)), [[0, 23, 255]])
    with pytest.raises(ValueError, match="non-finite"):
        legacy_png_uint8(np.full((2, 2), np.nan, np.float32))


def test_batch_equals_singles_and_bad_shapes():
    torch.manual_seed(0)
    model = CDDFuse().eval()
    ir, vis = torch.rand(2, 1, 12, 20), torch.rand(2, 1, 12, 20)
    with torch.no_grad():
        batch = model(ir, vis)
        singles = torch.cat([model(ir[i:i + 1], vis[i:i + 1]) for i in range(2)])
    assert batch.shape == (2, 1, 12, 20) and 0 < batch.min() and batch.max() < 1
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-6)
    for bad_ir, bad_vis in (((1, 1, 8, 8), (1, 3, 8, 8)), ((1, 1, 8, 8), (1, 1, 8, 9)), ((1, 1, 1, 8), (1, 1, 1, 8))):
        with pytest.raises(ValueError, match="CDDFuse"):
            model(torch.zeros(bad_ir), torch.zeros(bad_vis))


def test_decoder_adds_the_visible_input(official_model):
    """The visible luminance enters the logits directly: shifting it by d shifts logit(out) by d plus
    the network's response, which the decoder path alone (visible input zeroed) does not contain."""
    torch.manual_seed(1)
    ir, vis = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    m = official_model
    with torch.no_grad():
        base, detail = m.DIDF_Encoder(vis)
        base_i, detail_i = m.DIDF_Encoder(ir)
        fb, fd = m.BaseFuseLayer(base + base_i), m.DetailFuseLayer(detail + detail_i)
        with_vis = m.DIDF_Decoder(vis, fb, fd)
        without = m.DIDF_Decoder(torch.zeros_like(vis), fb, fd)
        assert torch.equal(with_vis, m(ir, vis))
    torch.testing.assert_close(torch.logit(with_vis.double()) - torch.logit(without.double()), vis.double(),
                               rtol=0, atol=1e-4)


def _official_layer_norm(x, norm):
    """``LayerNorm(dim, 'WithBias')`` of net.py: mean and biased variance over the channels of each pixel."""
    t = x.permute(0, 2, 3, 1)
    mu, var = t.mean(-1, keepdim=True), t.var(-1, keepdim=True, unbiased=False)
    return ((t - mu) / torch.sqrt(var + 1e-5) * norm.body.weight + norm.body.bias).permute(0, 3, 1, 2)


def _official_ffn(x, ffn):
    """net.py's ``FeedForward`` / ``Mlp``: project_in, grouped 3x3, ``gelu(x1) * x2``, project_out."""
    x1, x2 = ffn.dwconv(ffn.project_in(x)).chunk(2, dim=1)
    return ffn.project_out(F.gelu(x1) * x2)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize(("kind", "dim", "padding"), [("restormer", 64, "zeros"), ("base", 64, "zeros"),
                                                      ("base", 8, "reflect")])
def test_shared_layers_equal_the_official_expressions(kind, dim, padding, grad):
    """The Restormer layers of fusion_models.layers (blocked Gram sums, composed dense-QKV convolutions,
    residuals inside the products) against net.py's layer-by-layer expressions in float64: CDDFuse's
    TransformerBlock and BaseFeatureExtraction, and EMMA's 8-channel GlobalFeatureExtraction (one channel
    per head, reflection padding in its feed-forward)."""
    torch.manual_seed(5)
    block = restormer_block(dim, 8, expansion=2) if kind == "restormer" else base_feature_block(dim, 8, padding)
    block = block.double()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (0.5 if p.ndim in (1, 3) else 0.0))
    x = torch.randn(2, dim, 9, 11, dtype=torch.float64)
    attn, ffn = block.attn, getattr(block, block.ffn_name)
    if kind == "restormer":
        q, k, v = attn.qkv_dwconv(attn.qkv(_official_layer_norm(x, block.norm1))).chunk(3, dim=1)
        y = x + attn.project_out(official_channel_attention(q, k, v, attn.temperature, 8))
    else:
        q, k, v = attn.qkv2(attn.qkv1(_official_layer_norm(x, block.norm1))).chunk(3, dim=1)
        y = x + attn.proj(official_channel_attention(q, k, v, attn.scale, 8))
    expected = y + _official_ffn(_official_layer_norm(y, block.norm2), ffn)
    with torch.set_grad_enabled(grad):
        got = block(x.clone())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-11)
    keys = {"restormer": ("norm1.body.weight", "attn.temperature", "attn.qkv_dwconv.weight", "ffn.dwconv.weight"),
            "base": ("norm2.body.bias", "attn.scale", "attn.qkv2.weight", "mlp.dwconv.weight")}[kind]
    assert set(keys) <= set(block.state_dict()) and not list(block.buffers())  # the official names only


def test_every_parameter_gets_a_gradient(fidelity_dir, official_model):
    """RECIPE/meta: no checkpoint tensor is unused in the forward pass."""
    model = CDDFuse()
    model.load_state_dict(official_model.state_dict())
    ir, vis = torch.rand(1, 1, 12, 12), torch.rand(1, 1, 12, 12)
    model(ir, vis).square().mean().backward()
    dead = sorted(n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0)
    meta = json.loads((fidelity_dir / "meta.json").read_text())
    assert dead == meta["checkpoint_params_without_gradient"] == []


def test_float_path_is_the_official_image_on_grey_inputs(official_model):
    """apply_fusion (per-image min-max, no recolouring) equals official_image within 1 level when the
    visible image is grey, i.e. when the unrounded luma IS the official rounded grey. With a colour
    visible image the float path gets the unrounded luma (up to 0.5/255 away, added to the logits)."""
    gen = torch.Generator().manual_seed(3)
    ir = torch.randint(0, 256, (2, 1, 24, 28), generator=gen).float() / 255
    grey = torch.randint(0, 256, (2, 1, 24, 28), generator=gen).float() / 255
    vis = grey.expand(-1, 3, -1, -1).contiguous()
    spec = with_spec(get_fusion_spec("cddfuse"), recolor=False)
    with torch.no_grad():
        fused = apply_fusion(official_model, ir, vis, spec=spec)
    ours = np.stack([tensor_to_uint8(f) for f in fused]).astype(int)
    official = official_image(official_model, ir, vis).astype(int)
    assert official.shape == (2, 24, 28) and official.dtype == int
    assert np.abs(ours - official).max() <= 1


@pytest.fixture(scope="module")
def fidelity_runs(shared, fidelity_dir, official_model):
    """official_image from the original 8-bit files, with the tensors handed to the network and its raw
    output captured on the way (one forward pass a pair, ~1 min a pair on 2 threads)."""
    runs, calls = {}, []
    hook = official_model.register_forward_hook(lambda module, args, out: calls.append((args, out)))
    try:
        for pair in PAIRS:
            calls.clear()
            png = official_image(official_model, *_pair(shared, pair))[0]
            assert len(calls) == 1
            (ir_in, vis_in), raw = calls[0]
            stored = np.load(fidelity_dir / f"{pair}_in.npz")
            assert np.array_equal(ir_in.numpy(), stored["data_IR"]) and np.array_equal(vis_in.numpy(), stored["data_VIS"])
            runs[pair] = raw, png
    finally:
        hook.remove()
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("pair", PAIRS)
def test_fidelity_raw_output(fidelity_dir, fidelity_runs, pair, record_property):
    diff = (fidelity_runs[pair][0] - torch.from_numpy(np.load(fidelity_dir / f"{pair}_out.npy"))).abs()
    record_property("raw_max_abs_diff", float(diff.max()))
    record_property("raw_mean_abs_diff", float(diff.mean()))
    assert diff.max() <= RAW_TOL[pair], f"{pair}: max |port - official| {float(diff.max()):.2e}"
    assert diff.mean() <= RAW_MEAN_TOL[pair], f"{pair}: mean |port - official| {float(diff.mean()):.2e}"


@pytest.mark.slow
@pytest.mark.parametrize("pair", PAIRS)
def test_fidelity_official_image(fidelity_dir, fidelity_runs, pair, record_property):
    ours = fidelity_runs[pair][1].astype(int)
    official = read_raw(fidelity_dir / f"{pair}.png").astype(int)
    assert ours.shape == official.shape
    diff = np.abs(ours - official)
    record_property("png_max_diff", int(diff.max()))
    record_property("png_pixels_differing", int((diff > 0).sum()))
    assert diff.max() <= PNG_MAX_DIFF, f"{pair}: max diff {diff.max()} grey levels"
    assert (diff > 0).mean() <= PNG_MAX_SHARE[pair], f"{pair}: {(diff > 0).sum()} pixels differ"
