"""Feature maps are the layers' real activations; the gallery lays them out one labelled row per layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError
from medseg.explain import colormap_lut, feature_gallery, feature_maps
from medseg.models.classifiers import create_classifier


def test_feature_maps_are_the_activations_of_the_named_layers():
    torch.manual_seed(0)
    model = create_classifier("simple_cnn_tiny", in_channels=1, num_classes=2).train()
    image = torch.rand(1, 1, 64, 48)
    maps = feature_maps(model, image, ["encoder.stages.2", "encoder.stages.0"])
    assert list(maps) == ["encoder.stages.2", "encoder.stages.0"]
    assert maps["encoder.stages.0"].shape == (8, 64, 48)
    assert maps["encoder.stages.2"].shape == (32, 16, 12)
    assert all(m.dtype == np.float32 and np.isfinite(m).all() for m in maps.values())
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        expected = model.encoder.stages(image)[0].numpy()
    np.testing.assert_allclose(maps["encoder.stages.2"], expected, atol=1e-6)


def test_transformer_tokens_are_laid_out_on_the_patch_grid():
    model = create_classifier("vit_tiny", in_channels=3, num_classes=2)
    image = torch.rand(1, 3, 64, 64)
    maps = feature_maps(model, image, ["encoder.blocks.0"])
    assert maps["encoder.blocks.0"].shape == (32, 4, 4)
    model.eval()
    with torch.no_grad():
        vit = model.encoder
        tokens = vit.blocks[0](torch.cat([vit.cls_token, vit.patch_embedding(image)], dim=1))
    # patch (row 1, col 2) is token 1 + 1 * 4 + 2 (token 0 is the class token)
    np.testing.assert_allclose(maps["encoder.blocks.0"][:, 1, 2], tokens[0, 7].numpy(), atol=1e-5)


def test_bad_layers_are_config_errors():
    model = create_classifier("resnet_tiny", in_channels=3, num_classes=2)
    image = torch.rand(1, 3, 32, 32)
    with pytest.raises(ConfigError, match="nearby: encoder.layer1"):
        feature_maps(model, image, ["encoder.layer1x"])
    with pytest.raises(ConfigError, match="not \\(N, C, h, w\\)"):
        feature_maps(model, image, ["head"])
    with pytest.raises(ConfigError, match="at least one layer"):
        feature_maps(model, image, [])


def _tiles(gallery: np.ndarray) -> list[tuple[slice, slice]]:
    """Bounding boxes of the coloured tiles, row by row (viridis has no grey, the text and background do)."""
    from scipy import ndimage

    coloured = (gallery[..., 0] != gallery[..., 1]) | (gallery[..., 1] != gallery[..., 2])
    labels, _ = ndimage.label(coloured)
    return sorted(ndimage.find_objects(labels), key=lambda box: (box[0].start, box[1].start))


def test_gallery_shows_the_first_k_channels_per_row_each_scaled_on_its_own():
    ramp = np.tile(np.linspace(-5.0, 7.0, 8), (8, 1))  # rises left to right
    first = np.stack([ramp, np.full((8, 8), 3.0), -ramp])
    second = np.random.default_rng(0).random((20, 4, 4))
    gallery = feature_gallery({"a": first, "b": second}, k=16, tile=32, colormap="viridis")
    assert gallery.dtype == np.uint8 and gallery.ndim == 3 and gallery.shape[2] == 3
    tiles = _tiles(gallery)
    assert len(tiles) == 3 + 16  # all of a's channels, the first 16 of b's
    assert all((box[0].stop - box[0].start, box[1].stop - box[1].start) == (32, 32) for box in tiles)
    row_a, row_b = tiles[:3], tiles[3:]
    assert len({box[0].start for box in row_a}) == 1 and row_b[0][0].start > row_a[0][0].start
    assert [box[1] for box in row_a] == [box[1] for box in row_b[:3]]  # columns line up

    lut = colormap_lut("viridis")
    ramp_tile, constant_tile, falling_tile = (gallery[box] for box in row_a)
    assert (ramp_tile[:, 0] == lut[0]).all() and (ramp_tile[:, -1] == lut[255]).all()
    assert (constant_tile == lut[0]).all()  # a constant channel is shown as 0
    assert (falling_tile[:, 0] == lut[255]).all()  # each channel scaled by its own min and max
    for row in (row_a, row_b):  # a dark label left of each row's first tile
        box = row[0]
        assert (gallery[box[0], : box[1].start] < 100).any()

    narrow = feature_gallery({"a": first, "b": second}, k=2, tile=32, colormap="viridis")
    assert len(_tiles(narrow)) == 2 + 2
    assert narrow.shape[0] == gallery.shape[0] and narrow.shape[1] < gallery.shape[1]


def test_gallery_rejects_non_maps():
    with pytest.raises(ValueError, match="no feature maps"):
        feature_gallery({})
    with pytest.raises(ValueError, match=r"must be \(C, h, w\)"):
        feature_gallery({"x": np.zeros((4, 4))})
