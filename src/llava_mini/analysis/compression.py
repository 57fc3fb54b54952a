"""Where the compressor looks: its cross-attention over the image as heatmaps (paper appendix F, Figure 12).

The model returns `compressor_attentions` (P, K, G): for each of the K = C*C learned queries, a
distribution over the G grid positions the compressor reads (the patch grid, or the stitched HD crops).
Each query's map is reshaped to its grid and drawn over the picture exactly as the model saw it (padded
to a square; for HD the padded crops tiled in their grid).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from llava_mini.analysis.plotting import new_figure, save_figure
from llava_mini.inference.generate import LlavaMini
from llava_mini.processing.image import LlavaMiniImageProcessor, expand_to_square, load_image
from llava_mini.processing.processor import Medium


def displayed_picture(
    picture: Image.Image | torch.Tensor, image_processor: LlavaMiniImageProcessor
) -> Image.Image:
    """The square picture whose grid the compressor reads: the padded image, or the padded HD crops tiled.

    `picture` is an image, or the pixel values (S, 3, size, size) of one video frame (its views as preprocessed).
    """
    background = image_processor.background
    side = image_processor.size
    if isinstance(picture, torch.Tensor):
        views = [image_processor.to_picture(view) for view in picture]
    else:
        views = [expand_to_square(view, background).resize((side, side)) for view in image_processor.views(picture)]
    ratio = image_processor.resolution_ratio
    if ratio <= 1:
        return views[-1]
    canvas = Image.new("RGB", (side * ratio, side * ratio), background)
    for index, crop in enumerate(views[:-1]):
        row, col = divmod(index, ratio)
        canvas.paste(crop, (col * side, row * side))
    return canvas


@torch.inference_mode()
def conversation_attention(assistant: LlavaMini, messages: Sequence[dict], media: Sequence[Medium]) -> torch.Tensor:
    """(P, K, g, g) attention of each compression query over the grid, for every picture of a conversation's
    media in order (an image is one picture, a video its sampled frames); each query's map sums to one."""
    if assistant.model.compressor is None:
        raise ValueError(
            "the model has no compressor (compressor_type='none'): every vision token reaches the LLM"
        )
    batch = assistant.prepare([list(messages)], [list(media)])
    output = assistant.model(**batch)
    attention = output.compressor_attentions  # (P, K, G)
    if attention is None:
        raise ValueError("the model returned no compressor_attentions")
    side = math.isqrt(attention.shape[-1])
    if side * side != attention.shape[-1]:
        raise ValueError(f"the compressor read {attention.shape[-1]} positions, not a square grid")
    return attention.float().cpu().reshape(attention.shape[0], attention.shape[1], side, side)


def medium_attention(assistant: LlavaMini, medium: Medium, question: str) -> torch.Tensor:
    """(P, K, g, g) for one medium asked about with `question` (P = 1 for an image, the frames of a video)."""
    return conversation_attention(assistant, assistant.question_messages(question, [medium]), [medium])


def compressor_attention(assistant: LlavaMini, image: Image.Image, question: str) -> torch.Tensor:
    """(K, g, g) attention of each compression query over the grid for one image (rows sum to one)."""
    return medium_attention(assistant, image, question)[0]


def plot_compression(
    picture: Image.Image, attention: torch.Tensor, path: str | Path, title: str = ""
) -> Path:
    """The picture, then one overlay per query (at most 64, in a square-ish grid); written to `path`."""
    queries = attention.shape[0]
    panels = queries + 1
    columns = min(panels, 9)
    rows = math.ceil(panels / columns)
    figure, axes = new_figure(rows, columns, figsize=(2.6 * columns, 2.6 * rows), squeeze=False)
    width, height = picture.size
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index == 0:
            axis.imshow(picture, extent=(0, width, height, 0))
            axis.set_title("input", fontsize=8)
        elif index <= queries:
            heat = attention[index - 1]
            axis.imshow(picture, extent=(0, width, height, 0))
            axis.imshow(
                (heat / heat.max().clamp_min(1e-12)).numpy(),
                cmap="jet",
                alpha=0.5,
                extent=(0, width, height, 0),
                interpolation="bilinear",
            )
            axis.set_title(f"query {index}" if queries > 1 else "compression attention", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)


def add_compression_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file")
    parser.add_argument(
        "--model", default=None, help="local directory or hub id (default: the shipped model)"
    )
    parser.add_argument(
        "--question", default="Describe the image briefly.", help="the prompt (pre-fusion reads it)"
    )
    parser.add_argument("--out", default="compression.png", help="output figure (.png, .pdf, .svg)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")


def run_compression(args: argparse.Namespace) -> int:
    assistant = LlavaMini.load(args.model, device=args.device)
    image = load_image(args.image)
    attention = compressor_attention(assistant, image, args.question)
    picture = displayed_picture(image, assistant.processor.image_processor)
    path = plot_compression(
        picture, attention, args.out, title=f"{Path(args.image).name}: {attention.shape[0]} queries"
    )
    peak = attention.flatten(1).max(1).values
    print(f"wrote {path}: {attention.shape[0]} queries over a {attention.shape[1]}x{attention.shape[2]} grid")
    print("largest weight per query: " + ", ".join(f"{float(value):.3f}" for value in peak))
    return 0
