"""Peak memory and time to answer about videos of 100, 1,000 and 10,000 sampled frames (sec. 4.2).

Frames are decoded, encoded, compressed and pre-fused in chunks, so the memory a video costs should be one
chunk of frames plus the LLM's one token per frame. Each length runs in a fresh process, so its peak
resident memory (ru_maxrss) belongs to that run alone; the MB per extra frame is the slope between the two
longest runs.

    python benchmarks/long_video.py                       # shipped model, 100 / 1000 / 10000 frames
    python benchmarks/long_video.py --frames 100 1000 --model DIR --json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_long_clip(path: Path, frames: int, size: int = 96, fps: int = 1) -> Path:
    """A clip of `frames` frames at `fps`: a red square walking around a grey field, one step per frame."""
    from llava_mini.processing.video import write_video

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    side = size // 6
    positions = np.arange(frames) % (size - side)
    video = np.full((frames, size, size, 3), 128, dtype=np.uint8)
    for index, x in enumerate(positions):
        y = (index // (size - side)) * 7 % (size - side)
        video[index, y : y + side, x : x + side] = (220, 30, 30)
    partial = path.with_suffix(".partial.mp4")
    write_video(partial, video, fps=fps)
    partial.replace(path)
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(clip: Path, model: str | None, threads: int) -> dict:
    """Load the model, then answer one question about `clip` with every frame sampled (1 fps)."""
    import torch

    from llava_mini.inference.generate import GenerationSettings, LlavaMini

    torch.set_num_threads(threads)
    assistant = LlavaMini.load(model)
    assistant.config.video_fps = 1.0
    assistant.config.video_max_frames = None
    loaded_mb = peak_rss_mb()
    start = time.perf_counter()
    video = assistant.medium(clip)
    answer = assistant.ask(video, "Which direction does the square move?", GenerationSettings(max_new_tokens=8))
    seconds = time.perf_counter() - start
    return {
        "frames": video.num_frames,
        "llm_vision_tokens": video.num_frames * assistant.processor.num_vision_tokens,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "model_loaded_rss_mb": round(loaded_mb, 1),
        "answer": answer,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--model", default=None, help="model directory or hub id (default: the shipped model)")
    parser.add_argument("--clips", type=Path, default=Path("runs/long-video"), help="where the clips are written")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: one run in this process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.model, args.threads)))
        return 0

    rows = []
    for count in sorted(args.frames):
        clip = write_long_clip(args.clips / f"square-{count}.mp4", count)
        command = [sys.executable, __file__, "--measure", str(clip), "--threads", str(args.threads)]
        if args.model:
            command += ["--model", args.model]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    slope = None
    if len(rows) >= 2:
        (a, b) = rows[-2], rows[-1]
        slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["frames"] - a["frames"])
    if args.json:
        print(json.dumps({"runs": rows, "mb_per_extra_frame": slope}, indent=2))
        return 0
    print("| frames | LLM vision tokens | time (s) | peak RSS (MB) | RSS after loading (MB) |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['frames']} | {row['llm_vision_tokens']} | {row['seconds']:.1f} | "
            f"{row['peak_rss_mb']:.0f} | {row['model_loaded_rss_mb']:.0f} |"
        )
    if slope is not None:
        print(f"\nMB per extra frame ({rows[-2]['frames']} -> {rows[-1]['frames']}): {slope:.4f}")
    for row in rows:
        print(f"{row['frames']} frames -> {row['answer']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
