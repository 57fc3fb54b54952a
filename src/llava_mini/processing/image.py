"""Image preprocessing: pad to square with the mean colour, HD crops, CLIP normalisation (sec. 4.2)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from llava_mini.model.configuration import views_per_picture

logger = logging.getLogger(__name__)

IMAGE_PROCESSOR_CONFIG_NAME = "preprocessor_config.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MAX_PIXELS = 64_000_000  # of the padded square: an 8000 x 8000 picture
DEFAULT_MAX_SIDE = 16_384
DEFAULT_MAX_FRAME_PIXELS = 4096 * 4096  # a video frame (any 4K); 8K is refused
RELEASE_FRAME_SIZE = 336  # the release resizes every video frame to 336 x 336 (eval/run_llava_mini.py)
FRAME_RESIZE_MODES = ("pillow", "release")


class PictureTooLarge(ValueError):
    """A picture or video frame over a size limit; the message names the size and the limit."""


def check_picture_size(width: int, height: int, max_pixels: int, max_side: int, what: str = "image") -> None:
    """Raise `PictureTooLarge` when a side exceeds `max_side` or width * height exceeds `max_pixels`."""
    if width < 1 or height < 1:
        raise ValueError(f"{what} of {width}x{height} pixels has no pixels")
    if max(width, height) > max_side:
        raise PictureTooLarge(f"{what} of {width}x{height} pixels exceeds the limit of {max_side} pixels per side")
    if width * height > max_pixels:
        raise PictureTooLarge(f"{what} of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")


def check_image_size(
    width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int = DEFAULT_MAX_SIDE
) -> None:
    """An image is padded to a square before it is resized, so its cost is the square's: max(w, h) ** 2 pixels."""
    side = max(width, height)
    check_picture_size(width, height, max_side=max_side, max_pixels=max_pixels, what="image")
    if side * side > max_pixels:
        raise PictureTooLarge(
            f"image of {width}x{height} pixels is padded to {side}x{side}, over the limit of {max_pixels} pixels"
        )


def load_image(
    source: str | os.PathLike | Image.Image,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> Image.Image:
    """Open an image as RGB; errors name the file. Refuses, before decoding, images whose padded square
    exceeds `max_pixels` or whose side exceeds `max_side` (decompression bombs, 20000 x 1 strips)."""
    name = str(source) if not isinstance(source, Image.Image) else getattr(source, "filename", "") or "image"
    if isinstance(source, Image.Image):
        image = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        try:
            image = Image.open(path)
        except Exception as error:  # Pillow's plugins raise SyntaxError, struct.error, ... on broken headers
            raise ValueError(f"{path} is not a readable image ({describe_error(error)})") from error
    width, height = image.size
    try:
        check_image_size(width, height, max_pixels, max_side)
    except ValueError as error:
        raise type(error)(f"{name}: {error}") from None
    try:
        return image.convert("RGB")
    except Exception as error:  # truncated data, unsupported modes, MemoryError: the picture cannot be used
        raise ValueError(f"{name} could not be decoded ({describe_error(error)})") from error


def describe_error(error: BaseException) -> str:
    """An exception as one short line: its type and its first 200 characters of message."""
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def expand_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Pad to a centred square with `background` (LLaVA's "pad" aspect mode)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def split_into_crops(image: Image.Image, ratio: int) -> list[Image.Image]:
    """ratio x ratio equal crops, row-major, integer block sizes; ratio 1 gives no crops."""
    if ratio <= 1:
        return []
    width, height = image.size
    block_width, block_height = width // ratio, height // ratio
    return [
        image.crop((col * block_width, row * block_height, (col + 1) * block_width, (row + 1) * block_height))
        for row in range(ratio)
        for col in range(ratio)
    ]


def resize_frame_like_release(frame: Image.Image, size: int = RELEASE_FRAME_SIZE) -> Image.Image:
    """A video frame resized to size x size as the release does: `torch.nn.functional.interpolate` in its
    default nearest mode, which picks other source pixels than Pillow's NEAREST."""
    pixels = torch.from_numpy(np.array(frame.convert("RGB"))).permute(2, 0, 1).unsqueeze(0).float()
    resized = F.interpolate(pixels, size=(size, size))  # (1, 3, size, size)
    return Image.fromarray(resized[0].permute(1, 2, 0).to(torch.uint8).numpy())


@dataclass
class LlavaMiniImageProcessor:
    """Pictures -> normalised tensors of shape (S, 3, size, size), S = 1 or ratio*ratio crops + the global view."""

    size: int = 336
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    resolution_ratio: int = 1
    # Video frames: "pillow" resizes each view straight to `size` with Pillow's NEAREST (this project's
    # models); "release" follows the released code: the frame to 336 x 336 with torch's nearest, the HD
    # crops cut from that, every view then resized to `size` with bicubic (as its CLIP processor does).
    frame_resize: str = "pillow"

    max_pixels: int = DEFAULT_MAX_PIXELS  # of an image's padded square
    max_side: int = DEFAULT_MAX_SIDE  # of an image or a video frame
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS  # of a video frame

    def __post_init__(self) -> None:
        if self.frame_resize not in FRAME_RESIZE_MODES:
            raise ValueError(f"frame_resize must be one of {FRAME_RESIZE_MODES}, got {self.frame_resize!r}")

    @property
    def background(self) -> tuple[int, int, int]:
        return tuple(int(m * 255) for m in self.image_mean)

    def normalise(self, image: Image.Image, resample: Image.Resampling) -> torch.Tensor:
        """(H, W) RGB image -> (3, size, size) float tensor with CLIP mean/std."""
        resized = image.convert("RGB").resize((self.size, self.size), resample)
        array = np.asarray(resized, dtype=np.float32) / 255.0
        array = (array - np.array(self.image_mean, dtype=np.float32)) / np.array(self.image_std, dtype=np.float32)
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

    def to_picture(self, view: torch.Tensor) -> Image.Image:
        """(3, size, size) normalised pixel values -> the RGB picture they came from (inverse of `normalise`)."""
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        array = ((view.float().cpu() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
        return Image.fromarray(array.permute(1, 2, 0).numpy(), "RGB")

    @property
    def views_per_picture(self) -> int:
        """S: 1, or ratio*ratio crops plus the global view."""
        return views_per_picture(self.resolution_ratio)

    def views(self, image: Image.Image) -> list[Image.Image]:
        """The crops (unpadded source, row-major) then the whole image, as the release orders them."""
        return split_into_crops(image, self.resolution_ratio) + [image]

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        """An image -> (S, 3, size, size); each view padded to a square with the mean colour."""
        image = load_image(image, self.max_pixels, self.max_side)
        padded = [expand_to_square(view, self.background) for view in self.views(image)]
        return torch.stack([self.normalise(view, Image.Resampling.BICUBIC) for view in padded])

    def preprocess_frame(self, frame: Image.Image) -> torch.Tensor:
        """One video frame -> (S, 3, size, size); no padding; resized as `frame_resize` says."""
        resample = Image.Resampling.NEAREST
        if self.frame_resize == "release":
            frame = resize_frame_like_release(frame)
            resample = Image.Resampling.BICUBIC
        return torch.stack([self.normalise(view, resample) for view in self.views(frame)])

    def preprocess_frames(self, frames: Sequence[Image.Image]) -> torch.Tensor:
        """Video frames -> (T, S, 3, size, size) (`preprocess_frame` each)."""
        if not frames:
            raise ValueError("a video needs at least one frame")
        return torch.stack([self.preprocess_frame(frame) for frame in frames])

    def pixel_bytes(self, pictures: int = 1) -> int:
        """Bytes of the float32 pixel values of `pictures` pictures: P * S * 3 * size * size * 4."""
        return pictures * self.views_per_picture * 3 * self.size * self.size * 4

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Several images -> (P, S, 3, size, size)."""
        return torch.stack([self.preprocess_image(image) for image in images])

    def to_dict(self) -> dict:
        return {"image_processor_type": type(self).__name__, **asdict(self)}

    @classmethod
    def from_dict(cls, settings: dict) -> LlavaMiniImageProcessor:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known - {"image_processor_type"})
        if unknown:
            logger.warning("ignoring unknown image processor settings: %s", ", ".join(unknown))
        values = {key: value for key, value in settings.items() if key in known}
        for key in ("image_mean", "image_std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / IMAGE_PROCESSOR_CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> LlavaMiniImageProcessor:
        path = Path(directory) / IMAGE_PROCESSOR_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        return cls.from_dict(json.loads(path.read_text()))
