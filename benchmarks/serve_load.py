"""Load test for the OpenAI-compatible server: N concurrent clients, a bounded number of requests.

Starts `llava-mini serve` in a subprocess (the shipped model, `--model DIR`, or a random tiny model) or
targets a running server with `--url`, then sends each request with the official `openai` async client:
an image (as a data URL) and a question, greedy decoding. Prints throughput, p50/p99 latency and the number
of failed requests (429s from a full queue count as failed; the client does not retry).

    python benchmarks/serve_load.py --requests 64 --clients 32 --max-tokens 16
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --requests 200 --stream
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import openai

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO_ROOT / "assets" / "extreme_ironing.jpg"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=None, help="a running server (default: start one)")
    parser.add_argument(
        "--model", default=None, help="model directory for the started server (default: shipped)"
    )
    parser.add_argument("--random-tiny", action="store_true", help="start the server on a random tiny model")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=64, help="requests in all")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument(
        "--stream", action="store_true", help="stream the answers (they then run one at a time)"
    )
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--question", default="What is unusual about this image?")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one request may take")
    parser.add_argument("--max-batch-size", type=int, default=8, help="for the started server")
    parser.add_argument("--max-queue", type=int, default=64, help="for the started server")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    for name in ("clients", "requests", "max_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.image.is_file():
        parser.error(f"--image {args.image} does not exist")
    return args


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(
    args: argparse.Namespace, workdir: Path, startup_s: float = 120, extra: list[str] | None = None
) -> tuple[subprocess.Popen, str]:
    """`llava-mini serve` in a subprocess on a free loopback port (`extra`: more serve options); returns it and
    its base URL once healthy."""
    model = args.model
    if args.random_tiny:
        from llava_mini.inference.random_model import write_random_model

        model = str(write_random_model(workdir / "random-tiny"))
    port = free_port()
    command = [sys.executable, "-m", "llava_mini.cli", "serve", "--port", str(port), "--model-id", "bench"]
    command += ["--max-queue", str(args.max_queue), "--max-batch-size", str(args.max_batch_size)]
    if model is not None:
        command += ["--model", model]
    command += extra or []
    with open(workdir / "server.log", "w") as log:  # the child keeps its own copy of the descriptor
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"the server exited with {server.returncode}:\n{(workdir / 'server.log').read_text()}"
            )
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"the server on {url} did not become healthy in {startup_s:g} s")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


async def run_load(args: argparse.Namespace, url: str) -> dict:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=args.timeout)
    model = (await client.models.list()).data[0].id
    image = "data:image/jpeg;base64," + base64.b64encode(args.image.read_bytes()).decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image}},
                {"type": "text", "text": args.question},
            ],
        }
    ]
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    completion_tokens = 0
    remaining = iter(range(args.requests))

    async def one_request() -> None:
        nonlocal completion_tokens
        started = time.perf_counter()
        try:
            if args.stream:
                stream = await client.chat.completions.create(
                    model=model, messages=messages, max_tokens=args.max_tokens, temperature=0, stream=True
                )
                pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
                if not any(pieces):
                    raise ValueError("empty stream")
            else:
                reply = await client.chat.completions.create(
                    model=model, messages=messages, max_tokens=args.max_tokens, temperature=0
                )
                completion_tokens += reply.usage.completion_tokens
        except openai.APIStatusError as error:
            failures[f"HTTP {error.status_code}"] += 1
            return
        except (openai.APIError, ValueError) as error:
            failures[type(error).__name__] += 1
            return
        latencies.append(time.perf_counter() - started)

    async def client_loop() -> None:
        for _ in remaining:  # the clients share one iterator: each request is sent once
            await one_request()

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(args.clients)))
    elapsed = time.perf_counter() - started
    await client.close()
    return {
        "requests": args.requests,
        "clients": args.clients,
        "max_tokens": args.max_tokens,
        "stream": args.stream,
        "seconds": round(elapsed, 3),
        "succeeded": len(latencies),
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "requests_per_s": round(len(latencies) / elapsed, 3),
        "completion_tokens_per_s": None if args.stream else round(completion_tokens / elapsed, 2),
        "latency_p50_s": round(percentile(latencies, 0.50), 3),
        "latency_p99_s": round(percentile(latencies, 0.99), 3),
    }


def report(figures: dict, health: dict | None) -> str:
    lines = [
        f"{figures['requests']} requests from {figures['clients']} concurrent clients, max_tokens "
        f"{figures['max_tokens']}{' (streamed)' if figures['stream'] else ''}: {figures['seconds']:.2f} s",
        f"throughput: {figures['requests_per_s']:.2f} requests/s"
        + (
            f", {figures['completion_tokens_per_s']:.1f} completion tokens/s" if not figures["stream"] else ""
        ),
        f"latency: p50 {figures['latency_p50_s']:.3f} s, p99 {figures['latency_p99_s']:.3f} s",
        f"failed: {figures['failed']}" + (f" {figures['failures']}" if figures["failures"] else ""),
    ]
    if health is not None:
        lines.append(f"server: {health}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch:
        server = None
        url = args.url
        if url is None:
            server, url = start_server(args, Path(scratch))
        try:
            figures = asyncio.run(run_load(args, url.rstrip("/")))
            health = httpx.get(url.rstrip("/") + "/health", timeout=10).json()
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=30)
    print(json.dumps(figures) if args.json else report(figures, health))
    return 0 if figures["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
