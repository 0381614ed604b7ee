"""``medseg doctor``: what medseg sees on this machine."""

from __future__ import annotations

import os
import platform
import shutil
from importlib import metadata
from pathlib import Path

from medseg import __version__

PACKAGES = (
    "torch",
    "monai",
    "numpy",
    "scipy",
    "scikit-image",
    "pillow",
    "tifffile",
    "matplotlib",
    "tensorboard",
)


def doctor_report(runs_dir: str | Path = "runs") -> str:
    """A human-readable report of versions, threads, bf16 support, devices and the runs folder."""
    import torch

    from medseg.engine.device import cpu_supports_bf16

    lines = [
        f"medseg       {__version__}",
        f"python       {platform.python_version()} ({platform.machine()})",
    ]
    for name in PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed" + (
                " (optional: pip install 'medseg[tensorboard]')" if name == "tensorboard" else ""
            )
        lines.append(f"{name:<12} {version}")
    bf16 = cpu_supports_bf16()
    lines += [
        f"cpu cores    {os.cpu_count()} (torch uses {torch.get_num_threads()} threads)",
        f"cpu bf16     {'yes: training and prediction use bf16 autocast' if bf16 else 'no: float32'}",
        f"cuda         {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}",
    ]
    runs = Path(runs_dir).resolve()
    free = shutil.disk_usage(runs if runs.exists() else Path.cwd()).free / 2**30
    lines.append(f"runs go to   {runs} (default for --out; {free:.1f} GiB free)")
    return "\n".join(lines)
