"""Run an official judge script unchanged, with the OpenAI chat call replaced by a recorded fake.

usage: FAKE_REPLIES=replies.json FAKE_REQUESTS=requests.jsonl python run_official.py SCRIPT.py [script args...]

replies.json maps a marker (a string that occurs in exactly one request's messages, e.g. the model's answer)
to the list of replies the fake gives: the n-th request carrying that marker gets replies[n] (the last one
repeats). Every request is appended to FAKE_REQUESTS as {"key", "attempt", "request", "reply"} under a file
lock, so requests from the scripts' worker processes are recorded too. Works with openai 0.28 (module-level
ChatCompletion.create) and openai >= 1 (OpenAI().chat.completions.create).
"""

import fcntl
import json
import os
import runpy
import sys
import types

import openai

REPLIES = json.load(open(os.environ["FAKE_REPLIES"], encoding="utf-8"))
REQUESTS = os.environ["FAKE_REQUESTS"]


def fake_create(**kwargs):
    text = "\n".join(message["content"] for message in kwargs["messages"])
    keys = [key for key in REPLIES if key in text]
    if len(keys) != 1:
        raise RuntimeError(f"fake judge: {len(keys)} markers match request {text[-300:]!r}: {keys}")
    key = keys[0]
    with open(REQUESTS, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        attempt = sum(json.loads(line)["key"] == key for line in handle if line.strip())
        replies = REPLIES[key]
        reply = replies[min(attempt, len(replies) - 1)]
        handle.write(json.dumps({"key": key, "attempt": attempt, "request": kwargs, "reply": reply}) + "\n")
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_UN)
    return reply, kwargs.get("model")


if hasattr(openai, "ChatCompletion") and openai.version.VERSION.startswith("0."):

    def create_v0(**kwargs):
        reply, model = fake_create(**kwargs)
        return {"choices": [{"message": {"role": "assistant", "content": reply}}], "model": model}

    openai.ChatCompletion.create = create_v0
else:

    class FakeOpenAI:
        def __init__(self, *args, **kwargs):
            def create(**request):
                reply, model = fake_create(**request)
                message = types.SimpleNamespace(role="assistant", content=reply)
                return types.SimpleNamespace(choices=[types.SimpleNamespace(message=message)], model=model)

            self.chat = types.SimpleNamespace(completions=types.SimpleNamespace(create=create))

    openai.OpenAI = FakeOpenAI

script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
