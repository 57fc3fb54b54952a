"""Request media: size limits named before decoding, a per-request budget, every decoding failure a MediaError."""

from __future__ import annotations

import argparse
import io

import numpy as np
import pytest
import torch
from PIL import Image

from llava_mini.processing.image import LlavaMiniImageProcessor
from llava_mini.processing.video import write_video
from llava_mini.serve.media import (
    MediaBudget,
    MediaError,
    MediaPolicy,
    add_media_arguments,
    load_request_image,
    load_request_video,
    media_policy_from_args,
)

PROCESSOR = LlavaMiniImageProcessor(size=16)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, np.full((8, 48, 64, 3), 90, dtype=np.uint8), fps=4)
    return path.read_bytes()


def test_a_strip_is_refused_by_its_padded_square_and_its_side():
    with pytest.raises(MediaError, match="image_url: image of 20000x1 pixels exceeds the limit of 8192 pixels per side"):
        load_request_image(png(20_000, 1), MediaPolicy(), PROCESSOR)
    with pytest.raises(MediaError, match="image of 5000x1 pixels is padded to 5000x5000, over the limit of 16000000"):
        load_request_image(png(5_000, 1), MediaPolicy(), PROCESSOR)
    assert load_request_image(png(4_000, 1), MediaPolicy(), PROCESSOR).size == (4_000, 1)


def test_video_frames_are_limited_and_preprocessed_one_at_a_time(clip):
    with pytest.raises(MediaError, match="video_url: video frame of 64x48 pixels exceeds the limit of 1000 pixels"):
        load_request_video(clip, MediaPolicy(max_frame_pixels=1000), PROCESSOR)
    pixels = load_request_video(clip, MediaPolicy(video_fps=2.0), PROCESSOR)
    assert pixels.shape == (4, 1, 3, 16, 16) and pixels.dtype == torch.float32


def test_the_request_budget_counts_every_medium(clip):
    one_video = 4 * 64 * 48 + PROCESSOR.pixel_bytes(2)  # 2 s at 1 fps
    budget = MediaBudget(limit=one_video * 3 // 2)
    load_request_video(clip, MediaPolicy(), PROCESSOR, budget)
    assert budget.spent == one_video
    with pytest.raises(MediaError, match=r"video_url \(2 frames of 64x48\) needs about 0 MB .* limit of 0 MB per request"):
        load_request_video(clip, MediaPolicy(), PROCESSOR, budget)
    with pytest.raises(MediaError, match=r"image_url \(100x100\)"):
        load_request_image(png(100, 100), MediaPolicy(), PROCESSOR, MediaBudget(limit=1000))


@pytest.mark.parametrize(
    "data",
    [
        png(40, 30)[:60],  # truncated in the pixel data
        png(40, 30)[:8] + b"\xff" * 8 + png(40, 30)[16:],  # a broken IHDR chunk
        b"BM" + png(40, 30)[2:],  # a bitmap header, then PNG bytes
        b"GIF89a" + b"\xff\xff\xff\xff" + b"\x00" * 40,  # a GIF that declares 65535 x 65535
        b"\x00" * 10,
    ],
)
def test_broken_images_are_media_errors(data):
    with pytest.raises(MediaError, match="image_url"):
        PROCESSOR.preprocess_image(load_request_image(data, MediaPolicy(), PROCESSOR))


@pytest.mark.parametrize("cut", [0.0, 0.3, 0.7])
def test_broken_videos_are_media_errors_without_the_temporary_path(clip, cut):
    data = clip[: int(len(clip) * cut)] if cut else clip.replace(b"avc1", b"zzzz")
    with pytest.raises(MediaError, match="video_url") as raised:
        load_request_video(data, MediaPolicy(), PROCESSOR)
    assert "/tmp" not in str(raised.value)


def test_serve_options_set_the_limits_and_refuse_non_positive_ones():
    parser = argparse.ArgumentParser()
    add_media_arguments(parser)
    policy = media_policy_from_args(
        parser.parse_args(["--max-image-pixels", "100", "--max-frames", "3", "--max-request-media-mb", "2"]), 1.0
    )
    assert (policy.max_image_pixels, policy.max_frames, policy.max_request_media_bytes) == (100, 3, 2_000_000)
    with pytest.raises(ValueError, match="--max-frame-pixels must be > 0, got 0"):
        media_policy_from_args(parser.parse_args(["--max-frame-pixels", "0"]), 1.0)


def test_the_server_answers_oversized_and_broken_media_with_openai_400s(tmp_path):
    import base64

    from fastapi.testclient import TestClient

    from llava_mini.inference.generate import LlavaMini
    from llava_mini.inference.random_model import write_random_model
    from llava_mini.serve.app import ServerLimits, ServerState, create_app

    def body(kind: str, data: bytes) -> dict:
        url = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
        content = [{"type": kind, kind: {"url": url}}, {"type": "text", "text": "what ?"}]
        return {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": content}]}

    policy = MediaPolicy(max_request_media_bytes=30_000_000)
    state = ServerState(LlavaMini.load(write_random_model(tmp_path)), "m", policy, ServerLimits())
    cases = [
        (body("image_url", png(20_000, 1)), "image of 20000x1 pixels exceeds the limit of 8192 pixels per side"),
        (body("image_url", png(40, 30)[:60]), "image_url"),
        (body("video_url", png(3_000, 3_000)), "needs about 36 MB once decoded"),  # 3000 x 3000 as a 1-frame video
    ]
    with TestClient(create_app(state), raise_server_exceptions=False) as client:
        for request, words in cases:
            response = client.post("/v1/chat/completions", json=request)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert words in error["message"] and error["type"] == "invalid_request_error", error
