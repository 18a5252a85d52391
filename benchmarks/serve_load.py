"""Load test of `bertkit serve`: N concurrent clients on loopback for a bounded time, PyTorch and ONNX backends.

The served model is the all-MiniLM-L6-v2 review classifier of `benchmarks.predict_speed`. Each client sends
`POST /v1/predict` with --texts-per-request real English texts (reviews and news articles, in a fixed
shuffle), waits for the answer and sends the next, for --seconds. A request is an error unless it answers
200 with one prediction per text. Clients and server share this machine's cores, as they would on a
laptop; the server runs as `bertkit serve` in its own process, exactly as a user starts it.

    python -m benchmarks.serve_load [--clients 8] [--seconds 20] [--texts-per-request 1]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.common import emit, english_texts, interleave, machine, polarity_classifier

BACKENDS = ("torch", "onnx")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, backend: str, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "bertkit.cli", "serve", "--model", str(model_dir), "--port", str(port),
               "--backend", backend]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"bertkit serve exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/health").raise_for_status()
            return process
        except httpx.TransportError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("bertkit serve did not answer /health within 120 s") from None
            time.sleep(0.2)


def load(url: str, texts: list[str], clients: int, seconds: float, per_request: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        position = index * 37  # each client walks the texts from its own place
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < deadline:
                batch = [texts[(position + k) % len(texts)] for k in range(per_request)]
                position += per_request
                start = time.perf_counter()
                try:
                    response = http.post("/v1/predict", json={"texts": batch})
                    ok = response.status_code == 200 and len(response.json()["predictions"]) == per_request
                    problem = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    problem = repr(exc)
                elapsed = time.perf_counter() - start
                with lock:
                    (errors.append(problem) if problem else latencies.append(elapsed))

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    percentiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {
        "requests": len(latencies) + len(errors),
        "requests_per_s": round((len(latencies) + len(errors)) / wall, 1),
        "texts_per_s": round(len(latencies) * per_request / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p99_ms": round(percentiles[98] * 1000, 1),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--texts-per-request", type=int, default=1)
    args = parser.parse_args()

    from bertkit.export import export_onnx

    texts = interleave(english_texts())
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir, _ = polarity_classifier(work / "model")
        export_onnx(model_dir)
        for backend in BACKENDS:
            port = free_port()
            server = start_server(model_dir, backend, port, work / f"serve-{backend}.log")
            try:
                url = f"http://127.0.0.1:{port}"
                load(url, texts, clients=2, seconds=2, per_request=args.texts_per_request)  # warm-up
                results[backend] = load(url, texts, args.clients, args.seconds, args.texts_per_request)
            finally:
                server.terminate()
                server.wait(timeout=30)
    emit({
        "benchmark": "serve_load",
        "model": "all-MiniLM-L6-v2 + classifier fine-tuned on 150 Pang & Lee reviews",
        "clients": args.clients, "seconds": args.seconds, "texts_per_request": args.texts_per_request,
        "server_defaults": "max-batch-size 32, max-wait-ms 10, threads = all cores",
        "backends": results,
        "ratio_onnx_vs_torch_requests_per_s": round(results["onnx"]["requests_per_s"] / results["torch"]["requests_per_s"], 2),
        "cores": os.cpu_count(),
        **machine(),
    })


if __name__ == "__main__":
    main()
