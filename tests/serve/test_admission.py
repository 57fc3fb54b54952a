"""Per-client admission control (`Admission`): a client over its rate, its unanswered requests, its CPU or its byte
budget is answered 429 with Retry-After before its body is read, after the refusal delay; other clients are not
affected; the table of clients stays bounded."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from llava_mini.inference.generate import LlavaMini
from llava_mini.inference.random_model import write_random_model
from llava_mini.serve.app import (
    COST_KEY,
    Admission,
    BodyLimit,
    ServerLimits,
    ServerState,
    create_app,
    serve_in_thread,
)
from llava_mini.serve.media import MediaPolicy

MODEL_ID = "llava-mini-admission"
SLOW = 0.001  # requests per second: a spent bucket does not refill during a test
SLOW_CPU = 1e-6  # CPU seconds per second: a parse's debt is not paid back during a test


class Inner:
    """The app behind the middleware: counts calls; holds each request until `release` is set; reads the body
    when `read`; charges each request `cpu_s` CPU seconds as `charged_work` would."""

    def __init__(self, hold: bool = False, read: bool = False, cpu_s: float = 0.0) -> None:
        self.calls, self.release, self.read, self.cpu_s = 0, asyncio.Event(), read, cpu_s
        if not hold:
            self.release.set()

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        if self.read:
            await receive()
        if COST_KEY in scope:
            scope[COST_KEY].cpu_s += self.cpu_s
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def http_scope(host: str, path: str = "/v1/chat/completions") -> dict:
    return {"type": "http", "method": "POST", "path": path, "headers": [], "client": (host, 50000)}


async def call(
    app, host: str, path: str = "/v1/chat/completions", body: bytes = b"{}"
) -> tuple[int, dict, dict, int]:
    """One request through `app`; returns its status, headers, JSON body and how often the body was read."""
    reads, sent = 0, []

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(http_scope(host, path), receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], headers, json.loads(body), reads


def test_over_the_rate_is_a_429_with_retry_after_before_the_body_is_read():
    inner = Inner()
    app = Admission(inner, rate=SLOW, burst=2)

    async def scenario():
        return [await call(app, "10.0.0.1") for _ in range(3)]

    first, second, third = asyncio.run(scenario())
    assert first[0] == second[0] == 200 and inner.calls == 2
    status, headers, body, reads = third
    assert status == 429 and reads == 0 and inner.calls == 2  # neither the body nor the app was touched
    assert int(headers["retry-after"]) >= 1 and headers["connection"] == "close"  # the rest is not read either
    assert body["error"]["code"] == "rate_limit" and body["error"]["type"] == "rate_limit_error"
    assert "10.0.0.1" in body["error"]["message"]


def test_other_clients_and_other_paths_are_not_affected():
    app = Admission(Inner(), rate=SLOW, burst=1)

    async def scenario():
        return [await call(app, host, path) for host, path in
                [("10.0.0.1", "/v1/models"), ("10.0.0.1", "/v1/models"), ("10.0.0.2", "/v1/models"),
                 ("10.0.0.1", "/health")]]

    statuses = [status for status, *_ in asyncio.run(scenario())]
    assert statuses == [200, 429, 200, 200]


def test_unanswered_requests_per_client_are_limited():
    inner = Inner(hold=True)
    app = Admission(inner, max_inflight=1)

    async def scenario():
        held = asyncio.create_task(call(app, "10.0.0.1"))
        while inner.calls < 1:
            await asyncio.sleep(0)
        refused = await call(app, "10.0.0.1")
        other = asyncio.create_task(call(app, "10.0.0.2"))  # another client is admitted meanwhile
        while inner.calls < 2:
            await asyncio.sleep(0)
        inner.release.set()
        return refused, await held, await other, await call(app, "10.0.0.1")

    refused, held, other, after = asyncio.run(scenario())
    assert refused[0] == 429 and refused[2]["error"]["code"] == "max_inflight_per_client" and refused[3] == 0
    assert refused[1]["retry-after"] == "1"
    assert held[0] == other[0] == after[0] == 200  # answered requests no longer count
    assert app.clients["10.0.0.1"].inflight == 0


def test_the_table_of_clients_stays_bounded():
    app = Admission(Inner(), rate=SLOW, burst=1, max_clients=3)

    async def scenario():
        return [await call(app, f"10.0.1.{i}") for i in range(50)]

    assert all(status == 200 for status, *_ in asyncio.run(scenario()))
    assert list(app.clients) == ["10.0.1.47", "10.0.1.48", "10.0.1.49"]  # the least recently seen went first


def test_a_client_over_its_cpu_budget_is_refused_until_it_has_paid_its_debt():
    app = Admission(Inner(cpu_s=2.5), cpu_rate=0.5, cpu_burst=1.0)

    async def scenario():
        return [await call(app, host) for host in ("10.0.0.1", "10.0.0.1", "10.0.0.2")]

    first, second, other = asyncio.run(scenario())
    assert first[0] == 200 and other[0] == 200  # a full bucket admits one request, whatever it costs
    status, headers, body, reads = second
    assert status == 429 and reads == 0 and body["error"]["code"] == "client_cpu_per_s"
    assert headers["retry-after"] == "3"  # a debt of 1.5 CPU seconds at 0.5 a second
    assert app.clients["10.0.0.1"].cpu_s == pytest.approx(-1.5, abs=0.01)


def test_a_client_over_its_byte_budget_is_refused():
    inner = Inner(read=True)
    app = Admission(BodyLimit(inner, max_bytes=10_000), byte_rate=SLOW, byte_burst=1_000)

    async def scenario():
        return [await call(app, "10.0.0.1", body=b" " * 3_000) for _ in range(2)]

    first, second = asyncio.run(scenario())
    assert first[0] == 200 and inner.calls == 1
    assert second[0] == 429 and second[2]["error"]["code"] == "client_bytes_per_s" and second[3] == 0
    assert app.clients["10.0.0.1"].body_bytes == pytest.approx(-2_000, abs=1)  # the bytes BodyLimit read


def test_refusals_are_held_back_up_to_a_number_per_client():
    app = Admission(Inner(), rate=SLOW, burst=1, refusal_delay_s=1.0, max_held=1)

    async def scenario():
        await call(app, "10.0.0.1")  # the burst
        held = asyncio.create_task(call(app, "10.0.0.1"))
        while not app.clients["10.0.0.1"].held:
            await asyncio.sleep(0)
        at_once = await call(app, "10.0.0.1")  # one refusal is already held: this one is answered at once
        assert not held.done()
        return await held, at_once

    held, at_once = asyncio.run(scenario())
    assert held[0] == at_once[0] == 429 and held[3] == at_once[3] == 0
    assert app.clients["10.0.0.1"].held == 0


def test_admission_limits_are_checked():
    defaults = ServerLimits()
    assert defaults.rate_limit == defaults.max_inflight_per_client == 0  # off by default
    assert defaults.client_cpu_per_s == defaults.client_bytes_per_s == 0
    with pytest.raises(ValueError, match="--rate-limit"):
        ServerLimits(rate_limit=-1)
    with pytest.raises(ValueError, match="--client-cpu-per-s"):
        ServerLimits(client_cpu_per_s=-0.5)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    assistant = LlavaMini.load(write_random_model(tmp_path_factory.mktemp("model")))
    limits = ServerLimits(max_messages=50, max_new_tokens=8, rate_limit=SLOW, rate_burst=1)
    with serve_in_thread(create_app(ServerState(assistant, MODEL_ID, MediaPolicy(), limits))) as url:
        yield url


def client_from(url: str, address: str) -> openai.OpenAI:
    """The official client, connecting from the loopback `address` (a different client to the server)."""
    http = httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=60)
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, http_client=http)


def test_a_client_over_its_rate_gets_a_429_and_others_are_answered(served):
    flooder, other = client_from(served, "127.0.0.3"), client_from(served, "127.0.0.4")
    too_many = [{"role": "user", "content": "hi"}] * 51  # a 400 (max_messages) once its body is read
    with pytest.raises(openai.BadRequestError) as error:  # the burst of one: read and refused by its size
        flooder.chat.completions.create(model=MODEL_ID, messages=too_many, max_tokens=2)
    assert error.value.code == "max_messages"
    with pytest.raises(openai.RateLimitError) as error:  # over the rate: refused before the body is read
        flooder.chat.completions.create(model=MODEL_ID, messages=too_many, max_tokens=2)
    assert error.value.code == "rate_limit" and "127.0.0.3" in error.value.message
    assert int(error.value.response.headers["retry-after"]) >= 1
    answer = other.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert answer.choices[0].message.content is not None


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory):
    """A server that lets each client cost it no CPU (a request is admitted while its client owes nothing)."""
    assistant = LlavaMini.load(write_random_model(tmp_path_factory.mktemp("model")))
    limits = ServerLimits(max_messages=50, max_new_tokens=8, client_cpu_per_s=SLOW_CPU, client_cpu_burst_s=0.0)
    with serve_in_thread(create_app(ServerState(assistant, MODEL_ID, MediaPolicy(), limits))) as url:
        yield url


def test_the_cpu_of_parsing_a_refused_request_is_charged_to_its_client(budgeted):
    flooder, other = client_from(budgeted, "127.0.0.5"), client_from(budgeted, "127.0.0.6")
    too_many = [{"role": "user", "content": "hi"}] * 51
    with pytest.raises(openai.BadRequestError) as error:  # parsed, validated, refused: its CPU time is charged
        flooder.chat.completions.create(model=MODEL_ID, messages=too_many, max_tokens=2)
    assert error.value.code == "max_messages"
    with pytest.raises(openai.RateLimitError) as error:
        flooder.chat.completions.create(model=MODEL_ID, messages=too_many, max_tokens=2)
    assert error.value.code == "client_cpu_per_s" and "127.0.0.5" in error.value.message
    answer = other.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert answer.choices[0].message.content is not None
