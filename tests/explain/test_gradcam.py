"""Grad-CAM: exact on a hand-built network, localising on trained ones, clear errors for bad layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.explain import colormap_lut, grad_cam, heatmap_overlay, resolve_layer, segmentation_target
from medseg.models import create_model, list_models
from medseg.models.classifiers import create_classifier

SIZE, SQUARE = 32, 8
# Squares away from the image centre and off the diagonal, so a uniform, transposed or inverted map fails.
PLACES = [(1, 22), (22, 3), (3, 12), (21, 23)]


def _squares(rng: np.random.Generator, count: int, *, present: np.ndarray | None = None):
    """Noise images (count, 1, SIZE, SIZE), a bright square where ``present``; masks (count, SIZE, SIZE)."""
    images = rng.normal(0.0, 0.3, (count, 1, SIZE, SIZE)).astype(np.float32)
    masks = np.zeros((count, SIZE, SIZE), np.int64)
    present = np.ones(count, bool) if present is None else present
    for i in np.flatnonzero(present):
        r, c = rng.integers(0, SIZE - SQUARE + 1, 2)
        images[i, 0, r : r + SQUARE, c : c + SQUARE] += 2.0
        masks[i, r : r + SQUARE, c : c + SQUARE] = 1
    return torch.from_numpy(images), torch.from_numpy(masks)


def _test_image(rng: np.random.Generator, r: int, c: int) -> torch.Tensor:
    image = rng.normal(0.0, 0.3, (1, 1, SIZE, SIZE)).astype(np.float32)
    image[0, 0, r : r + SQUARE, c : c + SQUARE] += 2.0
    return torch.from_numpy(image)


def _assert_localises(cam: np.ndarray, r: int, c: int) -> None:
    """The map's centre of mass lies in the square and the square is far hotter than the rest."""
    assert cam.shape == (SIZE, SIZE) and cam.dtype == np.float32
    assert np.isfinite(cam).all() and cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    centre = (cam * rows).sum() / cam.sum(), (cam * cols).sum() / cam.sum()
    assert r <= centre[0] <= r + SQUARE - 1 and c <= centre[1] <= c + SQUARE - 1, (centre, r, c)
    inside = np.zeros(cam.shape, bool)
    inside[r : r + SQUARE, c : c + SQUARE] = True
    assert cam[inside].mean() > 2.5 * cam[~inside].mean()


@pytest.fixture(scope="module")
def square_classifier() -> nn.Module:
    """simple_cnn_tiny trained for 40 steps on "bright square somewhere" (class 1) vs noise (class 0)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create_classifier("simple_cnn_tiny", in_channels=1, num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(40):
        labels = rng.integers(0, 2, 32)
        images, _ = _squares(rng, 32, present=labels.astype(bool))
        loss = nn.functional.cross_entropy(model(images), torch.from_numpy(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad()
    images, _ = _squares(rng, 64, present=np.arange(64) % 2 == 1)
    with torch.no_grad():
        accuracy = (model.eval()(images).argmax(1).numpy() == np.arange(64) % 2).mean()
    assert accuracy > 0.95
    return model


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_of_a_trained_classifier_peaks_on_the_square(square_classifier, method):
    rng = np.random.default_rng(1)
    for r, c in PLACES:
        cam = grad_cam(square_classifier, _test_image(rng, r, c), target=1, method=method)
        _assert_localises(cam, r, c)


def test_cam_is_deterministic_restores_the_model_and_leaves_no_trace(square_classifier):
    image = _test_image(np.random.default_rng(2), *PLACES[0])
    square_classifier.train()
    with torch.no_grad():  # gradients are switched back on inside
        first = grad_cam(square_classifier, image)  # target None: the predicted class (1: a square is there)
    second = grad_cam(square_classifier, image, target=1)
    assert np.array_equal(first, second)
    assert square_classifier.training
    assert all(not m._forward_hooks for m in square_classifier.modules())
    assert all(p.grad is None for p in square_classifier.parameters())
    square_classifier.eval()


class _Probe(nn.Module):
    """Logit k = w_k * mean(image), with the image itself as the explained layer's activation."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.features.weight)
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        self.unused = nn.Conv2d(1, 1, 1)
        self.side = nn.Conv2d(1, 1, 1)
        self.shared = nn.ReLU()

    def forward(self, x):
        self.side(x)  # runs, but no logit depends on it
        a = self.shared(self.shared(x) - 1.0) + 1.0 if getattr(self, "twice", False) else x
        return self.fc(self.features(a).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_of_a_linear_score_is_the_signed_evidence_exactly(method):
    # The score is the mean of the activation, so each class's map is the ReLU of its signed evidence.
    image = torch.zeros(1, 1, 16, 16)
    image[0, 0, 2:6, 9:14] = 1.0
    image[0, 0, 10:14, 1:4] = -0.5
    probe = _Probe()
    positive = grad_cam(probe, image, target=1, layer="features", method=method)
    negative = grad_cam(probe, image, target=0, layer="features", method=method)
    np.testing.assert_allclose(positive, image[0, 0].clamp(min=0).numpy(), atol=1e-6)
    if method == "gradcam":
        np.testing.assert_allclose(negative, (-image[0, 0]).clamp(min=0).numpy() * 2, atol=1e-6)
    else:  # Grad-CAM++ weighs only positive gradients, and class 0's are all negative here
        assert not negative.any()


def test_layer_errors_are_clear():
    probe = _Probe()
    image = torch.rand(1, 1, 8, 8)
    with pytest.raises(ConfigError, match="'featurs' is not a module of _Probe; nearby: features"):
        grad_cam(probe, image, target=1, layer="featurs")
    with pytest.raises(ConfigError, match="never ran in the forward pass"):
        grad_cam(probe, image, target=1, layer="unused")
    with pytest.raises(ConfigError, match="does not depend on layer 'side'"):
        grad_cam(probe, image, target=1, layer="side")
    probe.twice = True
    with pytest.raises(ConfigError, match="ran 2 times"):
        grad_cam(probe, image, target=1, layer="shared")
    with pytest.raises(ConfigError, match="declares no Grad-CAM layer"):
        grad_cam(probe, image, target=1)
    with pytest.raises(ConfigError, match="out of range"):
        grad_cam(probe, image, target=2, layer="features")
    assert all(not m._forward_hooks for m in probe.modules())


def test_resolve_layer_suggests_siblings_of_the_deepest_existing_parent():
    model = create_classifier("resnet_tiny", in_channels=3, num_classes=2)
    assert resolve_layer(model, "encoder.layer4") is model.encoder.layer4
    with pytest.raises(ConfigError, match=r"nearby: .*encoder\.layer4"):
        resolve_layer(model, "encoder.stage9.conv")


@pytest.mark.parametrize("name", ["densenet_tiny", "resnet_tiny", "efficientnet_tiny", "vit_tiny"])
def test_default_layer_of_every_backbone_gives_a_finite_map(name):
    torch.manual_seed(0)
    model = create_classifier(name, in_channels=3, num_classes=3)
    image = torch.rand(1, 3, 64, 64)
    for method in ("gradcam", "gradcam++"):
        cam = grad_cam(model, image, target=2, method=method)
        assert cam.shape == (64, 64) and np.isfinite(cam).all()
        assert cam.min() >= 0.0 and cam.max() <= 1.0


def test_tokens_need_a_grid():
    model = create_classifier("vit_tiny", in_channels=1, num_classes=2)
    model.token_grid = None
    with pytest.raises(ConfigError, match="outputs tokens"):
        grad_cam(model, torch.rand(1, 1, 64, 64), target=0)
    cam = grad_cam(model, torch.rand(1, 1, 64, 64), target=0, token_grid=(4, 4))
    assert cam.shape == (64, 64)


def test_segmentation_cam_for_the_class_region_of_a_trained_model():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create_model("attention_unet_tiny", in_channels=1, num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(20):
        images, masks = _squares(rng, 8)
        loss = nn.functional.cross_entropy(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for r, c in PLACES[:2]:
        cam = grad_cam(model, _test_image(rng, r, c), target=1)  # default layer: the model's cam_layer
        _assert_localises(cam, r, c)


@pytest.mark.parametrize("name", list_models("*tiny"))
def test_default_layer_of_every_segmentation_model_fires_and_gives_a_finite_map(name):
    torch.manual_seed(0)
    model = create_model(name, in_channels=3, num_classes=3).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        k = int(model(image).argmax(1).flatten().mode().values)
    cam = grad_cam(model, image, target=k)
    assert cam.shape == (64, 64) and np.isfinite(cam).all()


def test_unet_cam_uses_the_predicted_region_or_a_given_mask():
    torch.manual_seed(0)
    model = create_model("unet_tiny", in_channels=1, num_classes=3).eval()
    image = torch.rand(1, 1, 32, 32)
    logits = model(image)
    predicted = logits.argmax(1)[0]
    k = int(predicted.flatten().mode().values)
    expected = logits[0, k][predicted == k].sum()
    assert torch.allclose(segmentation_target(k)(logits), expected)
    left = np.zeros((32, 32), bool)
    left[:, :16] = True
    assert torch.allclose(segmentation_target(k, left)(logits), logits[0, k, :, :16].sum())

    cam = grad_cam(model, image, target=k)
    assert cam.shape == (32, 32) and np.isfinite(cam).all()
    assert np.array_equal(cam, grad_cam(model, image, target=k))
    right = grad_cam(model, image, target=segmentation_target(k, ~left), layer="model.0")
    assert right.any() and not np.array_equal(
        grad_cam(model, image, target=segmentation_target(k, left)), right
    )
    with pytest.raises(ConfigError, match="target mask is"):
        grad_cam(model, image, target=segmentation_target(k, np.ones((8, 8), bool)))
    with pytest.raises(ConfigError, match="target mask is empty"):
        grad_cam(model, image, target=segmentation_target(k, np.zeros((32, 32), bool)))
    background_everywhere = torch.zeros(1, 3, 4, 4)
    background_everywhere[:, 0] = 1.0
    with pytest.raises(ConfigError, match="class 2 is not predicted anywhere"):
        segmentation_target(2)(background_everywhere)
    with pytest.raises(ConfigError, match="needs a target class"):
        grad_cam(model, image)


def test_heatmap_overlay_blends_the_colormap_over_the_image():
    image = np.full((6, 8), 100, np.uint8)
    cam = np.zeros((6, 8), np.float32)
    cam[2:4, 3:5] = 1.0
    lut = colormap_lut("inferno")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert np.array_equal(heatmap_overlay(image, cam, alpha=0.0), np.full((6, 8, 3), 100, np.uint8))
    full = heatmap_overlay(image, cam, alpha=1.0)
    assert (full[3, 3] == lut[255]).all() and (full[0, 0] == lut[0]).all()
    half = heatmap_overlay(np.zeros((6, 8, 3), np.uint8), cam, alpha=0.5)
    np.testing.assert_allclose(half[3, 4], np.round(lut[255] * 0.5), atol=1)
    with pytest.raises(ValueError, match="heatmap is"):
        heatmap_overlay(image, cam[:5])
    with pytest.raises(ConfigError, match="unknown colormap"):
        heatmap_overlay(image, cam, colormap="no-such-map")
