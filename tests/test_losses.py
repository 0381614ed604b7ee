import pytest
import torch
import torch.nn.functional as F

from medseg.losses import DiceCELoss


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
