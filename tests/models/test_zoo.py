"""Every registered tiny model keeps the model contract and works through the whole job unchanged."""

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import tiny_config

from medseg.config import load_config, save_config
from medseg.engine.checkpoint import save_checkpoint
from medseg.inference.predictor import Predictor
from medseg.losses import DiceCELoss
from medseg.models import build_model, create_model, list_models
from medseg.workflows.evaluate import evaluate
from medseg.workflows.predict import predict
from medseg.workflows.train import train

TINY = list_models("*tiny")


def test_every_family_has_a_tiny_variant():
    assert {"unet_tiny", "attention_unet_tiny", "segformer_tiny"} <= set(TINY)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [(64, 64), (72, 56)])
def test_forward_and_backward(name, size):
    torch.manual_seed(0)
    model = create_model(name, in_channels=3, num_classes=4).train()
    x = torch.randn(2, 3, *size)
    out = model(x)
    assert out.shape == (2, 4, *size)
    loss = out.float().mean()
    auxiliary = getattr(model, "auxiliary_loss", None)
    extra = auxiliary(torch.randint(0, 4, (2, *size)), DiceCELoss(4)) if auxiliary else None
    (loss if extra is None else loss + extra).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(p.numel() for p in model.encoder.parameters()) > 0
    assert isinstance(model.size_divisor, int) and model.size_divisor >= 1


@pytest.mark.parametrize("name", TINY)
def test_reload_from_a_run_folder_gives_identical_outputs(name, tmp_path: Path):
    config = load_config(
        None,
        [
            f"model.name={name}",
            "train.amp=off",
            "data.in_channels=3",
            "data.labels={background: 0, a: 1, b: 2}",
        ],
    )
    torch.manual_seed(1)
    model = build_model(config.model, in_channels=3, num_classes=3).eval()
    save_config(config, tmp_path / "config.yaml")
    save_checkpoint(tmp_path / "checkpoints" / "best.pt", {"model": model.state_dict()})
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
        reloaded = Predictor.from_run(tmp_path, device="cpu")
        # the Predictor runs channels_last: other conv kernels, equal up to float rounding
        np.testing.assert_allclose(reloaded.logits(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in TINY if n != "unet_tiny"])  # unet_tiny: tests/workflows
def test_the_whole_job_needs_no_model_specific_flags(name, blood_dataset: Path, tmp_path: Path):
    run = train(
        blood_dataset,
        tiny_config(f"model.name={name}", "train.epochs=1", "data.patch_size=[64,64]"),
        tmp_path / "run",
    )
    assert evaluate(run, device="cpu")["num_images"] >= 1
    predict(run, [blood_dataset / "imagesTr"], tmp_path / "pred")
    assert len(list((tmp_path / "pred" / "masks").iterdir())) == 10


def test_freeze_encoder_for_k_epochs_then_train_it(blood_dataset: Path, tmp_path: Path):
    from medseg.engine.checkpoint import load_checkpoint

    run = train(blood_dataset, tiny_config("train.epochs=1", "model.freeze_encoder=-1"), tmp_path / "frozen")
    frozen = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    torch.manual_seed(0)
    initial = create_model("unet_tiny", in_channels=3, num_classes=4)
    encoder_keys = {k for k in frozen if k.startswith("model.0.")}  # the first down block
    assert encoder_keys
    for key in encoder_keys:
        assert torch.equal(frozen[key], initial.state_dict()[key]), key
    changed = [
        k
        for k in frozen
        if not k.startswith("model.0.") and not torch.equal(frozen[k], initial.state_dict()[k])
    ]
    assert changed  # the decoder trained
    run = train(blood_dataset, tiny_config("train.epochs=2", "model.freeze_encoder=1"), tmp_path / "thawed")
    thawed = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert any(not torch.equal(thawed[k], initial.state_dict()[k]) for k in encoder_keys)


def test_encoder_learning_rate_ratio_makes_two_groups(blood_dataset: Path, tmp_path: Path):
    from medseg.workflows.train import _param_groups

    model = create_model("unet_tiny", in_channels=3, num_classes=4)
    groups = _param_groups(model, 1e-3, 0.1)
    assert [g["lr"] for g in groups] == [pytest.approx(1e-4), 1e-3]
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())
    assert len(_param_groups(model, 1e-3, 1.0)) == 1


def test_pretrained_on_a_model_without_weights_is_a_config_error():
    from medseg.errors import ConfigError

    config = load_config(None, ["model.name=unet_tiny", "model.pretrained=/some/folder"])
    with pytest.raises(ConfigError, match="'unet_tiny' has no pretrained weights"):
        build_model(config.model, in_channels=3, num_classes=2)
