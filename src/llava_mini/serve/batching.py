"""Request queueing and batching: one worker owns the model and runs waiting requests together.

Requests are admitted up to `max_queue` at a time (the rest are refused, HTTP 429). The worker takes the
oldest waiting job and, unless it streams, gathers the jobs with the same decoding settings that are
waiting or arrive within `window_s`, up to `max_batch_size`, and answers them with one left-padded
`LlavaMini.complete_batch` call: with greedy decoding a batch gives the same answers as one at a time.
Streaming jobs and seeded sampling (whose random draws would depend on the batch) run alone; a stream
whose reader leaves stops generating after the current token, which frees the model for the next job.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from llava_mini.inference.generate import Completion, GenerationSettings, LlavaMini, StreamControl
from llava_mini.processing.processor import Medium

logger = logging.getLogger(__name__)

_END = object()  # marks the end of a stream's pieces


class QueueFull(Exception):
    """More requests are admitted than the queue holds; the client should retry later."""


class ShuttingDown(RuntimeError):
    """The server stopped before the job ran; the client should retry later (elsewhere)."""


@dataclass(eq=False)
class Job:
    """One request for the worker: a conversation, its media in order, and how to decode."""

    messages: list[dict]
    media: list[Medium]
    settings: GenerationSettings
    stream: bool
    control: StreamControl = field(default_factory=StreamControl)  # a stream's cancel flag and finish reason
    result: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    pieces: asyncio.Queue = field(default_factory=asyncio.Queue)

    def batch_key(self) -> tuple | None:
        """Jobs with equal keys can share a `complete_batch` call; None means the job runs alone."""
        settings = self.settings
        if self.stream or (settings.seed is not None and settings.temperature > 0):
            return None
        return (
            settings.max_new_tokens,
            settings.temperature,
            settings.top_p,
            tuple(settings.stop),
            settings.seed,
        )

    @property
    def abandoned(self) -> bool:
        return self.result.cancelled()


class Batcher:
    """Admission control plus a single model worker that batches compatible requests.

    Call `admit()` before the request's own preparation (it raises `QueueFull`), then `complete()` or
    `stream()`, and `release()` once the answer is out, whatever happened.
    """

    def __init__(
        self, assistant: LlavaMini, max_batch_size: int = 8, window_s: float = 0.01, max_queue: int = 16
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.assistant = assistant
        self.max_batch_size = max_batch_size
        self.window_s = window_s
        self.max_queue = max_queue
        self.waiting = 0  # admitted and not yet released
        self.batch_sizes: deque[int] = deque(maxlen=1024)  # sizes of the latest batches (streams count 1)
        self.batches_run = 0
        self.requests_run = 0
        self.streams_cancelled = 0  # streams whose reader left before the end (generation stopped early)
        self._jobs: deque[Job] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def admit(self) -> None:
        if self.waiting >= self.max_queue:
            raise QueueFull(
                f"the server is busy ({self.waiting} requests queued, limit {self.max_queue}); retry later"
            )
        self.waiting += 1

    def release(self) -> None:
        self.waiting = max(0, self.waiting - 1)

    async def complete(
        self, messages: list[dict], media: list[Medium], settings: GenerationSettings
    ) -> Completion:
        """The answer to one conversation, possibly computed in a batch with others."""
        job = Job(messages, media, settings, stream=False)
        self._enqueue(job)
        return await job.result

    async def stream(
        self,
        messages: list[dict],
        media: list[Medium],
        settings: GenerationSettings,
        control: StreamControl | None = None,
    ) -> AsyncIterator[str]:
        """Text pieces of one answer as they are generated (the job runs alone); after the last one,
        `control.finish_reason` says why it ended."""
        job = Job(messages, media, settings, stream=True, control=control or StreamControl())
        self._enqueue(job)
        try:
            while (piece := await job.pieces.get()) is not _END:
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
        finally:
            if not job.result.done():
                job.control.cancelled.set()  # the client left: generation stops after the current token
                job.result.cancel()

    async def stop(self) -> None:
        """Cancel the worker and fail the jobs still waiting."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._jobs:
            self._fail(self._jobs.popleft(), ShuttingDown("the server is shutting down; retry later"))

    def _enqueue(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._loop is not loop:
            # Started lazily, on the loop that serves requests (a new loop, as in some test clients, gets
            # a new worker; jobs of a loop that is gone cannot be answered and are dropped).
            self._jobs = deque(j for j in self._jobs if j.result.get_loop() is loop)
            self._arrived, self._loop = asyncio.Event(), loop
            self._worker = loop.create_task(self._work(), name="llava-mini batcher")
        self._jobs.append(job)
        self._arrived.set()

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch[0].stream:
                await self._run_stream(batch[0])
            else:
                await self._run_batch(batch)

    async def _next_batch(self) -> list[Job]:
        """The oldest live job plus compatible ones already waiting or arriving within the window."""
        while True:
            while not self._jobs:
                self._arrived.clear()
                await self._arrived.wait()
            first = self._jobs.popleft()
            if not first.abandoned:
                break
        key = first.batch_key()
        batch = [first]
        if key is None:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window_s
        while len(batch) < self.max_batch_size:
            for job in [j for j in self._jobs if not j.abandoned and j.batch_key() == key]:
                if len(batch) == self.max_batch_size:
                    break
                self._jobs.remove(job)
                batch.append(job)
            remaining = deadline - loop.time()
            if len(batch) == self.max_batch_size or remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return batch

    def _count(self, size: int) -> None:
        self.batch_sizes.append(size)
        self.batches_run += 1
        self.requests_run += size

    def stats(self) -> dict:
        """Queue and batch figures for /health."""
        mean = self.requests_run / self.batches_run if self.batches_run else 0.0
        return {
            "waiting": self.waiting,
            "batches": self.batches_run,
            "mean_batch_size": round(mean, 2),
            "streams_cancelled": self.streams_cancelled,
        }

    async def _run_batch(self, batch: list[Job]) -> None:
        self._count(len(batch))
        try:
            completions = await asyncio.to_thread(
                self.assistant.complete_batch,
                [job.messages for job in batch],
                [job.media for job in batch],
                batch[0].settings,
            )
        except ValueError as error:
            if len(batch) == 1:
                self._fail(batch[0], error)
                return
            # One bad request must not fail the others: answer each alone to find it.
            for job in batch:
                await self._run_batch([job])
            return
        except Exception as error:  # the model failed: every caller gets the error, the worker lives on
            logger.exception("batch of %d failed", len(batch))
            for job in batch:
                self._fail(job, error)
            return
        for job, completion in zip(batch, completions, strict=True):
            if not job.result.done():
                job.result.set_result(completion)

    async def _run_stream(self, job: Job) -> None:
        """Generate in a thread, handing pieces to the request's queue, until the end or the client leaves."""
        self._count(1)
        loop = asyncio.get_running_loop()

        def produce() -> None:
            for piece in self.assistant.stream_chat(job.messages, job.media, job.settings, job.control):
                if piece and not job.abandoned:
                    loop.call_soon_threadsafe(job.pieces.put_nowait, piece)

        try:
            await asyncio.to_thread(produce)
        except Exception as error:
            if not isinstance(error, ValueError):
                logger.exception("streaming generation failed")
            job.pieces.put_nowait(error)
        if job.control.finish_reason == "cancelled":
            self.streams_cancelled += 1
        job.pieces.put_nowait(_END)
        if not job.result.done():
            job.result.set_result(None)

    @staticmethod
    def _fail(job: Job, error: BaseException) -> None:
        if job.stream:
            job.pieces.put_nowait(error)
            job.pieces.put_nowait(_END)
            if not job.result.done():
                job.result.set_result(None)
        elif not job.result.done():
            job.result.set_exception(error)
