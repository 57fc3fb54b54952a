"""Turn request media references (data URLs, allowed local files, optional http) into model media, safely."""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from llava_mini.processing.image import (
    DEFAULT_MAX_FRAME_PIXELS,
    LlavaMiniImageProcessor,
    check_image_size,
    describe_error,
)
from llava_mini.processing.processor import Medium
from llava_mini.processing.video import VideoDecodeError, VideoFile
from llava_mini.serve.http_fetch import FetchError, fetch


class MediaError(ValueError):
    """Bad media in a request; the message is safe to return to the client (HTTP 400)."""


@dataclass
class MediaPolicy:
    """What the operator allows: local files under `allowed_dir`, http(s) off unless `allow_http` (then
    public hosts only, and `http_allowed_hosts`), and how large media may be: an image's padded square, any
    side, a video frame, the decoded media of a request."""

    allowed_dir: Path | None = None
    allow_http: bool = False
    http_max_bytes: int = 20_000_000
    http_timeout_s: float = 10.0  # for the whole fetch, redirects included
    http_allowed_hosts: tuple[str, ...] = ()  # hosts fetched from even on private addresses (else public only)
    max_image_pixels: int = 16_000_000  # of an image padded to a square: 4000 x 4000
    max_image_side: int = 8192  # of an image or a video frame
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS  # of a video frame (4096 x 4096)
    max_frames: int = 64
    video_fps: float = 1.0
    max_request_media_bytes: int = 1_000_000_000  # pixel values and decoding buffers of one request's media


@dataclass
class MediaBudget:
    """What one request's media may cost once decoded; `charge` is called before each medium is decoded."""

    limit: int
    spent: int = 0

    def charge(self, nbytes: int, what: str) -> None:
        if self.spent + nbytes > self.limit:
            raise MediaError(
                f"{what} needs about {nbytes / 1e6:.0f} MB once decoded; with the request's other media "
                f"({self.spent / 1e6:.0f} MB) that exceeds the limit of {self.limit / 1e6:.0f} MB per request"
            )
        self.spent += nbytes


def read_reference(url: str, policy: MediaPolicy) -> bytes:
    """The bytes behind a data URL, an allowed local path (file:// or plain), or an allowed http(s) URL."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise MediaError("data URLs must be base64-encoded (data:<type>;base64,...)")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as error:
            raise MediaError(f"invalid base64 in data URL: {error}") from error
    if url.startswith(("http://", "https://")):
        if not policy.allow_http:
            raise MediaError("fetching media over http(s) is disabled on this server; send a data URL")
        try:
            return fetch(url, policy.http_max_bytes, policy.http_timeout_s, policy.http_allowed_hosts)
        except FetchError as error:
            raise MediaError(str(error)) from error
    path = Path(url.removeprefix("file://"))
    if policy.allowed_dir is None:
        raise MediaError("local file paths are disabled on this server; send a data URL")
    resolved = path.resolve()
    if not resolved.is_relative_to(policy.allowed_dir.resolve()):
        raise MediaError(f"{path} is outside the directory this server may read")
    if not resolved.is_file():
        raise MediaError(f"{path} does not exist")
    return resolved.read_bytes()


def load_request_image(
    data: bytes, policy: MediaPolicy, image_processor: LlavaMiniImageProcessor, budget: MediaBudget | None = None
) -> Image.Image:
    """Decoded RGB image; its size is checked from the header, before the pixels are decoded."""
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
    except Image.UnidentifiedImageError:
        raise MediaError(f"image_url is not a readable image ({len(data)} bytes in no format Pillow reads)") from None
    except Exception as error:  # Pillow's plugins raise SyntaxError, struct.error, DecompressionBombError, ...
        raise MediaError(f"image_url is not a readable image ({describe_error(error)})") from error
    try:
        check_image_size(width, height, policy.max_image_pixels, policy.max_image_side)
    except ValueError as error:
        raise MediaError(f"image_url: {error}") from None
    if budget is not None:  # the RGB image, its padded square, and its pixel values
        side = max(width, height)
        budget.charge(3 * (width * height + side * side) + image_processor.pixel_bytes(), f"image_url ({width}x{height})")
    try:
        return image.convert("RGB")
    except Exception as error:  # truncated or corrupt data, MemoryError: the client's image cannot be used
        raise MediaError(f"image_url could not be decoded ({describe_error(error)})") from error


def load_request_video(
    data: bytes, policy: MediaPolicy, image_processor: LlavaMiniImageProcessor, budget: MediaBudget | None = None
) -> torch.Tensor:
    """Pixel values (T, S, 3, H, W): each sampled frame is preprocessed as soon as it is decoded, so at most one
    full-size frame exists at a time; the frame size is checked before decoding, and the cost against `budget`."""
    with tempfile.NamedTemporaryFile(suffix=".video") as handle:
        handle.write(data)
        handle.flush()
        try:
            video = VideoFile(
                Path(handle.name), policy.video_fps, policy.max_frames, policy.max_frame_pixels, policy.max_image_side
            )
            info = video.info
            if budget is not None:
                budget.charge(
                    4 * info.width * info.height + image_processor.pixel_bytes(video.num_frames),
                    f"video_url ({video.num_frames} frame{'s' if video.num_frames != 1 else ''} of {info.width}x{info.height})",
                )
            chunks = [torch.stack(chunk) for chunk in video.iter_frames(transform=image_processor.preprocess_frame)]
        except (VideoDecodeError, ValueError) as error:  # PictureTooLarge is a ValueError
            message = str(error).replace(handle.name, "video_url")
            raise MediaError(message if message.startswith("video_url") else f"video_url: {message}") from None
    return torch.cat(chunks)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_request_medium(
    kind: str,
    data: bytes,
    policy: MediaPolicy,
    image_processor: LlavaMiniImageProcessor,
    budget: MediaBudget | None = None,
) -> Medium:
    """The medium of an `image_url` (a PIL image) or `video_url` part (its pixel values) from its bytes."""
    if kind == "image_url":
        return load_request_image(data, policy, image_processor, budget)
    return load_request_video(data, policy, image_processor, budget)


def load_request_medium(
    kind: str,
    url: str,
    policy: MediaPolicy,
    image_processor: LlavaMiniImageProcessor,
    budget: MediaBudget | None = None,
) -> tuple[Medium, str]:
    """(medium, sha256 of its bytes) for an `image_url` or `video_url` part."""
    data = read_reference(url, policy)
    return decode_request_medium(kind, data, policy, image_processor, budget), content_hash(data)


def add_media_arguments(parser: argparse.ArgumentParser) -> None:
    """`llava-mini serve` options for where media may come from and how large it may be (defaults: `MediaPolicy`);
    `media_policy_from_args` reads them."""
    defaults = MediaPolicy()
    parser.add_argument("--allowed-media-dir", default=None, help="local files clients may name (default: none)")
    parser.add_argument(
        "--allow-http", action="store_true", help="let the server fetch http(s) media URLs from public hosts"
    )
    parser.add_argument(
        "--allow-http-host",
        action="append",
        default=[],
        metavar="HOST",
        help="with --allow-http, a host on a private network media may also come from (repeatable)",
    )
    parser.add_argument(
        "--max-image-pixels", type=int, default=defaults.max_image_pixels,
        help="pixels of an image once padded to a square (max(width, height) ** 2)",
    )
    parser.add_argument("--max-image-side", type=int, default=defaults.max_image_side, help="pixels per side")
    parser.add_argument(
        "--max-frame-pixels", type=int, default=defaults.max_frame_pixels, help="width x height of a video frame"
    )
    parser.add_argument("--max-frames", type=int, default=defaults.max_frames, help="sampled frames per video")
    parser.add_argument(
        "--max-request-media-mb", type=float, default=defaults.max_request_media_bytes / 1e6,
        help="decoded media (pixel values, decoding buffers) of one request, in MB",
    )


def media_policy_from_args(args: argparse.Namespace, video_fps: float) -> MediaPolicy:
    """The `MediaPolicy` of `llava-mini serve`'s options; non-positive limits are refused by name."""
    limits = {
        "--max-image-pixels": args.max_image_pixels,
        "--max-image-side": args.max_image_side,
        "--max-frame-pixels": args.max_frame_pixels,
        "--max-frames": args.max_frames,
        "--max-request-media-mb": args.max_request_media_mb,
    }
    for option, value in limits.items():
        if value <= 0:
            raise ValueError(f"{option} must be > 0, got {value}")
    return MediaPolicy(
        allowed_dir=Path(args.allowed_media_dir) if args.allowed_media_dir else None,
        allow_http=args.allow_http,
        http_allowed_hosts=tuple(args.allow_http_host),
        max_image_pixels=args.max_image_pixels,
        max_image_side=args.max_image_side,
        max_frame_pixels=args.max_frame_pixels,
        max_frames=args.max_frames,
        video_fps=video_fps,
        max_request_media_bytes=int(args.max_request_media_mb * 1e6),
    )
