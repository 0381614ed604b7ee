"""Device and mixed-precision choices, and seeding."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 instructions (AVX512-BF16 or AMX), so bf16 autocast is fast."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch
        return False


def use_bf16(amp: str, device: torch.device) -> bool:
    """Resolve ``train.amp`` (auto | bf16 | off) for ``device``."""
    if amp == "off":
        return False
    if amp == "bf16":
        return True
    return device.type == "cuda" or cpu_supports_bf16()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when enabled, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's legacy global RNG and torch (model init, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
