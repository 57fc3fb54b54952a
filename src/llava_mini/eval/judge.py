"""An LLM judge for the open-ended benchmarks, through any OpenAI-compatible endpoint (off by default).

LLaVA-Bench, MM-Vet, open-ended video QA and Video-ChatGPT's generative benchmark are scored by a language
model that compares an answer with a reference. Each benchmark builds `JudgeRequest`s exactly as its official
script does (model, messages, temperature, max_tokens: only the settings that script sends are sent);
`OpenAIJudge` sends them to any server that speaks the OpenAI chat API (OpenAI itself, vLLM,
`llava-mini serve`, ...) with the official `openai` client, optionally under another model name;
`CachedJudge` stores every reply in a JSON-lines file so that a rerun does not pay twice. The prompts,
the reading of the replies and the aggregation live with each benchmark.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class JudgeRequest:
    """One chat completion request, field for field as an official judge script sends it.

    `temperature` / `max_tokens` of None are not sent (the server's default applies, as in the scripts that
    omit them). `attempt` counts how often the same request was asked before: the official scripts ask
    again when a reply cannot be read, so a retry is a new request, not a cached reply.
    """

    model: str
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    temperature: float | None = None
    max_tokens: int | None = None
    attempt: int = 0

    def arguments(self, model: str | None = None) -> dict[str, Any]:
        """The keyword arguments of `client.chat.completions.create`, with `model` overriding the default."""
        arguments: dict[str, Any] = {
            "model": model or self.model,
            "messages": [{"role": role, "content": content} for role, content in self.messages],
        }
        if self.temperature is not None:
            arguments["temperature"] = self.temperature
        if self.max_tokens is not None:
            arguments["max_tokens"] = self.max_tokens
        return arguments


class OpenAIJudge:
    """Chat completions at `url` (".../v1"); `model`, when given, replaces each protocol's own judge model."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        client: Any = None,
    ) -> None:
        if client is None:
            try:
                from openai import OpenAI
            except ImportError as error:
                raise ImportError("the LLM judge needs the `openai` package: pip install openai") from error
            client = OpenAI(base_url=url, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=3)
        self.client, self.model = client, model or None

    def complete(self, request: JudgeRequest) -> str:
        response = self.client.chat.completions.create(**request.arguments(self.model))
        return response.choices[0].message.content or ""


class CachedJudge:
    """Wraps a judge; replies are keyed by a hash of the request as sent (and its attempt), kept in `path`."""

    def __init__(self, judge: Any, path: str | os.PathLike) -> None:
        self.judge, self.path = judge, Path(path)
        self.model = getattr(judge, "model", None)
        self.replies: dict[str, str] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.replies[entry["key"]] = entry["reply"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by an interrupted run

    def complete(self, request: JudgeRequest) -> str:
        sent = request.arguments(self.model)
        key = hashlib.sha256(json.dumps([sent, request.attempt], sort_keys=True).encode()).hexdigest()
        if key not in self.replies:
            reply = self.judge.complete(request)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, "request": sent, "reply": reply}) + "\n")
            self.replies[key] = reply
        return self.replies[key]


def judge_model(judge: Any, default: str) -> str:
    """The model that judges: the judge's override (--judge-model) or the protocol's own."""
    return getattr(judge, "model", None) or default


def build_judge(url: str | None, model: str | None, api_key_env: str, cache: Path) -> CachedJudge | None:
    """The CLI's judge: None unless --judge-url is given; without --judge-model each protocol's own model.

    The key is read from the named environment variable if it is set.
    """
    if not url:
        return None
    return CachedJudge(OpenAIJudge(url, model, api_key=os.environ.get(api_key_env)), cache)
