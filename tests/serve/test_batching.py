"""Request queueing and batching: concurrent requests answered in one batch, a bounded queue (HTTP 429)."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import pytest
from PIL import Image

from llava_mini.inference.generate import GenerationSettings, LlavaMini
from llava_mini.inference.random_model import write_random_model
from llava_mini.serve.app import ServerLimits, ServerState, create_app, serve_in_thread
from llava_mini.serve.batching import Batcher, QueueFull
from llava_mini.serve.media import MediaPolicy

MODEL_ID = "llava-mini-test"


@pytest.fixture(scope="module")
def assistant(tmp_path_factory) -> LlavaMini:
    return LlavaMini.load(write_random_model(tmp_path_factory.mktemp("model")))


def start(assistant: LlavaMini, **limits):
    state = ServerState(assistant, MODEL_ID, MediaPolicy(), ServerLimits(max_new_tokens=32, **limits))
    return state, serve_in_thread(create_app(state))


def data_url(colour: str, size: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# Prompts of different lengths, with and without an image, so that the batch is left-padded.
REQUESTS = [
    [{"role": "user", "content": "what colour is the square ?"}],
    [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url("red", (40, 30))}},
                {"type": "text", "text": "describe the image briefly ."},
            ],
        }
    ],
    [{"role": "user", "content": "how many circles are there ? which direction does the circle move ?"}],
    [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "is it"},
                {"type": "image_url", "image_url": {"url": data_url("blue", (24, 60))}},
            ],
        }
    ],
]


def body(messages: list[dict], **options) -> dict:
    return {"model": MODEL_ID, "messages": messages, "max_tokens": 12, "temperature": 0, **options}


async def post_all(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return await asyncio.gather(*(client.post("/v1/chat/completions", json=b) for b in bodies))


def test_a_concurrent_batch_answers_as_one_at_a_time(assistant):
    state, server = start(assistant, max_batch_size=4, batch_window_s=0.5)
    with server as url:
        alone = [httpx.post(url + "/v1/chat/completions", json=body(m), timeout=120).json() for m in REQUESTS]
        assert list(state.batcher.batch_sizes) == [1, 1, 1, 1]
        together = [r.json() for r in asyncio.run(post_all(url, [body(m) for m in REQUESTS]))]
    assert list(state.batcher.batch_sizes)[4:] == [4]
    for single, batched in zip(alone, together, strict=True):
        assert batched["choices"][0]["message"]["content"] == single["choices"][0]["message"]["content"]
        assert batched["choices"][0]["finish_reason"] == single["choices"][0]["finish_reason"]
        assert batched["usage"] == single["usage"]
    assert len({a["choices"][0]["message"]["content"] for a in alone}) > 1, "the prompts should differ"


def test_only_requests_with_equal_settings_share_a_batch_and_streams_run_alone(assistant):
    state, server = start(assistant, max_batch_size=8, batch_window_s=0.5)
    bodies = [
        body(REQUESTS[0]),
        body(REQUESTS[2]),
        body(REQUESTS[1], max_tokens=5),
        body(REQUESTS[3], stream=True),
    ]
    with server as url:
        responses = asyncio.run(post_all(url, bodies))
    assert [r.status_code for r in responses] == [200] * 4
    assert sorted(state.batcher.batch_sizes) == [1, 1, 2]
    assert responses[2].json()["usage"]["completion_tokens"] <= 5
    assert responses[3].text.rstrip().endswith("data: [DONE]")
    assert state.batcher.waiting == 0


def test_a_full_queue_answers_429_in_openai_format(assistant):
    state, server = start(assistant, max_queue=2, max_batch_size=8, batch_window_s=0.5)
    with server as url:
        responses = asyncio.run(post_all(url, [body(REQUESTS[0])] * 6))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 200, 429, 429, 429, 429]
        refused = next(r for r in responses if r.status_code == 429).json()["error"]
        assert refused["type"] == "rate_limit_error" and "limit 2" in refused["message"]
        assert httpx.get(url + "/health").json()["waiting"] == 0
        answered = httpx.post(url + "/v1/chat/completions", json=body(REQUESTS[0]), timeout=120)
        assert answered.status_code == 200, "the queue must drain once the batch is done"


def test_admission_is_bounded_and_released():
    batcher = Batcher(assistant=None, max_queue=2)  # admission needs no model
    batcher.admit()
    batcher.admit()
    with pytest.raises(QueueFull, match="limit 2"):
        batcher.admit()
    batcher.release()
    batcher.admit()
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(assistant=None, max_batch_size=0)


def test_a_bad_request_in_a_batch_fails_alone(assistant):
    settings = GenerationSettings(max_new_tokens=4)
    good = [{"role": "user", "content": "what colour is the square ?"}]
    bad = [{"role": "user", "content": "<image>\nwhat is it ?"}]  # a placeholder without its image

    async def run() -> list:
        batcher = Batcher(assistant, max_batch_size=4, window_s=0.2)
        jobs = [batcher.complete(m, [], settings) for m in (good, bad, good)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        await batcher.stop()
        return results, list(batcher.batch_sizes)

    (first, error, third), sizes = asyncio.run(run())
    assert isinstance(error, ValueError) and "placeholders" in str(error)
    assert first.text == third.text == assistant.complete_batch([good], [[]], settings)[0].text
    assert sizes == [3, 1, 1, 1]


def test_a_failed_stream_reports_its_error_and_the_worker_goes_on(assistant):
    settings = GenerationSettings(max_new_tokens=4)
    good = [{"role": "user", "content": "what colour is the square ?"}]
    bad = [{"role": "user", "content": "<image>\nwhat is it ?"}]

    async def run() -> tuple[str, str, str]:
        batcher = Batcher(assistant, window_s=0.0)
        with pytest.raises(ValueError, match="placeholders") as error:
            async for _ in batcher.stream(bad, [], settings):
                pass
        streamed = "".join([piece async for piece in batcher.stream(good, [], settings)])
        completion = await batcher.complete(good, [], settings)
        await batcher.stop()
        return str(error.value), streamed, completion.text

    _, streamed, text = asyncio.run(run())
    assert streamed.strip() == text
