import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medseg.losses import DiceCELoss, RegionDiceBCELoss


def test_dice_matches_monai_batch_dice():
    from monai.losses import DiceLoss

    torch.manual_seed(0)
    logits = torch.randn(3, 4, 16, 16)
    target = torch.randint(0, 4, (3, 16, 16))
    ours = DiceCELoss(4, ce_weight=0.0)(logits, target)
    onehot = F.one_hot(target, 4).permute(0, 3, 1, 2).float()
    ref = DiceLoss(include_background=False, softmax=True, batch=True)(logits, onehot)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)


def test_ce_part_matches_torch_with_class_weights():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    weights = [0.2, 1.0, 3.0]
    ours = DiceCELoss(3, dice_weight=0.0, class_weights=weights)(logits, target)
    ref = F.cross_entropy(logits, target, weight=torch.tensor(weights))
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def test_ignored_pixels_change_nothing():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :, :3] = 255
    loss_fn = DiceCELoss(3, ignore_index=255)
    loss = loss_fn(logits, target)
    loss.backward()
    assert torch.all(logits.grad[:, :, :, :3] == 0)
    # changing the logits under the ignored pixels does not change the loss
    other = logits.detach().clone()
    other[:, :, :, :3] = torch.randn(2, 3, 8, 3) * 10
    assert loss_fn(other, target).item() == pytest.approx(loss.item(), abs=1e-6)


def test_perfect_prediction_has_near_zero_dice_loss():
    target = torch.randint(0, 3, (2, 8, 8))
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert DiceCELoss(3)(logits, target).item() < 1e-4


def test_class_weights_length_checked():
    with pytest.raises(ValueError, match="3 classes"):
        DiceCELoss(3, class_weights=[1.0, 2.0])


def _watershed_target(n=2, size=16, typed=True):
    rng = np.random.default_rng(0)
    target = np.zeros((n, 4, size, size), np.float32)
    target[:, 2, 4:10, 4:10] = 1  # foreground square
    target[:, 0] = target[:, 2] * rng.uniform(0, 1, (n, size, size))
    target[:, 1] = target[:, 2] * 0.5
    target[:, 3] = np.where(target[:, 2] > 0, 1 if typed else -1, -1)
    return torch.from_numpy(target)


def test_deep_watershed_loss_is_small_for_a_perfect_prediction_and_large_otherwise():
    from medseg.losses import DeepWatershedLoss
    from medseg.models.heads import HeadLayout

    layout = HeadLayout((("inner", 1), ("outer", 1), ("fgbg", 2), ("classes", 3)))
    loss_fn = DeepWatershedLoss(layout)
    target = _watershed_target()
    perfect = torch.zeros(2, 7, 16, 16)
    perfect[:, 0] = torch.logit(target[:, 0].clamp(1e-4, 1 - 1e-4))
    perfect[:, 1] = torch.logit(target[:, 1].clamp(1e-4, 1 - 1e-4))
    fg = target[:, 2] > 0
    perfect[:, 2] = torch.where(fg, -20.0, 20.0)
    perfect[:, 3] = torch.where(fg, 20.0, -20.0)
    perfect[:, 5] = 20.0  # type 1 everywhere
    assert float(loss_fn(perfect, target)) < 1e-3
    terms = loss_fn.terms(torch.zeros(2, 7, 16, 16), target)
    assert set(terms) == {"inner", "outer", "fgbg", "classes"}
    assert all(float(v) > 0.01 for v in terms.values())


def test_deep_watershed_loss_weights_and_untyped_targets():
    from medseg.losses import DeepWatershedLoss
    from medseg.models.heads import HeadLayout

    layout = HeadLayout((("inner", 1), ("outer", 1), ("fgbg", 2), ("classes", 3)))
    logits = torch.randn(2, 7, 16, 16, requires_grad=True)
    untyped = _watershed_target(typed=False)
    terms = DeepWatershedLoss(layout, {"inner": 0.0, "outer": 2.0}).terms(logits, untyped)
    assert set(terms) == {"outer", "fgbg"}  # weight 0 skipped; no typed pixel -> no type term
    single = DeepWatershedLoss(layout, {"outer": 1.0}).terms(logits, untyped)["outer"]
    torch.testing.assert_close(terms["outer"], 2 * single)
    DeepWatershedLoss(layout)(logits, untyped).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_fgbg_cross_entropy_is_weighted_by_inverse_frequency():
    from medseg.losses import DeepWatershedLoss
    from medseg.models.heads import HeadLayout

    layout = HeadLayout((("inner", 1), ("outer", 1), ("fgbg", 2)))
    target = _watershed_target(typed=False)  # 36 of 256 pixels foreground
    logits = torch.zeros(2, 4, 16, 16)
    logits[:, 2] = 3.0  # predicts background everywhere: wrong on the rare foreground
    weighted = DeepWatershedLoss(layout, {"inner": 0, "outer": 0}).terms(logits, target)["fgbg"]
    plain = torch.nn.functional.cross_entropy(logits[:, 2:4], target[:, 2].long())
    assert float(weighted) > 2 * float(plain)  # the rare class's errors count as much as the common's


BITMASK_LOOKUP = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)  # values 0..3 -> 2 regions


def test_region_loss_is_monai_sigmoid_batch_dice_plus_bce():
    from monai.losses import DiceLoss

    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    onehot = torch.stack([(target & 1) > 0, (target & 2) > 0], dim=1).float()
    expected = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)(
        logits, onehot
    ) + F.binary_cross_entropy_with_logits(logits, onehot)
    loss = RegionDiceBCELoss(BITMASK_LOOKUP)(logits, target)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_region_loss_ignores_pixels_and_weights_regions():
    torch.manual_seed(1)
    logits = torch.randn(1, 2, 6, 6, requires_grad=True)
    target = torch.randint(0, 4, (1, 6, 6))
    target[0, :2] = 255
    loss_fn = RegionDiceBCELoss(BITMASK_LOOKUP, ignore_index=255)
    loss = loss_fn(logits, target)
    loss.backward()
    assert torch.all(logits.grad[0, :, :2] == 0)  # ignored rows get no gradient
    changed = logits.detach().clone()
    changed[0, :, :2] = 50.0
    torch.testing.assert_close(loss_fn(changed, target), loss.detach())
    bce_only = RegionDiceBCELoss(BITMASK_LOOKUP, dice_weight=0, region_weights=[2.0, 0.0])
    known = target < 4
    onehot = torch.stack([known & ((target & 1) > 0), known & ((target & 2) > 0)], dim=1).float()
    # weights scale each region's BCE term; the mean runs over pixels and regions (without an ignore
    # label, 255 is a value of no region: background)
    per_region = F.binary_cross_entropy_with_logits(logits.detach(), onehot, reduction="none").mean((0, 2, 3))
    torch.testing.assert_close(bce_only(logits.detach(), target), per_region[0])
    with pytest.raises(ValueError, match="3 values for 2 regions"):
        RegionDiceBCELoss(BITMASK_LOOKUP, region_weights=[1, 1, 1])


def test_region_loss_is_near_zero_for_a_perfect_prediction():
    target = torch.randint(0, 4, (2, 8, 8), generator=torch.Generator().manual_seed(2))
    onehot = torch.stack([(target & 1) > 0, (target & 2) > 0], dim=1).float()
    perfect = (onehot * 2 - 1) * 30
    assert float(RegionDiceBCELoss(BITMASK_LOOKUP)(perfect, target)) < 1e-4
