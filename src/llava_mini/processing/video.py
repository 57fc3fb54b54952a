"""Video decoding with PyAV: 1 frame per second at segment midpoints, in bounded memory (sec. 4.2)."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image


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
    except av.FFmpegError as error:
        raise VideoDecodeError(f"{path} is not a readable video ({error})") from error
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path} has no video stream")
    return container


def _decoded_frames(path: Path) -> Iterator[av.VideoFrame]:
    container = _open(path)
    try:
        yield from container.decode(video=0)
    except av.FFmpegError as error:
        raise VideoDecodeError(f"{path} could not be decoded ({error})") from error
    finally:
        container.close()


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate and size; counts frames by decoding when the container does not say."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        width, height = stream.codec_context.width, stream.codec_context.height
        total = int(stream.frames or 0)
    finally:
        container.close()
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


def iter_frames_at(info: VideoInfo, wanted: Sequence[int], chunk_size: int = 32) -> Iterator[list[Image.Image]]:
    """The frames at sorted indices `wanted` of a probed video, `chunk_size` at a time (one decoding pass)."""
    copies = Counter(wanted)  # short clips can sample one frame twice
    chunk: list[Image.Image] = []
    emitted, last = 0, None
    for index, frame in enumerate(_decoded_frames(info.path)):
        if index in copies:
            last = frame.to_image()
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

    Probing happens here, so a missing, unreadable or empty file fails before any model work.
    """

    path: Path
    fps: float = 1.0
    max_frames: int | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.info = probe_video(self.path)
        self.frame_indices = sample_frame_indices(
            self.info.total_frames, self.info.average_fps, self.fps, self.max_frames
        )

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)

    def iter_frames(self, chunk_size: int = 32) -> Iterator[list[Image.Image]]:
        return iter_frames_at(self.info, self.frame_indices, chunk_size)  # probed once, at attach


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
