"""The shared float-noise checks of tests/tolerances.py pass float noise and fail anything larger."""

import numpy as np
import pytest

from tolerances import assert_png_close, png_diff_summary


def _image(shape=(100, 100), seed=0):
    return np.random.default_rng(seed).integers(0, 250, shape, dtype=np.uint8)  # room for +2


def test_identical_and_float_noise_pass():
    ref = _image()
    assert_png_close(ref.copy(), ref)
    noisy = ref.copy()
    noisy[0, :10] += 1  # 10 of 10000 pixels one level up: 0.1%
    assert png_diff_summary(noisy, ref) == (1, 1e-3)
    assert_png_close(noisy, ref)


def test_two_levels_or_too_many_pixels_fail():
    ref = _image()
    two = ref.copy()
    two[5, 5] += 2
    with pytest.raises(AssertionError, match="max diff 2"):
        assert_png_close(two, ref, what="two")
    many = ref.copy()
    many[0, :11] += 1
    with pytest.raises(AssertionError, match="1.10e-03 of the pixels differ"):
        assert_png_close(many, ref)
    assert_png_close(many, ref, min_share=0.99)


def test_colour_pixels_count_once_and_shapes_must_match():
    ref = _image((10, 100, 3))
    noisy = ref.copy()
    noisy[0, 0, :] += 1  # one pixel, three channels
    assert png_diff_summary(noisy, ref) == (1, 1e-3)
    with pytest.raises(ValueError, match=r"\(10, 100, 3\) vs \(10, 100\)"):
        png_diff_summary(ref, ref[..., 0])
