"""Turn request media references (data URLs, allowed local files, optional http) into model media, safely."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from llava_mini.processing.image import load_image
from llava_mini.processing.processor import Medium, Video
from llava_mini.processing.video import VideoDecodeError, read_video_frames
from llava_mini.serve.http_fetch import FetchError, fetch


class MediaError(ValueError):
    """Bad media in a request; the message is safe to return to the client (HTTP 400)."""


@dataclass
class MediaPolicy:
    """What the operator allows: local files under `allowed_dir`, http(s) off unless `allow_http` (then
    public hosts only, and `http_allowed_hosts`)."""

    allowed_dir: Path | None = None
    allow_http: bool = False
    http_max_bytes: int = 20_000_000
    http_timeout_s: float = 10.0  # for the whole fetch, redirects included
    http_allowed_hosts: tuple[str, ...] = ()  # hosts fetched from even on private addresses (else public only)
    max_image_pixels: int = 16_000_000
    max_frames: int = 64
    video_fps: float = 1.0


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


def load_request_image(data: bytes, policy: MediaPolicy) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Image.UnidentifiedImageError:
        raise MediaError(f"image_url is not a readable image ({len(data)} bytes in no format Pillow reads)") from None
    except (OSError, Image.DecompressionBombError) as error:
        raise MediaError(f"image_url is not a readable image ({error})") from error
    if width * height > policy.max_image_pixels:
        raise MediaError(f"image of {width}x{height} pixels exceeds the limit of {policy.max_image_pixels} pixels")
    try:
        return load_image(Image.open(io.BytesIO(data)), max_pixels=policy.max_image_pixels)
    except (OSError, ValueError) as error:
        raise MediaError(f"image_url could not be decoded ({error})") from error


def load_request_video(data: bytes, policy: MediaPolicy) -> Video:
    with tempfile.NamedTemporaryFile(suffix=".video") as handle:
        handle.write(data)
        handle.flush()
        try:
            frames = read_video_frames(handle.name, fps=policy.video_fps, max_frames=policy.max_frames)
        except VideoDecodeError as error:
            raise MediaError("video_url is not a readable video") from error
    return Video(frames)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_request_medium(kind: str, url: str, policy: MediaPolicy) -> tuple[Medium, str]:
    """(medium, sha256 of its bytes) for an `image_url` or `video_url` part."""
    data = read_reference(url, policy)
    medium = load_request_image(data, policy) if kind == "image_url" else load_request_video(data, policy)
    return medium, content_hash(data)
