"""Image classifiers: ``create_classifier(name, in_channels=..., num_classes=...)``, ``list_classifiers``.

A separate registry from the segmentation models because the contract differs: a classifier maps
``(N, in_channels, H, W)`` float images to ``(N, num_classes)`` logits. Every created module is a
:class:`Classifier` and exposes

- ``encoder`` (an ``nn.Module``, ``(N, C, H, W) -> (N, feature_dim)``): the backbone, MONAI's network with
  its last linear layer removed, so MONAI state dicts load into it unchanged (``features.conv0.weight``);
- ``head``: the classification head on the pooled features (one linear layer; two with ``transfer="head"``);
- ``blocks``: the backbone's stages in forward order (stem first), each an ``nn.ModuleList`` of shared
  modules; ``transfer="finetune"`` with ``unfreeze_blocks=K`` trains the last K of them;
- ``cam_layer``: the dotted module name (from the classifier itself) of the default Grad-CAM target layer;
- ``token_grid``: ``None``, or ``(rows, cols)`` of the patch grid when ``cam_layer`` gives transformer
  tokens ``(N, L, D)`` rather than a feature map; Grad-CAM drops the leading ``L - rows * cols`` (class)
  tokens and reshapes the rest to ``(N, D, rows, cols)``.

Registered: ``densenet121``, ``resnet18``, ``resnet34``, ``resnet50``, ``efficientnet_b0``, ``vit_b16`` (MONAI
networks, randomly initialised; ``pretrained`` loads weights) and ``simple_cnn``, each with a ``*_tiny``
variant beside it so tests run the same code at a few thousand parameters.

Transfer learning (``transfer``):

- ``finetune`` (default): a new linear head; the last ``unfreeze_blocks`` blocks of the encoder train
  (``None``: the whole encoder);
- ``frozen``: a new linear head; the encoder is frozen;
- ``head``: a new head of two dense layers (``head_hidden`` units, ReLU, dropout); the encoder is frozen
  except its last ``unfreeze_blocks`` blocks (``None``: none).

Batch-norm layers whose parameters are all frozen stay in eval mode when the classifier is put in train
mode, so a frozen encoder computes exactly what it computed before training (Keras does the same).

Pretrained weights (``pretrained``) initialise the encoder only; the head is always new. The source is a
state-dict file (``.pt``, ``.pth``, ``.bin`` read with ``torch.load(weights_only=True)``, ``.safetensors``),
a folder holding one (``model.safetensors``, ``pytorch_model.bin``, ``model.pt``, ``model.pth`` or a MONAI
bundle's ``models/model.pt``), or a Hugging Face hub id (needs the internet unless cached). Keys may be the
MONAI network's own (``layer1.0.conv1.weight``), a medseg classifier's (``encoder.*``; ``head.*`` counts
as unexpected) or either under DDP's ``module.`` prefix; a run checkpoint ``{"model": state_dict, ...}`` is
unwrapped. Loading is non-strict: tensors that match by name and shape are loaded, an RGB stem is summed
into a one-channel one, and the counts are logged and kept in ``model.pretrained_report``; a file of which
nothing fits is a ConfigError.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.registry import Registry

CLASSIFIERS = Registry("classifier")

TRANSFER_MODES = ("finetune", "frozen", "head")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
# Files looked for in a weights folder or hub repository, in this order (the last: MONAI bundle layout).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth", "models/model.pt")
HUB_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)


class Classifier(nn.Module):
    """A backbone and a classification head: ``head(encoder(x))``.

    Args:
        encoder: maps ``(N, C, H, W)`` images to ``(N, feature_dim)`` pooled features (a tuple whose first
            item is those features is accepted: MONAI's ViT also returns its hidden states).
        feature_dim: width of the encoder's features.
        num_classes: output logits K.
        stages: the encoder's stages in forward order, each a list of submodule names of ``encoder``.
        cam_layer: default Grad-CAM layer, a module name of this classifier (``"encoder.layer4"``).
        token_grid: ``(rows, cols)`` patch grid when ``cam_layer`` gives tokens (ViT), else ``None``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        num_classes: int,
        *,
        stages: Sequence[Sequence[str]],
        cam_layer: str,
        token_grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.encoder = encoder
        self.head: nn.Module = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.cam_layer = cam_layer
        self.token_grid = token_grid
        # A plain list of ModuleLists over shared modules: not registered, so no duplicate state_dict keys.
        self.blocks: list[nn.ModuleList] = [
            nn.ModuleList(encoder.get_submodule(name) for name in stage) for stage in stages
        ]
        self.pretrained_report: WeightsReport | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float -> ``(N, num_classes)`` logits."""
        features = self.encoder(x)
        if isinstance(features, tuple):
            features = features[0]
        return self.head(features)

    def train(self, mode: bool = True) -> Classifier:
        """Set train/eval mode; fully frozen batch-norm layers stay in eval mode (running stats kept)."""
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    params = list(module.parameters())
                    if params and not any(p.requires_grad for p in params):
                        module.eval()
        return self


@dataclass(frozen=True)
class WeightsReport:
    """What :func:`load_encoder_weights` loaded: tensor counts by outcome."""

    source: str
    loaded: int  # encoder tensors set from the file
    missing: int  # encoder tensors the file lacks (left at their initial values)
    unexpected: int  # file tensors with no encoder tensor of that name (a classifier head's included)
    mismatched: int  # same name, other shape
    adapted: int  # RGB stem filters summed into a one-channel stem

    def __str__(self) -> str:
        return (
            f"pretrained {self.source}: {self.loaded} encoder tensors loaded ({self.adapted} adapted 3 -> 1 "
            f"channel), {self.missing} missing, {self.mismatched} of another shape, {self.unexpected} "
            "unexpected"
        )


def create_classifier(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    transfer: str = "finetune",
    unfreeze_blocks: int | None = None,
    pretrained: str | os.PathLike | None = None,
    head_hidden: int | None = None,
    **params: Any,
) -> Classifier:
    """Build registered classifier ``name``, load pretrained encoder weights and set up transfer learning.

    Args:
        name: a registered name (see :func:`list_classifiers`).
        in_channels: image channels.
        num_classes: output logits K.
        transfer: ``finetune``, ``frozen`` or ``head`` (see the module docstring).
        unfreeze_blocks: number of last encoder blocks that train (``finetune``: ``None`` = all;
            ``head``: ``None`` = none; ``frozen``: must be ``None`` or 0).
        pretrained: ``None``/``""``, a state-dict file, a folder holding one, or a Hugging Face hub id.
        head_hidden: hidden units of the two-layer head (``transfer="head"``); default
            ``min(256, feature_dim)`` but at least ``num_classes``.
        **params: architecture arguments overriding the registered defaults (``model.params``).

    Returns:
        A :class:`Classifier` mapping ``(N, in_channels, H, W)`` to ``(N, num_classes)`` logits.

    Raises:
        ConfigError: unknown name, transfer mode or architecture argument; weights that cannot be found,
            reached or read, or that do not fit.
    """
    if transfer not in TRANSFER_MODES:
        raise ConfigError(f"transfer must be one of {', '.join(TRANSFER_MODES)}, not {transfer!r}")
    if unfreeze_blocks is not None and unfreeze_blocks < 0:
        raise ConfigError(f"unfreeze_blocks must be >= 0 or None, not {unfreeze_blocks}")
    if transfer == "frozen" and unfreeze_blocks:
        raise ConfigError(
            f"transfer='frozen' trains no encoder block but unfreeze_blocks={unfreeze_blocks}; use "
            "transfer='finetune' to train the last blocks"
        )
    factory = CLASSIFIERS.get(name)
    try:
        model = factory(in_channels=in_channels, num_classes=num_classes, **params)
    except (TypeError, ValueError, AssertionError) as exc:  # what constructors raise for bad arguments
        raise ConfigError(f"model.params for {name!r}: {exc}") from None
    if pretrained:
        load_encoder_weights(model, pretrained)
    if transfer == "head":
        hidden = head_hidden or max(num_classes, min(256, model.feature_dim))
        model.head = nn.Sequential(
            nn.Linear(model.feature_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.2),
            nn.Linear(hidden, num_classes),
        )
    trainable = (
        len(model.blocks) if transfer == "finetune" and unfreeze_blocks is None else unfreeze_blocks or 0
    )
    _set_trainable_blocks(model, trainable)
    return model


def list_classifiers(pattern: str = "*") -> list[str]:
    """Registered classifier names matching a shell-style pattern."""
    return CLASSIFIERS.names(pattern)


def describe_classifier(name: str) -> str:
    """The one-line description of a registered classifier."""
    return CLASSIFIERS.describe(name)


def _set_trainable_blocks(model: Classifier, count: int) -> None:
    """Head trainable; encoder trainable in its last ``count`` blocks (all of it when count >= blocks)."""
    whole = count >= len(model.blocks)
    for parameter in model.encoder.parameters():
        parameter.requires_grad_(whole)
    if not whole and count > 0:
        for block in model.blocks[-count:]:
            for parameter in block.parameters():
                parameter.requires_grad_(True)
    for parameter in model.head.parameters():
        parameter.requires_grad_(True)


# --------------------------------------------------------------------------------------------- weights


def load_encoder_weights(model: Classifier, source: str | os.PathLike) -> WeightsReport:
    """Load pretrained weights into ``model.encoder`` (non-strict) and report what was loaded.

    Args:
        model: a :class:`Classifier`.
        source: a state-dict file, a folder holding one, or a Hugging Face hub id (see the module docstring).

    Returns:
        The counts, also logged and stored as ``model.pretrained_report``.

    Raises:
        ConfigError: the source cannot be found, reached or read, or none of its tensors fits the encoder.
    """
    path, where = _resolve_weights(source)
    state = _normalise_keys(_read_state_dict(path, where))
    target = model.encoder.state_dict()
    accepted: dict[str, torch.Tensor] = {}
    unexpected = mismatched = adapted = 0
    for key, value in state.items():
        if key not in target:
            unexpected += 1
            continue
        wanted = target[key].shape
        if value.shape == wanted:
            accepted[key] = value
        elif _is_rgb_stem_for_grey(value, wanted):
            # Summing the RGB filters makes a grey image respond as the RGB network does to that image
            # repeated in three channels (timm's adapt_input_conv does the same).
            accepted[key] = value.sum(dim=1, keepdim=True)
            adapted += 1
        else:
            mismatched += 1
    if not any(key in accepted for key, value in target.items() if value.is_floating_point()):
        raise ConfigError(
            f"model.pretrained: no tensor of {where} fits this classifier's encoder ({len(state)} tensors, "
            f"{mismatched} with a matching name but another shape); is it a checkpoint of another "
            "architecture or size?"
        )
    model.encoder.load_state_dict(accepted, strict=False)
    report = WeightsReport(
        source=where,
        loaded=len(accepted),
        missing=len(target) - len(accepted),
        unexpected=unexpected,
        mismatched=mismatched,
        adapted=adapted,
    )
    model.pretrained_report = report
    log.info("%s", report)
    return report


def _is_rgb_stem_for_grey(value: torch.Tensor, wanted: torch.Size) -> bool:
    return (
        value.ndim >= 3
        and len(wanted) == value.ndim
        and value.shape[1] == 3
        and wanted[1] == 1
        and value.shape[0] == wanted[0]
        and value.shape[2:] == wanted[2:]
    )


def _normalise_keys(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Encoder-relative keys: DDP's ``module.`` and a medseg classifier's ``encoder.`` prefixes dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            out[key.removeprefix("module.").removeprefix("encoder.")] = value
    return out


def _resolve_weights(source: str | os.PathLike) -> tuple[Path, str]:
    """The weights file for ``source`` and how to name it in messages."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file():
        return path, str(path)
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name, str(path / name)
        raise ConfigError(f"model.pretrained: folder {path} holds none of {', '.join(WEIGHT_FILES)}")
    looks_like_path = path.suffix.lower() in WEIGHT_SUFFIXES or text.startswith(("/", ".", "~", "\\"))
    if looks_like_path or text.count("/") > 1:
        raise ConfigError(f"model.pretrained: weights file {text} does not exist")
    return _download_from_hub(text), repr(text)


def _read_state_dict(path: Path, where: str) -> dict[str, Any]:
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ConfigError(
                f"model.pretrained: reading {where} needs the safetensors package (pip install safetensors)"
            ) from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError for corrupt files
            raise ConfigError(f"model.pretrained: cannot read {where}: {_first_line(exc)}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors differ between torch versions
        raise ConfigError(
            f"model.pretrained: cannot read {where} as a state dict: {_first_line(exc)}"
        ) from None
    for key in ("model", "state_dict"):  # a training checkpoint wrapping the state dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"model.pretrained: {where} holds a {type(state).__name__}, not a state dict")
    return state


def _download_from_hub(repo_id: str) -> Path:
    """The first of :data:`WEIGHT_FILES` in hub repository ``repo_id``: from the cache, else downloaded."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except ValueError:
        raise ConfigError(
            f"model.pretrained: {repo_id!r} is neither an existing file or folder nor a hub id like "
            "'owner/model'"
        ) from None
    for filename in WEIGHT_FILES:
        try:
            return Path(hf_hub_download(repo_id, filename, local_files_only=True))
        except Exception:  # not cached under this name (LocalEntryNotFoundError and older spellings)
            continue
    offline_message = (
        f"model.pretrained: {repo_id!r} is a Hugging Face hub id and downloading it needs the internet (the "
        f"hub could not be reached, or offline mode is on, and it is not cached); on a machine with internet "
        f"run `hf download {repo_id} model.safetensors` (or save the network's state_dict with torch.save), "
        "copy the file here and pass model.pretrained=/path/to/model.safetensors"
    )
    if _hub_offline():
        raise ConfigError(offline_message)
    for filename in WEIGHT_FILES:
        # A metadata request fails at once when the hub is unreachable (hf_hub_download would retry for
        # about 25 s per file) and tells a missing file from a missing repository.
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, filename), timeout=HUB_TIMEOUT_S)
        except RepositoryNotFoundError:  # gated repositories included
            raise ConfigError(f"model.pretrained: no hub repository {repo_id!r} (or it is private)") from None
        except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: the hub could not be reached
            raise ConfigError(offline_message) from None
        except EntryNotFoundError:
            continue
        except Exception as exc:  # connection errors differ between huggingface_hub's HTTP backends
            if getattr(exc, "response", None) is None:
                raise ConfigError(offline_message) from None
            raise ConfigError(f"model.pretrained: cannot query {repo_id!r}: {_first_line(exc)}") from None
        try:
            return Path(hf_hub_download(repo_id, filename, etag_timeout=HUB_TIMEOUT_S))
        except Exception as exc:  # lost connection, disk full, ...
            raise ConfigError(f"model.pretrained: cannot download {repo_id!r}: {_first_line(exc)}") from None
    raise ConfigError(f"model.pretrained: hub repository {repo_id!r} has none of {', '.join(WEIGHT_FILES)}")


def _hub_offline() -> bool:
    """Offline mode, read now: huggingface_hub reads ``HF_HUB_OFFLINE`` only once, at import."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(
        f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -------------------------------------------------------------------------------------------- networks


def _without_last_linear(network: nn.Module, path: str) -> int:
    """Replace ``network``'s final ``nn.Linear`` at ``path`` by an identity; return its input width."""
    parent_name, _, child = path.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    linear = getattr(parent, child)
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"{type(network).__name__}.{path} is a {type(linear).__name__}, not nn.Linear")
    setattr(parent, child, nn.Identity())
    return linear.in_features


def _densenet(
    *, in_channels: int, num_classes: int, init_features: int, growth_rate: int, block_config, **kw
) -> Classifier:
    from monai.networks.nets import DenseNet

    net = DenseNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        init_features=init_features,
        growth_rate=growth_rate,
        block_config=tuple(block_config),
        **kw,
    )
    features = _without_last_linear(net, "class_layers.out")
    stages: list[list[str]] = [[]]
    for name, _ in net.features.named_children():
        if name.startswith("denseblock") and stages[-1]:
            stages.append([])
        stages[-1].append(f"features.{name}")
    # class_layers.relu follows the last norm: the last feature map, the layer MONAI's GradCAM examples use.
    return Classifier(net, features, num_classes, stages=stages, cam_layer="encoder.class_layers.relu")


@CLASSIFIERS.register("densenet121")
def densenet121(*, in_channels: int, num_classes: int, **kw) -> Classifier:
    """DenseNet-121 (MONAI DenseNet, growth 32, blocks 6-12-24-16; 7.0M params)."""
    kw = {"init_features": 64, "growth_rate": 32, "block_config": (6, 12, 24, 16), **kw}
    return _densenet(in_channels=in_channels, num_classes=num_classes, **kw)


@CLASSIFIERS.register("densenet_tiny")
def densenet_tiny(*, in_channels: int, num_classes: int, **kw) -> Classifier:
    """DenseNet for tests: 8 initial features, growth 4, two blocks of 2 layers."""
    kw = {"init_features": 8, "growth_rate": 4, "block_config": (2, 2), "bn_size": 2, **kw}
    return _densenet(in_channels=in_channels, num_classes=num_classes, **kw)


def _resnet(*, in_channels: int, num_classes: int, block: str, layers, block_inplanes, **kw) -> Classifier:
    from monai.networks.nets import ResNet

    kw.setdefault("conv1_t_stride", 2)  # MONAI's default of 1 suits 3D volumes; 2D ImageNet ResNets use 2
    net = ResNet(
        block,
        list(layers),
        list(block_inplanes),
        spatial_dims=2,
        n_input_channels=in_channels,
        num_classes=num_classes,
        **kw,
    )
    features = _without_last_linear(net, "fc")
    stages = [["conv1", "bn1", "act", "maxpool"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
    return Classifier(net, features, num_classes, stages=stages, cam_layer="encoder.layer4")


_RESNET_PLANES = (64, 128, 256, 512)


@CLASSIFIERS.register("resnet18")
def resnet18(*, in_channels: int, num_classes: int, **kw) -> Classifier:
    """ResNet-18 (MONAI ResNet, basic blocks 2-2-2-2; 11.2M params)."""
    kw = {"block": "basic", "layers": (2, 2, 2, 2), "block_inplanes": _RESNET_PLANES, **kw}
    return _resnet(in_channels=in_channels, num_classes=num_classes, **kw)


@CLASSIFIERS.register("resnet34")
def resnet34(*, in_channels: int, num_classes: int, **kw) -> Classifier:
    """ResNet-34 (MONAI ResNet, basic blocks 3-4-6-3; 21.3M params)."""
    kw = {"block": "basic", "layers": (3, 4, 6, 3), "block_inplanes": _RESNET_PLANES, **kw}
    return _resnet(in_channels=in_channels, num_classes=num_classes, **kw)


@CLASSIFIERS.register("resnet50")
def resnet50(*, in_channels: int, num_classes: int, **kw) -> Classifier:
    """ResNet-50 (MONAI ResNet, bottleneck blocks 3-4-6-3; 23.5M params)."""
    kw = {"block": "bottleneck", "layers": (3, 4, 6, 3), "block_inplanes": _RESNET_PLANES, **kw}
    return _resnet(in_channels=in_channels, num_classes=num_classes, **kw)


@CLASSIFIERS.register("resnet_tiny")
def resnet_tiny(*, in_channels: int, num_classes: int, **kw) -> Classifier:
    """ResNet for tests: one basic block per stage, 4-32 channels."""
    kw = {"block": "basic", "layers": (1, 1, 1, 1), "block_inplanes": (4, 8, 16, 32), **kw}
    return _resnet(in_channels=in_channels, num_classes=num_classes, **kw)


def _efficientnet_classifier(net: nn.Module, num_classes: int) -> Classifier:
    features = _without_last_linear(net, "_fc")
    stages = [["_conv_stem", "_bn0"]] + [[f"_blocks.{i}"] for i in range(len(net._blocks))]
    stages[-1] += ["_conv_head", "_bn1"]
    # _bn1 is the last feature map (before swish and pooling); the swish module itself is shared between
    # the stem and the head, so its hook would fire twice.
    return Classifier(net, features, num_classes, stages=stages, cam_layer="encoder._bn1")


@CLASSIFIERS.register("efficientnet_b0")
def efficientnet_b0(*, in_channels: int, num_classes: int, **kw) -> Classifier:
    """EfficientNet-B0 (MONAI EfficientNetBN, 224 px padding; 4.0M params)."""
    from monai.networks.nets import EfficientNetBN

    net = EfficientNetBN(
        "efficientnet-b0",
        pretrained=False,
        spatial_dims=2,
        in_channels=in_channels,
        num_classes=num_classes,
        **kw,
    )
    return _efficientnet_classifier(net, num_classes)


# EfficientNet-B0's stage string format (repeats, kernel, stride, expansion, in, out, squeeze-excitation),
# cut to four short stages for the tiny variant.
_TINY_EFFICIENTNET_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r1_k3_s22_e4_i16_o24_se0.25",
    "r1_k5_s22_e4_i24_o40_se0.25",
    "r1_k3_s22_e4_i40_o80_se0.25",
)


@CLASSIFIERS.register("efficientnet_tiny")
def efficientnet_tiny(*, in_channels: int, num_classes: int, **kw) -> Classifier:
    """EfficientNet for tests: four MBConv stages at width 0.25 (MONAI EfficientNet)."""
    from monai.networks.nets.efficientnet import EfficientNet

    kw = {"width_coefficient": 0.25, "depth_divisor": 4, "image_size": 64, **kw}
    net = EfficientNet(
        list(_TINY_EFFICIENTNET_BLOCKS),
        spatial_dims=2,
        in_channels=in_channels,
        num_classes=num_classes,
        **kw,
    )
    return _efficientnet_classifier(net, num_classes)


def _vit(
    *,
    in_channels: int,
    num_classes: int,
    img_size: int,
    patch_size: int,
    hidden_size: int,
    mlp_dim: int,
    num_layers: int,
    num_heads: int,
    **kw,
) -> Classifier:
    import importlib.util

    from monai.networks.nets import ViT

    if importlib.util.find_spec("einops") is None:  # MONAI's attention blocks import it on first use
        raise ConfigError("the ViT classifiers need the einops package: pip install einops")
    if img_size % patch_size:
        raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
    kw.setdefault("qkv_bias", True)
    net = ViT(
        in_channels=in_channels,
        img_size=img_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        classification=True,
        num_classes=num_classes,
        spatial_dims=2,
        post_activation="none",  # MONAI's default Tanh would squash the logits
        **kw,
    )
    features = _without_last_linear(net, "classification_head")
    for block in net.blocks:
        # MONAI builds this LayerNorm even without cross-attention; unused parameters would break DDP.
        if not block.with_cross_attention:
            block.norm_cross_attn = nn.Identity()
    stages = [["patch_embedding"]] + [[f"blocks.{i}"] for i in range(num_layers)]
    stages[-1].append("norm")
    grid = img_size // patch_size
    # The class score reads only the class token after the last block, so the last block's *output* tokens
    # get no gradient at the patches; its first LayerNorm feeds the attention that mixes them in (the layer
    # pytorch-grad-cam's ViT example uses). Tokens are reshaped to the patch grid (see token_grid).
    return Classifier(
        net,
        features,
        num_classes,
        stages=stages,
        cam_layer=f"encoder.blocks.{num_layers - 1}.norm1",
        token_grid=(grid, grid),
    )


@CLASSIFIERS.register("vit_b16")
def vit_b16(*, in_channels: int, num_classes: int, **kw) -> Classifier:
    """ViT-B/16 (MONAI ViT, 224 px inputs only, 12 layers of width 768; 85.8M params)."""
    kw = {
        "img_size": 224,
        "patch_size": 16,
        "hidden_size": 768,
        "mlp_dim": 3072,
        "num_layers": 12,
        "num_heads": 12,
        **kw,
    }
    return _vit(in_channels=in_channels, num_classes=num_classes, **kw)


@CLASSIFIERS.register("vit_tiny")
def vit_tiny(*, in_channels: int, num_classes: int, **kw) -> Classifier:
    """ViT for tests: 64 px inputs only, 16 px patches, 2 layers of width 32."""
    kw = {
        "img_size": 64,
        "patch_size": 16,
        "hidden_size": 32,
        "mlp_dim": 64,
        "num_layers": 2,
        "num_heads": 2,
        **kw,
    }
    return _vit(in_channels=in_channels, num_classes=num_classes, **kw)


class SimpleCNNEncoder(nn.Module):
    """Plain conv stages ``[maxpool] conv3x3 -> batch norm -> ReLU``, then global average pooling.

    Written by hand: a ~100k-parameter baseline is a dozen lines, and none of MONAI's classifiers is this
    plain (no residuals, dense connections or squeeze-excitation), which is what makes it a baseline.

    Args:
        in_channels: image channels.
        channels: output channels of each stage; every stage after the first halves the resolution first.
    """

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        stages = []
        previous = in_channels
        for index, width in enumerate(channels):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if index else []
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, channels[-1])`` pooled features."""
        return self.pool(self.stages(x)).flatten(1)


def _simple_cnn(*, in_channels: int, num_classes: int, channels: Sequence[int]) -> Classifier:
    channels = tuple(int(c) for c in channels)
    if not channels:
        raise ValueError("channels needs at least one stage")
    encoder = SimpleCNNEncoder(in_channels, channels)
    stages = [[f"stages.{i}"] for i in range(len(channels))]
    return Classifier(
        encoder,
        encoder.out_channels,
        num_classes,
        stages=stages,
        cam_layer=f"encoder.stages.{len(channels) - 1}",
    )


@CLASSIFIERS.register("simple_cnn")
def simple_cnn(
    *, in_channels: int, num_classes: int, channels: Sequence[int] = (16, 32, 64, 128)
) -> Classifier:
    """Plain CNN baseline: four conv-BN-ReLU stages (16-128 channels), global pooling; 97k params."""
    return _simple_cnn(in_channels=in_channels, num_classes=num_classes, channels=channels)


@CLASSIFIERS.register("simple_cnn_tiny")
def simple_cnn_tiny(
    *, in_channels: int, num_classes: int, channels: Sequence[int] = (8, 16, 32)
) -> Classifier:
    """Plain CNN for tests: three conv-BN-ReLU stages (8-32 channels); 6k params."""
    return _simple_cnn(in_channels=in_channels, num_classes=num_classes, channels=channels)
