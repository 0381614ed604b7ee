"""Grad-CAM and Grad-CAM++ heatmaps for classifiers and segmentation models, and heatmap overlays.

Grad-CAM (Selvaraju et al. 2017): for a layer's activations ``A`` (C, h, w) and the gradient ``G`` of a
class score with respect to them, the channel weights are the spatial means of ``G`` and the map is
``ReLU(sum_c w_c A_c)``, upsampled bilinearly to the input. Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19
with the exponential score, whose factors cancel) weighs each channel by ``sum_ij alpha_ij ReLU(G_ij)``
with ``alpha = G^2 / (2 G^2 + sum_ab A_ab * G^3)``.

The score is a classifier's logit of the target class, or for a segmentation model (logits
``(1, K, H, W)``) the sum of class k's logits over the pixels predicted as k (pytorch-grad-cam's "semantic
segmentation target"; :func:`segmentation_target` takes another region).

Written by hand rather than with ``monai.visualize.GradCAM``/``GradCAMpp``: MONAI's scores only
``(N, K)`` classification outputs, keeps its hooks registered for the module's lifetime, switches the target
layer's ``inplace`` flag off for good, only warns when the layer is missing or its hooks never fire, maps
the largest activation to 0 by default, and its Grad-CAM++ sums ``A * G^3`` over space where the paper
sums ``A`` alone. Here the hooks live for one call, the activation is captured by a forward hook that
returns a clone (so an in-place operation downstream, like DenseNet's ReLU, cannot alter it), and the
gradient comes from ``torch.autograd.grad`` (no parameter ``.grad`` is touched, frozen models work).
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

METHODS = ("gradcam", "gradcam++")


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule of ``model`` called ``name`` (a dotted name as in ``model.named_modules()``).

    Raises:
        ConfigError: no such module; the message lists close names, or the children of the deepest
            existing parent.
    """
    if name:
        try:
            return model.get_submodule(name)
        except AttributeError:
            pass
    names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    if not close:
        parent = name
        while parent and parent not in names:
            parent = parent.rpartition(".")[0]
        module = model.get_submodule(parent)
        close = [f"{parent}.{child}" if parent else child for child, _ in module.named_children()][:12]
    hint = f"; nearby: {', '.join(close)}" if close else ""
    raise ConfigError(f"layer {name!r} is not a module of {type(model).__name__}{hint}")


@contextlib.contextmanager
def capture_outputs(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the outputs of the named layers during forward passes inside the ``with`` block.

    Yields:
        ``{layer: [output per call]}``; a tuple output is recorded by its first item. Each recorded
        tensor is a clone that replaces the layer's output, so it stays part of the autograd graph and
        no in-place operation downstream can change it. The hooks are removed on exit.
    """
    import torch

    modules = {name: resolve_layer(model, name) for name in layers}
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in modules}

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            first = output[0] if isinstance(output, tuple) and output else output
            if not isinstance(first, torch.Tensor):
                return None
            clone = first.clone()
            captured[name].append(clone)
            return (clone, *output[1:]) if isinstance(output, tuple) else clone

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def single_output(captured: dict[str, list[torch.Tensor]], name: str, model: nn.Module) -> torch.Tensor:
    """The one output recorded for ``name``; ConfigError when the layer ran never or several times."""
    outputs = captured[name]
    if not outputs:
        raise ConfigError(
            f"layer {name!r} of {type(model).__name__} never ran in the forward pass (its hooks never fired, "
            "or it returns no tensor); choose a layer the forward pass uses"
        )
    if len(outputs) > 1:
        raise ConfigError(
            f"layer {name!r} of {type(model).__name__} ran {len(outputs)} times in one forward pass "
            "(a shared module), so its activation is ambiguous; choose another layer"
        )
    return outputs[0]


def tokens_to_map(tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Transformer tokens ``(N, L, D)`` -> feature map ``(N, D, rows, cols)``.

    The leading ``L - rows * cols`` tokens (class tokens) are dropped; the rest are the patches in
    row-major order.
    """
    rows, cols = (int(g) for g in grid)
    count, length, width = tokens.shape
    extra = length - rows * cols
    if extra < 0:
        raise ConfigError(f"{length} tokens cannot fill a {rows}x{cols} patch grid")
    return tokens[:, extra:, :].reshape(count, rows, cols, width).permute(0, 3, 1, 2)


def segmentation_target(
    class_index: int, mask: np.ndarray | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Grad-CAM score for segmentation logits: class ``class_index``'s logits summed over a region.

    Args:
        class_index: the class k to explain.
        mask: ``(H, W)`` bool region; default: the pixels whose predicted (argmax) class is k.

    Returns:
        A function ``(1, K, H, W)`` logits -> scalar tensor; it raises ConfigError when the region is empty.
    """
    import torch

    def score(output: torch.Tensor) -> torch.Tensor:
        if output.ndim != 4:
            raise ConfigError(f"a segmentation target needs (1, K, H, W) logits, got {tuple(output.shape)}")
        _check_class(class_index, output.shape[1])
        if mask is None:
            region = output[0].argmax(dim=0) == class_index
        else:
            region = torch.as_tensor(np.asarray(mask, dtype=bool), device=output.device)
            if tuple(region.shape) != tuple(output.shape[-2:]):
                raise ConfigError(
                    f"target mask is {tuple(region.shape)} but the logits are {tuple(output.shape[-2:])}"
                )
        if not bool(region.any()):
            if mask is not None:
                raise ConfigError("the target mask is empty: no region to explain")
            raise ConfigError(
                f"class {class_index} is not predicted anywhere in this image, so it has no region to "
                "explain; choose another class or give a mask"
            )
        return output[0, class_index][region].sum()

    return score


def grad_cam(
    model: nn.Module,
    image: torch.Tensor,
    *,
    target: int | Callable[[torch.Tensor], torch.Tensor] | None = None,
    layer: str | None = None,
    method: str = "gradcam",
    token_grid: Sequence[int] | None = None,
) -> np.ndarray:
    """Grad-CAM (or Grad-CAM++) heatmap of one image for one target.

    Args:
        model: a classifier (``(1, C, H, W) -> (1, K)`` logits) or a segmentation model
            (``-> (1, K, H, W)``). Run in eval mode; its train/eval mode is restored afterwards.
        image: ``(1, C, H, W)`` float tensor, normalised as the model expects.
        target: a class index (classifier: its logit; segmentation: :func:`segmentation_target`), a function
            of the model's output returning a scalar score, or ``None`` for a classifier's predicted class.
        layer: dotted module name; default: the model's ``cam_layer`` attribute.
        method: ``gradcam`` or ``gradcam++``.
        token_grid: ``(rows, cols)`` patch grid for a layer that outputs transformer tokens ``(N, L, D)``;
            default: the model's ``token_grid`` attribute.

    Returns:
        ``(H, W)`` float32 in [0, 1] (min-max scaled; all zeros when no location has positive evidence).

    Raises:
        ConfigError: unknown layer, a layer whose hooks never fire or fire twice, a score that does not
            depend on the layer, a bad target, or tokens without a grid.
    """
    import torch
    import torch.nn.functional as F

    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image as a (1, C, H, W) tensor, got shape {tuple(image.shape)}")
    name = layer or getattr(model, "cam_layer", None)
    if not name:
        raise ConfigError(f"{type(model).__name__} declares no Grad-CAM layer (cam_layer); pass a layer name")
    parameter = next(model.parameters(), None)
    x = image.detach().to(device=parameter.device if parameter is not None else image.device)
    was_training = model.training
    model.eval()
    try:
        # Gradients are needed even when the caller runs under no_grad or inference_mode.
        with torch.inference_mode(False), torch.enable_grad():
            with capture_outputs(model, [name]) as captured:
                # The input requires grad so that the graph reaches the layer when every parameter is frozen.
                output = model(x.float().requires_grad_(True))
            if isinstance(output, tuple):
                output = output[0]
            activation = single_output(captured, name, model)
            score = _score(output, target)
            (gradient,) = torch.autograd.grad(score, activation, allow_unused=True)
    finally:
        model.train(was_training)
    if gradient is None:
        raise ConfigError(f"the target score does not depend on layer {name!r}; choose an earlier layer")
    if activation.ndim == 3:
        grid = token_grid or getattr(model, "token_grid", None)
        if grid is None:
            raise ConfigError(
                f"layer {name!r} outputs tokens {tuple(activation.shape)}, not a (N, C, h, w) feature map; "
                "choose a convolutional layer or give token_grid=(rows, cols)"
            )
        activation, gradient = tokens_to_map(activation, grid), tokens_to_map(gradient, grid)
    if activation.ndim != 4:
        raise ConfigError(f"layer {name!r} outputs shape {tuple(activation.shape)}, not (N, C, h, w)")
    acts = activation[0].detach().double()  # (C, h, w)
    grads = gradient[0].detach().double()
    if method == "gradcam":
        weights = grads.mean(dim=(1, 2))
    else:
        grads2 = grads**2
        denominator = 2 * grads2 + acts.sum(dim=(1, 2), keepdim=True) * grads2 * grads
        alpha = grads2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        weights = (alpha * F.relu(grads)).sum(dim=(1, 2))
    cam = F.relu((weights[:, None, None] * acts).sum(dim=0))
    cam = F.interpolate(cam[None, None], size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)
    cam = cam[0, 0].cpu().numpy()
    cam = np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(cam.min()), float(cam.max())
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return np.zeros(cam.shape, np.float32)
    return ((cam - low) / (high - low)).astype(np.float32)


def _score(output: torch.Tensor, target) -> torch.Tensor:
    """The scalar the gradient is taken of."""
    if callable(target):
        score = target(output)
        if score.numel() != 1:
            raise ConfigError(f"the target function must return one score, got shape {tuple(score.shape)}")
        return score.reshape(())
    if output.ndim == 2 and output.shape[0] == 1:
        index = int(output[0].argmax()) if target is None else int(target)
        _check_class(index, output.shape[1])
        return output[0, index]
    if output.ndim == 4 and output.shape[0] == 1:
        if target is None:
            raise ConfigError("a segmentation model needs a target class to explain")
        return segmentation_target(int(target))(output)
    raise ConfigError(f"model output {tuple(output.shape)} is neither (1, K) logits nor (1, K, H, W) logits")


def _check_class(index: int, count: int) -> None:
    if not 0 <= index < count:
        raise ConfigError(f"target class {index} is out of range: the model has {count} classes")


@lru_cache(maxsize=8)
def colormap_lut(name: str = "inferno") -> np.ndarray:
    """A matplotlib colormap sampled at 256 levels: ``(256, 3)`` uint8 (matplotlib imported on first use)."""
    from matplotlib import colormaps

    try:
        cmap = colormaps[name]
    except KeyError:
        raise ConfigError(f"unknown colormap {name!r}; try inferno, viridis, magma or jet") from None
    lut = np.round(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def apply_colormap(values: np.ndarray, name: str = "inferno") -> np.ndarray:
    """``(H, W)`` values in [0, 1] (NaN as 0, clipped) -> ``(H, W, 3)`` uint8 colours."""
    levels = np.round(np.clip(np.nan_to_num(np.asarray(values, np.float64), nan=0.0), 0.0, 1.0) * 255)
    return colormap_lut(name)[levels.astype(np.uint8)]


def heatmap_overlay(
    image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, colormap: str = "inferno"
) -> np.ndarray:
    """Blend a heatmap over an image.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, any dtype (shown as :func:`medseg.report.overlays.image_to_rgb8`
            shows it).
        cam: ``(H, W)`` float in [0, 1], e.g. from :func:`grad_cam`.
        alpha: heatmap weight, 0 (image only) to 1 (heatmap only).
        colormap: a matplotlib colormap name (perceptually uniform ``inferno`` by default).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    from medseg.report.overlays import image_to_rgb8

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = image_to_rgb8(image)
    cam = np.asarray(cam)
    if cam.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap is {cam.shape} but the image is {rgb.shape[:2]}")
    blended = (1.0 - alpha) * rgb.astype(np.float64) + alpha * apply_colormap(cam, colormap)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
