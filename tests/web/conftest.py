"""Fixtures for the web app: the app over the tiny trained run, a TestClient, a phantom, a live server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture
def live_server(web_app) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port in a background thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(web_app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start within 10 s"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
