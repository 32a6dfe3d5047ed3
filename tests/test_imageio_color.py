"""Image conventions: 8/16-bit reading, channel handling, corrupt files, BT.601 conversions."""

import cv2
import numpy as np
import pytest
import torch

from taskeval.color import luminance, recolor, rgb_to_ycbcr, ycbcr_to_rgb
from taskeval.errors import DataError
from taskeval.imageio import list_images, read_gray, read_rgb, write_png


def test_8_and_16_bit_scaling(tmp_path):
    g8 = np.array([[0, 128, 255]], np.uint8)
    g16 = np.array([[0, 32768, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), g8)
    cv2.imwrite(str(tmp_path / "b.png"), g16)
    np.testing.assert_allclose(read_gray(tmp_path / "a.png"), g8 / 255.0, atol=1e-7)
    np.testing.assert_allclose(read_gray(tmp_path / "b.png"), g16 / 65535.0, atol=1e-7)
    assert read_gray(tmp_path / "b.png").dtype == np.float32


def test_rgb_order_and_equal_channel_ir(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 200  # red
    write_png(tmp_path / "v.png", rgb)  # our writer takes RGB
    out = read_rgb(tmp_path / "v.png")
    assert out[0, 0, 0] == pytest.approx(200 / 255) and out[0, 0, 2] == 0
    grey3 = np.repeat(np.array([[10, 20, 30]], np.uint8)[..., None], 3, axis=2)
    cv2.imwrite(str(tmp_path / "ir.png"), grey3)
    np.testing.assert_allclose(read_gray(tmp_path / "ir.png"), np.array([[10, 20, 30]]) / 255.0, atol=1e-7)
    g = read_rgb(tmp_path / "ir.png")
    assert g.shape == (1, 3, 3)


@pytest.mark.parametrize("content, name, msg", [
    (b"", "empty.png", "empty file"),
    (b"not an image", "junk.png", "cannot be decoded"),
])
def test_corrupt_files_name_the_file(tmp_path, content, name, msg):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=msg) as exc:
        read_gray(tmp_path / name)
    assert name in str(exc.value)


def test_truncated_png_and_jpeg(tmp_path):
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    for ext in (".png", ".jpg"):
        ok, buf = cv2.imencode(ext, img)
        data = buf.tobytes()
        (tmp_path / f"t{ext}").write_bytes(data[: len(data) // 2])
        with pytest.raises(DataError, match="truncated|cannot be decoded") as exc:
            read_rgb(tmp_path / f"t{ext}")
        assert f"t{ext}" in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_rgb(tmp_path / "nope.png")


def test_duplicate_stems_rejected(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((2, 2), np.uint8))
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="duplicate id 'a'"):
        list_images(tmp_path)


def test_ycbcr_matches_opencv_float_convention():
    # OpenCV's float RGB->YCrCb uses exactly the fusion papers' BT.601 formula with offset 0.5.
    rgb = np.random.default_rng(1).random((16, 16, 3)).astype(np.float32)
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    ours = rgb_to_ycbcr(t)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours[..., 0], ycrcb[..., 0], atol=1e-6)
    np.testing.assert_allclose(ours[..., 1], ycrcb[..., 2], atol=1e-6)  # Cb
    np.testing.assert_allclose(ours[..., 2], ycrcb[..., 1], atol=1e-6)  # Cr
    back = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
    ours_back = ycbcr_to_rgb(rgb_to_ycbcr(t), clamp=False)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours_back, back, atol=2e-3)  # 3-digit inverse coefficients
    np.testing.assert_allclose(ours_back, rgb, atol=2e-3)


def test_recolor_keeps_chroma_and_grads():
    vis = torch.rand(2, 3, 8, 8)
    y = luminance(vis).clone().requires_grad_(True)
    out = recolor(y, vis)
    torch.testing.assert_close(out, vis, atol=3e-3, rtol=0)
    out.sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(N,1,H,W\)"):
        recolor(vis, vis)
