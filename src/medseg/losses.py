"""Segmentation losses: Dice + cross-entropy with class weights and an ignore index; Dice + BCE over
overlapping regions; the deep-watershed heads' loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class DiceCELoss(nn.Module):
    """``dice_weight * soft Dice loss + ce_weight * cross-entropy`` on softmax logits.

    Written here because MONAI's DiceCELoss has no ``ignore_index``. Cross-entropy is torch's (class
    weights, ignore_index). Dice is batch soft Dice (intersection and sums over the whole batch, as
    nnU-Net computes it), equal to MONAI's ``DiceLoss(softmax=True, batch=True)`` when nothing is
    ignored (tested); ignored pixels are removed from both prediction and target. Both terms run in
    float32 even under bf16 autocast, since soft Dice sums over many pixels.

    Args:
        num_classes: number of classes K (logit channels).
        dice_weight: weight of the Dice term.
        ce_weight: weight of the cross-entropy term.
        class_weights: K weights for cross-entropy; empty = uniform.
        ignore_index: label value excluded from both terms; negative = none.
        include_background: whether class 0 contributes to Dice (always when K == 1).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        class_weights: Sequence[float] = (),
        ignore_index: int = -1,
        include_background: bool = False,
    ) -> None:
        super().__init__()
        if class_weights and len(class_weights) != num_classes:
            raise ValueError(f"loss.class_weights has {len(class_weights)} values for {num_classes} classes")
        weight = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weight, persistent=False)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.first_dice_class = 0 if include_background or num_classes == 1 else 1

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss for ``logits`` (N, K, H, W) and integer ``target`` (N, H, W)."""
        logits = logits.float()
        target = target.long()
        loss = logits.new_zeros(())
        # A batch whose pixels are all ignored (sparse annotation, padding) contributes no CE rather than
        # torch's 0/0 = NaN.
        if self.ce_weight and (self.ignore_index < 0 or bool((target != self.ignore_index).any())):
            ignore = self.ignore_index if self.ignore_index >= 0 else -100
            ce = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=ignore)
            loss = loss + self.ce_weight * ce
        if self.dice_weight:
            loss = loss + self.dice_weight * self.soft_dice_loss(logits, target)
        return loss

    def soft_dice_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """1 - batch soft Dice, averaged over the scored classes."""
        probs = torch.softmax(logits, dim=1)
        if self.ignore_index >= 0:
            valid = target != self.ignore_index
            target = torch.where(valid, target, torch.zeros_like(target))
            probs = probs * valid[:, None]
            onehot = F.one_hot(target, self.num_classes).permute(0, 3, 1, 2) * valid[:, None]
        else:
            onehot = F.one_hot(target, self.num_classes).permute(0, 3, 1, 2)
        dims = (0, 2, 3)
        inter = (probs * onehot).sum(dims)[self.first_dice_class :]
        denom = (probs.sum(dims) + onehot.sum(dims))[self.first_dice_class :]
        return (1.0 - (2.0 * inter + 1e-5) / (denom + 1e-5)).mean()


class RegionDiceBCELoss(nn.Module):
    """``dice_weight * soft Dice + bce_weight * binary cross-entropy`` on one sigmoid channel per region.

    nnU-Net's loss for region-based training (overlapping classes, :mod:`medseg.data.regions`): targets are
    integer mask values, turned into one binary map per region by a lookup table, so a pixel may be
    positive in several channels. Dice is batch soft Dice per region (as :class:`DiceCELoss`), averaged over
    regions; BCE is averaged over pixels and regions, each region's term scaled by its weight. Pixels with
    ``ignore_index`` count in neither term. Written here for the ignore label and the lookup (MONAI's
    ``DiceCELoss(sigmoid=True)`` wants one-hot targets and has no ignore).

    Args:
        lookup: ``(V, R)`` bool, row v = the regions mask value v belongs to
            (:meth:`~medseg.data.regions.Regions.lookup`); values >= V belong to none.
        dice_weight, bce_weight: weights of the two terms.
        region_weights: R weights for the BCE term; empty = uniform.
        ignore_index: label value excluded from both terms; negative = none.
    """

    def __init__(
        self,
        lookup: torch.Tensor,
        *,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
        region_weights: Sequence[float] = (),
        ignore_index: int = -1,
    ) -> None:
        super().__init__()
        lookup = torch.as_tensor(lookup, dtype=torch.bool)
        regions = lookup.shape[1]
        if region_weights and len(region_weights) != regions:
            raise ValueError(f"loss.class_weights has {len(region_weights)} values for {regions} regions")
        weights = torch.tensor(list(region_weights) or [1.0] * regions, dtype=torch.float32)
        self.register_buffer("lookup", lookup.float(), persistent=False)
        self.register_buffer("region_weights", weights.view(1, -1, 1, 1), persistent=False)
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight
        self.ignore_index = ignore_index

    def targets(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer mask values ``(N, H, W)`` -> binary region maps ``(N, R, H, W)`` and the scored pixels
        ``(N, 1, H, W)``."""
        target = target.long()
        valid = target != self.ignore_index if self.ignore_index >= 0 else torch.ones_like(target, dtype=bool)
        inside = (target >= 0) & (target < self.lookup.shape[0])
        index = torch.where(inside & valid, target, torch.zeros_like(target))
        maps = self.lookup[index].permute(0, 3, 1, 2)  # (N, R, H, W)
        return maps, valid[:, None].float()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss for ``logits`` (N, R, H, W) and integer mask values ``target`` (N, H, W)."""
        logits = logits.float()
        maps, valid = self.targets(target)
        loss = logits.new_zeros(())
        scored = valid.sum()
        if self.bce_weight and bool(scored > 0):
            bce = F.binary_cross_entropy_with_logits(logits, maps, reduction="none")
            bce = (bce * self.region_weights * valid).sum() / (scored * logits.shape[1])
            loss = loss + self.bce_weight * bce
        if self.dice_weight:
            probs = torch.sigmoid(logits) * valid
            dims = (0, 2, 3)
            inter = (probs * maps).sum(dims)
            denom = probs.sum(dims) + (maps * valid).sum(dims)
            loss = loss + self.dice_weight * (1.0 - (2.0 * inter + 1e-5) / (denom + 1e-5)).mean()
        return loss


class DeepWatershedLoss(nn.Module):
    """Sum of per-head losses of a deep-watershed model (DeepCell's recipe).

    MSE between the sigmoid of the distance heads and the inner/outer distance targets; cross-entropy
    for foreground/background (and boundary) weighted by the batch's inverse class frequencies (DeepCell's
    ``weighted_categorical_crossentropy``), so thin boundaries and sparse foreground still count; plain
    cross-entropy of the type head on foreground pixels with a known type. Runs in float32.

    Args:
        layout: the :class:`~medseg.models.heads.HeadLayout` of the network's output channels.
        weights: head name -> weight (missing heads weigh 1).

    The target is ``(N, 4, H, W)`` float: inner distance, outer distance, fgbg class id, instance type id
    (-1 where there is none: background, untyped or ignored).
    """

    def __init__(self, layout, weights: dict[str, float] | None = None) -> None:
        super().__init__()
        self.slices = layout.slices()
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in self.slices}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss for raw outputs ``(N, C, H, W)`` and the stacked targets ``(N, 4, H, W)``."""
        return sum(self.terms(logits, target).values())

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each head's weighted loss."""
        logits, target = logits.float(), target.float()
        out = {}
        for i, name in enumerate(("inner", "outer")):
            if self.weights[name]:
                pred = torch.sigmoid(logits[:, self.slices[name]][:, 0])
                out[name] = self.weights[name] * F.mse_loss(pred, target[:, i])
        if self.weights["fgbg"]:
            fgbg = logits[:, self.slices["fgbg"]]
            classes = target[:, 2].long()
            counts = torch.bincount(classes.flatten(), minlength=fgbg.shape[1]).float()
            weight = counts.sum() / (fgbg.shape[1] * counts.clamp(min=1))
            out["fgbg"] = self.weights["fgbg"] * F.cross_entropy(fgbg, classes, weight=weight)
        if "classes" in self.slices and self.weights["classes"]:
            types = target[:, 3].long()
            if bool((types >= 0).any()):
                ce = F.cross_entropy(logits[:, self.slices["classes"]], types, ignore_index=-1)
                out["classes"] = self.weights["classes"] * ce
        return out
