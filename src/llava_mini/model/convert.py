"""`llava-mini convert SRC DST`: the official release's checkpoint -> this project's layout.

The result is an ordinary llava-mini directory (config.json with `model_type: "llava_mini"`, safetensors
written by `save_pretrained`, tokenizer, image processor and processor settings) that `LlavaMini.load`,
`from_pretrained`, training and serving read like any other. See docs/release.md.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


def convert_release(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    dtype: str = "auto",
    vision_tower: str | None = None,
    assistant_header: bool = False,
) -> Path:
    """Load the release at `source` (directory or hub id) and write it to `destination` in our layout.

    dtype: "auto" keeps the stored precision (bfloat16 for the 8B release); the whole model passes through
    CPU memory once (about 19 GB for the 8B release in bfloat16).
    """
    from llava_mini.model.loading import load_options
    from llava_mini.model.release import load_release

    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise ValueError(f"{destination} exists and is not empty; choose a new output directory")
    model, processor = load_release(
        source, vision_tower=vision_tower, assistant_header=assistant_header, **load_options(dtype=dtype)
    )
    model.save_pretrained(destination, save_original_format=False)  # our weight names, not the release's
    processor.save_pretrained(destination)
    logger.info("wrote %s (%s)", destination, model.dtype)
    return destination


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="the release: a directory or hub id (ICTNLP/llava-mini-llama-3.1-8b)")
    parser.add_argument("destination", help="output directory (must be new or empty)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="precision of the written weights (auto: as stored in the release)",
    )
    parser.add_argument(
        "--vision-tower",
        default=None,
        help="directory or hub id of the CLIP tower: its config (head count included) always, its weights "
        "when the release's shards do not hold them (default: mm_vision_tower in its config.json)",
    )
    parser.add_argument(
        "--assistant-header",
        action="store_true",
        help="prompts end with the assistant header (the release's own prompts stop after the user turn)",
    )


def run_convert(args: argparse.Namespace) -> int:
    path = convert_release(
        args.source, args.destination, args.dtype, args.vision_tower, args.assistant_header
    )
    print(f"wrote {path}")
    return 0


__all__ = ["add_convert_arguments", "convert_release", "run_convert"]
