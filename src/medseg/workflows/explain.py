"""``medseg explain``: Grad-CAM heatmaps and feature-map galleries of a trained run, for one image.

Classification runs: Grad-CAM (or Grad-CAM++) of the logit of the predicted class, or of ``class_name``,
at the classifier's own layer (``cam_layer``) or ``layer``. It is computed on the image as the network
sees it (:func:`~medseg.workflows.classify.prepare_image`) and mapped back onto the original image.

Segmentation runs: Grad-CAM of one class's logits summed over the pixels the model predicts as that class
(:func:`~medseg.explain.segmentation_target`). Semantic runs explain ``class_name``, by default the
foreground class with the most predicted pixels; instance (deep-watershed) runs explain the foreground of
their fgbg head, or with ``class_name`` set to an instance type, that type's logits over the foreground
predicted as it. The whole image goes through the network at once (no tiling), as training saw patches
of it.

Feature maps: the activations of chosen layers (default: the last module of each encoder stage of a
classifier, the Grad-CAM layer of a segmentation model) as one gallery PNG
(:func:`~medseg.explain.feature_gallery`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError
from medseg.io import read_image, write_image


@dataclass
class Heatmap:
    """A Grad-CAM heatmap on the original image.

    Attributes:
        cam: ``(H, W)`` float32 in [0, 1] (all zeros when nothing at the layer raises the score).
        overlay: ``(H, W, 3)`` uint8, the heatmap blended over the image.
        class_name: the class explained.
        layer: the layer the map was taken at.
        method: ``gradcam`` or ``gradcam++``.
        score: classification: the class's probability; segmentation: the fraction of pixels predicted as
            the class (the region whose logits were summed).
    """

    cam: np.ndarray
    overlay: np.ndarray
    class_name: str
    layer: str
    method: str
    score: float


@dataclass
class Explanation:
    """What :func:`explain` wrote and why."""

    task: str
    files: list[Path]
    heatmap: Heatmap | None = None
    layers: list[str] = field(default_factory=list)  # feature maps: the layers shown
    notes: list[str] = field(default_factory=list)  # things a user should know (e.g. an all-zero map)

    def describe(self) -> str:
        """One line for the command line."""
        if self.heatmap is None:
            return f"feature maps of {len(self.layers)} layer(s): {', '.join(self.layers)}"
        h = self.heatmap
        what = "probability" if self.task == "classify" else "predicted in"
        score = f"{h.score:.3f}" if self.task == "classify" else f"{h.score:.1%} of the pixels"
        return f"{h.method} for class {h.class_name} ({what} {score}) at layer {h.layer}"


def _class_index(name: str, names: Sequence[str]) -> int:
    if name not in names:
        raise ConfigError(f"--class {name!r} is not a class of this run; classes: {', '.join(names)}")
    return list(names).index(name)


def classification_heatmap(
    predictor,
    image: np.ndarray,
    source: str = "image",
    *,
    class_name: str | None = None,
    layer: str | None = None,
    method: str = "gradcam",
) -> Heatmap:
    """Grad-CAM of a classification run for one raw image.

    Args:
        predictor: a :class:`~medseg.workflows.classify.ClassificationPredictor`.
        image: ``(H, W)`` or ``(H, W, C)`` raw image.
        source: name used in error messages.
        class_name: class to explain; default the predicted one.
        layer: module name; default the classifier's ``cam_layer``.
        method: ``gradcam`` or ``gradcam++``.

    Raises:
        ConfigError: unknown class or layer, or a layer whose hooks never fire.
        DataError: the image's channels do not fit the model.
    """
    import torch

    from medseg.explain import grad_cam, heatmap_overlay
    from medseg.workflows.classify import prepare_with_box, unfit_map

    prepared, (top, left, height, width) = prepare_with_box(image, predictor.config, source, predictor.guide)
    probabilities = predictor.probabilities([prepared], tta=False)[0]
    names = predictor.class_names
    index = int(probabilities.argmax()) if class_name is None else _class_index(class_name, names)
    layer = layer or predictor.model.cam_layer
    tensor = torch.from_numpy(prepared)[None]
    cam = grad_cam(predictor.model, tensor, target=index, layer=layer, method=method)
    cam_box = unfit_map(cam, (height, width), predictor.config.classify.fit)
    cam = np.zeros(image.shape[:2], np.float32)  # data.mask_with may have cropped the image to a box
    cam[top : top + height, left : left + width] = cam_box
    overlay = heatmap_overlay(image, cam)
    return Heatmap(cam, overlay, names[index], layer, method, float(probabilities[index]))


def _padded_input(predictor, image: np.ndarray, source: str):
    """A segmentation run's normalised ``(1, C, H', W')`` input padded to its size divisor, and ``(H, W)``."""
    import torch

    tensor = torch.from_numpy(predictor.preprocess(image, source))[None]
    return predictor.pad(tensor), tuple(tensor.shape[-2:])


def segmentation_heatmap(
    predictor,
    image: np.ndarray,
    source: str = "image",
    *,
    class_name: str | None = None,
    layer: str | None = None,
    method: str = "gradcam",
) -> Heatmap:
    """Grad-CAM of a segmentation run (semantic or instance) for one raw image: one class's logits summed
    over the region predicted as that class (see the module docstring).

    Raises:
        ConfigError: unknown class or layer, a class predicted nowhere in the image, or a layer whose
            hooks never fire.
        DataError: the image's channels do not fit the model.
    """
    import torch

    from medseg.explain import grad_cam, heatmap_overlay, segmentation_target

    tensor, (height, width) = _padded_input(predictor, image, source)
    model = predictor.model
    with torch.no_grad():
        logits = model(tensor.to(predictor.device)).float()[0].cpu()
    valid = torch.zeros(logits.shape[-2:], dtype=torch.bool)
    valid[:height, :width] = True
    if predictor.config.task == "instance":
        heads = predictor.layout.slices()
        foreground = (logits[heads["fgbg"]].argmax(0) != 0) & valid
        types = list(predictor.config.instance.classes)
        if class_name in (None, "foreground"):
            name, channel, region = "foreground", heads["fgbg"].start + 1, foreground
        else:
            index = _class_index(class_name, ["foreground", *types]) - 1
            name, channel = types[index], heads["classes"].start + index
            region = foreground & (logits[heads["classes"]].argmax(0) == index)
    elif predictor.regions is not None:  # overlapping regions: channel r is region r (class r + 1)
        names = predictor.class_names[1:]
        inside = (logits > 0) & valid  # sigmoid > 0.5
        if class_name is None:
            counts = inside.flatten(1).sum(1)
            if int(counts.sum()) == 0:
                raise ConfigError(f"{source}: the model predicts no region here; choose one with --class")
            channel = int(counts.argmax())
        else:
            channel = _class_index(class_name, names)
        name, region = names[channel], inside[channel]
    else:
        names = predictor.class_names
        predicted = logits.argmax(0)
        if class_name is None:
            counts = torch.bincount(predicted[valid], minlength=len(names))
            if int(counts[1:].sum()) == 0:
                raise ConfigError(
                    f"{source}: the model predicts only {names[0]} here; choose a class with --class"
                )
            channel = 1 + int(counts[1:].argmax())
        else:
            channel = _class_index(class_name, names)
        name, region = names[channel], (predicted == channel) & valid
    if not bool(region.any()):
        raise ConfigError(f"{source}: no pixel is predicted as {name!r}, so it has no region to explain")
    layer = layer or getattr(model, "cam_layer", None) or ""
    target = segmentation_target(channel, region.numpy())
    cam = grad_cam(model, tensor, target=target, layer=layer or None, method=method)[:height, :width]
    overlay = heatmap_overlay(image, cam)
    fraction = float(region.sum()) / (height * width)
    return Heatmap(np.ascontiguousarray(cam), overlay, name, layer, method, fraction)


def default_feature_layers(model) -> list[str]:
    """Layers a feature-map gallery shows by default: the last module of each stage of a classifier's
    encoder (``model.blocks``), else the model's Grad-CAM layer."""
    blocks = getattr(model, "blocks", None)
    if blocks:
        names = {id(module): name for name, module in model.named_modules()}
        return [names[id(block[-1])] for block in blocks if len(block)]
    cam_layer = getattr(model, "cam_layer", None)
    if not cam_layer:
        raise ConfigError(f"{type(model).__name__} names no default layers; give them with --layers")
    return [cam_layer]


def _safe(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "class"


def explain(
    run_dir: str | Path,
    image_path: str | Path,
    out: str | Path,
    *,
    class_name: str | None = None,
    layer: str | None = None,
    method: str = "gradcam",
    feature_maps: bool = False,
    layers: Sequence[str] | None = None,
    k: int = 16,
    device: str = "auto",
) -> Explanation:
    """Explain a run's output for one image; writes PNGs under ``out``.

    Grad-CAM (default) writes ``<stem>_<method>_<class>.png`` (the heatmap over the image) and
    ``<stem>_<method>_<class>_heatmap.png`` (the heatmap alone, colour-mapped). With ``feature_maps``,
    ``<stem>_features.png`` shows the first ``k`` channels of each of ``layers`` instead.

    Args:
        run_dir: a classification or segmentation run folder.
        image_path: the image file.
        out: output folder (created).
        class_name: class to explain (see the module docstring for the defaults).
        layer: Grad-CAM layer (a module name); default the model's own.
        method: ``gradcam`` or ``gradcam++``.
        feature_maps: write the feature-map gallery instead of a heatmap.
        layers: layers of the gallery; default :func:`default_feature_layers`.
        k: channels per layer in the gallery.
        device: ``auto``, ``cpu`` or ``cuda``.

    Raises:
        MedsegError: unreadable image or run, unknown class or layer, a layer whose hooks never fire,
            an image whose channels do not fit the model.
    """
    from medseg.workflows.classify import ClassificationPredictor, is_classification_run

    image = read_image(image_path)
    source, stem, out = str(image_path), Path(image_path).stem, Path(out)
    if is_classification_run(run_dir):
        predictor = ClassificationPredictor.from_run(run_dir, device=device)
        task = "classify"
    else:
        from medseg.inference.predictor import Predictor

        predictor = Predictor.from_run(run_dir, device=device)
        task = predictor.config.task or "semantic"
    if feature_maps:
        import torch

        from medseg.explain import feature_gallery
        from medseg.explain import feature_maps as activations

        if k < 1:
            raise ConfigError(f"-k: show at least one channel per layer, got {k}")
        if task == "classify":
            tensor = torch.from_numpy(predictor.preprocess(image, source))[None]
        else:
            tensor, _ = _padded_input(predictor, image, source)
        names = list(layers or default_feature_layers(predictor.model))
        gallery = feature_gallery(activations(predictor.model, tensor, names), k)
        path = write_image(out / f"{stem}_features.png", gallery)
        return Explanation(task, [path], layers=names)
    make = classification_heatmap if task == "classify" else segmentation_heatmap
    heat = make(predictor, image, source, class_name=class_name, layer=layer, method=method)
    from medseg.explain import apply_colormap

    tag = f"{stem}_{method.replace('++', 'pp')}_{_safe(heat.class_name)}"
    files = [
        write_image(out / f"{tag}.png", heat.overlay),
        write_image(out / f"{tag}_heatmap.png", apply_colormap(heat.cam)),
    ]
    notes = []
    if not heat.cam.any():
        notes.append(
            f"the heatmap is all zero: no location of layer {heat.layer} has positive evidence for "
            f"{heat.class_name} (try another --layer, or --method gradcam++)"
        )
    return Explanation(task, files, heatmap=heat, notes=notes)
