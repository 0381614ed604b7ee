"""SegFormer: the model contract at tiny size, the paper's sizes, pretrained encoders without a network."""

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.config import load_config
from medseg.errors import ConfigError
from medseg.inference.predictor import Predictor
from medseg.losses import DiceCELoss
from medseg.models import build_model, count_parameters, create_model, list_models
from medseg.models.segformer import SIZES

TINY = SIZES["segformer_tiny"]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test instead of waiting on a network."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def mit_checkpoint(folder: Path, *, seed: int = 7, head: str = "classification", **overrides) -> Path:
    """Save a MiT checkpoint of segformer_tiny's size: as the hub's ``nvidia/mit-b*`` are saved (an
    ImageNet classifier), as a fine-tuned SegFormer (``head="segmentation"``) or as a bare encoder."""
    import transformers

    config = transformers.SegformerConfig(
        hidden_sizes=list(TINY.hidden_sizes),
        depths=list(TINY.depths),
        num_attention_heads=list(TINY.num_attention_heads),
        decoder_hidden_size=TINY.decoder_hidden_size,
        num_labels=10,
        **overrides,
    )
    network_class = {
        "classification": transformers.SegformerForImageClassification,
        "segmentation": transformers.SegformerForSemanticSegmentation,
        "none": transformers.SegformerModel,
    }[head]
    torch.manual_seed(seed)
    network_class(config).save_pretrained(folder)
    return folder


def saved_encoder(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import SegformerModel

    return SegformerModel.from_pretrained(folder).state_dict()


def test_the_seven_sizes_are_registered():
    assert list_models("segformer*") == [f"segformer_b{i}" for i in range(6)] + ["segformer_tiny"]


@pytest.mark.parametrize("size", [(64, 64), (72, 56)])
@pytest.mark.parametrize(("in_channels", "num_classes"), [(1, 2), (3, 4), (5, 3)])
def test_forward_and_backward_give_logits_at_the_input_size(size, in_channels, num_classes):
    torch.manual_seed(0)
    model = create_model("segformer_tiny", in_channels=in_channels, num_classes=num_classes).train()
    x = torch.randn(2, in_channels, *size)
    target = torch.randint(0, num_classes, (2, *size))
    target[:, :4] = 255  # ignored rows: the loss sees full-size logits like U-Net's
    loss = DiceCELoss(num_classes, ignore_index=255, class_weights=[1.0] * num_classes)(model(x), target)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.eval()(x).shape == (2, num_classes, *size)


def test_logits_are_the_quarter_resolution_decoder_output_upsampled():
    torch.manual_seed(0)
    model = create_model("segformer_tiny", in_channels=3, num_classes=4).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        features = model.encoder(x, output_hidden_states=True, return_dict=True).hidden_states
        quarter = model.decode_head(features)
        assert quarter.shape == (1, 4, 16, 24)
        expected = torch.nn.functional.interpolate(
            quarter, size=(64, 96), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("shape", [(2, 3, 64, 96), (1, 3, 72, 40)])
def test_folded_decode_head_equals_transformers_head(shape):
    torch.manual_seed(0)
    model = create_model("segformer_tiny", in_channels=3, num_classes=5)
    batch_norm = model.decode_head.batch_norm
    batch_norm.running_mean.normal_()
    batch_norm.running_var.uniform_(0.5, 2.0)
    torch.nn.init.normal_(batch_norm.weight)
    model.eval()
    fused_calls = []
    model.decode_head.linear_fuse.register_forward_hook(lambda *args: fused_calls.append(1))
    x = torch.randn(shape)
    with torch.no_grad(), torch.enable_grad():  # autograd on: transformers' head, as Grad-CAM runs it
        reference = model(x).detach()
    assert fused_calls == [1]
    with torch.inference_mode():
        folded = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            folded_bf16 = model(x).float()
    assert fused_calls == [1]  # prediction never ran the 4D -> D fusion conv
    torch.testing.assert_close(folded, reference, atol=1e-5, rtol=1e-4)
    assert (folded_bf16 - reference).abs().max() < 0.05 * reference.abs().max()
    model.train()
    with torch.no_grad():
        model(x)
    assert fused_calls == [1, 1]  # training mode keeps transformers' head (batch statistics)


def test_encoder_is_the_mit_and_everything_else_is_the_decode_head():
    model = create_model("segformer_tiny", in_channels=3, num_classes=4)
    assert model.size_divisor == 32
    assert type(model.encoder).__name__ == "SegformerModel"
    encoder = {id(p) for p in model.encoder.parameters()}
    head = {id(p) for p in model.decode_head.parameters()}
    assert not encoder & head
    assert encoder | head == {id(p) for p in model.parameters()}
    assert {key.split(".")[0] for key in model.state_dict()} == {"encoder", "decode_head"}


@pytest.mark.parametrize(
    ("name", "total", "encoder"),
    # Paper Table 1 (150 classes): encoder 3.4M / 24.2M, decoder 0.4M / 3.3M. Exact counts with 4 classes.
    [("segformer_b0", 3_715_172, 3_319_392), ("segformer_b2", 27_349_700, 24_196_288)],
)
def test_parameter_counts_match_the_paper(name, total, encoder):
    model = create_model(name, in_channels=3, num_classes=4)
    assert count_parameters(model) == total
    assert count_parameters(model.encoder) == encoder


@pytest.mark.parametrize("shape", [(72, 56, 3), (37, 53, 3), (64, 64, 3)])
def test_predictor_pads_to_32_and_crops_back(shape):
    config = load_config(
        None, ["model.name=segformer_tiny", "data.in_channels=3", "data.labels={background: 0, a: 1, b: 2}"]
    )
    torch.manual_seed(0)
    predictor = Predictor(create_model("segformer_tiny", in_channels=3, num_classes=3), config)
    assert predictor.divisor == 32
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    result = predictor.predict(image)
    assert result.labels.shape == shape[:2]
    assert result.probabilities.shape == (3, *shape[:2])
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-5)


def test_state_dict_round_trip_gives_identical_outputs():
    torch.manual_seed(0)
    trained = create_model("segformer_tiny", in_channels=1, num_classes=2).eval()
    torch.manual_seed(1)
    rebuilt = create_model("segformer_tiny", in_channels=1, num_classes=2).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.inference_mode():
        assert not torch.equal(rebuilt(x), trained(x))
        rebuilt.load_state_dict(trained.state_dict())
        torch.testing.assert_close(rebuilt(x), trained(x), rtol=0, atol=0)


def test_unknown_parameter_is_a_config_error():
    with pytest.raises(ConfigError, match="'segformer_b0'.*depths"):
        create_model("segformer_b0", in_channels=3, num_classes=2, depths=[1, 1, 1, 1])


@pytest.mark.parametrize("head", ["classification", "segmentation", "none"])
def test_pretrained_folder_loads_the_encoder_and_a_fresh_head(tmp_path: Path, no_network, head):
    folder = mit_checkpoint(tmp_path / "mit", head=head)
    config = load_config(None, ["model.name=segformer_tiny", f"model.pretrained={folder}"])
    model = build_model(config.model, in_channels=3, num_classes=4)
    saved = saved_encoder(folder)
    loaded = model.encoder.state_dict()
    assert loaded.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key
    assert model.decode_head.classifier.out_channels == 4
    torch.manual_seed(0)
    scratch = create_model("segformer_tiny", in_channels=3, num_classes=4)
    key = "encoder.stages.0.patch_embeddings.proj.weight"
    assert not torch.equal(model.state_dict()[key], scratch.state_dict()[key])
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)
    # A prediction rebuilds the architecture without the checkpoint, then loads the run's weights.
    rebuilt = build_model(config.model, in_channels=3, num_classes=4, pretrained=False)
    rebuilt.load_state_dict(model.state_dict())


def test_pretrained_rgb_encoder_is_adapted_to_one_channel(tmp_path: Path, no_network):
    folder = mit_checkpoint(tmp_path / "mit")
    model = create_model("segformer_tiny", in_channels=1, num_classes=2, pretrained=str(folder))
    saved, loaded = saved_encoder(folder), model.encoder.state_dict()
    stem = "stages.0.patch_embeddings.proj.weight"
    assert saved[stem].shape[1] == 3 and loaded[stem].shape[1] == 1
    torch.testing.assert_close(loaded[stem], saved[stem].sum(dim=1, keepdim=True))
    assert all(torch.equal(loaded[key], saved[key]) for key in saved if key != stem)
    # A grey image gets the response the RGB encoder gives to it repeated in three channels.
    from transformers import SegformerModel

    rgb = SegformerModel.from_pretrained(folder).eval()
    grey = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        expected = rgb(grey.expand(-1, 3, -1, -1)).last_hidden_state
        torch.testing.assert_close(model.encoder.eval()(grey).last_hidden_state, expected)
    with pytest.raises(ConfigError, match="takes 3 input channels but the data has 2"):
        create_model("segformer_tiny", in_channels=2, num_classes=2, pretrained=str(folder))


def test_pretrained_of_another_size_names_the_model_that_fits(tmp_path: Path, no_network):
    from transformers import SegformerConfig

    SegformerConfig(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2]).save_pretrained(tmp_path / "b0")
    with pytest.raises(
        ConfigError, match=r"does not fit segformer_tiny: .*depths \[2, 2, 2, 2\].*segformer_b0"
    ):
        create_model("segformer_tiny", in_channels=3, num_classes=2, pretrained=str(tmp_path / "b0"))
    folder = mit_checkpoint(tmp_path / "sr", sr_ratios=[4, 2, 1, 1])
    with pytest.raises(ConfigError, match=r"sr_ratios \[4, 2, 1, 1\] \(not \[8, 4, 2, 1\]\)"):
        create_model("segformer_tiny", in_channels=3, num_classes=2, pretrained=str(folder))


def test_folder_that_is_not_a_checkpoint_is_a_config_error(tmp_path: Path, no_network):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "weights.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=f"{empty} is not a SegFormer/MiT checkpoint"):
        create_model("segformer_tiny", in_channels=3, num_classes=2, pretrained=str(empty))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match=f"{bert} is not a SegFormer/MiT checkpoint.*'bert'"):
        create_model("segformer_tiny", in_channels=3, num_classes=2, pretrained=str(bert))
    config_only = mit_checkpoint(tmp_path / "config_only")
    (config_only / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=f"cannot load weights from {config_only}"):
        create_model("segformer_tiny", in_channels=3, num_classes=2, pretrained=str(config_only))
    with pytest.raises(ConfigError, match="neither an existing folder nor a hub model id"):
        create_model("segformer_tiny", in_channels=3, num_classes=2, pretrained=str(tmp_path / "a" / "b"))


HUB_ID = "medseg-tests/mit-never-cached"


def assert_unreachable_error(exc: pytest.ExceptionInfo) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert f"hub could not be reached for '{HUB_ID}'" in message
    assert "model.pretrained=/path/to/FOLDER" in message
    assert "save_pretrained" in message


def test_offline_hub_id_fails_at_once_with_one_line(monkeypatch: pytest.MonkeyPatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # after huggingface_hub read it at import: must still count
    start = time.perf_counter()
    with pytest.raises(ConfigError) as exc:
        create_model("segformer_b5", in_channels=3, num_classes=2, pretrained=HUB_ID)
    assert time.perf_counter() - start < 5
    assert_unreachable_error(exc)


def test_unreachable_hub_is_asked_once_without_retries(monkeypatch: pytest.MonkeyPatch, no_network):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls = []

    def unreachable(url, *, timeout, **kwargs):
        calls.append(timeout)
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    with pytest.raises(ConfigError) as exc:
        create_model("segformer_tiny", in_channels=3, num_classes=2, pretrained=HUB_ID)
    assert_unreachable_error(exc)
    assert len(calls) == 1 and calls[0] <= 10
