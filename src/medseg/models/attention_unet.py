"""Attention U-Net family: one encoder/decoder with an ``attention`` option, not subclasses.

``attention`` is one of:

- ``none``: a plain U-Net with concatenated skips (the ablation baseline).
- ``ag``: additive attention gates on the skip connections (Oktay et al. 2018, "Attention U-Net: Learning
  Where to Look for the Pancreas", eq. 1): ``alpha = sigmoid(psi(relu(W_x x + W_g g)))``, where ``x`` is
  the encoder skip, ``g`` the coarser decoder feature resampled bilinearly to the skip's resolution, and
  the gated skip ``alpha * x`` is concatenated with the upsampled decoder feature. ``W_x`` is bias-free,
  ``W_g`` / ``psi`` carry the paper's biases ``b_g`` / ``b_psi``; the gate has ``C_skip // 2`` channels.
- ``gct``: ``ag`` plus a global context block on the bottleneck (Cao et al. 2019, "GCNet: Non-local Networks
  Meet Squeeze-Excitation Networks and Beyond"): softmax attention pooling over all positions
  (``W_k``: 1x1 conv to one channel) -> transform (1x1 conv to ``C * context_ratio`` channels, LayerNorm,
  ReLU, 1x1 conv back to ``C``) -> broadcast add. Its last conv starts at zero (as in the authors' code), so
  at initialisation ``gct`` computes exactly what ``ag`` does. Chosen over a transformer block because it
  has no positional encoding (any input size the divisor allows, as sliding-window prediction needs), costs
  O(HWC) rather than O((HW)^2) and 8.8k parameters at 256 channels, and GCNet shows that non-local
  attention maps are nearly the same for every query, which is what this block computes once. The gates
  then see the global context through their gating signal ``g``.
- ``srm`` (self-regularisation): ``ag`` plus two training terms returned by :meth:`auxiliary_loss`:
  deep supervision (Lee et al. 2015, "Deeply-Supervised Nets"; nnU-Net, Isensee et al. 2021): a 1x1 head on
  each decoder level ``l = 1 .. levels-2`` (level ``l`` is at 1/2^l of the input; level 0 is the main head,
  the bottleneck gets none, as in nnU-Net); its logits are upsampled bilinearly to the target size (rather
  than downsampling the target, so ignore_index and thin structures are kept exactly) and scored with the
  main loss function, weighted ``deep_supervision_decay ** l`` (0.5, 0.25, 0.125 next to the main loss's
  1). Attention supervision (in the spirit of Li et al. 2018, "Tell Me Where to Look: Guided Attention
  Inference Network"): each gate's pre-sigmoid map is upsampled bilinearly to the target size and scored
  by binary cross-entropy against the foreground (label > 0), ignore_index pixels excluded, averaged over
  gates and weighted ``attention_loss_weight`` (0.1).

MONAI's ``AttentionUnet`` is not used: it nests each level inside the previous one, so there is no place
to return the attention maps, add a bottleneck block or hang auxiliary heads, and its ``AttentionBlock``
returns only the gated features (and adds BatchNorm, which the paper's gate does not have). The encoder and
decoder below use MONAI's ``ResidualUnit`` (instance norm, PReLU), the building block of our ``unet``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models import MODELS

ATTENTION_MODES = ("none", "ag", "gct", "srm")


def _resize(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(t.float(), size=tuple(size), mode="bilinear", align_corners=False)


class AttentionGate(nn.Module):
    """Additive attention gate: ``x`` (N, C_x, h, w) gated by ``g`` (N, C_g, h/2, w/2)."""

    def __init__(self, skip_channels: int, gating_channels: int, inner_channels: int) -> None:
        super().__init__()
        self.skip_proj = nn.Conv2d(skip_channels, inner_channels, 1, bias=False)  # W_x
        self.gating_proj = nn.Conv2d(gating_channels, inner_channels, 1)  # W_g, b_g
        self.psi = nn.Conv2d(inner_channels, 1, 1)  # psi, b_psi

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated skip (N, C_x, h, w) and the gate's pre-sigmoid map (N, 1, h, w)."""
        # W_g runs at g's coarse resolution before resampling: a 1x1 conv commutes with bilinear resampling
        # (both linear, interpolation weights sum to 1 so the bias too), so this equals resampling g first.
        gating = F.interpolate(self.gating_proj(g), size=x.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.psi(F.relu(self.skip_proj(x) + gating))
        return x * torch.sigmoid(logits), logits


class GlobalContextBlock(nn.Module):
    """GCNet global context block on (N, C, h, w): ``x + transform(softmax-attention-pooled x)``."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        hidden = max(1, int(channels * ratio))
        self.attention = nn.Conv2d(channels, 1, 1)  # W_k
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.attention(x).flatten(2), dim=-1)  # (N, 1, hw)
        context = torch.einsum("ncp,nkp->nck", x.flatten(2), weights).unsqueeze(-1)  # (N, C, 1, 1)
        return x + self.transform(context)


class AttentionUNet(nn.Module):
    """U-Net with optional attention gates, bottleneck global context and self-regularisation.

    Args:
        in_channels: image channels.
        num_classes: output logits K.
        channels: features per level, finest first; ``levels = len(channels)``, the last is the bottleneck.
        attention: ``none``, ``ag``, ``gct`` or ``srm`` (see the module docstring).
        num_res_units: convolutions per encoder ``ResidualUnit`` (decoder units have one).
        norm: MONAI norm name for the residual units.
        dropout: dropout in the residual units.
        context_ratio: GC block hidden channels / bottleneck channels (``gct``; GCNet uses 1/16).
        deep_supervision_decay: weight of level ``l``'s auxiliary loss is ``decay ** l`` (``srm``).
        attention_loss_weight: weight of the gate-vs-foreground BCE (``srm``).
    """

    cam_layer = "decoder.1"  # default Grad-CAM layer: the decoder stage at 1/2 resolution

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int],
        *,
        attention: str = "ag",
        num_res_units: int = 2,
        norm: str = "instance",
        dropout: float = 0.0,
        context_ratio: float = 1 / 16,
        deep_supervision_decay: float = 0.5,
        attention_loss_weight: float = 0.1,
    ) -> None:
        from monai.networks.blocks import ResidualUnit

        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}, not {attention!r}")
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 levels, got {channels}")
        levels = len(channels)
        self.attention = attention
        self.size_divisor = 2 ** (levels - 1)
        self.deep_supervision_decay = deep_supervision_decay
        self.attention_loss_weight = attention_loss_weight

        def unit(cin: int, cout: int, stride: int, subunits: int = num_res_units) -> nn.Module:
            return ResidualUnit(2, cin, cout, strides=stride, subunits=subunits, norm=norm, dropout=dropout)

        # Level i is at 1/2^i of the input; encoder[-1] is the bottleneck.
        self.encoder = nn.ModuleList(
            unit(in_channels if i == 0 else channels[i - 1], c, 1 if i == 0 else 2)
            for i, c in enumerate(channels)
        )
        self.context = GlobalContextBlock(channels[-1], context_ratio) if attention == "gct" else None
        # upsamplers[i], gates[i], decoder[i] bring level i+1 to level i. The decoder is kept light, as in
        # MONAI's UNet (one-subunit residual units) and nnU-Net (2x2 stride-2 transposed convolutions).
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2) for i in range(levels - 1)
        )
        self.gates = None
        if attention != "none":
            self.gates = nn.ModuleList(
                AttentionGate(channels[i], channels[i + 1], max(1, channels[i] // 2))
                for i in range(levels - 1)
            )
        self.decoder = nn.ModuleList(unit(2 * channels[i], channels[i], 1, 1) for i in range(levels - 1))
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        self.aux_heads = None
        if attention == "srm":
            self.aux_heads = nn.ModuleList(
                nn.Conv2d(channels[i], num_classes, 1) for i in range(1, levels - 1)
            )
        self._maps: list[torch.Tensor] = []
        # Train-mode outputs (with their graphs) for auxiliary_loss; emptied by every eval-mode forward.
        self._gate_logits: list[torch.Tensor] = []
        self._aux_logits: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W) for images (N, C, H, W); H and W multiples of ``size_divisor``."""
        divisor = self.size_divisor
        if not torch.jit.is_tracing() and (x.shape[-2] % divisor or x.shape[-1] % divisor):
            raise ValueError(
                f"input {tuple(x.shape[-2:])} is not a multiple of size_divisor {self.size_divisor}; pad it"
            )
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        if self.context is not None:
            x = self.context(x)
        gate_logits, features = [], {}
        for i in reversed(range(len(self.decoder))):
            skip = skips[i]
            if self.gates is not None:
                skip, logits = self.gates[i](skip, x)
                gate_logits.insert(0, logits)
            x = self.decoder[i](torch.cat([skip, self.upsamplers[i](x)], dim=1))
            features[i] = x
        self._maps = [torch.sigmoid(t).detach() for t in gate_logits]
        keep = self.training and self.attention == "srm"
        self._gate_logits = gate_logits if keep else []
        self._aux_logits = [h(features[i + 1]) for i, h in enumerate(self.aux_heads)] if keep else []
        return self.head(x)

    def attention_maps(self) -> list[torch.Tensor]:
        """Detached gate maps from the last forward, finest first: map i is (N, 1, H/2^i, W/2^i) in [0, 1]."""
        return list(self._maps)

    def auxiliary_loss(self, target: torch.Tensor, loss_fn: nn.Module) -> torch.Tensor | None:
        """Deep-supervision + attention terms (``srm``) for ``target`` (N, H, W) long; None otherwise.

        Uses the outputs of the last train-mode forward; None after an eval-mode forward.
        """
        if not self._gate_logits:
            return None
        size = target.shape[-2:]
        total = torch.zeros((), device=target.device)
        for level, logits in enumerate(self._aux_logits, start=1):
            total = total + self.deep_supervision_decay**level * loss_fn(_resize(logits, size), target)
        ignore_index = getattr(loss_fn, "ignore_index", -1)
        valid = (target != ignore_index) if ignore_index >= 0 else torch.ones_like(target, dtype=torch.bool)
        weight = valid[:, None].float()
        count = weight.sum()
        if count > 0:  # all pixels ignored: no attention term rather than 0/0
            foreground = ((target > 0) & valid)[:, None].float()
            bce = [
                F.binary_cross_entropy_with_logits(
                    _resize(t, size), foreground, weight=weight, reduction="sum"
                )
                for t in self._gate_logits
            ]
            total = total + self.attention_loss_weight * torch.stack(bce).mean() / count
        return total


FULL = (16, 32, 64, 128, 256)
TINY = (4, 8, 16)


def _tiny(kw: dict) -> dict:
    kw.setdefault("num_res_units", 1)
    kw.setdefault("context_ratio", 1 / 4)  # 16 bottleneck channels / 16 would leave one hidden channel
    return kw


@MODELS.register("attention_unet")
def attention_unet(
    *, in_channels: int, num_classes: int, channels: Sequence[int] = FULL, attention: str = "ag", **kw
):
    """Attention U-Net, 5 levels (16-256 channels), gated skips (Oktay 2018), 2.2M params; none|ag|gct|srm."""
    return AttentionUNet(in_channels, num_classes, channels, attention=attention, **kw)


@MODELS.register("attention_unet_gct")
def attention_unet_gct(*, in_channels: int, num_classes: int, channels: Sequence[int] = FULL, **kw):
    """Attention U-Net + GCNet global context block at the bottleneck."""
    return AttentionUNet(in_channels, num_classes, channels, attention="gct", **kw)


@MODELS.register("attention_unet_srm")
def attention_unet_srm(*, in_channels: int, num_classes: int, channels: Sequence[int] = FULL, **kw):
    """Attention U-Net + deep supervision and attention-map regularisation (training terms)."""
    return AttentionUNet(in_channels, num_classes, channels, attention="srm", **kw)


@MODELS.register("attention_unet_tiny")
def attention_unet_tiny(
    *, in_channels: int, num_classes: int, channels: Sequence[int] = TINY, attention: str = "ag", **kw
):
    """Attention U-Net for tests: 3 levels (4-16 channels), one residual unit."""
    return AttentionUNet(in_channels, num_classes, channels, attention=attention, **_tiny(kw))


@MODELS.register("attention_unet_gct_tiny")
def attention_unet_gct_tiny(*, in_channels: int, num_classes: int, channels: Sequence[int] = TINY, **kw):
    """Attention U-Net + global context, for tests: 3 levels (4-16 channels)."""
    return AttentionUNet(in_channels, num_classes, channels, attention="gct", **_tiny(kw))


@MODELS.register("attention_unet_srm_tiny")
def attention_unet_srm_tiny(*, in_channels: int, num_classes: int, channels: Sequence[int] = TINY, **kw):
    """Attention U-Net + self-regularisation, for tests: 3 levels (4-16 channels)."""
    return AttentionUNet(in_channels, num_classes, channels, attention="srm", **_tiny(kw))
