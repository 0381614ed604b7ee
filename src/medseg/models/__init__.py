"""Model registry: ``create_model(name, in_channels=..., num_classes=...)``, ``list_models(pattern)``.

Every network is registered by name with a tiny variant beside it (``unet_tiny``) so tests run the real
architecture code at small size. Each created module carries ``size_divisor``: prediction pads inputs to
a multiple of it and crops back.
"""

from __future__ import annotations

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


def _register_builtin() -> None:
    # Imported on first use so that `import medseg.models` stays cheap until a model is needed.
    from medseg.models import unet  # noqa: F401
