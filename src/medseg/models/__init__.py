"""Model registry: ``create_model(name, in_channels=..., num_classes=...)``, ``list_models(pattern)``.

Every network is registered by name with a tiny variant beside it (``unet_tiny``) so tests run the real
architecture code at small size. The contract every created module keeps:

- ``forward(x)``: ``(N, in_channels, H, W)`` float -> ``(N, num_classes, H, W)`` logits at the input size,
  in train and eval mode alike, for any ``H, W`` that are multiples of ``size_divisor``;
- ``size_divisor`` (int attribute): prediction pads inputs to a multiple of it and crops back;
- ``encoder`` (attribute, an ``nn.Module``): the parameters that ``model.freeze_encoder`` freezes and that
  ``model.encoder_lr_ratio`` scales; everything else counts as decoder/head;
- optional ``auxiliary_loss(target, loss_fn) -> Tensor | None``: extra training terms (deep supervision,
  attention regularisation) from the outputs of the last forward in train mode; the Trainer's step adds it;
- optional ``attention_maps() -> list[Tensor]``: ``(N, 1, h, w)`` maps from the last forward, for display.
"""

from __future__ import annotations

import inspect
from typing import Any

from medseg.registry import Registry

MODELS = Registry("model")


def create_model(name: str, *, in_channels: int, num_classes: int, **params: Any):
    """Build registered model ``name`` for ``in_channels`` inputs and ``num_classes`` output logits.

    Args:
        name: a registered name (see :func:`list_models`).
        in_channels: image channels.
        num_classes: output channels (logits), background included.
        **params: architecture arguments overriding the registered defaults (``model.params`` in config).

    Returns:
        A ``torch.nn.Module`` mapping ``(N, in_channels, H, W)`` to ``(N, num_classes, H, W)`` logits, with
        an int attribute ``size_divisor``.
    """
    _register_builtin()
    factory = MODELS.get(name)
    try:
        return factory(in_channels=in_channels, num_classes=num_classes, **params)
    except (TypeError, ValueError, AssertionError) as exc:  # what constructors raise for bad arguments
        from medseg.errors import ConfigError

        raise ConfigError(f"model.params for {name!r}: {exc}") from None


def build_model(model_config, *, in_channels: int, num_classes: int, pretrained: bool = True):
    """Build the network a run's ``model`` config section describes.

    Args:
        model_config: ``Config.model`` (name, params, pretrained).
        in_channels: image channels.
        num_classes: classes including background.
        pretrained: load ``model_config.pretrained`` weights (training); False when a checkpoint will be
            loaded over them anyway (prediction), so no hub or folder is needed then.
    """
    params = dict(model_config.params)
    if pretrained and model_config.pretrained:
        _register_builtin()
        if "pretrained" not in inspect.signature(MODELS.get(model_config.name)).parameters:
            from medseg.errors import ConfigError

            raise ConfigError(f"model.pretrained: {model_config.name!r} has no pretrained weights to load")
        params["pretrained"] = model_config.pretrained
    return create_model(model_config.name, in_channels=in_channels, num_classes=num_classes, **params)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern."""
    _register_builtin()
    return MODELS.names(pattern)


def count_parameters(model) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in model.parameters())


def describe_model(name: str) -> str:
    """The one-line description of a registered model."""
    _register_builtin()
    return MODELS.describe(name)


def create_classifier(name: str, **kwargs: Any):
    """Build a registered image classifier; see :func:`medseg.models.classifiers.create_classifier`."""
    from medseg.models.classifiers import create_classifier as create

    return create(name, **kwargs)


def list_classifiers(pattern: str = "*") -> list[str]:
    """Registered classifier names matching a shell-style pattern."""
    from medseg.models.classifiers import list_classifiers as names

    return names(pattern)


def _register_builtin() -> None:
    # Imported on first use so that `import medseg.models` stays cheap until a model is needed.
    from medseg.models import attention_unet, segformer, unet  # noqa: F401
