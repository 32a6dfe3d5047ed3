"""FILM port: official layout, strict loading, text handling, and fidelity to the official code.

The fidelity references (``shared/reference/fidelity/FILM``) are what the official ``test.py`` produced
with a random float16 checkpoint in the official layout: the exact input tensors, the raw sigmoid
output and the saved PNG. See ``shared/reference/fidelity/RECIPE.md`` (section FILM).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fusion_models.film import (
    FILM,
    TEXT_DIM,
    load_text_embeddings,
    official_grey,
    official_image,
    official_png_values,
)
from fusion_models.layers import pixel_gram
from fusion_models.registry import create_fusion_model, get_fusion_spec, with_spec
from fusion_models.weights import load_checkpoint, load_weights
from taskeval.color import luminance
from taskeval.errors import DataError, WeightsError
from taskeval.fusing import apply_fusion
from taskeval.imageio import gray_to_tensor, read_gray, read_raw, read_rgb, rgb_to_tensor

FIDELITY = "reference/fidelity/FILM"
PAIRS = ("00016N", "00091D")

# Max |port - official| on the raw output. 1e-4 is RECIPE's acceptance (3-5x the official code's own
# float noise on 00016N). 00091D is far worse conditioned in float32: the stored official output is
# 7.5e-4 away from the same network evaluated in float64, and the official code itself, re-run on a
# CPU other than the one that made the reference, lands 4.4e-3 away. The port (blocked pixel sums)
# is 4e-5 from float64 and 7.2e-4 from the stored output, hence 1e-3 there, plus a mean check that a
# mis-mapped tensor (>= 1e-2 everywhere) could not pass.
MAX_ABS_TOL = {"00016N": 1e-4, "00091D": 1e-3}
MEAN_ABS_TOL = 5e-5
PNG_MAX_DIFF = 1       # RECIPE.md: "PNG max grey diff <= 1" (so every pixel is within 1 level)
# Pixels 1 level off. Measured 0.01-0.09% on 00016N, 0.52-0.53% on 00091D, where the official float32
# output itself is 8e-5 (SMFNet) / 7e-4 (FILM) from exact arithmetic and the port much closer to it.
PNG_ONE_LEVEL_SHARE = 0.01


def _official_png(out: torch.Tensor) -> np.ndarray:
    """The official test.py post-processing of one (1,H,W) output: min-max, x255, uint8 truncation."""
    x = (out - out.min()) / (out.max() - out.min())
    return (x * 255).numpy().astype("uint8")[0]


@pytest.fixture(scope="module")
def fidelity_dir(shared):
    return shared / FIDELITY


@pytest.fixture(scope="module")
def official_model(fidelity_dir) -> FILM:
    model = FILM().eval()
    load_weights(model, fidelity_dir / "IVF.pth", strict=True)
    return model


@pytest.fixture(scope="module")
def small_model() -> FILM:
    torch.manual_seed(0)
    return FILM().eval()


@pytest.fixture(scope="module")
def small_batch():
    gen = torch.Generator().manual_seed(1)
    ir = torch.rand(2, 1, 20, 28, generator=gen)
    vis = torch.rand(2, 1, 20, 28, generator=gen)
    text = 0.5 * torch.randn(2, 9, TEXT_DIM, generator=gen)
    return ir, vis, text


@pytest.fixture(scope="module")
def small_outputs(small_model, small_batch):
    """Batch of 2 with text, each image alone, and the first image without text."""
    ir, vis, text = small_batch
    with torch.no_grad():
        return {
            "batch": small_model(ir, vis, text),
            "single": [small_model(ir[i:i + 1], vis[i:i + 1], text[i:i + 1]) for i in range(2)],
            "none": small_model(ir[:1], vis[:1]),
        }


def test_state_dict_matches_official_layout(shared):
    arch = json.loads((shared / "reference/architectures/FILM.json").read_text())
    expected = {k.removeprefix("module."): tuple(shape) for k, (shape, _) in arch["state_dict"].items()}
    model = FILM()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert sum(p.numel() for p in model.parameters()) == arch["counts"]["num_params"]


def test_strict_load_of_official_checkpoint(fidelity_dir, official_model):
    ckpt = load_checkpoint(fidelity_dir / "IVF.pth")
    own = official_model.state_dict()
    assert set(ckpt) == set(own)
    for key, value in ckpt.items():
        assert torch.equal(own[key], value.float()), key


def test_load_rejects_incomplete_checkpoint(fidelity_dir):
    ckpt = load_checkpoint(fidelity_dir / "IVF.pth")
    del ckpt["restormerca2.cross_attentionA2.multihead_attn.in_proj_weight"]
    with pytest.raises(WeightsError, match="cross_attentionA2"):
        load_weights(FILM(), ckpt, strict=True)


def test_registered_spec():
    spec = get_fusion_spec("film")
    assert (spec.vis_input, spec.output, spec.normalize) == ("y", "y", "minmax_y")
    assert spec.needs_text and spec.trainable and spec.weights_file == "IVF.pth"
    assert isinstance(create_fusion_model("film"), FILM)


def test_small_forward_is_finite_sigmoid(small_outputs):
    out = small_outputs["batch"]
    assert out.shape == (2, 1, 20, 28)
    assert torch.isfinite(out).all()
    assert out.min() > 0 and out.max() < 1


def test_batch_of_two_equals_two_singles(small_outputs):
    torch.testing.assert_close(small_outputs["batch"], torch.cat(small_outputs["single"]), rtol=0, atol=1e-6)


def test_inference_path_equals_the_autograd_path(official_model, small_batch):
    """Without autograd the forward overwrites temporaries in place and runs the batch image by image:
    same values up to float rounding (this checkpoint amplifies it to ~3e-6)."""
    ir, vis, text = small_batch
    with torch.no_grad():
        inference = official_model(ir, vis, text)
    torch.testing.assert_close(inference, official_model(ir, vis, text).detach(), rtol=0, atol=1e-5)


def test_text_changes_the_output(official_model, small_batch):
    # The default initialisation barely reacts to text (~5e-6); the official checkpoint does.
    ir, vis, text = small_batch
    with torch.no_grad():
        with_text = official_model(ir[:1], vis[:1], text[:1])
        without = official_model(ir[:1], vis[:1])
    assert (with_text - without).abs().max() > 1e-3


def test_text_none_is_one_zero_token(small_model, small_batch, small_outputs):
    ir, vis, _ = small_batch
    with torch.no_grad():
        zero_token = small_model(ir[:1], vis[:1], torch.zeros(1, 1, TEXT_DIM))
        zero_tokens = small_model(ir[:1], vis[:1], torch.zeros(1, 7, TEXT_DIM))
    assert torch.equal(small_outputs["none"], zero_token)  # the same computation: exact on purpose
    # Identical query tokens give identical attention rows, so the token count cannot matter.
    torch.testing.assert_close(zero_tokens, zero_token, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("ir_shape", "vis_shape", "text_shape"),
    [
        ((1, 1, 8, 8), (1, 1, 8, 8), (1, 4, 512)),
        ((2, 1, 8, 8), (2, 1, 8, 8), (1, 4, TEXT_DIM)),
        ((1, 1, 8, 8), (1, 1, 8, 8), (1, 0, TEXT_DIM)),
        ((1, 1, 8, 8), (1, 3, 8, 8), (1, 4, TEXT_DIM)),
        ((1, 1, 8, 8), (1, 1, 8, 9), (1, 4, TEXT_DIM)),
    ],
)
def test_bad_shapes_raise(ir_shape, vis_shape, text_shape):
    with pytest.raises(ValueError, match="FILM"):
        FILM()(torch.zeros(ir_shape), torch.zeros(vis_shape), torch.zeros(text_shape))


def test_pixel_reductions_match_float64():
    # Smooth features (a ramp plus a constant) are where plain float32 BLAS sums drift (~1e-3).
    pixels = 480 * 640
    ramp = torch.linspace(0, 1, pixels, dtype=torch.float64)
    q = torch.stack([ramp + c for c in (0.5, 1.0, 2.0, 3.0)], dim=-1).expand(2, pixels, 4)
    k = torch.stack([1.5 - ramp * c for c in (0.1, 0.5, 1.0, 2.0)], dim=-1).expand(2, pixels, 4)
    want = F.normalize(q, dim=1).transpose(1, 2) @ F.normalize(k, dim=1)
    qf, kf = q.float(), k.float()
    qk = pixel_gram(qf, kf, heads=1)[:, 0]
    qq = pixel_gram(qf, qf, heads=1)[:, 0].diagonal(dim1=-2, dim2=-1)
    kk = pixel_gram(kf, kf, heads=1)[:, 0].diagonal(dim1=-2, dim2=-1)
    got = qk / (qq.sqrt().unsqueeze(-1) * kk.sqrt().unsqueeze(-2))
    torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6)
    small = torch.rand(3, 100, 8)
    torch.testing.assert_close(pixel_gram(small, small, heads=2),
                               torch.stack([small[..., :4].transpose(1, 2) @ small[..., :4],
                                            small[..., 4:].transpose(1, 2) @ small[..., 4:]], dim=1))


def test_load_text_embeddings_accepts_both_layouts(tmp_path):
    a = np.random.default_rng(0).standard_normal((1, 5, TEXT_DIM)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((5, TEXT_DIM))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    text = load_text_embeddings(tmp_path, ["b", "a"])
    assert text.shape == (2, 5, TEXT_DIM) and text.dtype == torch.float32
    np.testing.assert_array_equal(text[0].numpy(), b.astype(np.float32))
    np.testing.assert_array_equal(text[1].numpy(), a[0])


def test_load_text_embeddings_errors(tmp_path):
    np.save(tmp_path / "ok.npy", np.zeros((1, 5, TEXT_DIM), np.float32))
    np.save(tmp_path / "short.npy", np.zeros((1, 6, TEXT_DIM), np.float32))
    np.save(tmp_path / "wide.npy", np.zeros((1, 5, 512), np.float32))
    (tmp_path / "broken.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match="2 id.*gone1, gone2"):
        load_text_embeddings(tmp_path, ["ok", "gone1", "gone2"])
    with pytest.raises(DataError, match=r"wide\.npy.*\(1, 5, 512\)"):
        load_text_embeddings(tmp_path, ["wide"])
    with pytest.raises(DataError, match="ok: 5, short: 6"):
        load_text_embeddings(tmp_path, ["ok", "short"])
    with pytest.raises(DataError, match=r"broken\.npy"):
        load_text_embeddings(tmp_path, ["broken"])
    with pytest.raises(DataError, match="not found"):
        load_text_embeddings(tmp_path / "nowhere", ["ok"])


@pytest.fixture(scope="module")
def fidelity_runs(fidelity_dir, official_model):
    """Port output on each pair's exact official inputs (computed once; ~30 s a pair on one core)."""
    runs = {}
    for pair in PAIRS:
        inputs = np.load(fidelity_dir / f"{pair}_in.npz")
        text = load_text_embeddings(fidelity_dir, [f"{pair}_text"])
        np.testing.assert_array_equal(text.numpy(), inputs["text"])  # loading: the stored values themselves
        with torch.no_grad():
            out = official_model(torch.from_numpy(inputs["imageA"]), torch.from_numpy(inputs["imageB"]), text)
        runs[pair] = out
    return runs


@pytest.mark.slow
@pytest.mark.reference
@pytest.mark.parametrize("pair", PAIRS)
def test_fidelity_raw_output(fidelity_dir, fidelity_runs, pair):
    diff = (fidelity_runs[pair] - torch.from_numpy(np.load(fidelity_dir / f"{pair}_out.npy"))).abs()
    assert diff.max() <= MAX_ABS_TOL[pair]
    assert diff.mean() <= MEAN_ABS_TOL


@pytest.mark.slow
@pytest.mark.reference
@pytest.mark.parametrize("pair", PAIRS)
def test_fidelity_png(fidelity_dir, fidelity_runs, pair):
    ours = _official_png(fidelity_runs[pair][0]).astype(int)
    official = read_raw(fidelity_dir / f"{pair}.png").astype(int)
    assert ours.shape == official.shape
    assert np.abs(ours - official).max() <= 1


@pytest.mark.slow
@pytest.mark.reference
def test_harness_path_reproduces_official_png(fidelity_dir, official_model):
    """apply_fusion (IR first, text passed, per-image min-max) on a grey visible whose BT.601 luma is the
    official rounded grey input: its un-recoloured output gives the official PNG, and recolouring a grey
    visible leaves the luminance unchanged. (With the real colour PNG the harness feeds the unrounded
    luma instead, up to 0.5/255 away, which this random checkpoint amplifies to many grey levels.)"""
    pair = PAIRS[0]
    inputs = np.load(fidelity_dir / f"{pair}_in.npz")
    ir = torch.from_numpy(inputs["imageA"])
    vis_rgb = torch.from_numpy(inputs["imageB"]).expand(-1, 3, -1, -1).contiguous()
    text = load_text_embeddings(fidelity_dir, [f"{pair}_text"])
    spec = get_fusion_spec("film")
    with torch.no_grad():
        fused_y = apply_fusion(official_model, ir, vis_rgb, text=text, spec=with_spec(spec, recolor=False))
        fused_rgb = apply_fusion(official_model, ir, vis_rgb, text=text, spec=spec)
    assert fused_y.shape == (1, 1, 480, 640) and fused_rgb.shape == (1, 3, 480, 640)
    ours = (fused_y[0, 0] * 255).numpy().astype("uint8").astype(int)
    assert np.abs(ours - read_raw(fidelity_dir / f"{pair}.png").astype(int)).max() <= 1
    torch.testing.assert_close(luminance(fused_rgb), fused_y, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- official_image (test.py end to end)


def _harness_inputs(shared, pair: str, box=None) -> tuple[torch.Tensor, torch.Tensor]:
    """What the harness hands a fusion method (8-bit files / 255), optionally cropped to (y, x, h, w)."""
    ir = gray_to_tensor(read_gray(shared / "data" / "msrs_det" / "ir" / f"{pair}.png"))
    vis = rgb_to_tensor(read_rgb(shared / "data" / "msrs_det" / "vi" / f"{pair}.png"))
    if box is not None:
        y, x, h, w = box
        ir, vis = ir[..., y:y + h, x:x + w], vis[..., y:y + h, x:x + w]
    return ir, vis


@pytest.mark.parametrize("pair", PAIRS)
def test_official_reading_equals_the_captured_network_inputs(shared, fidelity_dir, pair):
    """Rounded OpenCV grey of both files / 255: the official tensors (no forward). Bit-exact on the machine
    that made the references; OpenCV's float conversion is per-CPU SIMD code, so a value within float
    rounding of a half grey level may round the other way elsewhere (at most 1e-4 of the pixels)."""
    ir, vis = _harness_inputs(shared, pair)
    captured = np.load(fidelity_dir / f"{pair}_in.npz")
    got_a = official_grey(np.rint(ir[0, 0].numpy() * 255).astype(np.uint8))
    got_b = official_grey(np.rint(vis[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    assert got_a.dtype == got_b.dtype == np.float32
    for got, key in ((got_a, "imageA"), (got_b, "imageB")):
        off = np.abs(got - captured[key][0, 0])
        assert off.max() <= 1 / 255 + 1e-7 and (off > 0).mean() <= 1e-4, key


@pytest.mark.parametrize("pair", PAIRS)
def test_official_writer_reproduces_the_png(fidelity_dir, pair):
    raw = torch.from_numpy(np.load(fidelity_dir / f"{pair}_out.npy"))
    assert np.array_equal(official_png_values(raw[0, 0]), read_raw(fidelity_dir / f"{pair}.png"))


def test_official_image_batch_mode_and_checks(shared, fidelity_dir, official_model):
    """A batch gives each image's own result with its own text; the mode is restored; bad input is refused."""
    a = _harness_inputs(shared, "00091D", (200, 300, 40, 56))
    b = _harness_inputs(shared, "00016N", (100, 120, 40, 56))
    ir, vis = torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])
    text = load_text_embeddings(fidelity_dir, ["00091D_text", "00016N_text"])
    official_model.train()
    try:
        both = official_image(official_model, ir, vis, text)
        assert official_model.training
    finally:
        official_model.eval()
    assert both.shape == (2, 40, 56) and both.dtype == np.uint8
    assert np.array_equal(both[1], official_image(official_model, *b, text[1:])[0])
    assert not np.array_equal(both[1], official_image(official_model, *b, text[:1])[0])
    with pytest.raises(ValueError, match="8-bit"):
        official_image(official_model, ir + 0.3 / 255, vis, text)
    with pytest.raises(ValueError, match=r"\(2, 1, 40, 56\)"):
        official_image(official_model, ir, vis[:, :1], text)


@pytest.mark.slow
@pytest.mark.parametrize("pair", PAIRS)
def test_official_image_matches_official_png(shared, fidelity_dir, official_model, pair):
    """official_image on the dataset files and the pair's text against the grey PNG of the official test.py."""
    text = load_text_embeddings(fidelity_dir, [f"{pair}_text"])
    ours = official_image(official_model, *_harness_inputs(shared, pair), text)[0]
    png = read_raw(fidelity_dir / f"{pair}.png")
    assert ours.shape == png.shape and ours.dtype == np.uint8
    levels = np.abs(ours.astype(np.int16) - png.astype(np.int16))
    assert levels.max() <= PNG_MAX_DIFF, f"{pair}: max diff {levels.max()} grey levels"
    assert (levels > 0).mean() <= PNG_ONE_LEVEL_SHARE, f"{pair}: {(levels > 0).sum()} pixels differ"
