"""The OpenAI-compatible server on loopback, driven by the official `openai` client."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import httpx
import numpy as np
import openai
import pytest
import uvicorn
from PIL import Image

from llava_mini.inference.generate import LlavaMini
from llava_mini.inference.random_model import write_random_model
from llava_mini.processing.video import write_video
from llava_mini.serve import app as serve_app
from llava_mini.serve.app import ServerLimits, ServerState, add_serve_arguments, build_state, create_app
from llava_mini.serve.media import MediaPolicy

MODEL_ID = "llava-mini-test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = write_random_model(tmp_path_factory.mktemp("model"))
    allowed = tmp_path_factory.mktemp("allowed")
    Image.new("RGB", (40, 40), "red").save(allowed / "red.png")
    state = ServerState(
        LlavaMini.load(directory), MODEL_ID, MediaPolicy(allowed_dir=allowed, max_image_pixels=1_000_000),
        ServerLimits(max_body_bytes=2_000_000, max_new_tokens=32, max_media=2),
    )
    port = free_port()
    config = uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not instance.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", allowed
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_message(url: str, text: str = "what colour is the square ?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}]


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    assert httpx.get(server[0] + "/health").json()["status"] == "ok"


def test_plain_text_and_image_by_data_url(server, client):
    reply = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hello"}], max_tokens=4)
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens <= 4
    image = data_url(Image.new("RGB", (50, 30), "blue"))
    first = client.chat.completions.create(model=MODEL_ID, messages=image_message(image), max_tokens=5, temperature=0)
    hits = httpx.get(server[0] + "/health").json()["vision_cache"]["hits"]
    again = client.chat.completions.create(model=MODEL_ID, messages=image_message(image), max_tokens=5, temperature=0)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert httpx.get(server[0] + "/health").json()["vision_cache"]["hits"] == hits + 1  # the tower was skipped
    assert first.usage.prompt_tokens > 10


def test_streaming_matches_the_plain_answer(client):
    image = data_url(Image.new("RGB", (32, 32), "green"))
    plain = client.chat.completions.create(model=MODEL_ID, messages=image_message(image), max_tokens=6)
    stream = client.chat.completions.create(model=MODEL_ID, messages=image_message(image), max_tokens=6, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text.strip() == plain.choices[0].message.content


def test_video_by_data_url_and_allowed_local_file(server, client, tmp_path):
    write_video(tmp_path / "clip.mp4", np.zeros((8, 32, 32, 3), dtype=np.uint8), fps=4)
    url = "data:video/mp4;base64," + base64.b64encode((tmp_path / "clip.mp4").read_bytes()).decode()
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "what happens ?"}]}]
    reply = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=3)
    assert reply.usage.prompt_tokens > 0
    local = client.chat.completions.create(model=MODEL_ID, messages=image_message(str(server[1] / "red.png")), max_tokens=3)
    assert local.choices[0].message.content is not None


@pytest.mark.parametrize(
    "messages, status, words",
    [
        (image_message("/etc/passwd"), 400, "outside the directory"),
        (image_message("http://127.0.0.1:9/x.png"), 400, "disabled"),
        (image_message("data:image/png;base64,!!!"), 400, "base64"),
        (image_message("data:image/png;base64," + base64.b64encode(b"not an image").decode()), 400, "not a readable image (12 bytes"),
        ([{"role": "assistant", "content": "hi"}], 400, "last message"),
    ],
)
def test_bad_media_and_messages_are_4xx_with_a_clear_message(client, messages, status, words):
    with pytest.raises(openai.APIStatusError) as error:
        client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=3)
    assert error.value.status_code == status and words in str(error.value)


def test_limits_are_named(server, client):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="limit of 32"):
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "x"}], max_tokens=100)
    big = data_url(Image.new("RGB", (1200, 1000)))
    with pytest.raises(openai.BadRequestError, match="limit of 1000000 pixels"):
        client.chat.completions.create(model=MODEL_ID, messages=image_message(big), max_tokens=3)
    with pytest.raises(openai.BadRequestError, match="over the limit of 4096"):
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "red " * 5000}], max_tokens=3)
    with pytest.raises(openai.BadRequestError, match="over the limit of 4096"):
        stream = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": "red " * 5000}], max_tokens=3, stream=True
        )
        list(stream)
    three = [{"type": "image_url", "image_url": {"url": data_url(Image.new("RGB", (8, 8)))}}] * 3
    with pytest.raises(openai.BadRequestError, match="more than 2 media"):
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": three}], max_tokens=3)
    response = httpx.post(server[0] + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    response = httpx.post(server[0] + "/v1/chat/completions", content=b"x" * 2_100_000, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit" in response.json()["error"]["message"]


def test_the_web_page_is_served(server):
    page = httpx.get(server[0] + "/")
    assert page.status_code == 200 and "/static/page.js" in page.text
    assert "/v1/chat/completions" in httpx.get(server[0] + "/static/page.js").text


def test_serve_options_set_the_server_limits(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    model = write_random_model(tmp_path / "model")
    args = parser.parse_args(
        ["--model", str(model), "--max-queue", "3", "--batch-window-ms", "20", "--max-media", "2", "--rate-limit", "5",
         "--client-cpu-per-s", "0.2", "--client-bytes-per-s", "1e6", "--refusal-delay-s", "0.5"]
    )
    limits = build_state(args).limits
    assert (limits.max_queue, limits.batch_window_s, limits.max_media, limits.rate_limit) == (3, 0.02, 2, 5.0)
    assert (limits.client_cpu_per_s, limits.client_bytes_per_s, limits.refusal_delay_s) == (0.2, 1e6, 0.5)
    assert limits.max_prompt_tokens == ServerLimits().max_prompt_tokens  # untouched options keep their defaults


def test_a_medium_sent_again_is_found_in_the_cache_before_it_is_decoded(tmp_path, monkeypatch):
    state = ServerState(LlavaMini.load(write_random_model(tmp_path / "model")), MODEL_ID, MediaPolicy(), ServerLimits())
    decoded, decode = [], serve_app.decode_request_medium

    def counted(kind, *args, **kwargs):
        decoded.append(kind)
        return decode(kind, *args, **kwargs)

    monkeypatch.setattr(serve_app, "decode_request_medium", counted)
    url = data_url(Image.new("RGB", (30, 20), "blue"))
    first, again = state.cached_medium("image_url", url), state.cached_medium("image_url", url)
    assert again is first and decoded == ["image_url"]  # the second one cost its hash only
    state.cached_medium("image_url", data_url(Image.new("RGB", (30, 20), "red")))
    assert decoded == ["image_url", "image_url"]


def test_the_request_body_is_in_the_openapi_schema(server):
    schema = httpx.get(server[0] + "/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/inspect"):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert {"model", "messages"} <= set(body["required"])
        assert body["properties"]["messages"]["items"]["properties"]["role"]["enum"] == ["system", "user", "assistant"]
