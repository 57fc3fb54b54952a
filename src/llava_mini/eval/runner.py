"""Benchmark runner: items -> batched greedy answers -> DIR/answers.jsonl -> scores -> results.json/.md.

`llava-mini eval TASK --data PATH [--model M] [--out DIR] [--json] [--batch-size B] [--limit N]
[--reading official|lenient]`. The default reading reproduces the benchmark's official scripts.

Resumable: each answer batch is appended to the answers file as soon as it is generated, and items whose
id is already there are skipped, so a killed run continues where it stopped (a line cut off by the kill is
dropped). Sharded: under torchrun or accelerate (RANK / WORLD_SIZE in the environment) rank r answers the
items i with i % world == r into DIR/answers.rank<r>-of-<world>.jsonl; rank 0 then waits until every item
has an answer, merges them into DIR/answers.jsonl in item order, scores, and writes the results.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from tqdm import tqdm

from llava_mini.eval.benchmarks import BENCHMARKS, get_benchmark
from llava_mini.eval.benchmarks.base import (
    READINGS,
    Benchmark,
    EncodedImage,
    FrameFolder,
    Item,
    Judge,
    MediaSource,
    VideoClip,
)

if TYPE_CHECKING:
    from llava_mini.inference.generate import LlavaMini
    from llava_mini.processing.processor import Medium

logger = logging.getLogger(__name__)
ANSWERS_FILE = "answers.jsonl"
FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


# --- process topology ------------------------------------------------------------------------------


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's / accelerate's environment; (0, 1) when launched alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent RANK={rank} and WORLD_SIZE={world} in the environment")
    return rank, world


def shard_file(out: Path, rank: int, world: int) -> Path:
    return out / (ANSWERS_FILE if world == 1 else f"answers.rank{rank}-of-{world}.jsonl")


# --- answers on disk --------------------------------------------------------------------------------


def read_answers(path: Path) -> dict[str, dict]:
    """Records by id; a last line cut off by a killed run is cut from the file too (so appends stay valid)."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        logger.warning("%s: dropping an unfinished last line left by an interrupted run", path)
        path.write_bytes(complete)
    records = {}
    for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
                records[str(record["id"])] = record
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(
                    f"{path}:{number}: not an answer record ({error}); delete the line to continue"
                ) from error
    return records


def append_answers(path: Path, records: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        handle.flush()
        os.fsync(handle.fileno())


def write_answers(path: Path, records: Sequence[dict]) -> None:
    """Replace the file atomically (write a sibling, then rename)."""
    partial = path.with_suffix(".jsonl.partial")
    partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    partial.replace(path)


# --- media -----------------------------------------------------------------------------------------


def _clip_indices(total: int, source_fps: float, start: float | None, end: float | None) -> range:
    """Frame indices inside [start, end] seconds (all frames when unbounded; at least one frame)."""
    first = max(0, math.ceil(start * source_fps)) if start is not None else 0
    last = min(total - 1, math.floor(end * source_fps)) if end is not None else total - 1
    first = min(first, total - 1)
    return range(first, max(first, last) + 1)


def read_clip(clip: VideoClip, fps: float, max_frames: int | None) -> list[Image.Image]:
    """Frames of [start, end] sampled at `fps` (segment midpoints, as for whole videos)."""
    import av

    from llava_mini.processing.video import VideoDecodeError, probe_video, sample_frame_indices

    info = probe_video(clip.path)
    window = _clip_indices(info.total_frames, info.average_fps, clip.start, clip.end)
    chosen = [window[i] for i in sample_frame_indices(len(window), info.average_fps, fps, max_frames)]
    wanted, frames = set(chosen), {}
    with av.open(str(clip.path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_image().convert("RGB")
            if index >= chosen[-1]:
                break
    if not frames:
        raise VideoDecodeError(f"{clip.path}: no frame could be decoded in [{clip.start}, {clip.end}] s")
    last = frames[max(frames)]
    return [frames.get(i, last) for i in chosen]


def read_frame_folder(folder: FrameFolder, fps: float, max_frames: int | None) -> list[Image.Image]:
    files = sorted(p for p in folder.path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no frames ({', '.join(sorted(FRAME_SUFFIXES))}) in {folder.path}")
    from llava_mini.processing.video import sample_frame_indices

    window = _clip_indices(len(files), folder.source_fps, folder.start, folder.end)
    chosen = [window[i] for i in sample_frame_indices(len(window), folder.source_fps, fps, max_frames)]
    return [Image.open(files[i]).convert("RGB") for i in chosen]


def load_source(assistant: LlavaMini, source: MediaSource) -> Medium:
    """A benchmark's media reference -> what the processor takes (PIL image, Video, or lazy VideoFile)."""
    from llava_mini.processing.processor import Video
    from llava_mini.processing.video import VideoFile

    fps, max_frames = assistant.config.video_fps, assistant.config.video_max_frames
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, EncodedImage):
        return source.open()
    if isinstance(source, FrameFolder):
        return Video(read_frame_folder(source, fps, max_frames))
    if isinstance(source, VideoClip):
        if source.start is None and source.end is None:
            return VideoFile(source.path, fps=fps, max_frames=max_frames)
        return Video(read_clip(source, fps, max_frames))
    return assistant.medium(source)


# --- answering --------------------------------------------------------------------------------------


def answer_items(
    assistant: LlavaMini,
    items: Sequence[Item],
    answers_path: Path,
    max_new_tokens: int,
    batch_size: int = 8,
    description: str = "eval",
) -> None:
    """Greedy answers in batches, appended to `answers_path` after each batch."""
    from llava_mini.inference.generate import GenerationSettings

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    with tqdm(total=len(items), desc=description, unit="item") as progress:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            media = [[load_source(assistant, source) for source in item.media] for item in chunk]
            conversations = [
                assistant.question_messages(item.prompt, m) for item, m in zip(chunk, media, strict=True)
            ]
            answers = assistant.chat_batch(conversations, media, settings)
            append_answers(
                answers_path,
                [
                    {"id": item.id, "prompt": item.prompt, "answer": answer, "meta": item.meta}
                    for item, answer in zip(chunk, answers, strict=True)
                ],
            )
            progress.update(len(chunk))


def collect_answers(
    out: Path, items: Sequence[Item], world: int, timeout_s: float, poll_s: float = 5.0
) -> list[dict]:
    """Rank 0: wait until every item has an answer in some answers file, then merge them in item order."""
    wanted = [item.id for item in items]
    deadline = time.monotonic() + timeout_s
    while True:
        found: dict[str, dict] = {}
        for path in [out / ANSWERS_FILE, *(shard_file(out, r, world) for r in range(world) if world > 1)]:
            found.update(read_answers(path))
        missing = [i for i in wanted if i not in found]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(missing)} items still have no answer in {out} (first: {missing[:3]}); did a rank fail?"
            )
        time.sleep(poll_s)
    records = [found[i] for i in wanted]
    if world > 1:
        write_answers(out / ANSWERS_FILE, records)
    return records


# --- results ----------------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    if value is None:
        return "undefined"  # e.g. POPE's precision on a split with no "yes" answer
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def markdown_report(payload: dict) -> str:
    model = f", model `{payload['model']}`" if payload["model"] else ""
    reading = payload.get("reading", "official")
    reading = "" if reading == "official" else f", {reading} reading (not the official score)"
    lines = [f"# {payload['title']}", "", f"{payload['items']} items{model}{reading}", ""]
    lines += ["| metric | value |", "| --- | ---: |"]
    lines += [f"| {key} | {format_value(value)} |" for key, value in payload["metrics"].items()]
    categories = payload["categories"]
    if categories:
        columns = list(dict.fromkeys(key for row in categories.values() for key in row))
        lines += ["", "| category | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
        for name, row in categories.items():
            lines.append(f"| {name} | " + " | ".join(format_value(row.get(c, "")) for c in columns) + " |")
    if payload["notes"]:
        lines += [""] + [f"- {note}" for note in payload["notes"]]
    if payload["submission"]:
        lines += [""] + [f"- submission file: `{path}`" for path in payload["submission"]]
    return "\n".join(lines) + "\n"


def run_benchmark(
    benchmark: Benchmark | str,
    data: str | os.PathLike,
    out: str | os.PathLike,
    assistant: LlavaMini | Callable[[], LlavaMini],
    batch_size: int = 8,
    limit: int | None = None,
    max_new_tokens: int | None = None,
    judge: Judge | None = None,
    rank_and_world: tuple[int, int] | None = None,
    wait_timeout_s: float = 6 * 3600,
    model_name: str = "",
    reading: str = "official",
) -> dict | None:
    """Answer (resuming), and on rank 0 score and write results.json / results.md; returns the results.

    `assistant` may be a loaded `LlavaMini` or a function that loads one (called only if work is left).
    Returns None on ranks other than 0. `reading` picks the scorer: "official" (default) or "lenient".
    """
    benchmark = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    score = benchmark.scorer(reading)
    data, out = Path(data), Path(out)
    if not data.exists():
        raise FileNotFoundError(f"{benchmark.title} data not found: {data}")
    items = benchmark.load(data)
    if limit is not None:
        items = items[:limit]
    if not items:
        raise ValueError(f"{benchmark.title}: no items found in {data}")
    duplicates = len(items) - len({item.id for item in items})
    if duplicates:
        raise ValueError(f"{benchmark.title}: {duplicates} duplicate item ids in {data}")
    rank, world = rank_and_world or distributed_rank()
    out.mkdir(parents=True, exist_ok=True)
    own = shard_file(out, rank, world)
    done = set(read_answers(own)) | (set(read_answers(out / ANSWERS_FILE)) if world > 1 else set())
    todo = [item for index, item in enumerate(items) if index % world == rank and item.id not in done]
    if todo:
        model = assistant() if callable(assistant) else assistant
        description = benchmark.name if world == 1 else f"{benchmark.name} [rank {rank}/{world}]"
        answer_items(model, todo, own, max_new_tokens or benchmark.max_new_tokens, batch_size, description)
    if rank != 0:
        return None
    records = collect_answers(out, items, world, wait_timeout_s)
    results = score(records, judge)
    submission = benchmark.write_submission(records, data, out) if benchmark.write_submission else []
    payload = {
        "benchmark": benchmark.name,
        "title": benchmark.title,
        "model": model_name,
        "reading": reading,
        "data": str(data),
        "items": len(records),
        **results.to_dict(),
        "submission": [str(path) for path in submission],
    }
    (out / "results.json").write_text(
        json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out / "results.md").write_text(markdown_report(payload), encoding="utf-8")
    return payload


# --- command line -----------------------------------------------------------------------------------


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="the benchmark's folder (its own distribution layout)")
    parser.add_argument(
        "--model", default=None, help="local directory or hub id (default: the shipped model)"
    )
    parser.add_argument(
        "--out", default=None, help="folder for answers.jsonl and results (default: runs/eval/TASK)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of markdown")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="only the first N items (a quick check)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the benchmark's own")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available)"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--hd", action="store_true", help="high resolution: 2x2 crops + the global view")
    parser.add_argument(
        "--fps", type=float, default=None, help="video frames sampled per second (default: model's)"
    )
    parser.add_argument("--max-frames", type=int, default=None, help="at most this many frames per video")
    parser.add_argument(
        "--judge-url", default=None, help="OpenAI-compatible endpoint (.../v1) for judged benchmarks"
    )
    parser.add_argument(
        "--judge-model", default=None, help="judge model at --judge-url (default: each benchmark's official judge, e.g. gpt-4-0314 for LLaVA-Bench)"
    )
    parser.add_argument(
        "--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable with the key"
    )
    parser.add_argument(
        "--wait-timeout", type=float, default=6 * 3600, help="rank 0's wait for other ranks (s)"
    )
    parser.add_argument(
        "--reading",
        default="official",
        choices=READINGS,
        help="official: the benchmark's official scripts (default); lenient: the project's forgiving reading",
    )


def add_benchmark_commands(eval_commands: argparse._SubParsersAction) -> None:
    """One `llava-mini eval <name>` subcommand per benchmark."""
    for benchmark in BENCHMARKS.values():
        judged = " (LLM-judged)" if benchmark.uses_judge else ""
        parser = eval_commands.add_parser(
            benchmark.name, help=f"{benchmark.title}{judged}: {benchmark.layout}"
        )
        add_benchmark_arguments(parser)
        parser.set_defaults(handler=run_benchmark_command, benchmark=benchmark.name)


def _default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def run_benchmark_command(args: argparse.Namespace) -> int:
    from llava_mini.eval.judge import build_judge

    out = Path(args.out or Path("runs") / "eval" / args.benchmark)
    judge = build_judge(args.judge_url, args.judge_model, args.judge_api_key_env, out / "judgements.jsonl")

    def load() -> LlavaMini:
        import torch

        from llava_mini.inference.generate import LlavaMini

        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
        device = args.device or _default_device()
        assistant = LlavaMini.load(args.model, device=device, dtype=getattr(torch, args.dtype))
        if args.hd:
            assistant.set_resolution_ratio(2)
        if args.fps is not None:
            assistant.config.video_fps = args.fps
        if args.max_frames is not None:
            assistant.config.video_max_frames = args.max_frames
        return assistant

    payload = run_benchmark(
        args.benchmark,
        args.data,
        out,
        load,
        batch_size=args.batch_size,
        limit=args.limit,
        max_new_tokens=args.max_new_tokens,
        judge=judge,
        wait_timeout_s=args.wait_timeout,
        model_name=args.model or "llava-mini-tiny (shipped)",
        reading=args.reading,
    )
    if payload is not None:
        print(json.dumps(payload, indent=2, ensure_ascii=False) if args.json else markdown_report(payload))
    return 0
