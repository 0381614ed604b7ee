"""Load test of `medseg serve`: 200 requests from 8 concurrent clients on 127.0.0.1, a 256x256 image each.

The server runs in its own process (`python -m medseg serve`), as a user would start it, so clients and
server do not share a GIL. While the load runs, a probe calls /healthz every 50 ms: the server must stay
responsive while inference is serialised behind the model lock.

Run: .venv/bin/python benchmarks/serve_load.py [RUN] [--requests 200] [--clients 8] [--size 256]
Without RUN a `unet_tiny` run is trained on a small phantom set in a temporary folder (about 10 s).
Prints a table and writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def train_tiny_run(folder: Path) -> Path:
    from medseg.config import load_config
    from medseg.data.phantoms import write_blood_dataset
    from medseg.workflows.train import train

    data = write_blood_dataset(folder / "data", 8, size=96, seed=0)
    overrides = [
        "model.name=unet_tiny",
        "data.patch_size=[64,64]",
        "data.num_workers=0",
        "train.batch_size=4",
        "train.epochs=2",
        "train.progress=false",
    ]
    return train(data, load_config(None, overrides), folder / "run")


def phantom_png(size: int) -> bytes:
    from PIL import Image

    from medseg.data.phantoms import blood_smear

    buffer = io.BytesIO()
    Image.fromarray(blood_smear(size, np.random.default_rng(7)).image).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(image: bytes, model: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="phantom.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode(),
        image,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def post(url: str, body: bytes, content_type: str) -> tuple[float, int, str]:
    """One request: (seconds, HTTP status or 0 for a connection failure, mask digest or error)."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            payload = json.loads(response.read())
            return time.perf_counter() - started, response.status, payload["mask_png_base64"][-64:]
    except urllib.error.HTTPError as exc:
        return time.perf_counter() - started, exc.code, exc.read()[:200].decode(errors="replace")
    except OSError as exc:
        return time.perf_counter() - started, 0, str(exc)


def start_server(run: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "medseg", "serve", str(run), "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not answer /healthz within 120 s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", nargs="?", help="run folder to serve (default: train a unet_tiny run)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="phantom image side in pixels")
    parser.add_argument("--warmup", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        run = Path(args.run) if args.run else train_tiny_run(Path(tmp))
        port = free_port()
        server = start_server(run, port)
        try:
            base = f"http://127.0.0.1:{port}"
            models = json.loads(urllib.request.urlopen(f"{base}/api/models", timeout=10).read())
            model = models["default"]
            architecture = models["models"][0]["architecture"]
            body, content_type = multipart(phantom_png(args.size), model)
            for _ in range(args.warmup):
                post(f"{base}/api/predict", body, content_type)

            probe_latencies: list[float] = []
            probe_failures = 0
            stop = threading.Event()

            def probe() -> None:
                nonlocal probe_failures
                while not stop.is_set():
                    started = time.perf_counter()
                    try:
                        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
                            response.read()
                        probe_latencies.append(time.perf_counter() - started)
                    except OSError:
                        probe_failures += 1
                    stop.wait(0.05)

            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            started = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                outcomes = list(
                    pool.map(lambda _: post(f"{base}/api/predict", body, content_type), range(args.requests))
                )
            wall = time.perf_counter() - started
            stop.set()
            prober.join()
        finally:
            server.terminate()
            server.wait(timeout=30)

    latencies = [seconds for seconds, status, _ in outcomes if status == 200]
    errors = [f"{status}: {detail}" for _, status, detail in outcomes if status != 200]
    masks = {detail for _, status, detail in outcomes if status == 200}
    result = {
        "benchmark": "serve_load",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "run": "unet_tiny trained by this script" if not args.run else str(args.run),
        "architecture": architecture,
        "image_size": args.size,
        "requests": args.requests,
        "clients": args.clients,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2),
        "latency_ms": {
            "p50": round(percentile_ms(latencies, 50), 1),
            "p95": round(percentile_ms(latencies, 95), 1),
            "max": round(max(latencies) * 1000, 1) if latencies else None,
        },
        "errors": len(errors),
        "error_samples": errors[:5],
        "distinct_masks": len(masks),
        "healthz_during_load_ms": {
            "probes": len(probe_latencies),
            "failures": probe_failures,
            "p50": round(percentile_ms(probe_latencies, 50), 1),
            "p95": round(percentile_ms(probe_latencies, 95), 1),
        },
    }
    print(f"medseg serve: {args.requests} requests, {args.clients} clients, {args.size}x{args.size} PNG")
    print(f"model {architecture} ({result['run']}), {result['cpus']} CPUs")
    print(
        f"{'requests/s':>12} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9} {'errors':>7} {'healthz p95 ms':>15}"
    )
    latency = result["latency_ms"]
    print(
        f"{result['requests_per_s']:>12.2f} {latency['p50']:>9.1f} {latency['p95']:>9.1f} "
        f"{latency['max'] or float('nan'):>9.1f} {result['errors']:>7d} "
        f"{result['healthz_during_load_ms']['p95']:>15.1f}"
    )
    if errors:
        print("first errors:", *errors[:5], sep="\n  ")
    from medseg.io import write_json_atomic

    out = Path(__file__).parent / "results" / "serve_load.json"
    write_json_atomic(out, result)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
