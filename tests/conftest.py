"""Shared fixtures: seeded RNG, a tiny phantom dataset, tiny configs and a trained tiny run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.config import Config, load_config

TINY = [
    "model.name=unet_tiny",
    "data.patch_size=[48,48]",
    "data.num_workers=0",
    "train.batch_size=4",
    "train.epochs=2",
    "train.progress=false",
]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def blood_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten 64x64 blood smear phantoms in the native layout (read-only: copy before modifying)."""
    from medseg.data.phantoms import write_blood_dataset

    return write_blood_dataset(tmp_path_factory.mktemp("blood") / "data", 10, size=64, seed=3)


def tiny_config(*overrides: str) -> Config:
    """A config that trains unet_tiny in about a second."""
    return load_config(None, [*TINY, *overrides])


@pytest.fixture(scope="session")
def trained_run(blood_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A unet_tiny run trained for 2 epochs on ``blood_dataset`` (read-only)."""
    from medseg.workflows.train import train

    return train(blood_dataset, tiny_config(), tmp_path_factory.mktemp("runs") / "tiny")
