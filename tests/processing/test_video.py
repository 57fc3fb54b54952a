"""Video decoding and frame sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llava_mini.processing.image import LlavaMiniImageProcessor, PictureTooLarge
from llava_mini.processing.video import (
    VideoDecodeError,
    VideoFile,
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


def test_frames_over_the_resolution_limit_are_refused_before_decoding(clip):
    with pytest.raises(PictureTooLarge, match=r"clip.mp4: video frame of 24x16 pixels exceeds the limit of 300 pixels"):
        VideoFile(clip, max_pixels=300)
    with pytest.raises(PictureTooLarge, match="limit of 20 pixels per side"):
        probe_video(clip, max_side=20)
    assert VideoFile(clip, max_pixels=24 * 16).num_frames == 3


def test_frames_are_preprocessed_as_they_are_decoded(clip):
    processor = LlavaMiniImageProcessor(size=8)
    seen = []

    def preprocess(frame):
        seen.append(frame.size)
        return processor.preprocess_frame(frame)

    video = VideoFile(clip, fps=4)
    chunks = list(video.iter_frames(chunk_size=5, transform=preprocess))
    assert [len(chunk) for chunk in chunks] == [5, 5, 2] and len(seen) == 11  # frame 6 is sampled twice
    torch.testing.assert_close(
        torch.stack([pixels for chunk in chunks for pixels in chunk]),
        processor.preprocess_frames(read_video_frames(clip, fps=4)),
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda data: data[: len(data) // 3],  # truncated
        lambda data: data[:40] + bytes(b ^ 0xFF for b in data[40:400]) + data[400:],  # flipped bytes
        lambda data: b"RIFF" + data[4:],  # another container's magic
        lambda data: b"\x00" * len(data),
    ],
)
def test_corrupt_videos_are_decode_errors_naming_the_file(clip, tmp_path, mutate):
    path = tmp_path / "broken.mp4"
    path.write_bytes(mutate(clip.read_bytes()))
    try:
        frames = read_video_frames(path)
    except VideoDecodeError as error:
        assert "broken.mp4" in str(error)
    else:  # a mutation FFmpeg tolerates still decodes to whole frames
        assert frames and all(frame.size == (24, 16) for frame in frames)


def test_a_stream_without_a_decoder_is_named(clip, tmp_path):
    path = tmp_path / "unknown-codec.mp4"
    path.write_bytes(clip.read_bytes().replace(b"avc1", b"zzzz"))  # PyAV gives it no codec context
    with pytest.raises(VideoDecodeError, match="unknown-codec.mp4 has no decodable video stream"):
        VideoFile(path)
