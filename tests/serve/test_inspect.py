"""POST /v1/inspect: the compressor's attention per picture and the token counts, next to the unchanged chat API."""

from __future__ import annotations

import base64
import io

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from llava_mini.analysis.compression import compressor_attention, medium_attention
from llava_mini.inference.generate import LlavaMini
from llava_mini.inference.random_model import write_random_model
from llava_mini.processing.video import write_video
from llava_mini.serve.app import ServerLimits, ServerState, create_app
from llava_mini.serve.media import MediaPolicy, load_request_medium

MODEL_ID = "llava-mini-inspect"


def image_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def make_client(directory) -> tuple[TestClient, LlavaMini]:
    assistant = LlavaMini.load(directory)
    state = ServerState(assistant, MODEL_ID, MediaPolicy(video_fps=1.0), ServerLimits(max_new_tokens=8))
    return TestClient(create_app(state)), assistant


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return make_client(write_random_model(tmp_path_factory.mktemp("model"), compressor_size=2))  # 4 queries


def picture() -> Image.Image:
    image = Image.new("RGB", (60, 40), "grey")
    image.paste((255, 0, 0), (5, 5, 25, 25))
    return image


def user(*parts: dict, text: str = "What is in the image?") -> dict:
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


def test_an_image_gives_one_map_per_query_and_the_chat_apis_prompt_length(served):
    client, assistant = served
    messages = [user({"type": "image_url", "image_url": {"url": image_url(picture())}})]
    response = client.post("/v1/inspect", json={"model": MODEL_ID, "messages": messages})
    assert response.status_code == 200, response.text
    body = response.json()
    config = assistant.config
    queries, side = config.compressor_size**2, config.patch_grid_side
    assert body["object"] == "inspection" and body["model"] == MODEL_ID
    (medium,) = body["media"]
    assert (medium["type"], medium["pictures"], medium["queries"], medium["grid"]) == ("image_url", 1, queries, side)
    assert body["vision_tokens"] == medium["vision_tokens"] == queries
    assert body["baseline_vision_tokens"] == medium["baseline_vision_tokens"] == side * side  # LLaVA-1.5: every patch
    (frame,) = medium["frames"]
    assert frame["picture"].startswith("data:image/jpeg;base64,")
    shown = Image.open(io.BytesIO(base64.b64decode(frame["picture"].split(",", 1)[1])))
    assert shown.size == (config.vision_config.image_size,) * 2  # the padded square the compressor reads
    maps = torch.tensor(frame["attention"])
    assert maps.shape == (queries, side * side)
    torch.testing.assert_close(maps.sum(1), torch.ones(queries), atol=1e-3, rtol=0)
    expected = compressor_attention(assistant, picture(), "What is in the image?").flatten(1)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)

    chat = client.post("/v1/chat/completions", json={"model": MODEL_ID, "messages": messages, "max_tokens": 2})
    assert chat.status_code == 200, chat.text
    assert body["prompt_tokens"] == chat.json()["usage"]["prompt_tokens"]


def test_a_video_gives_a_map_per_frame_and_a_conversation_counts_every_medium(served, tmp_path):
    client, assistant = served
    frames = [Image.new("RGB", (48, 48), colour) for colour in ("red", "green", "blue", "white")]
    write_video(tmp_path / "clip.mp4", frames, fps=2)
    video = "data:video/mp4;base64," + base64.b64encode((tmp_path / "clip.mp4").read_bytes()).decode()
    messages = [
        user({"type": "image_url", "image_url": {"url": image_url(picture())}}),
        {"role": "assistant", "content": "a red square"},
        user({"type": "video_url", "video_url": {"url": video}}, text="What happens?"),
    ]
    body = client.post("/v1/inspect", json={"model": MODEL_ID, "messages": messages}).json()
    image, clip = body["media"]
    assert image["type"] == "image_url" and clip["type"] == "video_url"
    assert clip["pictures"] == len(clip["frames"]) == 2  # 2 s at 1 frame per second
    per_picture = assistant.config.compressor_size**2
    assert clip["vision_tokens"] == 2 * per_picture
    assert body["vision_tokens"] == 3 * per_picture
    decoded, _ = load_request_medium(
        "video_url", video, MediaPolicy(video_fps=1.0), assistant.processor.image_processor
    )
    expected = medium_attention(assistant, decoded, "What happens?").flatten(2)  # (frames, K, g*g)
    torch.testing.assert_close(torch.tensor([f["attention"] for f in clip["frames"]]), expected, atol=1e-5, rtol=0)
    chat = client.post("/v1/chat/completions", json={"model": MODEL_ID, "messages": messages, "max_tokens": 2})
    assert body["prompt_tokens"] == chat.json()["usage"]["prompt_tokens"]


def test_text_only_and_bad_requests(served, tmp_path):
    client, _ = served
    text_only = client.post("/v1/inspect", json={"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]})
    assert text_only.status_code == 200 and text_only.json()["media"] == [] and text_only.json()["vision_tokens"] == 0

    broken = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"junk").decode()}}
    response = client.post("/v1/inspect", json={"model": MODEL_ID, "messages": [user(broken)]})
    assert response.status_code == 400 and "not a readable image" in response.json()["error"]["message"]

    response = client.post("/v1/inspect", json={"model": "other", "messages": [user()]})
    assert response.status_code == 404 and "does not exist" in response.json()["error"]["message"]

    baseline, _ = make_client(write_random_model(tmp_path / "baseline", compressor_type="none", prefusion_layers=0))
    good = {"type": "image_url", "image_url": {"url": image_url(picture())}}
    response = baseline.post("/v1/inspect", json={"model": MODEL_ID, "messages": [user(good)]})
    assert response.status_code == 400 and "no compressor" in response.json()["error"]["message"]


def test_the_page_and_its_files_are_served(served):
    client, _ = served
    page = client.get("/")
    assert page.status_code == 200 and "/static/page.js" in page.text
    for name in ("page.js", "page.css", "example-count.png", "example-motion.mp4"):
        assert client.get(f"/static/{name}").status_code == 200, name
    assert client.get("/static/%2e%2e/app.py").status_code == 404


def test_the_request_limits_of_the_chat_endpoint_hold_before_any_work(served):
    client, _ = served
    many = [{"role": "user", "content": "hi"}] * (ServerLimits().max_messages + 1)
    response = client.post("/v1/inspect", json={"model": MODEL_ID, "messages": many})
    assert response.status_code == 400 and response.json()["error"]["code"] == "max_messages"
