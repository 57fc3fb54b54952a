"""Video decoding with PyAV: 1 frame per second at segment midpoints, in bounded memory (sec. 4.2)."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import av
import numpy as np
from PIL import Image

from llava_mini.processing.image import (
    DEFAULT_MAX_FRAME_PIXELS,
    DEFAULT_MAX_SIDE,
    check_picture_size,
    describe_error,
)

T = TypeVar("T")

class VideoDecodeError(ValueError):
    """A video file is missing, unreadable, empty, or has no video stream."""


@dataclass
class VideoInfo:
    path: Path
    total_frames: int
    average_fps: float
    duration_s: float
    width: int
    height: int


def sample_frame_indices(
    total_frames: int, average_fps: float, fps: float = 1.0, max_frames: int | None = None
) -> list[int]:
    """Indices of the frames to keep: T = floor(total / average_fps * fps), clamped to [1, total].

    Frame i is the midpoint of segment i: (round(seg*i) + round(seg*(i+1))) // 2 with seg = (total-1)/T.
    A clip shorter than one sampling period gives one frame (the release gives zero and crashes).
    """
    if total_frames <= 0:
        raise ValueError(f"a video needs at least one frame, got total_frames={total_frames}")
    if average_fps <= 0 or fps <= 0:
        raise ValueError(f"frame rates must be positive (average_fps={average_fps}, fps={fps})")
    count = min(max(1, math.floor(total_frames / average_fps * fps)), total_frames)
    if max_frames is not None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        count = min(count, max_frames)
    segment = (total_frames - 1) / count
    return [(round(segment * i) + round(segment * (i + 1))) // 2 for i in range(count)]


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(f"video file not found: {path}")
    try:
        container = av.open(str(path))
    except Exception as error:  # FFmpeg errors, and undecodable metadata (UnicodeDecodeError, ...)
        raise VideoDecodeError(f"{path} is not a readable video ({describe_error(error)})") from error
    streams = container.streams.video
    if not streams or streams[0].codec_context is None:
        container.close()
        raise VideoDecodeError(f"{path} has no decodable video stream")
    return container


def _decoded_frames(path: Path) -> Iterator[av.VideoFrame]:
    container = _open(path)
    try:
        yield from container.decode(video=0)
    except Exception as error:  # FFmpeg errors, and the odd ValueError / MemoryError of a broken stream
        raise VideoDecodeError(f"{path} could not be decoded ({describe_error(error)})") from error
    finally:
        container.close()


def _declared_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream, rate: float) -> int:
    """The frame count the container states, or 0 when it states none or one its duration contradicts
    (a hostile file can declare billions of frames: each would become a placeholder in the prompt)."""
    declared = int(stream.frames or 0)
    if declared <= 0:
        return 0
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        return 0
    return declared if declared <= 1.5 * seconds * rate + 2 else 0


def probe_video(
    path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_FRAME_PIXELS, max_side: int = DEFAULT_MAX_SIDE
) -> VideoInfo:
    """Frame count, frame rate and size; counts frames by decoding when the container does not say.

    Frames over `max_pixels` (width * height) or `max_side` are refused here, before any is decoded.
    """
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        if not math.isfinite(rate) or rate <= 0:
            rate = 25.0
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        total = _declared_frames(container, stream, rate)
    except VideoDecodeError:
        raise
    except Exception as error:  # a stream whose header fields cannot be read
        raise VideoDecodeError(f"{path} has an unreadable video header ({describe_error(error)})") from error
    finally:
        container.close()
    if width and height:  # some containers only say when a frame is decoded: checked per frame then
        check_picture_size(width, height, max_pixels, max_side, what=f"{path}: video frame")
    if total <= 0:
        total = sum(1 for _ in _decoded_frames(path))
    if total <= 0:
        raise VideoDecodeError(f"{path} contains no frames")
    return VideoInfo(path, total, rate, total / rate, width, height)


def iter_video_frames(
    path: str | os.PathLike, fps: float = 1.0, max_frames: int | None = None, chunk_size: int = 32
) -> Iterator[list[Image.Image]]:
    """Sampled RGB frames in time order, `chunk_size` at a time: memory does not grow with the video."""
    info = probe_video(path)
    wanted = sample_frame_indices(info.total_frames, info.average_fps, fps, max_frames)
    yield from iter_frames_at(info, wanted, chunk_size)


def iter_frames_at(
    info: VideoInfo,
    wanted: Sequence[int],
    chunk_size: int = 32,
    transform: Callable[[Image.Image], T] | None = None,
    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> Iterator[list[T]]:
    """The frames at sorted indices `wanted` of a probed video, `chunk_size` at a time (one decoding pass).

    `transform` (e.g. resize and normalise) is applied to each frame as soon as it is decoded, so at most one
    full-size frame exists at a time; without it the chunks hold full-size RGB images. Every decoded frame is
    checked against `max_pixels` and `max_side` (a stream can change size after its header).
    """
    copies = Counter(wanted)  # short clips can sample one frame twice
    chunk: list = []
    emitted, last = 0, None
    for index, frame in enumerate(_decoded_frames(info.path)):
        if index in copies:
            check_picture_size(frame.width, frame.height, max_pixels, max_side, what=f"{info.path}: video frame")
            try:
                image = frame.to_image()
            except Exception as error:  # a pixel format that cannot be converted to RGB
                raise VideoDecodeError(f"{info.path}: frame {index} could not be converted ({describe_error(error)})") from error
            last = transform(image) if transform is not None else image
            del image
            for _ in range(copies[index]):
                chunk.append(last)
                emitted += 1
                if len(chunk) == chunk_size:
                    yield chunk
                    chunk = []
        if index >= wanted[-1]:
            break
    if last is None:
        raise VideoDecodeError(f"{info.path} contains no decodable frames")
    # A container can over-report its frame count: repeat the last decoded frame for the missing ones.
    chunk.extend([last] * (len(wanted) - emitted))
    while len(chunk) > chunk_size:
        yield chunk[:chunk_size]
        chunk = chunk[chunk_size:]
    if chunk:
        yield chunk


@dataclass
class VideoFile:
    """A video on disk whose sampled frames are decoded only when read (`iter_video_frames`).

    Probing happens here, so a missing, unreadable, empty or too large file fails before any model work.
    """

    path: Path
    fps: float = 1.0
    max_frames: int | None = None
    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS  # of one frame
    max_side: int = DEFAULT_MAX_SIDE

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.info = probe_video(self.path, self.max_pixels, self.max_side)
        self.frame_indices = sample_frame_indices(
            self.info.total_frames, self.info.average_fps, self.fps, self.max_frames
        )

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)

    def iter_frames(
        self, chunk_size: int = 32, transform: Callable[[Image.Image], T] | None = None
    ) -> Iterator[list[T]]:
        """Chunks of sampled frames (full-size RGB images, or `transform` of each, made as it is decoded)."""
        return iter_frames_at(  # probed once, at attach
            self.info, self.frame_indices, chunk_size, transform, self.max_pixels, self.max_side
        )


def read_video_frames(path: str | os.PathLike, fps: float = 1.0, max_frames: int | None = None) -> list[Image.Image]:
    """All sampled frames at once (see `iter_video_frames` for long videos)."""
    return [frame for chunk in iter_video_frames(path, fps, max_frames) for frame in chunk]


def write_video(path: str | os.PathLike, frames: Sequence[Image.Image] | np.ndarray, fps: float) -> None:
    """Write RGB frames (T, H, W, 3) uint8 or PIL images as an H.264 MP4 (even sizes are padded up)."""
    arrays = [np.asarray(frame.convert("RGB") if isinstance(frame, Image.Image) else frame) for frame in frames]
    if not arrays:
        raise ValueError("write_video needs at least one frame")
    height, width = arrays[0].shape[:2]
    even_height, even_width = height + height % 2, width + width % 2
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=round(fps))
            stream.options = {"crf": "18", "preset": "veryfast"}
        except (av.FFmpegError, ValueError):
            stream = container.add_stream("mpeg4", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = even_width, even_height, "yuv420p"
        for array in arrays:
            if array.shape[:2] != (height, width):
                raise ValueError(f"all frames must be {width}x{height}, got {array.shape[1]}x{array.shape[0]}")
            padded = np.pad(array, ((0, even_height - height), (0, even_width - width), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
