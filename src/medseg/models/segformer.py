"""SegFormer (Xie et al. 2021): a hierarchical Mix Transformer (MiT) encoder and an all-MLP decoder.

Built from transformers' ``SegformerForSemanticSegmentation`` so that the hub's ``nvidia/mit-b0`` ...
``nvidia/mit-b5`` ImageNet encoders load without conversion. The variants are configs of one wrapper
class, :class:`SegFormer`, with the MiT sizes of the paper (Table 1):

==========  ====================  =============  ================  =================================
name        hidden sizes          depths         decoder channels  parameters (encoder / total, K=4)
==========  ====================  =============  ================  =================================
b0          32, 64, 160, 256      2, 2, 2, 2     256               3.32M / 3.72M
b1          64, 128, 320, 512     2, 2, 2, 2     256               13.15M / 13.68M
b2          64, 128, 320, 512     3, 4, 6, 3     768               24.20M / 27.35M
b3          64, 128, 320, 512     3, 4, 18, 3    768               44.07M / 47.23M
b4          64, 128, 320, 512     3, 8, 27, 3    768               60.84M / 64.00M
b5          64, 128, 320, 512     3, 6, 40, 3    768               81.44M / 84.60M
==========  ====================  =============  ================  =================================

All sizes use 1, 2, 5, 8 attention heads and sequence-reduction ratios 8, 4, 2, 1. The decoder predicts
at H/4 x W/4; :meth:`SegFormer.forward` upsamples bilinearly to the input size so the logits meet the model
contract (losses, class weights and ``ignore_index`` work as for U-Net).

Pretrained weights (``model.pretrained``: a hub id or a folder written by ``save_pretrained``) initialise
the encoder only; the decode head is always freshly initialised for the run's classes. The architecture
always comes from the registered name: a checkpoint of another size is a ConfigError naming the right
model, so a run folder rebuilds its network from ``config.yaml`` without the checkpoint or the hub.
"""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from medseg.errors import ConfigError
from medseg.models import MODELS

# Seconds to wait for the hub before treating it as unreachable (huggingface_hub would retry for ~25 s).
HUB_TIMEOUT_S = 5.0


class MiTSize(NamedTuple):
    """One SegFormer size: the MiT encoder's stages and the decoder width."""

    hidden_sizes: tuple[int, ...]
    depths: tuple[int, ...]
    num_attention_heads: tuple[int, ...]
    decoder_hidden_size: int
    note: str  # for the registry's one-line description


_PAPER_HEADS = (1, 2, 5, 8)
_WIDE = (64, 128, 320, 512)

SIZES: dict[str, MiTSize] = {
    "segformer_b0": MiTSize((32, 64, 160, 256), (2, 2, 2, 2), _PAPER_HEADS, 256, "3.7M params"),
    "segformer_b1": MiTSize(_WIDE, (2, 2, 2, 2), _PAPER_HEADS, 256, "13.7M params"),
    "segformer_b2": MiTSize(_WIDE, (3, 4, 6, 3), _PAPER_HEADS, 768, "27.3M params"),
    "segformer_b3": MiTSize(_WIDE, (3, 4, 18, 3), _PAPER_HEADS, 768, "47.2M params"),
    "segformer_b4": MiTSize(_WIDE, (3, 8, 27, 3), _PAPER_HEADS, 768, "64.0M params"),
    "segformer_b5": MiTSize(_WIDE, (3, 6, 40, 3), _PAPER_HEADS, 768, "84.6M params"),
    "segformer_tiny": MiTSize((8, 16, 32, 64), (1, 1, 1, 1), (1, 1, 2, 2), 32, "0.12M params"),
}

# Config keys that decide the encoder's tensors and computation; a checkpoint must agree on all of them.
_ENCODER_KEYS = (
    "num_encoder_blocks",
    "hidden_sizes",
    "depths",
    "num_attention_heads",
    "sr_ratios",
    "patch_sizes",
    "strides",
    "mlp_ratios",
    "hidden_act",
    "layer_norm_eps",
)


class SegFormer(nn.Module):
    """SegFormer keeping the medseg model contract.

    Args:
        network: a transformers ``SegformerForSemanticSegmentation``; its MiT encoder becomes
            :attr:`encoder` and its decode head :attr:`decode_head` (the wrapper holds only these two, so
            ``state_dict`` keys are ``encoder.*`` and ``decode_head.*``).

    Attributes:
        size_divisor: 32, the product of the MiT's stage strides (4, 2, 2, 2). Inputs of other sizes still
            give logits at the input size, but the stages' feature grids then no longer nest exactly;
            prediction pads to a multiple of 32.
        config: the transformers ``SegformerConfig`` (not saved in the state dict).
    """

    size_divisor = 32
    cam_layer = "decode_head.linear_fuse"  # default Grad-CAM layer: the fused multi-scale features

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.config = network.config
        self.encoder = network.segformer
        self.decode_head = network.decode_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float -> ``(N, K, H, W)`` logits (decoded at H/4 x W/4, upsampled bilinearly).

        In eval mode without autograd (prediction, export) the decode head runs folded
        (:meth:`_decode_folded`): the same function of the same weights, about twice as fast on a CPU.
        Training and Grad-CAM (which hooks ``decode_head.linear_fuse``) run transformers' head as it is.
        """
        features = self.encoder(x, output_hidden_states=True, return_dict=True).hidden_states
        if self.training or torch.is_grad_enabled():
            logits = self.decode_head(features)
        else:
            logits = self._decode_folded(features)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def _decode_folded(self, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The all-MLP decode head with its projection and fusion folded together, at each stage's resolution.

        transformers' head projects each stage ``(N, C_i, h_i, w_i)`` to D channels, upsamples all four to
        H/4 x W/4, concatenates them (4D channels, last stage first) and fuses them with a 1x1 conv. Both
        the projection and the fusion are per-pixel linear maps, and bilinear upsampling is linear with
        weights summing to 1, so it commutes with them (bias included): fusing block i of the 1x1 conv into
        stage i's projection and upsampling the D-channel result gives the same sum. That removes the 4D ->
        D conv at H/4 (8.6 of segformer_b0's 13.5 GFLOPs at 512²) and the upsampling of 4D channels, whose
        strided copies took ~40% of the CPU time. No library offers this, hence by hand; equality with the
        original head is tested.

        Args:
            features: the encoder's hidden states, ``(N, C_i, H / 2^(i+2), W / 2^(i+2))`` for i = 0..3.

        Returns:
            ``(N, K, H / 4, W / 4)`` logits.
        """
        head = self.decode_head
        fuse = head.linear_fuse.weight.flatten(1)  # (D, n * D): stage n-1 first, stage 0 last
        width = fuse.shape[0]
        target = features[0].shape[-2:]
        total: torch.Tensor | None = None
        for stage, (feature, mlp) in enumerate(zip(features, head.linear_projections, strict=True)):
            start = (len(features) - 1 - stage) * width
            block = fuse[:, start : start + width]
            weight = (block @ mlp.proj.weight)[:, :, None, None]
            fused = F.conv2d(feature, weight.to(feature.dtype), (block @ mlp.proj.bias).to(feature.dtype))
            if fused.shape[-2:] != target:
                fused = F.interpolate(fused, size=target, mode="bilinear", align_corners=False)
            total = fused if total is None else total + fused
        return head.classifier(head.activation(head.batch_norm(total)))


def build_segformer(
    size: MiTSize,
    *,
    in_channels: int,
    num_classes: int,
    pretrained: str = "",
    drop_path_rate: float = 0.1,
    name: str = "segformer",
) -> SegFormer:
    """Build a SegFormer of ``size``, optionally with a pretrained MiT encoder.

    Args:
        size: the encoder/decoder sizes (one of :data:`SIZES`).
        in_channels: image channels (any number; a pretrained RGB encoder is adapted to 1 channel).
        num_classes: output logits, background included (2 for binary).
        pretrained: ``""`` (random initialisation), a hub id (``nvidia/mit-b2``) or a folder written by
            ``save_pretrained``.
        drop_path_rate: stochastic depth of the encoder's last block (the paper's 0.1), rising linearly.
        name: the registered name, for messages.

    Raises:
        ConfigError: the checkpoint cannot be found, reached, read or does not fit (size, channels).
        ValueError: impossible channel or class counts.
    """
    if in_channels < 1 or num_classes < 1:
        raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
    from transformers import SegformerConfig

    config = SegformerConfig(
        num_channels=in_channels,
        hidden_sizes=list(size.hidden_sizes),
        depths=list(size.depths),
        num_attention_heads=list(size.num_attention_heads),
        sr_ratios=[8, 4, 2, 1],
        decoder_hidden_size=size.decoder_hidden_size,
        num_labels=num_classes,
        drop_path_rate=drop_path_rate,
    )
    # The checkpoint is resolved first so that an unreachable hub fails before a large model is built.
    encoder_state = _pretrained_encoder_state(pretrained, config, name) if pretrained else None
    from transformers import SegformerForSemanticSegmentation

    network = SegformerForSemanticSegmentation(config)
    if encoder_state is not None:
        network.segformer.load_state_dict(encoder_state)
    return SegFormer(network)


def _pretrained_encoder_state(source: str, config, name: str) -> dict[str, torch.Tensor]:
    """The MiT encoder state dict of checkpoint ``source``, adapted to ``config.num_channels``."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        location, where, local_only = str(folder), str(folder), True
    else:
        location, where, local_only = source, repr(source), _hub_local_only(source)
    saved = _checkpoint_config(location, where, local_only)
    _check_same_encoder(saved, config, where, name)
    channels = int(saved.get("num_channels", 3))
    if channels != config.num_channels and not (channels == 3 and config.num_channels == 1):
        raise ConfigError(
            f"model.pretrained: {where} takes {channels} input channels but the data has "
            f"{config.num_channels}; only 3 -> 1 can be adapted (train from scratch or convert the images)"
        )
    from transformers import SegformerModel

    load_config = copy.deepcopy(config)
    load_config.num_channels = channels
    with _quiet_transformers():
        try:
            encoder, info = SegformerModel.from_pretrained(
                location, config=load_config, local_files_only=local_only, output_loading_info=True
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"model.pretrained: cannot load weights from {where}: {_first_line(exc)}"
            ) from None
    if info["missing_keys"] or info["mismatched_keys"]:
        count = len(info["missing_keys"]) + len(info["mismatched_keys"])
        raise ConfigError(
            f"model.pretrained: {where} is not a SegFormer/MiT checkpoint ({count} encoder "
            "tensors missing or of another shape)"
        )
    state = {key: value.float() for key, value in encoder.state_dict().items()}
    if channels != config.num_channels:
        # Summing the RGB filters gives a grey image exactly the response the RGB network gives to that
        # image repeated in three channels (timm's adapt_input_conv does the same).
        stem = next(n for n, m in encoder.named_modules() if isinstance(m, nn.Conv2d))
        state[f"{stem}.weight"] = state[f"{stem}.weight"].sum(dim=1, keepdim=True)
    return state


def _hub_local_only(repo_id: str) -> bool:
    """Whether hub id ``repo_id`` must come from the local cache; ConfigError if it cannot come at all.

    The hub is asked once with a short timeout (offline mode skips it); when it cannot be reached, a
    cached copy is used, and without one the error says how to bring the weights as a folder.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except ValueError:
        raise ConfigError(
            f"model.pretrained: {repo_id!r} is neither an existing folder nor a hub model id like "
            "'nvidia/mit-b2'"
        ) from None
    if not _hub_offline():
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=HUB_TIMEOUT_S)
            return False
        except Exception as exc:  # connection errors differ between huggingface_hub's HTTP backends
            if getattr(exc, "response", None) is not None:
                return False  # the hub answered (not found, gated): from_pretrained reports it
    try:
        hf_hub_download(repo_id, "config.json", local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError and its older spellings)
        raise ConfigError(
            f"model.pretrained: the Hugging Face hub could not be reached for '{repo_id}' (offline or no "
            f"network) and it is not cached; on a machine with internet run SegformerModel.from_pretrained("
            f"'{repo_id}').save_pretrained('FOLDER'), copy FOLDER here and pass "
            "model.pretrained=/path/to/FOLDER (or model.params={pretrained: /path/to/FOLDER})"
        ) from None
    return True


def _hub_offline() -> bool:
    """Offline mode, read now: huggingface_hub reads ``HF_HUB_OFFLINE`` only once, at import."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(
        f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags
    )


def _checkpoint_config(location: str, where: str, local_only: bool) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict, checked to be a SegFormer/MiT one."""
    from transformers import SegformerConfig

    try:
        saved, _ = SegformerConfig.get_config_dict(location, local_files_only=local_only)
    except (OSError, ValueError) as exc:  # missing, unreadable or not JSON
        raise ConfigError(
            f"model.pretrained: {where} is not a SegFormer/MiT checkpoint (no readable config.json: "
            f"{_first_line(exc)}); write one with save_pretrained"
        ) from None
    if saved.get("model_type") != "segformer":
        raise ConfigError(
            f"model.pretrained: {where} is not a SegFormer/MiT checkpoint "
            f"(model_type {saved.get('model_type')!r}, expected 'segformer')"
        )
    return saved


def _check_same_encoder(saved: dict[str, Any], config, where: str, name: str) -> None:
    """ConfigError when checkpoint ``saved`` has another encoder than ``config`` (registered ``name``)."""
    from transformers import SegformerConfig

    saved_config = SegformerConfig.from_dict(saved)
    differ = [
        f"{key} {_plain(getattr(saved_config, key))} (not {_plain(getattr(config, key))})"
        for key in _ENCODER_KEYS
        if _plain(getattr(saved_config, key)) != _plain(getattr(config, key))
    ]
    if not differ:
        return
    fits = [
        other
        for other, size in SIZES.items()
        if _plain(saved_config.hidden_sizes) == list(size.hidden_sizes)
        and _plain(saved_config.depths) == list(size.depths)
    ]
    hint = f"use model.name={fits[0]}" if fits else "use a checkpoint of the same size"
    raise ConfigError(f"model.pretrained: {where} does not fit {name}: it has {', '.join(differ)}; {hint}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report and progress bar: the encoder check above replaces them."""
    from transformers.utils import logging

    verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


def _register(name: str, size: MiTSize) -> None:
    variant = name.removeprefix("segformer_")
    title = "SegFormer for tests" if variant == "tiny" else f"SegFormer-{variant.upper()}"
    hub = "" if variant == "tiny" else f"; pretrained: nvidia/mit-{variant}"
    channels, depths = "-".join(map(str, size.hidden_sizes)), "-".join(map(str, size.depths))
    description = (
        f"{title}: MiT encoder {channels} channels, depths {depths}, MLP decoder {size.decoder_hidden_size} "
        f"({size.note}{hub})"
    )

    def factory(
        *, in_channels: int, num_classes: int, pretrained: str = "", drop_path_rate: float = 0.1
    ) -> SegFormer:
        return build_segformer(
            size,
            in_channels=in_channels,
            num_classes=num_classes,
            pretrained=pretrained,
            drop_path_rate=drop_path_rate,
            name=name,
        )

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = description
    MODELS.register(name, description)(factory)


for _name, _size in SIZES.items():
    _register(_name, _size)
