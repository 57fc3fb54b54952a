"""Peak memory of hostile media: a 140-byte 20000x1 PNG, a 100000x1 PNG and a 64-frame 4K clip (issue 20).

Each case runs in a fresh process, so its peak resident memory (ru_maxrss) is that request's alone; the
baseline is the same process answering about a small picture. Two paths: the server's (one request to the
app, in process, over its ASGI interface) and `llava-mini ask` (the CLI's `main`, in process). Printed:
the outcome (HTTP status and error message, or the CLI's exit code and error line) and the peak RSS.

    python benchmarks/hostile_media.py                    # shipped model, files written to runs/hostile-media
    python benchmarks/hostile_media.py --cases wide clip4k --json
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_cases(folder: Path) -> dict[str, Path]:
    """The hostile files (written once) and a small control picture."""
    from PIL import Image

    from llava_mini.processing.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    cases = {"small": folder / "small.png", "wide": folder / "wide.png", "wider": folder / "wider.png",
             "clip4k": folder / "clip4k.mp4"}
    for name, width in (("small", 64), ("wide", 20_000), ("wider", 100_000)):
        if not cases[name].is_file():
            Image.new("RGB", (width, 64 if name == "small" else 1), "red").save(cases[name])
    if not cases["clip4k"].is_file():  # 64 s at 1 fps: 64 sampled frames of 3840 x 2160
        frames = []
        for index in range(64):
            frame = np.full((2160, 3840, 3), (40, 90, 160), np.uint8)
            frame[200:600, 50 * index : 50 * index + 400] = (250, 30, 30)
            frames.append(frame)
        partial = folder / "clip4k.partial.mp4"
        write_video(partial, frames, fps=1)
        partial.replace(cases["clip4k"])
    return cases


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure_server(path: Path, model: str | None) -> dict:
    """One chat completion with the file as a data URL; the answer's status and error message."""
    from fastapi.testclient import TestClient

    from llava_mini.inference.generate import LlavaMini
    from llava_mini.serve.app import ServerLimits, ServerState, create_app
    from llava_mini.serve.media import MediaPolicy

    assistant = LlavaMini.load(model)
    state = ServerState(assistant, "m", MediaPolicy(), ServerLimits(max_new_tokens=4))
    kind = "video_url" if path.suffix == ".mp4" else "image_url"
    mime = "video/mp4" if kind == "video_url" else "image/png"
    url = f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()
    body = {"model": "m", "max_tokens": 2, "messages": [
        {"role": "user", "content": [{"type": kind, kind: {"url": url}}, {"type": "text", "text": "what?"}]}]}
    before = peak_rss_mb()
    started = time.perf_counter()
    with TestClient(create_app(state), raise_server_exceptions=False) as client:
        response = client.post("/v1/chat/completions", json=body)
    try:
        message = response.json().get("error", {}).get("message", "")
    except ValueError:
        message = response.text[:200]
    return {"status": response.status_code, "message": message, "seconds": time.perf_counter() - started,
            "rss_after_load_mb": before}


def measure_ask(path: Path, model: str | None) -> dict:
    """`llava-mini ask FILE "what?"` in process: exit code and the last line it wrote to stderr."""
    from llava_mini.cli import main

    arguments = ["ask", str(path), "what?", "--max-new-tokens", "2", "--no-stream"]
    if model:
        arguments += ["--model", model]
    errors, output = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(output):
        try:
            code = main(arguments)
        except BaseException as error:  # noqa: BLE001 - a traceback is what this benchmark looks for
            code, errors = f"raised {type(error).__name__}", io.StringIO(f"{type(error).__name__}: {error}")
    lines = errors.getvalue().strip().splitlines()
    return {"exit": code, "message": lines[-1] if lines else "", "seconds": time.perf_counter() - started}


def run_one(case: str, path: Path, where: str, model: str | None) -> dict:
    result = measure_server(path, model) if where == "server" else measure_ask(path, model)
    return {"case": case, "path": where, **result, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["small", "wide", "wider", "clip4k"])
    parser.add_argument("--paths", nargs="+", default=["server", "ask"], choices=["server", "ask"])
    parser.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--folder", default="runs/hostile-media", help="where the hostile files are written")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", nargs=3, metavar=("CASE", "FILE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], Path(args.one[1]), args.one[2], args.model)))
        return
    cases = write_cases(Path(args.folder))
    rows = []
    for case in args.cases:
        for where in args.paths:
            command = [sys.executable, __file__, "--one", case, str(cases[case]), where]
            if args.model:
                command += ["--model", args.model]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append({"case": case, "path": where, "status": f"process died ({done.returncode})",
                             "message": done.stderr.strip().splitlines()[-1:] or "", "peak_rss_mb": None})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| case | path | outcome | peak RSS (MB) | message |")
    print("| --- | --- | --- | ---: | --- |")
    for row in rows:
        outcome = row.get("status", row.get("exit"))
        rss = f"{row['peak_rss_mb']:.0f}" if row.get("peak_rss_mb") else "-"
        print(f"| {row['case']} | {row['path']} | {outcome} | {rss} | {str(row.get('message', ''))[:120]} |")


if __name__ == "__main__":
    main()
