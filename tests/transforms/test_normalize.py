"""Tests for medseg.transforms.normalize on small hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.transforms import NORMALIZATIONS, normalize, to_channels_first


def test_to_channels_first_moves_the_channel_axis_and_casts():
    image = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)  # (H, W, C)
    out = to_channels_first(image)
    assert out.shape == (4, 2, 3)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    for channel in range(4):
        np.testing.assert_array_equal(out[channel], image[..., channel])


def test_to_channels_first_adds_a_channel_to_a_2d_image():
    image = np.array([[1, 2], [3, 4]], dtype=np.int16)
    out = to_channels_first(image)
    assert out.shape == (1, 2, 2)
    np.testing.assert_array_equal(out[0], image)


def test_to_channels_first_rejects_other_ranks():
    with pytest.raises(ValueError, match="shape"):
        to_channels_first(np.zeros((1, 2, 3, 4)))


@pytest.mark.parametrize("mode", NORMALIZATIONS)
def test_every_mode_returns_channels_first_float32(mode):
    rng = np.random.default_rng(0)
    for image in (rng.integers(0, 4096, (5, 7), dtype=np.uint16), rng.random((5, 7, 3))):
        out = normalize(image, mode)
        expected_channels = 1 if image.ndim == 2 else 3
        assert out.shape == (expected_channels, 5, 7)
        assert out.dtype == np.float32


def test_percentile_clips_outliers_and_scales_to_unit_range():
    values = np.arange(101, dtype=np.float64)  # percentile p of 0..100 is exactly p
    image = values.reshape(1, 101)
    out = normalize(image, "percentile", low=10, high=90)[0, 0]
    np.testing.assert_allclose(out[:11], 0.0)  # 0..10 clipped to p10 = 10
    np.testing.assert_allclose(out[90:], 1.0)  # 90..100 clipped to p90 = 90
    np.testing.assert_allclose(out[10:91], (values[10:91] - 10) / 80, rtol=1e-6)


def test_percentile_is_per_channel():
    rng = np.random.default_rng(1)
    image = np.stack([rng.random((16, 16)), 1000 + 50 * rng.random((16, 16))], axis=-1)
    out = normalize(image, "percentile", low=0, high=100)
    for channel in out:
        assert channel.min() == pytest.approx(0.0)
        assert channel.max() == pytest.approx(1.0)


def test_percentile_ignores_a_hot_pixel():
    image = np.tile(np.linspace(0, 100, 50), (50, 1))
    image[0, 0] = 1e6
    out = normalize(image, "percentile")  # default 0.5 / 99.5
    assert out.max() == pytest.approx(1.0)
    # Without clipping the hot pixel would squash the rest of the image near 0.
    assert out[0, 25, 25] > 0.4


def test_zscore_gives_zero_mean_unit_std_per_channel():
    rng = np.random.default_rng(2)
    image = np.stack([rng.normal(5, 3, (32, 32)), rng.normal(-200, 0.1, (32, 32))], axis=-1)
    out = normalize(image, "zscore")
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1.0, rtol=1e-4)


def test_zscore_matches_the_formula():
    image = np.array([[1.0, 2.0], [3.0, 6.0]])
    expected = (image - image.mean()) / image.std()
    np.testing.assert_allclose(normalize(image, "zscore")[0], expected, rtol=1e-6)


def test_none_divides_unsigned_integers_by_their_dtype_max():
    image16 = np.array([[0, 65535], [32768, 1]], dtype=np.uint16)
    np.testing.assert_allclose(normalize(image16, "none")[0], image16 / 65535.0, rtol=1e-6)
    image8 = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    np.testing.assert_allclose(normalize(image8, "none")[0], image8 / 255.0, rtol=1e-6)


def test_none_keeps_float_values():
    image = np.array([[-3.5, 0.25], [7.0, 1e3]], dtype=np.float64)
    out = normalize(image, "none")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], image.astype(np.float32))


@pytest.mark.parametrize("mode", ["percentile", "zscore"])
def test_constant_image_becomes_zeros(mode):
    image = np.full((8, 8, 2), 700, dtype=np.uint16)
    out = normalize(image, mode)
    assert out.shape == (2, 8, 8)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, 0.0)


def test_normalize_does_not_modify_its_input():
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    before = image.copy()
    for mode in NORMALIZATIONS:
        normalize(image, mode)
    np.testing.assert_array_equal(image, before)


def test_unknown_mode_lists_the_choices():
    with pytest.raises(ValueError, match="percentile, zscore, none"):
        normalize(np.zeros((2, 2)), "minmax")


@pytest.mark.parametrize(("low", "high"), [(50, 50), (60, 40), (-1, 99), (1, 101)])
def test_invalid_percentiles_are_rejected(low, high):
    with pytest.raises(ValueError, match="percentiles"):
        normalize(np.zeros((2, 2)), "percentile", low=low, high=high)


@pytest.mark.parametrize("mode", NORMALIZATIONS)
def test_nan_becomes_the_channel_median(mode):
    rng = np.random.default_rng(4)
    clean = rng.random((16, 16, 2)) * 100
    image = clean.copy()
    image[3, 4, 0] = np.nan
    clean[3, 4, 0] = np.nanmedian(image[..., 0])
    out = normalize(image, mode)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, normalize(clean, mode), rtol=1e-6, atol=1e-6)
    assert np.isnan(image[3, 4, 0])  # the input is left alone


@pytest.mark.parametrize("mode", NORMALIZATIONS)
def test_infinities_are_clipped_to_the_finite_range(mode):
    clean = np.arange(12, dtype=np.float32).reshape(3, 4)
    image = clean.copy()
    image[0, 0], image[2, 3] = -np.inf, np.inf  # replace the minimum 0 and the maximum 11
    clean[0, 0], clean[2, 3] = 1.0, 10.0
    out = normalize(image, mode)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, normalize(clean, mode), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", NORMALIZATIONS)
def test_a_channel_without_finite_values_becomes_zeros(mode):
    image = np.stack([np.full((4, 4), np.nan), np.arange(16.0).reshape(4, 4)], axis=-1)
    image[0, 0, 0] = np.inf
    out = normalize(image, mode)
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_array_equal(out[1], normalize(image[..., 1], mode)[0])
