"""Load test of `vlfuse serve`: N concurrent clients on loopback for a fixed time; p50 / p99 latency,
throughput and errors, with and without micro-batching.

Against a server that is already running:
    python bench/load_test.py --url http://127.0.0.1:8000 --image img.png --clients 16 --seconds 20
Start the server itself, once per batching setting (max batch 1 = off), same load each time:
    nice -n 5 python bench/load_test.py --serve runs/vqa_shapes/model --max-batch 1 16 \
        --image data/shapes/images/test/test_000001.png --clients 16 --seconds 20

Every client sends one request, waits for the answer, sends the next (closed loop), so throughput
is what the server sustains with N requests in flight. The endpoint is /answer (VQA, the default),
/caption or /search (text queries; needs a retrieval model and --index).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

QUESTIONS = ["What is the shape of the red object?", "Is the green object on the left?",
             "How many objects have the same shape as the blue object?",
             "What is the shape of the object closest to the yellow object?"]
QUERIES = ["a red circle", "a blue square on the left", "a green triangle at the top", "a gray circle"]


def request_for(endpoint: str, image: bytes, n: int) -> dict:
    if endpoint == "answer":
        return {"files": {"image": ("image.png", image)}, "data": {"question": QUESTIONS[n % len(QUESTIONS)]}}
    if endpoint == "caption":
        return {"files": {"image": ("image.png", image)}}
    return {"json": {"text": QUERIES[n % len(QUERIES)], "k": 10}}


async def client(http: httpx.AsyncClient, url: str, endpoint: str, image: bytes, deadline: float, seed: int,
                 latencies: list[float], errors: list[str]) -> None:
    n = seed
    while time.perf_counter() < deadline:
        clock = time.perf_counter()
        try:
            response = await http.post(f"{url}/{endpoint}", **request_for(endpoint, image, n))
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
            else:
                latencies.append(time.perf_counter() - clock)
        except httpx.HTTPError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        n += 1


async def run_load(url: str, endpoint: str, image: bytes, clients: int, seconds: float, warmup: int = 4) -> dict:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        for n in range(warmup):  # first requests pay one-off costs (allocations, lazy imports)
            await http.post(f"{url}/{endpoint}", **request_for(endpoint, image, n))
        latencies: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        await asyncio.gather(*(client(http, url, endpoint, image, start + seconds, i, latencies, errors)
                               for i in range(clients)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(latencies), "errors": len(errors),
            "first_errors": errors[:3], "throughput_rps": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(models: list[str], index: str | None, max_batch: int, max_wait_ms: float,
                 torch_threads: int | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "vlfuse.cli", "serve", *models, "--port", str(port), "--max-batch",
               str(max_batch), "--max-wait-ms", str(max_wait_ms), "--log-level", "warning"]
    if index:
        command += ["--index", index]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if torch_threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(torch_threads)
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(url + "/health", timeout=2)
            return server, url
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise SystemExit(f"server did not start: {server.stdout.read()}")
            time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="A running server (else --serve starts one per --max-batch setting).")
    parser.add_argument("--serve", nargs="+", metavar="MODEL_DIR", help="Model directories to serve.")
    parser.add_argument("--index", help="With --serve: an index for /search.")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 16], help="With --serve: settings to compare.")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--torch-threads", type=int, default=1, help="With --serve: the server's torch threads.")
    parser.add_argument("--endpoint", choices=["answer", "caption", "search"], default="answer")
    parser.add_argument("--image", type=Path, help="Image to upload (answer, caption).")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_load_test.json"))
    args = parser.parse_args()
    if (args.url is None) == (args.serve is None):
        parser.error("give --url (a running server) or --serve MODEL_DIR...")
    image = args.image.read_bytes() if args.image else b""
    if args.endpoint != "search" and not image:
        parser.error(f"--image is needed for /{args.endpoint}")
    results = []
    if args.url:
        results.append({"server": args.url, **asyncio.run(run_load(args.url, args.endpoint, image, args.clients,
                                                                   args.seconds))})
    else:
        for max_batch in args.max_batch:
            server, url = start_server(args.serve, args.index, max_batch, args.max_wait_ms, args.torch_threads)
            try:
                result = asyncio.run(run_load(url, args.endpoint, image, args.clients, args.seconds))
                health = httpx.get(url + "/health").json()
            finally:
                server.terminate()
                server.wait(timeout=30)
            results.append({"max_batch": max_batch, "max_wait_ms": args.max_wait_ms,
                            "torch_threads": args.torch_threads, **result,
                            "batching": health["batching"]})
    print(f"| /{args.endpoint} | clients | requests | errors | requests/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        name = r.get("server") or ("no batching (max batch 1)" if r["max_batch"] == 1 else
                                   f"micro-batching (max batch {r['max_batch']}, {r['max_wait_ms']:g} ms)")
        served = r.get("batching", {}).get({"answer": "answer", "caption": "caption"}.get(args.endpoint, "search_text"))
        if served and served["batches"]:
            name += f", mean batch {served['requests'] / served['batches']:.1f}"
        print(f"| {name} | {r['clients']} | {r['requests']} | {r['errors']} | {r['throughput_rps']} | {r['p50_ms']} | "
              f"{r['p99_ms']} |")
        for e in r["first_errors"]:
            print(f"    error: {e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"endpoint": args.endpoint, "results": results}, indent=2) + "\n")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
