"""Tests for medseg.transforms.augment: image/mask alignment, exactness, determinism, crops."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.transforms import AugmentConfig, augment, center_crop_or_pad, random_crop

LABELS = (0, 1, 2, 5, 7)
NO_INTENSITY = {"brightness": 0.0, "contrast": (1.0, 1.0), "gamma": (1.0, 1.0), "noise_std": 0.0}
NO_SPATIAL = {"flip": False, "rotate90": False, "affine_p": 0.0}


def _nested_scene(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rectangles and discs labelled 1, 2, 3, nested so that every edge is a jump of one label.

    With unit jumps, rounding the bilinear image agrees with the nearest-neighbour mask everywhere but a
    few boundary pixels (> 99.5 %); a mask shifted by a single pixel drops to about 95 %.
    """
    height, width = shape
    rows, cols = np.ogrid[:height, :width]
    mask = np.zeros(shape, dtype=np.int32)
    mask[height // 8 : 7 * height // 8, width // 10 : 3 * width // 5] = 1
    mask[(rows - 0.5 * height) ** 2 + (cols - 0.35 * width) ** 2 < (0.25 * min(shape)) ** 2] = 2
    mask[int(0.42 * height) : int(0.58 * height), int(0.28 * width) : int(0.42 * width)] = 3
    mask[(rows - 0.3 * height) ** 2 + (cols - 0.8 * width) ** 2 < (0.12 * min(shape)) ** 2] = 1
    mask[(rows - 0.75 * height) ** 2 + (cols - 0.8 * width) ** 2 < (0.1 * min(shape)) ** 2] = 1
    return np.stack([mask, 2 * mask + 1]).astype(np.float32), mask


def _scene(shape: tuple[int, int] = (96, 96)) -> tuple[np.ndarray, np.ndarray]:
    """A mask of rectangles and discs with labels ``LABELS``, and a 2-channel image that encodes it.

    The labels have gaps, so any interpolation of the mask would create values outside ``LABELS``.

    Channel 0 equals the mask and channel 1 equals ``2 * mask + 1``, so both can be decoded back to labels.
    """
    height, width = shape
    mask = np.zeros(shape, dtype=np.int32)
    mask[height // 8 : height // 3, width // 10 : width // 2] = 1
    mask[height // 2 : height - height // 6, width // 6 : width // 3] = 2
    rows, cols = np.ogrid[:height, :width]
    mask[(rows - 0.6 * height) ** 2 + (cols - 0.7 * width) ** 2 < (0.18 * min(shape)) ** 2] = 5
    mask[(rows - 0.25 * height) ** 2 + (cols - 0.8 * width) ** 2 < (0.1 * min(shape)) ** 2] = 7
    image = np.stack([mask, 2 * mask + 1]).astype(np.float32)
    return image, mask


def _dihedral(array: np.ndarray) -> list[np.ndarray]:
    """All flips and 90-degree rotations of the last two axes, built with np.flip / np.rot90."""
    return [
        np.rot90(np.flip(array, axis=-1) if flipped else array, k, axes=(-2, -1))
        for flipped in (False, True)
        for k in range(4)
    ]


def _which(array: np.ndarray, candidates: list[np.ndarray]) -> int:
    matches = [i for i, candidate in enumerate(candidates) if np.array_equal(array, candidate)]
    assert len(matches) == 1, "output is not exactly one flip/rotation of the input"
    return matches[0]


@pytest.mark.parametrize("shape", [(96, 96), (80, 112)])
def test_image_and_mask_stay_aligned_under_every_spatial_op(shape):
    image, mask = _nested_scene(shape)
    config = AugmentConfig(affine_p=1.0, **NO_INTENSITY)
    changed = 0
    for seed in range(40):
        out_image, out_mask = augment(image, mask, config, np.random.default_rng(seed))
        assert np.mean(np.rint(out_image[0]) == out_mask) >= 0.98
        assert np.mean(np.rint((out_image[1] - 1) / 2) == out_mask) >= 0.98
        changed += np.mean(out_mask != mask) > 0.05
    assert changed > 30  # the augmentation really moved things, so the agreement above is not vacuous


def test_mask_values_after_affine_are_a_subset_of_the_values_before():
    image, mask = _scene()
    config = AugmentConfig(affine_p=1.0)
    for seed in range(30):
        _, out_mask = augment(image, mask, config, np.random.default_rng(seed))
        assert set(np.unique(out_mask)) <= set(LABELS)


def test_flips_and_rot90_are_exact_on_a_square_patch():
    mask = np.arange(36, dtype=np.int64).reshape(6, 6)
    image = np.stack([mask, -mask]).astype(np.float32)
    config = AugmentConfig(affine_p=0.0, **NO_INTENSITY)
    seen = set()
    for seed in range(80):
        out_image, out_mask = augment(image, mask, config, np.random.default_rng(seed))
        index = _which(out_mask, _dihedral(mask))
        assert _which(out_image, _dihedral(image)) == index
        seen.add(index)
    assert seen == set(range(8))


def test_non_square_patch_keeps_its_shape_and_only_flips():
    mask = np.arange(24, dtype=np.int64).reshape(4, 6)
    image = mask[np.newaxis].astype(np.float32)
    config = AugmentConfig(affine_p=0.0, **NO_INTENSITY)
    flips = [mask, np.flip(mask, 0), np.flip(mask, 1), np.flip(mask, (0, 1))]
    seen = set()
    for seed in range(40):
        out_image, out_mask = augment(image, mask, config, np.random.default_rng(seed))
        assert out_mask.shape == (4, 6)
        index = _which(out_mask, flips)
        np.testing.assert_array_equal(out_image[0], out_mask)
        seen.add(index)
    assert seen == {0, 1, 2, 3}


def test_affine_rotates_and_scales_about_the_centre():
    size = 65
    rows, cols = np.ogrid[:size, :size]
    mask = ((rows - 32) ** 2 + (cols - 32) ** 2 <= 8**2).astype(np.uint8)
    image = mask[np.newaxis].astype(np.float32)
    config = AugmentConfig(flip=False, rotate90=False, affine_p=1.0, translate=0.0, **NO_INTENSITY)
    for seed in range(10):
        _, out_mask = augment(image, mask, config, np.random.default_rng(seed))
        centroid = np.argwhere(out_mask).mean(axis=0)
        np.testing.assert_allclose(centroid, [32, 32], atol=0.6)
    zoom_in = AugmentConfig(**{**vars(config), "scale": (2.0, 2.0), "rotation": 0.0})
    _, out_mask = augment(image, mask, zoom_in, np.random.default_rng(0))
    assert out_mask.sum() == pytest.approx(4 * mask.sum(), rel=0.1)


@pytest.mark.parametrize("mask_dtype", [np.uint8, np.int32, np.int64, np.bool_])
@pytest.mark.parametrize("image_dtype", [np.float32, np.float64])
def test_shapes_and_dtypes_are_preserved(mask_dtype, image_dtype):
    image, mask = _scene((48, 64))
    image = np.concatenate([image, image[:1]]).astype(image_dtype)
    mask = (mask > 0) if mask_dtype is np.bool_ else mask.astype(mask_dtype)
    for seed in range(5):
        out_image, out_mask = augment(image, mask, AugmentConfig(affine_p=1.0), np.random.default_rng(seed))
        assert out_image.shape == (3, 48, 64) and out_image.dtype == image_dtype
        assert out_mask.shape == (48, 64) and out_mask.dtype == mask_dtype
        assert out_image.flags.c_contiguous and out_mask.flags.c_contiguous


def test_mask_may_be_none():
    image, _ = _scene()
    out_image, out_mask = augment(image, None, AugmentConfig(affine_p=1.0), np.random.default_rng(0))
    assert out_mask is None
    assert out_image.shape == image.shape


def test_same_seed_same_output_different_seed_different_output():
    image, mask = _scene()
    config = AugmentConfig()
    first = augment(image, mask, config, np.random.default_rng(123))
    again = augment(image, mask, config, np.random.default_rng(123))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    other = augment(image, mask, config, np.random.default_rng(124))
    assert not np.array_equal(first[0], other[0])


def test_inputs_are_never_modified():
    image, mask = _scene()
    image_before, mask_before = image.copy(), mask.copy()
    for seed in range(20):
        out_image, out_mask = augment(image, mask, AugmentConfig(), np.random.default_rng(seed))
        assert not np.shares_memory(out_image, image) and not np.shares_memory(out_mask, mask)
    np.testing.assert_array_equal(image, image_before)
    np.testing.assert_array_equal(mask, mask_before)


def test_intensity_ops_never_touch_the_mask():
    image, mask = _scene()
    config = AugmentConfig(**NO_SPATIAL, brightness=0.5, contrast=(0.5, 2.0), gamma=(0.5, 2.0), noise_std=0.2)
    image_changed = 0
    for seed in range(20):
        out_image, out_mask = augment(image, mask, config, np.random.default_rng(seed))
        np.testing.assert_array_equal(out_mask, mask)
        image_changed += not np.array_equal(out_image, image)
    assert image_changed >= 15


def test_brightness_adds_one_bounded_constant():
    image, mask = _scene()
    config = AugmentConfig(**NO_SPATIAL, **{**NO_INTENSITY, "brightness": 0.1})
    shifts = []
    for seed in range(20):
        out_image, _ = augment(image, mask, config, np.random.default_rng(seed))
        difference = out_image - image
        np.testing.assert_allclose(difference, difference.flat[0], atol=1e-5)
        assert abs(difference.flat[0]) <= 0.1 + 1e-6
        shifts.append(difference.flat[0])
    assert np.count_nonzero(shifts) >= 5


def test_contrast_keeps_each_channel_mean_and_scales_its_spread():
    image, mask = _scene()
    config = AugmentConfig(**NO_SPATIAL, **{**NO_INTENSITY, "contrast": (0.8, 1.2)})
    applied = 0
    for seed in range(20):
        out_image, _ = augment(image, mask, config, np.random.default_rng(seed))
        np.testing.assert_allclose(out_image.mean(axis=(1, 2)), image.mean(axis=(1, 2)), rtol=1e-4)
        ratio = out_image.std(axis=(1, 2)) / image.std(axis=(1, 2))
        assert np.allclose(ratio, ratio[0], rtol=1e-4) and 0.8 - 1e-4 <= ratio[0] <= 1.2 + 1e-4
        applied += not np.isclose(ratio[0], 1.0)
    assert applied >= 5


def test_gamma_keeps_each_channel_range_and_order():
    ramp = np.linspace(-1.0, 3.0, 64, dtype=np.float32)
    image = np.stack([np.tile(ramp, (8, 1)), np.tile(2 * ramp, (8, 1))])
    config = AugmentConfig(**NO_SPATIAL, **{**NO_INTENSITY, "gamma": (0.5, 2.0)})
    applied = 0
    for seed in range(30):
        out_image, _ = augment(image, None, config, np.random.default_rng(seed))
        np.testing.assert_allclose(out_image.min(axis=(1, 2)), image.min(axis=(1, 2)), atol=1e-5)
        np.testing.assert_allclose(out_image.max(axis=(1, 2)), image.max(axis=(1, 2)), atol=1e-5)
        assert np.all(np.diff(out_image, axis=-1) >= -1e-6)
        applied += not np.allclose(out_image, image)
    assert applied >= 3


def test_noise_is_bounded_by_noise_std():
    image = np.zeros((1, 128, 128), dtype=np.float32)
    config = AugmentConfig(**NO_SPATIAL, **{**NO_INTENSITY, "noise_std": 0.03})
    applied = 0
    for seed in range(30):
        out_image, _ = augment(image, None, config, np.random.default_rng(seed))
        assert out_image.std() <= 0.03 * 1.05
        applied += out_image.std() > 0
    assert applied >= 3


def test_disabled_config_is_the_identity():
    image, mask = _scene()
    out_image, out_mask = augment(image, mask, AugmentConfig(enabled=False), np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)


def test_augment_rejects_bad_inputs():
    image, mask = _scene()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="does not match"):
        augment(image, mask[:-1], AugmentConfig(), rng)
    with pytest.raises(ValueError, match="float"):
        augment(image.astype(np.uint8), mask, AugmentConfig(), rng)
    with pytest.raises(ValueError, match="float"):
        augment(image[0], mask, AugmentConfig(), rng)


def test_config_accepts_lists_and_validates():
    assert AugmentConfig(scale=[0.9, 1.1]).scale == (0.9, 1.1)
    with pytest.raises(ValueError, match="affine_p"):
        AugmentConfig(affine_p=1.5)
    with pytest.raises(ValueError, match="gamma"):
        AugmentConfig(gamma=(0.0, 1.0))
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="noise_std"):
        AugmentConfig(noise_std=-0.1)


def _unique_scene(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    mask = np.arange(1, shape[0] * shape[1] + 1, dtype=np.int32).reshape(shape)
    return np.stack([mask, -mask]).astype(np.float32), mask


def test_random_crop_takes_one_aligned_window():
    image, mask = _unique_scene((40, 50))
    for seed in range(20):
        out_image, out_mask = random_crop(image, mask, (16, 20), np.random.default_rng(seed))
        assert out_image.shape == (2, 16, 20) and out_mask.shape == (16, 20)
        top, left = np.argwhere(mask == out_mask[0, 0])[0]
        np.testing.assert_array_equal(out_mask, mask[top : top + 16, left : left + 20])
        np.testing.assert_array_equal(out_image, image[:, top : top + 16, left : left + 20])


def test_random_crop_pads_a_small_image():
    image, mask = _unique_scene((10, 12))
    mask = mask.astype(np.uint8)
    out_image, out_mask = random_crop(image, mask, (16, 16), np.random.default_rng(0), pad_value_mask=255)
    assert out_image.shape == (2, 16, 16) and out_mask.shape == (16, 16) and out_mask.dtype == np.uint8
    inside = (slice(3, 13), slice(2, 14))  # 6 missing rows split 3/3, 4 missing columns split 2/2
    np.testing.assert_array_equal(out_image[(slice(None), *inside)], image)
    np.testing.assert_array_equal(out_mask[inside], mask)
    border = np.ones((16, 16), dtype=bool)
    border[inside] = False
    assert np.all(out_image[:, border] == 0)
    assert np.all(out_mask[border] == 255)


def test_random_crop_pads_one_axis_and_crops_the_other():
    image, mask = _unique_scene((10, 40))
    for seed in range(10):
        out_image, out_mask = random_crop(image, mask, (14, 8), np.random.default_rng(seed), pad_value_mask=0)
        assert out_image.shape == (2, 14, 8)
        np.testing.assert_array_equal(out_mask[:2], 0)
        np.testing.assert_array_equal(out_mask[12:], 0)
        left = np.argwhere(mask == out_mask[2, 0])[0][1]
        np.testing.assert_array_equal(out_mask[2:12], mask[:, left : left + 8])


def _contains_tiny_object(rate_seed: int, foreground_p: float, draws: int = 400) -> float:
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[200:203, 40:43] = 1
    image = mask[np.newaxis].astype(np.float32)
    rng = np.random.default_rng(rate_seed)
    hits = 0
    for _ in range(draws):
        _, out_mask = random_crop(image, mask, (32, 32), rng, foreground_p=foreground_p)
        hits += bool(out_mask.any())
    return hits / draws


def test_foreground_oversampling_finds_a_tiny_object_far_more_often_than_uniform():
    uniform = _contains_tiny_object(0, foreground_p=0.0)
    oversampled = _contains_tiny_object(0, foreground_p=0.33)
    assert uniform < 0.08  # expected about (34 / 225) ** 2 = 0.023
    assert oversampled > 0.25  # expected about 0.33 + 0.67 * 0.023 = 0.35
    assert _contains_tiny_object(1, foreground_p=1.0, draws=100) == 1.0


def test_foreground_oversampling_draws_the_class_first_so_a_rare_class_is_centred_as_often():
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[:, :128] = 1  # a common class covering half the image
    mask[200:203, 200:203] = 2  # a rare class of 9 pixels
    image = mask[np.newaxis].astype(np.float32)
    rng = np.random.default_rng(0)
    hits = sum(
        bool((random_crop(image, mask, (32, 32), rng, foreground_p=1.0)[1] == 2).any()) for _ in range(200)
    )
    assert 0.4 < hits / 200 < 0.65  # about one draw in two picks class 2; by pixel it would be 9 in 32777


def test_foreground_crop_keeps_an_object_in_a_corner_inside_the_patch():
    mask = np.zeros((64, 64), dtype=np.int64)
    mask[0, 63] = 3
    image = np.zeros((1, 64, 64), dtype=np.float32)
    for seed in range(30):
        _, out_mask = random_crop(image, mask, (16, 16), np.random.default_rng(seed), foreground_p=1.0)
        assert out_mask[0, 15] == 3


def test_random_crop_works_without_mask_and_for_2d_images():
    image = np.arange(30 * 30, dtype=np.float32).reshape(30, 30)
    out_image, out_mask = random_crop(image, None, (8, 8), np.random.default_rng(0), foreground_p=1.0)
    assert out_mask is None and out_image.shape == (8, 8)
    first = random_crop(image, None, (8, 8), np.random.default_rng(5))[0]
    np.testing.assert_array_equal(first, random_crop(image, None, (8, 8), np.random.default_rng(5))[0])


def test_crop_rejects_bad_arguments():
    image, mask = _unique_scene((10, 10))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="size"):
        random_crop(image, mask, (0, 4), rng)
    with pytest.raises(ValueError, match="does not fit"):
        random_crop(image, mask.astype(np.uint8), (12, 12), rng, pad_value_mask=-1)
    with pytest.raises(ValueError, match="does not match"):
        center_crop_or_pad(image, mask[:5], (4, 4))


def test_center_crop_or_pad_is_centred_and_deterministic():
    image, mask = _unique_scene((10, 12))
    out_image, out_mask = center_crop_or_pad(image, mask, (6, 8))
    np.testing.assert_array_equal(out_mask, mask[2:8, 2:10])
    np.testing.assert_array_equal(out_image, image[:, 2:8, 2:10])
    padded_image, padded_mask = center_crop_or_pad(image, mask, (13, 15), pad_value_mask=-1)
    assert padded_image.shape == (2, 13, 15)
    np.testing.assert_array_equal(padded_mask[1:11, 1:13], mask)  # 3 missing split 1 before, 2 after
    assert np.count_nonzero(padded_mask == -1) == 13 * 15 - 10 * 12
    back_image, back_mask = center_crop_or_pad(padded_image, padded_mask, (10, 12))
    np.testing.assert_array_equal(back_image, image)
    np.testing.assert_array_equal(back_mask, mask)


def test_random_crop_draws_centres_from_the_sample_mask():
    # instance ids: 40 common objects and one rare one; the sample mask types them (1 common, 2 rare)
    ids = np.zeros((200, 200), np.int32)
    types = np.zeros((200, 200), np.int8)
    for i in range(40):
        r, c = divmod(i, 8)
        ids[5 + 20 * r : 12 + 20 * r, 5 + 20 * c : 12 + 20 * c] = i + 1
        types[5 + 20 * r : 12 + 20 * r, 5 + 20 * c : 12 + 20 * c] = 1
    ids[180:190, 180:190], types[180:190, 180:190] = 41, 2
    image = np.zeros((1, 200, 200), np.float32)
    hits = {"ids": 0, "types": 0}
    for seed in range(200):
        for key, sample in (("ids", None), ("types", types)):
            rng = np.random.default_rng(seed)
            _, patch = random_crop(image, ids, (32, 32), rng, foreground_p=1.0, sample_mask=sample)
            hits[key] += int((patch == 41).any())
    assert hits["types"] > 80 and hits["ids"] < 30  # ~1/2 of patches vs ~1/41 (+ neighbours)
    with pytest.raises(ValueError, match="sample_mask shape"):
        random_crop(image, ids, (32, 32), np.random.default_rng(0), sample_mask=types[:10])
