"""Video decoding and frame sampling."""

from __future__ import annotations

import numpy as np
import pytest

from llava_mini.processing.video import (
    VideoDecodeError,
    iter_video_frames,
    probe_video,
    read_video_frames,
    sample_frame_indices,
    write_video,
)
from tests.conftest import SHARED_MEDIA


def test_one_frame_per_second_at_segment_midpoints():
    # 10 s at 30 fps: 10 segments of 29.9 frames, midpoints.
    indices = sample_frame_indices(300, 30.0)
    assert len(indices) == 10
    assert indices[:3] == [15, 45, 75] and indices[-1] == 284
    assert sample_frame_indices(8, 4.0) == [2, 5]
    assert sample_frame_indices(300, 30.0, fps=2.0)[:2] == [7, 22]


def test_sub_second_clips_give_one_frame_and_limits_apply():
    assert sample_frame_indices(10, 30.0) == [4]
    assert sample_frame_indices(1, 30.0) == [0]
    assert len(sample_frame_indices(3000, 30.0, max_frames=7)) == 7
    with pytest.raises(ValueError, match="at least one frame"):
        sample_frame_indices(0, 30.0)


@pytest.fixture
def clip(tmp_path):
    frames = np.zeros((12, 16, 24, 3), dtype=np.uint8)
    for i in range(12):
        frames[i, :, :, 0] = i * 20  # red grows over time
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=4)
    return path


def test_write_and_probe_round_trip(clip):
    info = probe_video(clip)
    assert (info.total_frames, info.average_fps, info.width, info.height) == (12, 4.0, 24, 16)
    frames = read_video_frames(clip)
    assert len(frames) == 3  # 3 seconds
    reds = [np.asarray(f)[..., 0].mean() for f in frames]
    assert reds == sorted(reds)  # time order


def test_chunked_iteration_equals_one_shot_decoding(clip):
    whole = read_video_frames(clip, fps=4)
    chunks = list(iter_video_frames(clip, fps=4, chunk_size=5))
    assert [len(c) for c in chunks] == [5, 5, 2]  # 12 samples; frame 6 is sampled twice
    flat = [f for chunk in chunks for f in chunk]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(flat, whole, strict=True))


def test_clear_errors(tmp_path):
    with pytest.raises(VideoDecodeError, match="not found"):
        probe_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(VideoDecodeError, match="junk.mp4"):
        read_video_frames(junk)


def test_decodes_the_real_clip():
    path = SHARED_MEDIA / "safari.mp4"
    if not path.is_file():
        pytest.skip("shared media not present")
    info = probe_video(path)
    frames = read_video_frames(path)
    assert len(frames) == int(info.total_frames / info.average_fps)
    assert frames[0].size == (info.width, info.height)
