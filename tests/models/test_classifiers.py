"""Classifier registry: every tiny variant runs, transfer modes freeze the right parameters, weights load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.models.classifiers import (
    Classifier,
    create_classifier,
    describe_classifier,
    list_classifiers,
    load_encoder_weights,
)

TINY = list_classifiers("*_tiny")
FULL = [name for name in list_classifiers() if not name.endswith("_tiny")]


def _family(name: str) -> str:
    return name.removesuffix("_tiny").rstrip("0123456789").removesuffix("_b")


def test_registry_lists_the_issue_models_each_with_a_tiny_variant():
    assert {
        "densenet121",
        "resnet18",
        "resnet34",
        "resnet50",
        "efficientnet_b0",
        "vit_b16",
        "simple_cnn",
    } <= set(FULL)
    assert {_family(name) for name in FULL} == {_family(name) for name in TINY}
    assert all(describe_classifier(name) for name in FULL + TINY)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ConfigError, match="resnet18"):
        create_classifier("resnet19", in_channels=3, num_classes=2)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("channels", [3, 1])
def test_tiny_variant_gives_logits_and_finite_gradients(name, channels):
    torch.manual_seed(0)
    model = create_classifier(name, in_channels=channels, num_classes=5).train()
    out = model(torch.randn(2, channels, 64, 64))
    assert out.shape == (2, 5)
    out.logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert isinstance(model, Classifier)
    assert len(model.blocks) >= 3
    assert model.get_submodule(model.cam_layer) is not None
    # The blocks partition the encoder's modules: every encoder parameter belongs to exactly one block,
    # except parameters held directly by the encoder (ViT's class token).
    in_blocks = [id(p) for block in model.blocks for p in block.parameters()]
    assert len(in_blocks) == len(set(in_blocks))
    direct = {id(p) for p in model.encoder.parameters(recurse=False)}
    assert set(in_blocks) | direct == {id(p) for p in model.encoder.parameters()}


def test_simple_cnn_sizes_match_their_descriptions():
    def count(model):
        return sum(p.numel() for p in model.parameters())

    assert 90_000 < count(create_classifier("simple_cnn", in_channels=3, num_classes=2)) < 110_000
    assert 3_000 < count(create_classifier("simple_cnn_tiny", in_channels=3, num_classes=2)) < 10_000


def test_bad_architecture_argument_is_a_config_error():
    with pytest.raises(ConfigError, match="simple_cnn"):
        create_classifier("simple_cnn_tiny", in_channels=3, num_classes=2, depth=3)
    with pytest.raises(ConfigError, match="patch_size"):
        create_classifier("vit_tiny", in_channels=3, num_classes=2, img_size=60)


def _trainable(module: nn.Module) -> set[bool]:
    return {p.requires_grad for p in module.parameters()}


def test_frozen_trains_only_a_new_linear_head():
    model = create_classifier("resnet_tiny", in_channels=3, num_classes=3, transfer="frozen")
    assert _trainable(model.encoder) == {False}
    assert isinstance(model.head, nn.Linear) and _trainable(model.head) == {True}


def test_head_mode_adds_two_dense_layers_on_a_frozen_encoder():
    model = create_classifier("densenet_tiny", in_channels=3, num_classes=3, transfer="head", head_hidden=7)
    linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(model.feature_dim, 7), (7, 3)]
    assert _trainable(model.encoder) == {False}
    assert _trainable(model.head) == {True}
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_finetune_unfreezes_the_last_k_blocks():
    model = create_classifier("resnet_tiny", in_channels=3, num_classes=3, unfreeze_blocks=2)
    assert [_trainable(block) for block in model.blocks] == [{False}, {False}, {False}, {True}, {True}]
    assert _trainable(model.head) == {True}
    everything = create_classifier("resnet_tiny", in_channels=3, num_classes=3)
    assert _trainable(everything) == {True}
    vit = create_classifier("vit_tiny", in_channels=3, num_classes=3, unfreeze_blocks=1)
    assert _trainable(vit.blocks[-1]) == {True} and _trainable(vit.blocks[0]) == {False}
    assert not vit.encoder.cls_token.requires_grad


def test_transfer_arguments_are_checked():
    with pytest.raises(ConfigError, match="transfer must be one of"):
        create_classifier("resnet_tiny", in_channels=3, num_classes=2, transfer="linear-probe")
    with pytest.raises(ConfigError, match="finetune"):
        create_classifier("resnet_tiny", in_channels=3, num_classes=2, transfer="frozen", unfreeze_blocks=2)


def test_frozen_batch_norm_keeps_its_running_statistics_in_train_mode():
    model = create_classifier("simple_cnn_tiny", in_channels=1, num_classes=2, transfer="frozen").train()
    norms = [m for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    model(torch.randn(4, 1, 32, 32) + 3.0)
    assert not any(m.training for m in norms)
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    tuned = create_classifier("simple_cnn_tiny", in_channels=1, num_classes=2).train()
    tuned(torch.randn(4, 1, 32, 32) + 3.0)
    assert all(m.training for m in tuned.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.equal(
        next(m for m in tuned.modules() if isinstance(m, nn.BatchNorm2d)).running_mean, before[0]
    )


def _assert_same_encoder(a: Classifier, b: Classifier) -> None:
    sa, sb = a.encoder.state_dict(), b.encoder.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_pretrained_from_a_local_file_sets_the_encoder_weights(tmp_path: Path):
    torch.manual_seed(0)
    source = create_classifier("resnet_tiny", in_channels=3, num_classes=4)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    torch.manual_seed(1)
    model = create_classifier("resnet_tiny", in_channels=3, num_classes=2, pretrained=tmp_path / "weights.pt")
    _assert_same_encoder(model, source)
    report = model.pretrained_report
    assert report.loaded == len(source.encoder.state_dict())
    assert (report.missing, report.mismatched, report.adapted) == (0, 0, 0)
    assert report.unexpected == 2  # the source's head.weight and head.bias; the head is always new
    assert model.head.out_features == 2


def test_pretrained_accepts_raw_monai_keys_safetensors_folders_and_checkpoints(tmp_path: Path):
    from safetensors.torch import save_file

    source = create_classifier("densenet_tiny", in_channels=3, num_classes=2)
    raw = source.encoder.state_dict()  # MONAI DenseNet keys: features.conv0.weight, ...
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    torch.save({"model": {f"module.{k}": v for k, v in raw.items()}, "epoch": 3}, tmp_path / "run.pt")
    torch.save(raw, tmp_path / "bundle" / "models" / "model.pt")
    save_file({k: v.contiguous() for k, v in raw.items()}, str(tmp_path / "w.safetensors"))
    for where in ("run.pt", "bundle", "w.safetensors"):
        model = create_classifier("densenet_tiny", in_channels=3, num_classes=2)
        report = load_encoder_weights(model, tmp_path / where)
        _assert_same_encoder(model, source)
        assert report.loaded == len(raw) and report.unexpected == 0, where


def test_rgb_weights_are_summed_into_a_grey_stem(tmp_path: Path):
    source = create_classifier("simple_cnn_tiny", in_channels=3, num_classes=2)
    torch.save(source.state_dict(), tmp_path / "rgb.pth")
    model = create_classifier(
        "simple_cnn_tiny", in_channels=1, num_classes=2, pretrained=str(tmp_path / "rgb.pth")
    )
    stem = "stages.0.0.weight"
    assert torch.allclose(
        model.encoder.state_dict()[stem], source.encoder.state_dict()[stem].sum(1, keepdim=True)
    )
    assert model.pretrained_report.adapted == 1
    grey = torch.rand(1, 1, 32, 32)
    model.eval(), source.eval()
    assert torch.allclose(model.encoder(grey), source.encoder(grey.repeat(1, 3, 1, 1)), atol=1e-5)


def test_weights_of_another_architecture_are_refused(tmp_path: Path):
    torch.save(
        create_classifier("densenet_tiny", in_channels=3, num_classes=2).state_dict(), tmp_path / "d.pt"
    )
    with pytest.raises(ConfigError, match=r"no tensor of .*d\.pt fits"):
        create_classifier("resnet_tiny", in_channels=3, num_classes=2, pretrained=tmp_path / "d.pt")


def test_unreadable_or_missing_weights_are_config_errors(tmp_path: Path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read .*junk.pt"):
        create_classifier("resnet_tiny", in_channels=3, num_classes=2, pretrained=tmp_path / "junk.pt")
    with pytest.raises(ConfigError, match="does not exist"):
        create_classifier("resnet_tiny", in_channels=3, num_classes=2, pretrained="./nowhere/weights.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds none of"):
        create_classifier("resnet_tiny", in_channels=3, num_classes=2, pretrained=tmp_path / "empty")


def test_hub_id_offline_is_a_one_line_error_saying_how_to_bring_a_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as error:
        create_classifier(
            "resnet_tiny", in_channels=3, num_classes=2, pretrained="medseg-tests/no-such-model"
        )
    message = str(error.value)
    assert "needs the internet" in message and "model.pretrained=/path/to/" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="neither an existing file"):
        create_classifier("resnet_tiny", in_channels=3, num_classes=2, pretrained="not a hub id")


def test_unreachable_hub_fails_fast_with_the_offline_error(monkeypatch):
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    with pytest.raises(ConfigError, match="needs the internet"):
        create_classifier(
            "resnet_tiny", in_channels=3, num_classes=2, pretrained="medseg-tests/no-such-model"
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_size_classifiers_give_logits(name):
    size = 224 if name.startswith("vit") else 64
    model = create_classifier(name, in_channels=3, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 3)
