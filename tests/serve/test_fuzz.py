"""Property-based fuzzing from the server's own OpenAPI schema (schemathesis): bad input is 4xx, never 5xx.

Requests that fit the schema and requests that break it go to a live server on loopback; every answer must
come back within a timeout, never be a server error, and errors must use OpenAI's error format.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llava_mini.inference.generate import LlavaMini
from llava_mini.inference.random_model import write_random_model
from llava_mini.serve.app import ServerLimits, ServerState, create_app, serve_in_thread
from llava_mini.serve.media import MediaPolicy

MODEL_ID = "llava-mini-fuzz"
EXAMPLES = 60  # per generation mode; the whole file runs in well under a minute on one core
TIMEOUT_S = 20.0  # a request slower than this counts as a hang


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    assistant = LlavaMini.load(write_random_model(tmp_path_factory.mktemp("model")))
    limits = ServerLimits(max_new_tokens=6, max_body_bytes=200_000, max_queue=4)
    app = create_app(ServerState(assistant, MODEL_ID, MediaPolicy(), limits))
    with serve_in_thread(app) as url:
        yield url, schemathesis.openapi.from_dict(app.openapi())


def check_response(case, response) -> None:
    where = f"{case.method} {case.path} body={case.body!r:.300}"
    assert response.status_code < 500, f"{response.status_code} for {where}: {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json().get("error")
        assert isinstance(error, dict) and error.get("message"), (
            f"not an OpenAI error for {where}: {response.text}"
        )


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_server_errors_and_no_hangs(served, mode):
    url, schema = served
    operations = schema.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operations, within_limit=st.booleans())
    def run(case, within_limit: bool) -> None:
        body = case.body
        if mode == "positive" and isinstance(body, dict):
            body["model"] = MODEL_ID  # reach generation, not only the unknown-model answer
            if within_limit and isinstance(body.get("max_tokens"), int):
                body["max_tokens"] = min(body["max_tokens"], 6)
        check_response(case, case.call(base_url=url, timeout=TIMEOUT_S))

    run()
    answer = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=TIMEOUT_S)
    assert answer.status_code == 200, "the server must still answer after the fuzzing"


def chat(**options) -> dict:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, **options}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "options, status",
    [
        ({"temperature": 1e-300}, 200),  # was a 500 (NaN probabilities), and a stream that never ended
        ({"seed": 2**70, "temperature": 1.0}, 400),  # was an overflow deep inside torch
        ({"stop": [""]}, 400),
        ({"stop": ["a"] * 5}, 400),
    ],
    ids=["tiny-temperature", "huge-seed", "empty-stop", "five-stops"],
)
def test_inputs_the_fuzzer_found(served, options, status, stream):
    response = httpx.post(
        served[0] + "/v1/chat/completions", json=chat(stream=stream, **options), timeout=TIMEOUT_S
    )
    assert response.status_code == status, response.text
    if stream and status == 200:
        assert response.text.rstrip().endswith("data: [DONE]") and '"error"' not in response.text


def test_an_unreadable_body_is_an_openai_error(served):
    response = httpx.post(
        served[0] + "/v1/chat/completions", content=b"\x80", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["message"]
