"""Fixtures for the web app: apps over the tiny trained runs, TestClients, a phantom, live servers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.conftest import tiny_config

pytest.importorskip("fastapi", reason="the web app needs fastapi (pip install -e '.[dev]')")


@pytest.fixture(scope="session")
def web_app(trained_run: Path):
    from medseg.web import create_app

    return create_app([trained_run], device="cpu")


@pytest.fixture(scope="session")
def client(web_app):
    from fastapi.testclient import TestClient

    with TestClient(web_app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def phantom_path(blood_dataset: Path) -> Path:
    return blood_dataset / "imagesTr" / "blood_000_0000.png"


@pytest.fixture(scope="session")
def instance_run(blood_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A typed deep-watershed unet_tiny run, 1 epoch on ``blood_dataset``: six cell types and a
    white-cell differential (read-only)."""
    from medseg.workflows.train import train

    config = tiny_config("task=instance", "train.epochs=1", "train.snapshots=false", "instance.tune=off")
    return train(blood_dataset, config, tmp_path_factory.mktemp("runs") / "cells")


@pytest.fixture(scope="session")
def instance_app(instance_run: Path, trained_run: Path):
    """The app serving the instance run (the default model) and the semantic run beside it."""
    from medseg.web import create_app

    return create_app([instance_run, trained_run], device="cpu")


@pytest.fixture(scope="session")
def instance_client(instance_app):
    from fastapi.testclient import TestClient

    with TestClient(instance_app) as test_client:
        yield test_client


# As tests/workflows/test_classify.py trains its crop classifier (2 epochs of simple_cnn_tiny on 32 px crops)
CLASSIFY_TRAIN = [
    "--task",
    "classify",
    "--model",
    "simple_cnn_tiny",
    "--set",
    "classify.image_size=24",
    "--set",
    "data.num_workers=0",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.progress=false",
    "--set",
    "data.val_fraction=0.3",
    "--epochs",
    "2",
]


@pytest.fixture(scope="session")
def wbc_crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """White-cell crops of 16 small smears (32 px RGB, every type, ``labels.csv``), read-only."""
    from medseg.data.phantoms import write_wbc_crops

    return write_wbc_crops(tmp_path_factory.mktemp("crops") / "crops", 16, size=96, crop=32)


@pytest.fixture(scope="session")
def classify_run(wbc_crops: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """simple_cnn_tiny trained by ``medseg train`` for 2 epochs on ``wbc_crops`` (read-only)."""
    from medseg.cli import main

    run = tmp_path_factory.mktemp("runs") / "wbc"
    assert main(["train", str(wbc_crops / "labels.csv"), *CLASSIFY_TRAIN, "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="session")
def crop_path(wbc_crops: Path) -> Path:
    """One white-cell crop (32x32 RGB PNG)."""
    return next(iter(sorted(wbc_crops.glob("*/*.png"))))


@pytest.fixture(scope="session")
def classify_app(classify_run: Path, trained_run: Path):
    """The app serving the classification run (the default model) and the semantic run beside it."""
    from medseg.web import create_app

    return create_app([classify_run, trained_run], device="cpu")


@pytest.fixture(scope="session")
def classify_client(classify_app):
    from fastapi.testclient import TestClient

    with TestClient(classify_app) as test_client:
        yield test_client


@contextmanager
def _served(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a background thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start within 10 s"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def live_server(web_app) -> Iterator[str]:
    """The semantic app served on a free loopback port; yields its base URL."""
    with _served(web_app) as url:
        yield url


@pytest.fixture
def classify_live_server(classify_app) -> Iterator[str]:
    """The classification + semantic app served on a free loopback port; yields its base URL."""
    with _served(classify_app) as url:
        yield url


@pytest.fixture
def instance_live_server(instance_app) -> Iterator[str]:
    """The instance + semantic app served on a free loopback port; yields its base URL."""
    with _served(instance_app) as url:
        yield url
