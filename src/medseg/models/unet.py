"""U-Net (MONAI's residual UNet).

MONAI's ``UNet`` is used rather than a hand-written one: it is well tested, its depth and width are
plain arguments (``channels``, ``strides``), and its residual units with instance norm are the
nnU-Net-style building block. Inputs must be a multiple of ``2 ** len(strides)``; the Predictor pads.
"""

from __future__ import annotations

from collections.abc import Sequence

from medseg.models import MODELS


def _unet(
    *,
    in_channels: int,
    num_classes: int,
    channels: Sequence[int],
    num_res_units: int = 2,
    norm: str = "instance",
    dropout: float = 0.0,
):
    from monai.networks.nets import UNet

    channels = tuple(int(c) for c in channels)
    model = UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=channels,
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )
    model.size_divisor = 2 ** (len(channels) - 1)
    model.cam_layer = "model" + ".1.submodule" * (len(channels) - 1)  # Grad-CAM layer: the bottleneck
    # Set through __dict__ so the shared blocks are not registered twice (no duplicate state_dict keys).
    model.__dict__["encoder"] = _encoder_blocks(model)
    return model


def _encoder_blocks(model):
    """The down-sampling blocks of MONAI's nested UNet (each level is Sequential(down, skip, up)), plus the
    bottom block, as one ModuleList (shared modules, not copies) for freezing and learning-rate groups."""
    from torch import nn

    blocks, level = [], model.model
    while isinstance(level, nn.Sequential) and len(level) == 3:
        blocks.append(level[0])
        level = level[1].submodule
    blocks.append(level)
    return nn.ModuleList(blocks)


@MODELS.register("unet")
def unet(*, in_channels: int, num_classes: int, channels: Sequence[int] = (16, 32, 64, 128, 256), **kw):
    """U-Net, 5 levels (16-256 channels), residual units, instance norm (MONAI UNet; 1.6M params)."""
    return _unet(in_channels=in_channels, num_classes=num_classes, channels=channels, **kw)


@MODELS.register("unet_tiny")
def unet_tiny(*, in_channels: int, num_classes: int, channels: Sequence[int] = (4, 8, 16), **kw):
    """U-Net for tests: 3 levels (4-16 channels), one residual unit."""
    kw.setdefault("num_res_units", 1)
    return _unet(in_channels=in_channels, num_classes=num_classes, channels=channels, **kw)
