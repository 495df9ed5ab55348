"""Load test of `vlfuse serve` on loopback: N concurrent clients for a bounded time and request count,
some of them hostile; p50 / p99 latency, errors, throughput and the server's resident memory.

Start the server itself (once per batching setting; max batch 1 = off), same load each time:
    nice -n 5 python bench/load_test.py --serve runs/vqa_shapes/model --max-batch 16 \
        --image data/shapes/images/test/test_000001.png --clients 50 --hostile-clients 2 --seconds 30
Against a server already running on this machine (--pid: its process, for the memory figures):
    python bench/load_test.py --url http://127.0.0.1:8000 --pid 12345 --image img.png --clients 16

Every client sends one request, waits for the answer, sends the next (closed loop), so throughput is
what the server sustains with N requests in flight. Each client holds its own keep-alive connection
and speaks HTTP/1.1 directly: a shared httpx pool queues requests in the client itself (encode/httpx
#3215), which is where the seconds-long p99 of earlier runs came from, and its CPU cost on a 2-core
machine is taken from the server being measured.

Hostile clients (--hostile-clients) take turns sending a 6300 x 6300 PNG (40 megapixels in 140 KB,
under both the upload cap and the decode cap: answered, but costly) and a corrupt file (answered 400).
Before the timed load, --burst sends that many 6300 x 6300 PNGs at once, and the server's resident
memory is read before and after (memory must be handed back). An error is any answer other than the
expected one: 200 for images, 400 for corrupt files; 503 (busy) counts as an error.

The endpoint is /answer (VQA, the default), /caption or /search (text queries; needs a retrieval model
and --index). Loopback only: the load is never pointed at another machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

QUESTIONS = ["What is the shape of the red object?", "Is the green object on the left?",
             "How many objects have the same shape as the blue object?",
             "What is the shape of the object closest to the yellow object?"]
QUERIES = ["a red circle", "a blue square on the left", "a green triangle at the top", "a gray circle"]
LOOPBACK = ("127.0.0.1", "localhost", "::1")
HUGE_SIDE = 6300  # 39.7 megapixels: just under the server's 40-megapixel decode cap


# --------------------------------------------------------------------------- requests on the wire

def multipart(fields: dict[str, str], image: bytes) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image.png"\r\n'
                 'Content-Type: image/png\r\n\r\n'.encode() + image + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def http_request(host: str, path: str, content_type: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def request_for(endpoint: str, host: str, image: bytes, n: int) -> bytes:
    if endpoint == "search":
        body = json.dumps({"text": QUERIES[n % len(QUERIES)], "k": 10}).encode()
        return http_request(host, "/search", "application/json", body)
    fields = {"question": QUESTIONS[n % len(QUESTIONS)]} if endpoint == "answer" else {}
    return http_request(host, f"/{endpoint}", *multipart(fields, image))


class Connection:
    """One keep-alive HTTP/1.1 connection of one client: a request, then its answer, in turn."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(request)
            await self.writer.drain()
            status, headers = await self._head()
            body = await self.reader.readexactly(int(headers.get("content-length", 0)))
        except (OSError, asyncio.IncompleteReadError):
            self.close()
            raise
        if headers.get("connection") == "close":
            self.close()
        return status, body

    async def _head(self) -> tuple[int, dict[str, str]]:
        status = int((await self.reader.readuntil(b"\r\n")).split()[1])
        headers = {}
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# --------------------------------------------------------------------------- hostile images

def huge_png(side: int = HUGE_SIDE) -> bytes:
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (side, side), (200, 200, 200))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((side // 6, side // 6, side // 2, side // 2), fill=(255, 0, 0))
    draw.rectangle((2 * side // 3, 2 * side // 3, 7 * side // 8, 7 * side // 8), fill=(0, 0, 255))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def hostile_uploads(image: bytes) -> list[tuple[str, bytes, int]]:
    """(name, bytes, the status it should get): a huge picture, a truncated one, one that is no image."""
    return [("huge", huge_png(), 200), ("truncated", image[: len(image) // 2], 400),
            ("not an image", b"\x89PNG\r\n\x1a\n" + os.urandom(2000), 400)]


# --------------------------------------------------------------------------- memory of the server

def rss_mb(pid: int | None, field: str = "VmRSS") -> float | None:
    """The process's resident memory (VmRSS) or its peak so far (VmHWM), in MB; None if not readable."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


async def settled_rss(pid: int | None, seconds: float = 2.0) -> float | None:
    await asyncio.sleep(seconds)  # the last answers' buffers freed
    return rss_mb(pid)


# --------------------------------------------------------------------------- the load

async def client(connection: Connection, uploads: list[tuple[str, bytes, int]], endpoint: str, host: str,
                 stop: dict, seed: int, record: list, errors: list) -> None:
    n = seed
    while time.perf_counter() < stop["deadline"] and stop["left"] > 0:
        stop["left"] -= 1
        kind, image, expected = uploads[n % len(uploads)]
        request = request_for(endpoint, host, image, n)
        clock = time.perf_counter()
        try:
            status, body = await connection.send(request)
            if status != expected:
                errors.append(f"{kind}: {status}: {body[:200].decode(errors='replace')}")
            else:
                record.append((kind, time.perf_counter() - clock))
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors.append(f"{kind}: {type(exc).__name__}: {exc}")
        n += 1


def summary(latencies: list[float]) -> dict:
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"requests": len(latencies), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}


async def burst(url: str, image: bytes, count: int, pid: int | None) -> dict:
    """`count` huge uploads at once; the server's memory before, and after it answered them."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    before = rss_mb(pid)
    connections = [Connection(host, port) for _ in range(count)]
    request = request_for("answer", f"{host}:{port}", image, 0)
    statuses = await asyncio.gather(*(c.send(request) for c in connections), return_exceptions=True)
    for c in connections:
        c.close()
    answered = sum(1 for s in statuses if not isinstance(s, BaseException) and s[0] == 200)
    return {"uploads": count, "answered": answered, "rss_before_mb": before, "rss_after_mb": await settled_rss(pid)}


async def run_load(url: str, endpoint: str, image: bytes, clients: int, seconds: float, max_requests: int,
                   hostile_clients: int = 0, pid: int | None = None, warmup: int = 4) -> dict:
    host, port = urlsplit(url).hostname, urlsplit(url).port
    normal = [("normal", image, 200)]
    warm = Connection(host, port)
    for n in range(warmup):  # first requests pay one-off costs (allocations, lazy imports)
        await warm.send(request_for(endpoint, f"{host}:{port}", image, n))
    warm.close()
    hostile = hostile_uploads(image) if hostile_clients else []
    connections = [Connection(host, port) for _ in range(clients)]
    record, errors = [], []
    rss_start = rss_mb(pid)
    start = time.perf_counter()
    stop = {"deadline": start + seconds, "left": max_requests}
    await asyncio.gather(*(client(c, hostile if i < hostile_clients else normal, endpoint, f"{host}:{port}", stop, i,
                                  record, errors) for i, c in enumerate(connections)))
    wall = time.perf_counter() - start
    for c in connections:
        c.close()
    kinds = {kind: summary([t for k, t in record if k == kind]) for kind in dict.fromkeys(k for k, _ in record)}
    return {"clients": clients, "hostile_clients": hostile_clients, "seconds": round(wall, 1),
            **summary([t for _, t in record]), "errors": len(errors), "first_errors": errors[:3],
            "throughput_rps": round(len(record) / wall, 1), "by_kind": kinds,
            "rss_start_mb": rss_start, "peak_rss_mb": rss_mb(pid, "VmHWM"), "rss_after_mb": await settled_rss(pid)}


# --------------------------------------------------------------------------- the server

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


def measure(url: str, pid: int | None, args, image: bytes) -> dict:
    result = {}
    if args.burst:
        result["burst"] = asyncio.run(burst(url, huge_png(), args.burst, pid))
    result.update(asyncio.run(run_load(url, args.endpoint, image, args.clients, args.seconds, args.max_requests,
                                       args.hostile_clients, pid)))
    return result


def print_table(endpoint: str, results: list[dict]) -> None:
    print(f"| /{endpoint} | clients (hostile) | requests | errors | requests/s | p50 ms | p99 ms | "
          "normal p50 / p99 ms | peak RSS MB | RSS after MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        name = r.get("server") or ("no batching (max batch 1)" if r["max_batch"] == 1 else
                                   f"micro-batching (max batch {r['max_batch']}, {r['max_wait_ms']:g} ms)")
        normal = r["by_kind"].get("normal", {})
        print(f"| {name} | {r['clients']} ({r['hostile_clients']}) | {r['requests']} | {r['errors']} | "
              f"{r['throughput_rps']} | {r['p50_ms']} | {r['p99_ms']} | {normal.get('p50_ms')} / "
              f"{normal.get('p99_ms')} | {r['peak_rss_mb']} | {r['rss_after_mb']} |")
        for kind, s in r["by_kind"].items():
            print(f"    {kind}: {s}")
        if "burst" in r:
            print(f"    burst: {r['burst']}")
        for e in r["first_errors"]:
            print(f"    error: {e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="A running server on this machine (else --serve starts one per --max-batch).")
    parser.add_argument("--pid", type=int, help="With --url: the server's process id, for its memory figures.")
    parser.add_argument("--serve", nargs="+", metavar="MODEL_DIR", help="Model directories to serve.")
    parser.add_argument("--index", help="With --serve: an index for /search.")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[16], help="With --serve: settings to compare.")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--torch-threads", type=int, default=1, help="With --serve: the server's torch threads.")
    parser.add_argument("--endpoint", choices=["answer", "caption", "search"], default="answer")
    parser.add_argument("--image", type=Path, help="Image to upload (answer, caption).")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--hostile-clients", type=int, default=0, help="Of the clients, how many send hostile "
                                                                       "images (huge, truncated, not an image).")
    parser.add_argument("--burst", type=int, default=0, help="Huge uploads sent at once before the load.")
    parser.add_argument("--seconds", type=float, default=20, help="How long the load runs at most.")
    parser.add_argument("--max-requests", type=int, default=20_000, help="How many requests it sends at most.")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_load_test.json"))
    args = parser.parse_args()
    if (args.url is None) == (args.serve is None):
        parser.error("give --url (a running server) or --serve MODEL_DIR...")
    if args.url and urlsplit(args.url).hostname not in LOOPBACK:
        parser.error(f"--url must be a loopback address ({', '.join(LOOPBACK)}): this load is not for other machines")
    image = args.image.read_bytes() if args.image else b""
    if args.endpoint != "search" and not image:
        parser.error(f"--image is needed for /{args.endpoint}")
    if args.endpoint != "answer" and (args.hostile_clients or args.burst):
        parser.error("--hostile-clients and --burst send images to /answer")
    results = []
    if args.url:
        results.append({"server": args.url, **measure(args.url, args.pid, args, image)})
    for max_batch in args.max_batch if args.serve else []:
        server, url = start_server(args.serve, args.index, max_batch, args.max_wait_ms, args.torch_threads)
        try:
            result = measure(url, server.pid, args, image)
            health = httpx.get(url + "/health").json()
        finally:
            server.terminate()
            server.wait(timeout=30)
        results.append({"max_batch": max_batch, "max_wait_ms": args.max_wait_ms, "torch_threads": args.torch_threads,
                        **result, "batching": health["batching"]})
    print_table(args.endpoint, results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"endpoint": args.endpoint, "results": results}, indent=2) + "\n")
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
