"""An OpenAI-compatible server: /v1/chat/completions (with SSE streaming), /v1/models, /health, a web page;
plus /v1/inspect, what the one token sees (serve/inspect.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llava_mini.inference.generate import GenerationSettings, LlavaMini, StreamControl
from llava_mini.model.vision import VisionFeatureCache
from llava_mini.processing.processor import Medium
from llava_mini.processing.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN
from llava_mini.serve.batching import Batcher, QueueFull, ShuttingDown
from llava_mini.serve.inspect import inspect_request
from llava_mini.serve.media import (
    MediaBudget,
    MediaError,
    MediaPolicy,
    add_media_arguments,
    content_hash,
    decode_request_medium,
    media_policy_from_args,
    read_reference,
)
from llava_mini.serve.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ModelCard,
    ModelList,
    ResponseMessage,
    Usage,
    request_body_openapi,
)

GREEDY_BELOW = 1e-5  # sampling temperatures under this decode greedily
COST_KEY = "llava_mini.cost"  # the ASGI scope key of a request's `RequestCost` (set by `Admission`)
T = TypeVar("T")


@dataclass
class ServerLimits:
    """What one request may cost; each is checked before the work it bounds, and named in the 4xx it causes."""

    max_body_bytes: int = 32_000_000  # bytes read, chunked bodies included
    max_messages: int = 256  # checked before any prompt is built
    max_text_chars: int = 100_000  # characters of text in all messages, checked before tokenising
    max_media: int = 8
    max_new_tokens: int = 512
    max_prompt_tokens: int = 4096  # tokens of the prompt (vision slots included), checked before queueing
    max_queue: int = 16
    retry_after_s: int = 1  # the Retry-After of a 429 (queue full) or 503 (shutting down)
    media_cache_entries: int = 64
    max_batch_size: int = 8
    batch_window_s: float = 0.01
    max_stop_strings: int = 4
    max_stop_chars: int = 64
    # Per-client admission (`Admission`), before the body is read; 0 turns a limit off (the default: see
    # docs/hardening.md for why).
    rate_limit: float = 0.0  # requests per second per client address, on average
    rate_burst: int = 0  # the bucket: requests a client may send at once (0: max(1, rate_limit))
    max_inflight_per_client: int = 0  # requests one client address may have unanswered at once
    client_cpu_per_s: float = 0.0  # CPU seconds per second spent preparing one client's requests, on average
    client_cpu_burst_s: float = 1.0  # CPU seconds a client may cost at once before it is held to the rate
    client_bytes_per_s: float = 0.0  # body bytes per second read from one client (bursts of max_body_bytes)
    refusal_delay_s: float = 1.0  # a per-client refusal is answered after this long (a retry loop slows down)
    max_held_refusals: int = 8  # refusals held at once per client; more are answered at once
    max_clients_tracked: int = 10_000  # client addresses remembered (least recently seen forgotten first)

    def __post_init__(self) -> None:
        may_be_zero = (
            "batch_window_s", "rate_limit", "rate_burst", "max_inflight_per_client", "client_cpu_per_s",
            "client_cpu_burst_s", "client_bytes_per_s", "refusal_delay_s", "max_held_refusals",
        )
        for name, value in vars(self).items():
            least = 0 if name in may_be_zero else 1
            if value < least:
                raise ValueError(f"server limit {name} (--{name.replace('_', '-')}) must be >= {least}, got {value}")


class APIError(HTTPException):
    """An error answered in OpenAI's error format; `code` names the limit a request broke.

    An HTTPException, so that FastAPI passes it on when it comes from reading the body (`BodyLimit`).
    """

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(status, message, headers)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def validation_message(errors: list[dict]) -> str:
    """Pydantic's errors as one line: 'messages.0.role: Input should be ...; ...' (FastAPI's 'body' prefix dropped)."""
    details = "; ".join(
        f"{'.'.join(str(p) for p in item.get('loc', ()) if p != 'body')}: {item.get('msg')}" for item in errors
    )
    return details or "invalid request"


@dataclass
class RequestCost:
    """What one admitted request cost the server, charged to its client when it is answered (`Admission`): CPU
    seconds of its preparation (`charged_work`: parsing, validation, media decoding, tokenising) and body bytes
    read (`BodyLimit`). It travels in the ASGI scope under `COST_KEY`."""

    cpu_s: float = 0.0
    body_bytes: int = 0


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is refused (413) by the bytes read, so a chunked body
    (no Content-Length) cannot get past the limit either; reading stops at the first chunk over it. The bytes
    read are added to the request's `RequestCost`, when it has one."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def too_large(self, size: str) -> APIError:
        message = f"request body of {size} bytes exceeds the limit of {self.max_bytes} bytes (max_body_bytes)"
        return APIError(413, message, code="max_body_bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self.too_large(declared.decode()).response()(scope, receive, send)
            return
        received = 0
        cost: RequestCost | None = scope.get(COST_KEY)

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                received += size
                if cost is not None:
                    cost.body_bytes += size
                if received > self.max_bytes:  # the app's handler answers it (FastAPI re-raises HTTP errors)
                    raise self.too_large(f"over {self.max_bytes}")
            return message

        await self.app(scope, counted_receive, send)


async def charged_work(request: Request, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` in the thread pool; the CPU seconds it takes (even when it raises) are added to the request's
    `RequestCost`, which `Admission` charges to the client."""
    spent = 0.0

    def timed() -> T:
        nonlocal spent
        started = time.thread_time()
        try:
            return work(*args)
        finally:
            spent = time.thread_time() - started

    try:
        return await run_in_threadpool(timed)
    finally:
        cost: RequestCost | None = request.scope.get(COST_KEY)
        if cost is not None:
            cost.cpu_s += spent


@dataclass
class ClientRecord:
    """What `Admission` remembers of one client address: its buckets, unanswered requests and held refusals.

    `cpu_s` and `body_bytes` are charged after a request is answered, by what it cost, so they go negative: a
    debt the client pays back (at its rate) before its next request is admitted."""

    tokens: float  # requests the client may send at once
    cpu_s: float  # CPU seconds of request preparation left
    body_bytes: float  # request body bytes left
    seen: float  # time.monotonic() of the last refill
    inflight: int = 0
    held: int = 0  # refusals being held back (refusal_delay_s)


class Admission:
    """ASGI middleware: per-client admission control on the API (/v1/...), before the body is read or parsed.

    A client (the peer address, or the one uvicorn takes from X-Forwarded-For of a trusted proxy) may send
    `rate` requests a second on average with bursts of `burst` (a token bucket), have at most `max_inflight`
    unanswered, and cost the server `cpu_rate` CPU seconds a second of request preparation (bursts of
    `cpu_burst`) and `byte_rate` body bytes a second (bursts of `byte_burst`), measured on what its answered
    requests really cost. A request over any of these is answered 429 with `Retry-After` (the time until the
    client is admitted again) and its connection closed, so its body is neither read nor parsed. That answer is
    held back `refusal_delay_s` (for at most `max_held` refusals of a client at once; more are answered at once),
    so a client that ignores Retry-After and retries at once costs the server a few refusals a second, not
    hundreds. At most `max_clients` addresses are remembered; the least recently seen is forgotten first (it
    comes back with full buckets). A limit of 0 is off.
    """

    def __init__(
        self,
        app: ASGIApp,
        rate: float = 0.0,
        burst: int = 0,
        max_inflight: int = 0,
        cpu_rate: float = 0.0,
        cpu_burst: float = 1.0,
        byte_rate: float = 0.0,
        byte_burst: int = 32_000_000,
        refusal_delay_s: float = 0.0,
        max_held: int = 8,
        max_clients: int = 10_000,
    ) -> None:
        self.app, self.rate, self.max_inflight, self.max_clients = app, rate, max_inflight, max_clients
        self.burst = burst or max(1.0, rate)
        self.cpu_rate, self.cpu_burst, self.byte_rate, self.byte_burst = cpu_rate, cpu_burst, byte_rate, byte_burst
        self.refusal_delay_s, self.max_held = refusal_delay_s, max_held
        self.clients: OrderedDict[str, ClientRecord] = OrderedDict()

    @property
    def limited(self) -> bool:
        return bool(self.rate or self.max_inflight or self.cpu_rate or self.byte_rate)

    def record(self, host: str, now: float) -> ClientRecord:
        """The client's record, its buckets refilled to `now`."""
        record = self.clients.get(host)
        if record is None:
            record = self.clients[host] = ClientRecord(self.burst, self.cpu_burst, self.byte_burst, seen=now)
            while len(self.clients) > self.max_clients:
                self.clients.popitem(last=False)
        self.clients.move_to_end(host)
        elapsed, record.seen = now - record.seen, now
        record.tokens = min(self.burst, record.tokens + elapsed * self.rate)
        record.cpu_s = min(self.cpu_burst, record.cpu_s + elapsed * self.cpu_rate)
        record.body_bytes = min(self.byte_burst, record.body_bytes + elapsed * self.byte_rate)
        return record

    def refusal(self, host: str, now: float) -> APIError | None:
        """Admit one request from `host` (counting it), or the 429 that refuses it."""
        record = self.record(host, now)

        def refuse(code: str, what: str, wait_s: float) -> APIError:
            wait_s = max(1, math.ceil(wait_s))
            return APIError(429, f"{what} ({code}); retry in {wait_s} s", kind="rate_limit_error", code=code,
                            headers={"Retry-After": str(wait_s), "Connection": "close"})

        if self.rate and record.tokens < 1:
            return refuse("rate_limit", f"more than {self.rate:g} requests per second from {host}",
                          (1 - record.tokens) / self.rate)
        if self.cpu_rate and record.cpu_s < 0:
            return refuse("client_cpu_per_s", f"requests from {host} cost the server more than {self.cpu_rate:g} "
                          "CPU seconds per second to prepare", -record.cpu_s / self.cpu_rate)
        if self.byte_rate and record.body_bytes < 0:
            return refuse("client_bytes_per_s", f"more than {self.byte_rate:g} body bytes per second from {host}",
                          -record.body_bytes / self.byte_rate)
        if self.max_inflight and record.inflight >= self.max_inflight:
            return refuse("max_inflight_per_client", f"{host} already has {record.inflight} requests unanswered", 1)
        if self.rate:
            record.tokens -= 1
        record.inflight += 1
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.limited or scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        host = scope["client"][0] if scope.get("client") else "unknown"
        refused = self.refusal(host, time.monotonic())
        record = self.clients[host]
        if refused is not None:  # and its connection closed: the rest of its body is not read either
            if self.refusal_delay_s and record.held < self.max_held:
                record.held += 1
                try:
                    await asyncio.sleep(self.refusal_delay_s)
                finally:
                    record.held -= 1
            await refused.response()(scope, receive, send)
            return
        cost = scope[COST_KEY] = RequestCost()
        try:
            await self.app(scope, receive, send)
        finally:  # a forgotten client's record went with its counts; charging it does no harm
            record.inflight -= 1
            record.cpu_s -= cost.cpu_s
            record.body_bytes -= cost.body_bytes


@dataclass
class ServerState:
    assistant: LlavaMini
    model_id: str
    policy: MediaPolicy
    limits: ServerLimits
    created: int = field(default_factory=lambda: int(time.time()))
    media_cache: OrderedDict = field(default_factory=OrderedDict)
    media_cache_lock: threading.Lock = field(default_factory=threading.Lock)  # requests prepare in threads
    batcher: Batcher = field(init=False)

    def __post_init__(self) -> None:
        limits = self.limits
        self.assistant.model.vision_tower.feature_cache = VisionFeatureCache(limits.media_cache_entries)
        processor = self.assistant.processor  # prompts over the limit fail to encode: a 400 naming it
        processor.max_length = min(processor.max_length or limits.max_prompt_tokens, limits.max_prompt_tokens)
        self.batcher = Batcher(self.assistant, limits.max_batch_size, limits.batch_window_s, limits.max_queue)

    def cached_medium(self, kind: str, url: str, budget: MediaBudget | None = None) -> Medium:
        """Preprocessed media by content hash, looked up before anything is decoded: a medium sent again (a
        follow-up question, the same picture from many clients) costs its hash, not its decoding."""
        data = read_reference(url, self.policy)
        key = (kind, content_hash(data))
        with self.media_cache_lock:
            if key in self.media_cache:
                self.media_cache.move_to_end(key)
                return self.media_cache[key]
        medium = decode_request_medium(kind, data, self.policy, self.assistant.processor.image_processor, budget)
        pixels = self.assistant.processor.preprocess_medium(medium)
        with self.media_cache_lock:
            self.media_cache[key] = pixels
            while len(self.media_cache) > self.limits.media_cache_entries:
                self.media_cache.popitem(last=False)
        return pixels


def request_to_conversation(state: ServerState, request: ChatCompletionRequest) -> tuple[list[dict], list[Medium]]:
    """OpenAI messages -> chat messages with <image>/<video> markers, and the media in order."""
    messages: list[dict] = []
    media: list[Medium] = []
    budget = MediaBudget(state.policy.max_request_media_bytes)
    if request.messages[0].role != "system" and state.assistant.processor.system_prompt:
        messages.append({"role": "system", "content": state.assistant.processor.system_prompt})
    for index, message in enumerate(request.messages):
        if isinstance(message.content, str) or message.content is None:
            text = message.content or ""
            if IMAGE_TOKEN in text or VIDEO_TOKEN in text:
                raise APIError(400, f"messages[{index}]: send media as image_url/video_url parts", param="messages")
            messages.append({"role": message.role, "content": text})
            continue
        pieces = []
        for part in message.content:
            if part.type == "text":
                if IMAGE_TOKEN in (part.text or "") or VIDEO_TOKEN in (part.text or ""):
                    raise APIError(400, f"messages[{index}]: send media as image_url/video_url parts", param="messages")
                pieces.append(part.text or "")
                continue
            reference = part.image_url if part.type == "image_url" else part.video_url
            if reference is None:
                raise APIError(400, f"messages[{index}]: a {part.type} part needs a '{part.type}' object", param="messages")
            if message.role != "user":
                raise APIError(400, f"messages[{index}]: only user messages may carry media", param="messages")
            if len(media) >= state.limits.max_media:
                raise APIError(400, f"more than {state.limits.max_media} media in one request", param="messages")
            media.append(state.cached_medium(part.type, reference.url, budget))
            pieces.append((IMAGE_TOKEN if part.type == "image_url" else VIDEO_TOKEN) + "\n")
        messages.append({"role": message.role, "content": "".join(pieces)})
    if messages[-1]["role"] != "user":
        raise APIError(400, "the last message must come from the user", param="messages")
    return messages, media


def check_request_size(limits: ServerLimits, request: ChatCompletionRequest) -> None:
    """Refuse too many messages or too much text before any prompt is rendered or tokenised."""
    if len(request.messages) > limits.max_messages:
        raise APIError(
            400,
            f"{len(request.messages)} messages exceed the limit of {limits.max_messages} (max_messages)",
            param="messages",
            code="max_messages",
        )
    chars = 0
    for message in request.messages:
        if isinstance(message.content, str):
            chars += len(message.content)
        elif message.content is not None:
            chars += sum(len(part.text or "") for part in message.content)
    if chars > limits.max_text_chars:
        raise APIError(
            400,
            f"{chars} characters of text exceed the limit of {limits.max_text_chars} (max_text_chars)",
            param="messages",
            code="max_text_chars",
        )


def parse_request(state: ServerState, body: bytes) -> ChatCompletionRequest:
    """A chat completions body, parsed, validated and checked against the limits that need no model work."""
    try:
        request = ChatCompletionRequest.model_validate_json(body)
    except ValidationError as error:
        raise APIError(400, validation_message(error.errors(include_url=False))) from None
    if request.model != state.model_id:
        raise APIError(404, f"model {request.model!r} does not exist; this server serves {state.model_id!r}", param="model")
    check_request_size(state.limits, request)
    return request


def prepare_conversation(state: ServerState, request: ChatCompletionRequest) -> tuple[list[dict], list[Medium]]:
    """The conversation and media of a request, its prompt's length checked (a 400 over the limit) off the model
    worker: a long prompt holds no one."""
    messages, media = request_to_conversation(state, request)
    state.assistant.processor.encode(messages, media, with_labels=False)
    return messages, media


def generation_settings(state: ServerState, request: ChatCompletionRequest) -> GenerationSettings:
    max_tokens = request.max_completion_tokens or request.max_tokens or min(128, state.limits.max_new_tokens)
    if max_tokens > state.limits.max_new_tokens:
        raise APIError(
            400,
            f"max_tokens={max_tokens} exceeds the limit of {state.limits.max_new_tokens} (max_new_tokens)",
            param="max_tokens",
            code="max_new_tokens",
        )
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    most, longest = state.limits.max_stop_strings, state.limits.max_stop_chars
    if len(stop) > most or any(not s or len(s) > longest for s in stop):
        raise APIError(400, f"stop takes at most {most} non-empty strings of at most {longest} characters", param="stop")
    return GenerationSettings(
        max_new_tokens=max_tokens,
        # Below GREEDY_BELOW, logits / temperature overflows float32 (NaN probabilities); its limit is greedy.
        temperature=request.temperature if (request.temperature or 0.0) >= GREEDY_BELOW else 0.0,
        top_p=request.top_p if request.top_p is not None else 1.0,
        stop=stop,
        seed=request.seed,
    )


def create_app(state: ServerState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await state.batcher.stop()

    app = FastAPI(title="llava-mini", version="0.1.0", lifespan=lifespan)
    app.state.server = state
    retry_after = {"Retry-After": str(state.limits.retry_after_s)}

    @app.exception_handler(APIError)
    async def api_error(_: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return APIError(400, validation_message(error.errors())).response()

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        """Starlette's own errors (unreadable body, unknown path, wrong method) in OpenAI's format too."""
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        body = {"error": {"message": str(error.detail), "type": kind, "param": None, "code": None}}
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    app.add_middleware(BodyLimit, max_bytes=state.limits.max_body_bytes)
    limits = state.limits  # added last, so it runs first: a refused client's body is never read
    app.add_middleware(
        Admission,
        rate=limits.rate_limit,
        burst=limits.rate_burst,
        max_inflight=limits.max_inflight_per_client,
        cpu_rate=limits.client_cpu_per_s,
        cpu_burst=limits.client_cpu_burst_s,
        byte_rate=limits.client_bytes_per_s,
        byte_burst=limits.max_body_bytes,  # a client with a full bucket may always send one largest body
        refusal_delay_s=limits.refusal_delay_s,
        max_held=limits.max_held_refusals,
        max_clients=limits.max_clients_tracked,
    )

    @app.get("/health")
    async def health() -> dict:
        cache = state.assistant.model.vision_tower.feature_cache
        vision_cache = {"hits": cache.hits, "misses": cache.misses} if cache else None
        return {"status": "ok", "model": state.model_id, **state.batcher.stats(), "vision_cache": vision_cache}

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=state.model_id, created=state.created)])

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return files("llava_mini.serve").joinpath("static/index.html").read_text()

    # The page's script, style and example media.
    app.mount("/static", StaticFiles(directory=str(files("llava_mini.serve").joinpath("static"))), name="static")

    @app.post("/v1/inspect", response_model=None, openapi_extra=request_body_openapi(ChatCompletionRequest))
    async def inspect(http: Request) -> dict:
        """llava-mini's extension: the compressor's attention and token counts for a conversation (serve/inspect.py)."""
        request = await charged_work(http, parse_request, state, await http.body())

        def run() -> dict:
            messages, media = request_to_conversation(state, request)
            prompt_tokens = len(state.assistant.processor.encode(messages, media, with_labels=False).input_ids)
            return inspect_request(state, request, messages, media, prompt_tokens)

        try:
            state.batcher.admit()
        except QueueFull as error:
            raise APIError(429, str(error), kind="rate_limit_error", headers=retry_after) from error
        try:
            return await charged_work(http, run)
        except ValueError as error:  # media errors, a model without a compressor, a prompt over the limit
            raise APIError(400, str(error), param="messages") from error
        finally:
            state.batcher.release()

    @app.post("/v1/chat/completions", response_model=None, openapi_extra=request_body_openapi(ChatCompletionRequest))
    async def chat_completions(http: Request):
        # Parsed, validated and prepared in the thread pool, its CPU time charged to the client (`Admission`).
        request = await charged_work(http, parse_request, state, await http.body())
        settings = generation_settings(state, request)
        try:
            state.batcher.admit()
        except QueueFull as error:
            raise APIError(429, str(error), kind="rate_limit_error", headers=retry_after) from error
        try:
            messages, media = await charged_work(http, prepare_conversation, state, request)
        except MediaError as error:
            state.batcher.release()
            raise APIError(400, str(error), param="messages") from error
        except ValueError as error:
            state.batcher.release()
            code = "context_length_exceeded" if "over the limit of" in str(error) else None
            raise APIError(400, f"{error} (max_prompt_tokens)" if code else str(error), param="messages", code=code) from error
        except BaseException:
            state.batcher.release()
            raise
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if request.stream:
            return StreamingResponse(
                stream_events(state, messages, media, settings, completion_id, created),
                media_type="text/event-stream",
            )
        try:
            result = await state.batcher.complete(messages, media, settings)
        except ValueError as error:
            raise APIError(400, str(error)) from error
        except ShuttingDown as error:
            raise APIError(503, str(error), kind="server_error", headers=retry_after) from error
        except Exception as error:  # logged by the batcher
            raise APIError(500, f"generation failed: {error}", kind="server_error") from error
        finally:
            state.batcher.release()
        return ChatCompletion(
            id=completion_id,
            created=created,
            model=state.model_id,
            choices=[Choice(message=ResponseMessage(content=result.text), finish_reason=result.finish_reason)],
            usage=Usage(
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                total_tokens=result.prompt_tokens + result.completion_tokens,
            ),
        )

    return app


async def stream_events(
    state: ServerState,
    messages: list[dict],
    media: list[Medium],
    settings: GenerationSettings,
    completion_id: str,
    created: int,
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""

    def event(delta: Delta, finish: str | None = None) -> str:
        chunk = ChatCompletionChunk(
            id=completion_id, created=created, model=state.model_id,
            choices=[ChunkChoice(delta=delta, finish_reason=finish)],
        )
        return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"

    control = StreamControl()
    try:
        yield event(Delta(role="assistant", content=""))
        async for piece in state.batcher.stream(messages, media, settings, control):
            yield event(Delta(content=piece))
        yield event(Delta(), finish=control.finish_reason if control.finish_reason in ("stop", "length") else "stop")
    except ValueError as error:
        yield f"data: {json.dumps({'error': {'message': str(error), 'type': 'invalid_request_error'}})}\n\n"
    except ShuttingDown as error:
        yield f"data: {json.dumps({'error': {'message': str(error), 'type': 'server_error'}})}\n\n"
    except Exception as error:
        yield f"data: {json.dumps({'error': {'message': f'generation failed: {error}', 'type': 'server_error'}})}\n\n"
    finally:
        state.batcher.release()
    yield "data: [DONE]\n\n"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="local directory or hub id (default: the shipped model)")
    parser.add_argument("--model-id", default=None, help="name clients use in 'model' (default: the folder name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-queue", type=int, default=16, help="queued requests before answering 429")
    parser.add_argument("--max-batch-size", type=int, default=8, help="requests answered in one batch at most")
    parser.add_argument(
        "--batch-window-ms", type=float, default=10.0, help="how long a batch waits for more requests to join"
    )
    add_media_arguments(parser)
    defaults = ServerLimits()
    limits = parser.add_argument_group("request limits (a request over one gets a 4xx naming it)")
    limits.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes, help="request body size")
    limits.add_argument("--max-messages", type=int, default=defaults.max_messages, help="messages in one request")
    limits.add_argument(
        "--max-text-chars", type=int, default=defaults.max_text_chars, help="characters of text in one request"
    )
    limits.add_argument(
        "--max-prompt-tokens", type=int, default=defaults.max_prompt_tokens, help="prompt tokens, vision included"
    )
    limits.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, help="max_tokens allowed")
    limits.add_argument("--max-media", type=int, default=defaults.max_media, help="images and videos in one request")
    clients = parser.add_argument_group("per-client admission, before the body is read (429 with Retry-After)")
    clients.add_argument(
        "--rate-limit", type=float, default=defaults.rate_limit, help="API requests per second per client address (0: off)"
    )
    clients.add_argument(
        "--rate-burst", type=int, default=defaults.rate_burst, help="requests a client may send at once (0: the rate)"
    )
    clients.add_argument(
        "--max-inflight-per-client",
        type=int,
        default=defaults.max_inflight_per_client,
        help="unanswered API requests per client address (0: off)",
    )
    clients.add_argument(
        "--client-cpu-per-s",
        type=float,
        default=defaults.client_cpu_per_s,
        help="CPU seconds per second the server may spend parsing, decoding media and tokenising for one client "
        "address, measured (0: off)",
    )
    clients.add_argument(
        "--client-cpu-burst-s", type=float, default=defaults.client_cpu_burst_s,
        help="CPU seconds a client may cost at once before it is held to --client-cpu-per-s",
    )
    clients.add_argument(
        "--client-bytes-per-s", type=float, default=defaults.client_bytes_per_s,
        help="request body bytes per second read from one client address, bursts of --max-body-bytes (0: off)",
    )
    clients.add_argument(
        "--refusal-delay-s", type=float, default=defaults.refusal_delay_s,
        help="seconds a refusal by the limits above is held before it is answered (0: at once)",
    )
    clients.add_argument(
        "--max-held-refusals", type=int, default=defaults.max_held_refusals,
        help="refusals held at once per client address; more are answered at once",
    )
    clients.add_argument(
        "--max-clients-tracked", type=int, default=defaults.max_clients_tracked, help="client addresses remembered"
    )


def build_state(args: argparse.Namespace) -> ServerState:
    assistant = LlavaMini.load(args.model, device=args.device)
    model_id = args.model_id or Path(assistant.model.name_or_path).name or "llava-mini"
    policy = media_policy_from_args(args, video_fps=assistant.config.video_fps)
    # Every limit with a serve option of its own name (--max-queue -> max_queue); the batch window is given in ms.
    options = {limit.name: getattr(args, limit.name) for limit in fields(ServerLimits) if hasattr(args, limit.name)}
    limits = ServerLimits(**options, batch_window_s=args.batch_window_ms / 1000)
    return ServerState(assistant, model_id, policy, limits)


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30.0) -> Iterator[str]:
    """Run `app` with uvicorn in a daemon thread (tests, benchmarks); yields its base URL. Port 0: any free one."""
    import uvicorn

    listener = socket.socket()
    listener.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {host}:{listener.getsockname()[1]} did not start")
            time.sleep(0.02)
        yield f"http://{host}:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)
        listener.close()


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run(create_app(build_state(args)), host=args.host, port=args.port, log_level="info")
    return 0
