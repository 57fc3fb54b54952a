"""The judge transport: requests sent as built (only the settings a protocol sends), the model override, and
the reply cache (retries are new requests). A fake client stands in for the `openai` one."""

from __future__ import annotations

from types import SimpleNamespace

from llava_mini.eval.judge import CachedJudge, JudgeRequest, OpenAIJudge, build_judge, judge_model


class FakeClient:
    def __init__(self, reply: str = "{'score': 5}") -> None:
        self.calls: list[dict] = []
        self.reply = reply
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **kwargs):
        self.calls.append(kwargs)
        message = SimpleNamespace(content=self.reply)
        return SimpleNamespace(choices=[SimpleNamespace(message=message)])


def test_request_arguments_send_only_the_protocols_settings():
    bare = JudgeRequest("gpt-3.5-turbo", (("system", "s"), ("user", "u")))
    assert bare.arguments() == {
        "model": "gpt-3.5-turbo",
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
    }
    full = JudgeRequest("gpt-4-0613", (("user", "u"),), temperature=0.0, max_tokens=3, attempt=2)
    assert full.arguments("my-judge") == {
        "model": "my-judge",
        "messages": [{"role": "user", "content": "u"}],
        "temperature": 0.0,
        "max_tokens": 3,
    }


def test_openai_judge_default_model_and_override():
    client = FakeClient()
    request = JudgeRequest("gpt-4-0314", (("user", "u"),), temperature=0.2, max_tokens=1024)
    assert OpenAIJudge("http://127.0.0.1:1/v1", client=client).complete(request) == "{'score': 5}"
    assert client.calls[-1] == request.arguments()
    judge = OpenAIJudge("http://127.0.0.1:1/v1", "local-judge", client=client)
    judge.complete(request)
    assert client.calls[-1]["model"] == "local-judge" and client.calls[-1]["temperature"] == 0.2
    assert judge_model(judge, "gpt-4-0314") == "local-judge"
    no_override = CachedJudge(OpenAIJudge("http://127.0.0.1:1/v1", "", client=client), "unused.jsonl")
    assert no_override.model is None and judge_model(no_override, "gpt-4-0314") == "gpt-4-0314"


def test_cache_keys_on_the_request_and_its_attempt(tmp_path):
    client = FakeClient()
    path = tmp_path / "judgements.jsonl"
    cached = CachedJudge(OpenAIJudge("http://127.0.0.1:1/v1", client=client), path)
    request = JudgeRequest("gpt-3.5-turbo", (("user", "u"),), temperature=0.0)
    assert cached.complete(request) == cached.complete(request) == "{'score': 5}"
    assert len(client.calls) == 1
    retry = JudgeRequest("gpt-3.5-turbo", (("user", "u"),), temperature=0.0, attempt=1)
    cached.complete(retry)
    assert len(client.calls) == 2  # asking again is a new request, as in the official scripts
    # a new process reads the file (a line cut off by a kill is skipped): no new request
    with path.open("a") as handle:
        handle.write('{"key": "cut off')
    again = CachedJudge(OpenAIJudge("http://127.0.0.1:1/v1", client=client), path)
    assert again.complete(request) == again.complete(retry) == "{'score': 5}"
    assert len(client.calls) == 2
    # another judge model is another request
    other = CachedJudge(OpenAIJudge("http://127.0.0.1:1/v1", "other", client=client), path)
    other.complete(request)
    assert len(client.calls) == 3


def test_build_judge_is_off_without_url(tmp_path):
    assert build_judge(None, "gpt-4", "OPENAI_API_KEY", tmp_path / "j.jsonl") is None
