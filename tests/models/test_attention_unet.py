"""Attention U-Net family: contract, gates, GC block, self-regularisation terms, training smoke test."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medseg.errors import ConfigError
from medseg.losses import DiceCELoss
from medseg.models import count_parameters, create_model, list_models
from medseg.models.attention_unet import AttentionGate, GlobalContextBlock

TINY = ["attention_unet_tiny", "attention_unet_gct_tiny", "attention_unet_srm_tiny"]
# (name, model.params): every tiny architecture, the `none` ablation included.
VARIANTS = [("attention_unet_tiny", {"attention": "none"})] + [(name, {}) for name in TINY]


def make(name: str, seed: int = 0, in_channels: int = 3, num_classes: int = 3, **params):
    torch.manual_seed(seed)
    return create_model(name, in_channels=in_channels, num_classes=num_classes, **params)


def disc_batch(n: int = 4, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy bright discs: images (n, 1, size, size) float, targets (n, size, size) long in {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(size // 4, 3 * size // 4, (n, 2), generator=g)
    radii = torch.randint(size // 8, size // 4, (n,), generator=g)
    dist2 = (yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2
    target = (dist2 <= radii[:, None, None] ** 2).long()
    image = target[:, None].float() + 0.3 * torch.randn(n, 1, size, size, generator=g)
    return image, target


def test_registered_names_and_attention_param():
    assert list_models("attention_unet*") == sorted(
        [*TINY, "attention_unet", "attention_unet_gct", "attention_unet_srm"]
    )
    for mode in ("none", "ag", "gct", "srm"):
        assert make("attention_unet_tiny", attention=mode).attention == mode
    with pytest.raises(ConfigError, match="attention must be one of none, ag, gct, srm"):
        make("attention_unet_tiny", attention="se")


# Tiny divisor is 2 ** (3 - 1) = 4, and 72 = 4 * 18, 56 = 4 * 14.
@pytest.mark.parametrize("size", [(64, 64), (72, 56)])
@pytest.mark.parametrize(("name", "params"), VARIANTS)
def test_forward_backward_shapes_and_maps(name, params, size):
    model = make(name, **params)
    assert model.size_divisor == 4
    assert isinstance(model.encoder, torch.nn.ModuleList) and len(model.encoder) == 3
    x = torch.randn(2, 3, *size)
    out = model(x)
    assert out.shape == (2, 3, *size)
    loss = out.square().mean()
    extra = model.auxiliary_loss(torch.randint(0, 3, (2, *size)), DiceCELoss(3))
    if extra is not None:
        loss = loss + extra
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    maps = model.attention_maps()
    if model.attention == "none":
        assert maps == []
    else:
        assert [tuple(m.shape) for m in maps] == [(2, 1, *size), (2, 1, size[0] // 2, size[1] // 2)]
        for m in maps:
            assert m.min() >= 0 and m.max() <= 1 and not m.requires_grad
    model.eval()
    assert model(x).shape == (2, 3, *size)


def test_input_not_multiple_of_divisor_is_rejected():
    with pytest.raises(ValueError, match="multiple of size_divisor 4"):
        make("attention_unet_tiny")(torch.randn(1, 3, 30, 32))


def test_gate_is_oktay_additive_attention_with_resampled_gating_signal():
    torch.manual_seed(0)
    gate = AttentionGate(skip_channels=4, gating_channels=6, inner_channels=3)
    x, g = torch.randn(2, 4, 8, 6), torch.randn(2, 6, 4, 3)
    gated, logits = gate(x, g)
    # Reference: resample g to the skip's resolution first, then W_g (the module does it the other way round).
    g_up = F.interpolate(g, size=(8, 6), mode="bilinear", align_corners=False)
    expected = gate.psi(torch.relu(gate.skip_proj(x) + gate.gating_proj(g_up)))
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(gated, x * torch.sigmoid(expected))
    assert gate.skip_proj.bias is None  # W_x has no bias in Oktay et al.'s eq. 1


def test_none_has_no_gate_parameters():
    none, ag = make("attention_unet_tiny", attention="none"), make("attention_unet_tiny")
    assert none.gates is None
    assert not [n for n, _ in none.named_parameters() if "gate" in n]
    # Gate i: W_x c_i*c_i/2, W_g c_{i+1}*c_i/2 + c_i/2, psi c_i/2 + 1; channels (4, 8, 16).
    gates = (4 * 2 + 8 * 2 + 2 + 2 + 1) + (8 * 4 + 16 * 4 + 4 + 4 + 1)
    assert count_parameters(ag.gates) == gates == 134
    assert count_parameters(ag) - count_parameters(none) == gates


@pytest.mark.parametrize(
    ("name", "reference", "block"),
    [
        ("attention_unet_gct_tiny", "attention_unet_tiny", 173),
        ("attention_unet_gct", "attention_unet", 8753),
    ],
)
def test_gct_adds_exactly_the_global_context_block(name, reference, block):
    # GC block on C channels with hidden P: W_k C+1, conv C*P+P, LayerNorm 2P, conv P*C+C.
    # tiny: C=16, P=4 -> 17+68+8+80 = 173; full: C=256, P=16 -> 257+4112+32+4352 = 8753.
    gct, ag = make(name), make(reference)
    assert isinstance(gct.context, GlobalContextBlock) and ag.context is None
    assert count_parameters(gct.context) == block
    assert count_parameters(gct) - count_parameters(ag) == block


def test_gc_block_starts_as_identity_and_then_adds_global_context():
    model = make("attention_unet_gct_tiny").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        context, model.context = model.context, None
        bypassed = model(x)
        torch.testing.assert_close(out, bypassed)
        model.context = context
        torch.nn.init.normal_(context.transform[-1].weight)
        assert not torch.allclose(model(x), bypassed)
    # The pooled context is a softmax-weighted mean over positions: a constant map pools to its value.
    block = GlobalContextBlock(8, 0.5)
    torch.nn.init.normal_(block.transform[-1].weight)
    const = torch.full((1, 8, 5, 7), 2.0)
    pooled = block.transform(torch.full((1, 8, 1, 1), 2.0))
    torch.testing.assert_close(block(const), const + pooled)


def test_srm_auxiliary_loss_reaches_aux_heads_and_gates():
    model = make("attention_unet_srm_tiny")
    assert len(model.aux_heads) == 1  # decoder level 1 only: level 0 is the main head
    image, target = disc_batch(2, 32)
    model(image.expand(-1, 3, -1, -1))
    aux = model.auxiliary_loss(target, DiceCELoss(3))
    assert aux is not None and torch.isfinite(aux) and aux > 0
    aux.backward()
    for module in (model.aux_heads, model.gates):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert model.head.weight.grad is None  # the main head is scored by the main loss, not here


def test_srm_auxiliary_loss_is_the_documented_sum():
    model = make("attention_unet_srm_tiny", num_classes=2)
    image, target = disc_batch(2, 32)
    target[:, :4] = 255  # ignored rows
    loss_fn = DiceCELoss(2, ignore_index=255)
    model(image.expand(-1, 3, -1, -1))
    aux = model.auxiliary_loss(target, loss_fn)
    # Reference from the stored logits: 0.5 * loss(upsampled level-1 logits) + 0.1 * mean over gates of
    # the BCE of upsampled gate logits against label > 0 on non-ignored pixels.
    up = lambda t: F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
    valid = target != 255
    foreground = (target > 0) & valid
    bce = [
        F.binary_cross_entropy_with_logits(up(t)[:, 0][valid], foreground[valid].float())
        for t in model._gate_logits
    ]
    expected = 0.5 * loss_fn(up(model._aux_logits[0]), target) + 0.1 * torch.stack(bce).mean()
    torch.testing.assert_close(aux, expected)
    # All pixels ignored: no NaN, and nothing left to score.
    everything_ignored = model.auxiliary_loss(torch.full_like(target, 255), loss_fn)
    assert torch.isfinite(everything_ignored) and everything_ignored == 0


def test_auxiliary_loss_none_in_eval_and_for_other_variants():
    x, target = torch.randn(1, 3, 16, 16), torch.zeros(1, 16, 16, dtype=torch.long)
    srm = make("attention_unet_srm_tiny")
    assert srm.auxiliary_loss(target, DiceCELoss(3)) is None  # no forward yet
    srm.eval()
    srm(x)
    assert srm.auxiliary_loss(target, DiceCELoss(3)) is None
    assert not any(m.requires_grad for m in srm.attention_maps())  # no graph kept in eval mode
    for name, params in VARIANTS[:3]:
        model = make(name, **params)
        model(x)
        assert model.auxiliary_loss(target, DiceCELoss(3)) is None


def test_full_size_parameter_counts():
    # in_channels=3, num_classes=2 (as `medseg models` prints them); unet is 1,625,737.
    #   attention_unet (none)  2,181,040   encoder 1,571,002 (MONAI strided residual units)
    #   attention_unet (ag)    2,213,924   = none + 32,884 gate parameters
    #   attention_unet_gct     2,222,677   = ag + 8,753 (GC block)
    #   attention_unet_srm     2,214,378   = ag + 454 (three 1x1 aux heads: (32+64+128)*2 + 3*2)
    counts = {
        "none": count_parameters(make("attention_unet", num_classes=2, attention="none")),
        "ag": count_parameters(make("attention_unet", num_classes=2)),
        "gct": count_parameters(make("attention_unet_gct", num_classes=2)),
        "srm": count_parameters(make("attention_unet_srm", num_classes=2)),
    }
    assert counts == {"none": 2_181_040, "ag": 2_213_924, "gct": 2_222_677, "srm": 2_214_378}
    assert count_parameters(make("attention_unet", num_classes=2).encoder) == 1_571_002
    assert make("attention_unet").size_divisor == 16


@pytest.mark.parametrize(("name", "params"), VARIANTS)
def test_training_smoke_reduces_loss(name, params):
    model = make(name, in_channels=1, num_classes=2, **params)
    image, target = disc_batch(4, 32, seed=1)
    loss_fn = DiceCELoss(2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = loss_fn(model(image), target)
        losses.append(loss.item())
        extra = model.auxiliary_loss(target, loss_fn)
        (loss if extra is None else loss + extra).backward()
        optimizer.step()
    assert losses[-1] < 0.3 * losses[0], losses


@pytest.mark.parametrize(("name", "params"), VARIANTS)
def test_state_dict_round_trip(name, params):
    source, copy = make(name, seed=0, **params), make(name, seed=1, **params)
    torch.nn.init.normal_(source.head.weight)  # so a copy that failed to load would differ
    copy.load_state_dict(source.state_dict())
    x = torch.randn(2, 3, 24, 20)
    source.eval(), copy.eval()
    with torch.no_grad():
        assert torch.equal(source(x), copy(x))
    for a, b in zip(source.attention_maps(), copy.attention_maps(), strict=True):
        assert torch.equal(a, b)
