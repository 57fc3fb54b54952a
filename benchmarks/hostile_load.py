"""Hostile load on the OpenAI-compatible server: do normal clients still get answers while hostile ones arrive?

Starts `llava-mini serve` in a subprocess (as benchmarks/serve_load.py does: the shipped model, `--model DIR`,
or `--random-tiny`), then in one run:

1. quiet: normal requests (an image and a question, greedy, the official `openai` client) -> quiet p99;
2. control: the same normal requests while the attackers' process only spins the CPU and sends nothing ->
   what the attackers' own share of the machine costs when they run on the server's cores (not with
   `--no-control`);
3. hostile: the same normal requests while hostile clients send, in a loop, prompts of many short messages,
   multi-megabyte prompts, wide pictures and chunked bodies far over the body limit -> normal p99 under
   attack (and its ratio to the quiet and to the control p99), how the hostile requests were answered, and
   the server's peak RSS;
4. memory: `--rejected` large requests refused one after another -> the server's RSS before and after.

It does this for each server configuration of `--admission` (default: all three, one after another): `off`,
no per-client admission control; `requests`, request counts per client (`--rate-limit`, `--rate-burst`,
`--max-inflight-per-client`); `budget`, those plus what each client's requests cost (`--client-cpu-per-s`,
`--client-bytes-per-s`) and refusals held back (`--refusal-delay-s`). The hostile clients connect from
`--attacker-address` (127.0.0.2), each normal client from its own loopback address (127.0.1.1, 127.0.1.2,
...), so the server tells them apart as it would different hosts. Only loopback addresses (127.0.0.0/8) are used;
Linux answers all of them on `lo`.

Goals (docs/hardening.md): normal p99 under attack within 2x the quiet p99; RSS growth after the rejected
requests under 100 MB.

    python benchmarks/hostile_load.py --random-tiny
    python benchmarks/hostile_load.py --random-tiny --json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import ipaddress
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import openai
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import DEFAULT_IMAGE, percentile, start_server  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running server (default: start one; RSS needs --pid then)")
    parser.add_argument("--pid", type=int, default=None, help="process id of the server given by --url")
    parser.add_argument("--model", default=None, help="model directory for the started server (default: shipped)")
    parser.add_argument("--random-tiny", action="store_true", help="start the server on a random tiny model")
    parser.add_argument("--clients", type=int, default=4, help="concurrent normal clients")
    parser.add_argument("--requests", type=int, default=40, help="normal requests per phase")
    parser.add_argument("--hostile-clients", type=int, default=4, help="concurrent hostile clients")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--messages", type=int, default=2500, help="short messages in a many-message prompt")
    parser.add_argument("--big-prompt-mb", type=float, default=5.0, help="size of a huge one-message prompt")
    parser.add_argument("--chunked-mb", type=float, default=64.0, help="size of a chunked body, sent unasked")
    parser.add_argument("--rejected", type=int, default=100, help="large rejected requests for the RSS check")
    parser.add_argument(
        "--kinds",
        default="many_messages,huge_prompt,wide_picture,chunked_body",
        help="hostile requests to send, comma-separated; cpu_burn (a control) sends none and only spins the CPU",
    )
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds the server may take to start")
    parser.add_argument("--attacker-address", default="127.0.0.2", help="loopback address the attackers send from")
    parser.add_argument(
        "--admission",
        default="off,requests,budget",
        help="server configurations to measure, comma-separated: off, requests, budget (see above)",
    )
    parser.add_argument("--rate-limit", type=float, default=10.0, help="requests/s per client address")
    parser.add_argument("--rate-burst", type=int, default=20, help="burst per client address")
    parser.add_argument("--max-inflight-per-client", type=int, default=1, help="(0: off)")
    parser.add_argument("--client-cpu-per-s", type=float, default=0.1, help="CPU s/s per client (budget)")
    parser.add_argument("--client-bytes-per-s", type=float, default=2e6, help="body bytes/s per client (budget)")
    parser.add_argument("--refusal-delay-s", type=float, default=1.0, help="refusals held this long (budget)")
    parser.add_argument("--no-control", action="store_true", help="skip the control phase (attackers only spin)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.attacker_address).is_loopback:
        parser.error(f"--attacker-address {args.attacker_address} is not a loopback address (127.0.0.0/8)")
    args.admission = args.admission.split(",")
    if unknown := set(args.admission) - {"off", "requests", "budget"}:
        parser.error(f"--admission: unknown configuration(s) {', '.join(sorted(unknown))}")
    args.max_queue, args.max_batch_size = 64, 8  # for start_server
    return args


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MB, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class PeakRSS:
    """Samples a process's RSS every 50 ms in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> PeakRSS:
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        if self.pid is not None:
            self._thread.join()


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def hostile_bodies(args: argparse.Namespace, model: str) -> dict[str, dict | None]:
    """The JSON bodies of the hostile requests (the chunked one is made on the fly)."""
    many = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"hi {i}"} for i in range(args.messages)]
    many[-1]["role"] = "user"
    huge = "red " * int(args.big_prompt_mb * 1e6 / 4)
    wide = data_url(Image.new("RGB", (8000, 100), "white"))
    return {
        "many_messages": {"model": model, "messages": many, "max_tokens": args.max_tokens},
        "huge_prompt": {"model": model, "messages": [{"role": "user", "content": huge}], "max_tokens": 2},
        "wide_picture": {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": wide}}, {"type": "text", "text": "what ?"}],
                }
            ],
            "max_tokens": args.max_tokens,
        },
        "chunked_body": None,
        "cpu_burn": None,
    }


async def send_hostile(client: httpx.AsyncClient, kind: str, body: bytes | None, chunked_mb: float) -> str:
    """One hostile request; returns how it was answered ("HTTP 400", "HTTP 413", an error name)."""
    try:
        if body is None:

            async def chunks():
                piece = b" " * 1_000_000
                for _ in range(int(chunked_mb)):
                    yield piece

            response = await client.post(
                "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
            )
        else:
            response = await client.post("/v1/chat/completions", content=body,
                                         headers={"content-type": "application/json"})
        return f"HTTP {response.status_code}"
    except httpx.HTTPError as error:  # e.g. the server closed a chunked upload after its 413
        return type(error).__name__


def normal_address(index: int) -> str:
    """The loopback address normal client `index` connects from: 127.0.1.1, 127.0.1.2, ..."""
    return str(ipaddress.ip_address("127.0.1.1") + index)


def attack(url: str, model: str, args: argparse.Namespace, kinds: list[str], stop, results) -> None:
    """In its own process: `args.hostile_clients` clients send hostile requests of `kinds` in turn until `stop`,
    all from `args.attacker_address`."""
    # Encoded once: the attackers share the 2 cores of the development machine with the server.
    bodies = {
        kind: None if body is None else json.dumps(body).encode()
        for kind, body in hostile_bodies(args, model).items()
        if kind in kinds
    }
    answers: dict[str, Counter] = {kind: Counter() for kind in kinds}
    latency: dict[str, list[float]] = {kind: [] for kind in kinds}

    async def hostile_loop(client: httpx.AsyncClient, offset: int) -> None:
        index = offset
        while not stop.is_set():
            kind = kinds[index % len(kinds)]
            started = time.perf_counter()
            if kind == "cpu_burn":  # a control: no request, only the attackers' share of the CPU
                while time.perf_counter() - started < 0.01:
                    pass
                answers[kind]["no request"] += 1
                await asyncio.sleep(0)
            else:
                answers[kind][await send_hostile(client, kind, bodies[kind], args.chunked_mb)] += 1
            latency[kind].append(time.perf_counter() - started)
            index += 1

    async def main() -> None:
        transport = httpx.AsyncHTTPTransport(local_address=args.attacker_address)
        async with httpx.AsyncClient(base_url=url, timeout=args.timeout, transport=transport) as client:
            results.put("started")
            await asyncio.gather(*(hostile_loop(client, i) for i in range(args.hostile_clients)))

    asyncio.run(main())
    results.put(({kind: dict(c) for kind, c in answers.items()}, latency, time.process_time()))


async def normal_load(url: str, model: str, messages: list[dict], args) -> tuple[list[float], Counter]:
    """`args.requests` normal requests from `args.clients` clients, each on its own loopback address."""
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    remaining = iter(range(args.requests))

    async def client_loop(index: int) -> None:
        transport = httpx.AsyncHTTPTransport(local_address=normal_address(index))
        http = httpx.AsyncClient(transport=transport, timeout=args.timeout)
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, http_client=http)
        for _ in remaining:
            started = time.perf_counter()
            try:
                await client.chat.completions.create(
                    model=model, messages=messages, max_tokens=args.max_tokens, temperature=0
                )
            except openai.APIStatusError as error:
                failures[f"HTTP {error.status_code}"] += 1
                continue
            except openai.APIError as error:
                failures[type(error).__name__] += 1
                continue
            latencies.append(time.perf_counter() - started)
        await client.close()

    await asyncio.gather(*(client_loop(i) for i in range(args.clients)))
    return latencies, failures


async def under_attack(
    url: str, model: str, messages: list[dict], args: argparse.Namespace, kinds: list[str], pid: int | None
) -> dict:
    """Normal requests while the attackers' process sends hostile requests of `kinds` (or only spins the CPU,
    for `cpu_burn`): their latencies, the hostile answers, and the CPU both sides used meanwhile."""
    context = multiprocessing.get_context("spawn")  # the attackers' own CPU work stays out of this process
    stop, results = context.Event(), context.Queue()
    attacker = context.Process(target=attack, args=(url, model, args, kinds, stop, results))
    with PeakRSS(pid) as peak:
        attacker.start()
        started = results.get(timeout=args.timeout)  # the attackers have built their bodies and begun
        assert started == "started"
        await asyncio.sleep(0.5)
        phase = (time.perf_counter(), cpu_s(pid) if pid else 0.0)
        latencies, failures = await normal_load(url, model, messages, args)
        phase_s = time.perf_counter() - phase[0]
        server_cpu = cpu_s(pid) - phase[1] if pid else None
        stop.set()
        answers, hostile_latency, attacker_cpu = results.get(timeout=args.timeout)
        attacker.join()
    return {
        "latencies": latencies,
        "failures": failures,
        "phase_s": round(phase_s, 1),
        "server_cpu_s": round(server_cpu, 1) if pid else None,
        "answers": answers,
        "hostile_p50_s": {kind: round(percentile(v, 0.5), 3) for kind, v in hostile_latency.items()},
        "attacker_cpu_s": round(attacker_cpu, 1),  # the attackers' process, building bodies included
        "peak_rss_mb": round(peak.peak, 1) if pid else None,
    }


async def run(args: argparse.Namespace, url: str, pid: int | None) -> dict:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=args.timeout)
    model = (await client.models.list()).data[0].id
    image = "data:image/jpeg;base64," + base64.b64encode(args.image.read_bytes()).decode()
    messages = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "What is it?"}],
        }
    ]
    await client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens)  # warm up
    figures: dict = {"clients": args.clients, "requests_per_phase": args.requests, "max_tokens": args.max_tokens}
    rss_start = rss_mb(pid) if pid else None

    phase = (time.perf_counter(), cpu_s(pid) if pid else 0.0)
    quiet, quiet_failures = await normal_load(url, model, messages, args)
    figures["quiet_phase_s"] = round(time.perf_counter() - phase[0], 1)
    figures["server_cpu_quiet_s"] = round(cpu_s(pid) - phase[1], 1) if pid else None
    figures["quiet_p50_s"] = round(percentile(quiet, 0.5), 3)
    figures["quiet_p99_s"] = round(percentile(quiet, 0.99), 3)
    failures = quiet_failures

    if not args.no_control:
        control = await under_attack(url, model, messages, args, ["cpu_burn"], pid)
        figures["control_phase_s"] = control["phase_s"]
        figures["server_cpu_control_s"] = control["server_cpu_s"]
        figures["attacker_cpu_control_s"] = control["attacker_cpu_s"]
        figures["control_p50_s"] = round(percentile(control["latencies"], 0.5), 3)
        figures["control_p99_s"] = round(percentile(control["latencies"], 0.99), 3)
        failures += control["failures"]

    kinds = [kind for kind in hostile_bodies(args, model) if kind in args.kinds.split(",")]
    attacked = await under_attack(url, model, messages, args, kinds, pid)
    figures["attacked_phase_s"] = attacked["phase_s"]
    figures["server_cpu_attacked_s"] = attacked["server_cpu_s"]
    figures["attacked_p50_s"] = round(percentile(attacked["latencies"], 0.5), 3)
    figures["attacked_p99_s"] = round(percentile(attacked["latencies"], 0.99), 3)
    figures["p99_ratio"] = round(figures["attacked_p99_s"] / figures["quiet_p99_s"], 2)
    if not args.no_control:
        figures["p99_ratio_to_control"] = round(figures["attacked_p99_s"] / figures["control_p99_s"], 2)
    figures["normal_failures"] = dict(failures + attacked["failures"])
    figures["hostile_answers"] = attacked["answers"]
    figures["hostile_p50_s"] = attacked["hostile_p50_s"]
    figures["attacker_cpu_s"] = attacked["attacker_cpu_s"]
    figures["peak_rss_mb"] = attacked["peak_rss_mb"]
    figures["rss_start_mb"] = round(rss_start, 1) if rss_start else None

    if pid and args.rejected:  # memory kept after many large rejected requests
        huge = json.dumps(hostile_bodies(args, model)["huge_prompt"]).encode()
        async with httpx.AsyncClient(base_url=url, timeout=args.timeout) as plain:
            for _ in range(5):  # allocator warm-up
                await plain.post("/v1/chat/completions", content=huge, headers={"content-type": "application/json"})
            before = rss_mb(pid)
            statuses = Counter()
            for _ in range(args.rejected):
                response = await plain.post(
                    "/v1/chat/completions", content=huge, headers={"content-type": "application/json"}
                )
                statuses[response.status_code] += 1
        after = rss_mb(pid)
        figures["rejected"] = {"requests": args.rejected, "statuses": dict(statuses), "size_mb": round(len(huge) / 1e6, 1)}
        figures["rss_before_rejected_mb"] = round(before, 1)
        figures["rss_after_rejected_mb"] = round(after, 1)
        figures["rss_growth_mb"] = round(after - before, 1)
    await client.close()
    return figures


def report(figures: dict) -> str:
    lines = [
        f"server options: {' '.join(figures['server_options']) or '(defaults: no admission control)'}",
        f"normal requests ({figures['clients']} clients, {figures['requests_per_phase']} per phase, max_tokens "
        f"{figures['max_tokens']}): quiet p50 {figures['quiet_p50_s']:.3f} s p99 {figures['quiet_p99_s']:.3f} s; "
        f"under attack p50 {figures['attacked_p50_s']:.3f} s p99 {figures['attacked_p99_s']:.3f} s "
        f"({figures['p99_ratio']:.2f}x quiet; goal <= 2x)",
        f"normal failures: {figures['normal_failures'] or 'none'}",
        *(
            [
                f"control (the attackers' process only spins, {figures['attacker_cpu_control_s']} CPU s): "
                f"p50 {figures['control_p50_s']:.3f} s p99 {figures['control_p99_s']:.3f} s; under attack "
                f"{figures['p99_ratio_to_control']:.2f}x the control p99"
            ]
            if "control_p99_s" in figures
            else []
        ),
        f"hostile answers: {figures['hostile_answers']}",
        f"hostile p50 latency (s): {figures['hostile_p50_s']}",
        f"phases: quiet {figures['quiet_phase_s']} s (server CPU {figures['server_cpu_quiet_s']} s), attacked "
        f"{figures['attacked_phase_s']} s (server CPU {figures['server_cpu_attacked_s']} s, attackers' CPU "
        f"{figures['attacker_cpu_s']} s)",
    ]
    if figures.get("peak_rss_mb"):
        lines.append(f"server RSS: {figures['rss_start_mb']} MB at start, peak {figures['peak_rss_mb']} MB under attack")
    if "rss_growth_mb" in figures:
        rejected = figures["rejected"]
        lines.append(
            f"{rejected['requests']} rejected {rejected['size_mb']} MB requests {rejected['statuses']}: RSS "
            f"{figures['rss_before_rejected_mb']} -> {figures['rss_after_rejected_mb']} MB "
            f"(+{figures['rss_growth_mb']} MB; goal < 100 MB)"
        )
    return "\n".join(lines)


def measure(args: argparse.Namespace, options: list[str], scratch: Path) -> dict:
    """All phases against one server: the one at `--url`, or one started with the serve `options`."""
    server, url, pid = None, args.url, args.pid
    if url is None:
        server, url = start_server(args, scratch, startup_s=args.startup_timeout, extra=options)
        pid = server.pid
    try:
        figures = asyncio.run(run(args, url.rstrip("/"), pid))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return {"server_options": options, **figures}


def server_options(args: argparse.Namespace) -> dict[str, list[str]]:
    """The serve options of each server configuration of `--admission`."""
    requests = ["--rate-limit", f"{args.rate_limit:g}", "--rate-burst", str(args.rate_burst)]
    requests += ["--max-inflight-per-client", str(args.max_inflight_per_client)]
    budget = requests + ["--client-cpu-per-s", f"{args.client_cpu_per_s:g}"]
    budget += ["--client-bytes-per-s", f"{args.client_bytes_per_s:g}"]
    budget += ["--refusal-delay-s", f"{args.refusal_delay_s:g}"]
    # Without a delay the other two configurations answer refusals at once (the serve default holds them 1 s).
    configurations = {"off": [], "requests": requests + ["--refusal-delay-s", "0"], "budget": budget}
    return {name: configurations[name] for name in args.admission}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    servers = server_options(args)
    if args.url is not None:  # the given server, whatever its options
        servers = {"given": []}
    results = {}
    with tempfile.TemporaryDirectory(prefix="hostile-load-") as scratch:
        for name, options in servers.items():
            rejected = args.rejected
            if options:  # the RSS check's requests come from one address: the per-client limits would refuse them
                args.rejected = 0
            (Path(scratch) / name).mkdir()
            results[name] = measure(args, options, Path(scratch) / name)
            args.rejected = rejected
    if args.json:
        print(json.dumps(results))
    else:
        print("\n\n".join(f"{name}:\n{report(figures)}" for name, figures in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
