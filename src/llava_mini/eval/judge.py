"""An LLM judge for the open-ended benchmarks, through any OpenAI-compatible endpoint (off by default).

LLaVA-Bench, MM-Vet, open-ended video QA and Video-ChatGPT's generative benchmark are scored by a language
model that compares an answer with a reference. `OpenAIJudge` talks to any server that speaks the OpenAI chat
API (OpenAI itself, vLLM, `llava-mini serve`, ...) with the official `openai` client; `CachedJudge` stores
every reply in a JSON-lines file so that a rerun does not pay twice. The prompts live with each benchmark.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any


class OpenAIJudge:
    """Chat completions at `url` (".../v1") with `model`; greedy by default, as the protocols ask."""

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        timeout_s: float = 120.0,
        client: Any = None,
    ) -> None:
        if not model:
            raise ValueError("--judge-model is required with --judge-url")
        if client is None:
            try:
                from openai import OpenAI
            except ImportError as error:
                raise ImportError("the LLM judge needs the `openai` package: pip install openai") from error
            client = OpenAI(base_url=url, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=3)
        self.client, self.model = client, model
        self.temperature, self.max_tokens = temperature, max_tokens

    def complete(self, system: str, user: str) -> str:
        response = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )
        return response.choices[0].message.content or ""


class CachedJudge:
    """Wraps a judge; replies are keyed by a hash of (judge name, system, user) and appended to `path`."""

    def __init__(self, judge: Any, path: str | os.PathLike, name: str = "") -> None:
        self.judge, self.path, self.name = judge, Path(path), name or getattr(judge, "model", "")
        self.replies: dict[str, str] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.replies[entry["key"]] = entry["reply"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by an interrupted run

    def complete(self, system: str, user: str) -> str:
        key = hashlib.sha256(json.dumps([self.name, system, user]).encode()).hexdigest()
        if key not in self.replies:
            reply = self.judge.complete(system, user)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, "reply": reply}) + "\n")
            self.replies[key] = reply
        return self.replies[key]


def parse_dict_reply(text: str) -> dict | None:
    """The first {...} in a reply, read as JSON or as a Python literal; None when there is none."""
    match = re.search(r"\{.*?\}", text, re.S)
    if not match:
        return None
    for reader in (json.loads, ast.literal_eval):
        try:
            value = reader(match.group(0))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_number(text: str, low: float, high: float) -> float | None:
    """The first number in [low, high] in a reply ("Score: 0.7" -> 0.7); None when there is none."""
    for token in re.findall(r"-?\d+(?:\.\d+)?", text):
        value = float(token)
        if low <= value <= high:
            return value
    return None


def parse_score_pair(text: str, low: float = 1, high: float = 10) -> tuple[float, float] | None:
    """The two scores that make up the reply's first line ("8 6", "8, 6"); None for anything else."""
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[,\s]\s*(\d+(?:\.\d+)?)\s*", first_line)
    if not match:
        return None
    values = float(match.group(1)), float(match.group(2))
    return values if all(low <= v <= high for v in values) else None


def build_judge(url: str | None, model: str | None, api_key_env: str, cache: Path) -> CachedJudge | None:
    """The CLI's judge: None unless --judge-url is given; the key is read from the named variable if set."""
    if not url:
        return None
    return CachedJudge(OpenAIJudge(url, model or "", api_key=os.environ.get(api_key_env)), cache)
