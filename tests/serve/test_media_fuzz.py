"""Seeded fuzzing of media files: mutated images and videos never give a 5xx from the server or a traceback
from `llava-mini ask`, and the server still answers afterwards.

Valid PNG, JPEG, GIF, BMP and WebP pictures and an MP4 clip are mutated (byte flips, truncation, another
format's header, huge declared sizes, inserted bytes) and sent as `image_url` / `video_url` data URLs, either
kind. In CI the loop runs for MEDIA_FUZZ_SECONDS (default 3) from MEDIA_FUZZ_SEED (default 0); a longer run by
hand (docs/hardening.md): `MEDIA_FUZZ_SECONDS=180 MEDIA_FUZZ_ASK_CASES=40 pytest -s tests/serve/test_media_fuzz.py`,
which prints the outcomes it saw.
"""

from __future__ import annotations

import base64
import io
import os
import random
import resource
import time
from collections import Counter

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from llava_mini.cli import main
from llava_mini.inference.generate import LlavaMini
from llava_mini.inference.random_model import write_random_model
from llava_mini.processing.video import write_video
from llava_mini.serve.app import ServerLimits, ServerState, create_app
from llava_mini.serve.media import MediaPolicy

MODEL_ID = "llava-mini-media-fuzz"
SECONDS = float(os.environ.get("MEDIA_FUZZ_SECONDS", "3"))
SEED = int(os.environ.get("MEDIA_FUZZ_SEED", "0"))
ASK_CASES = int(os.environ.get("MEDIA_FUZZ_ASK_CASES", "4"))  # `ask` loads the model each time: a few
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP",
         b"\x00\x00\x00\x18ftypmp42", b"\x1aE\xdf\xa3", b"OggS", b"II*\x00"]


def seed_files(folder) -> dict[str, tuple[str, bytes]]:
    """name -> (suffix, bytes) of small valid media."""
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    seeds = {}
    for name, fmt in (("png", "PNG"), ("jpeg", "JPEG"), ("bmp", "BMP"), ("webp", "WEBP")):
        buffer = io.BytesIO()
        picture.save(buffer, format=fmt)
        seeds[name] = ("." + name, buffer.getvalue())
    buffer = io.BytesIO()
    picture.convert("P").save(buffer, format="GIF", save_all=True, append_images=[picture.convert("P")])
    seeds["gif"] = (".gif", buffer.getvalue())  # `ask` reads .gif as a video
    clip = folder / "clip.mp4"
    write_video(clip, rng.integers(0, 255, (6, 32, 48, 3), dtype=np.uint8), fps=2)
    seeds["mp4"] = (".mp4", clip.read_bytes())
    return seeds


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random mutations of `data`."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["flip", "truncate", "header", "huge", "insert"])
        if kind == "flip":
            for _ in range(rng.randint(1, 16)):
                data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        elif kind == "truncate":
            data = data[: rng.randrange(1, len(data))]
        elif kind == "header":
            magic = rng.choice(MAGIC)
            data[: len(magic)] = magic
        elif kind == "huge":  # a size or count field set very large: anywhere in the first 256 bytes
            where = rng.randrange(min(len(data), 256))
            value = rng.choice([2**31 - 1, 2**32 - 1, 2**16 - 1, 100_000, 20_000])
            data[where : where + 4] = value.to_bytes(4, rng.choice(["big", "little"]))
        else:
            where = rng.randrange(len(data))
            data[where:where] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        if not data:
            data = bytearray(b"\x00")
    return bytes(data)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return seed_files(tmp_path_factory.mktemp("seeds"))


def request(kind: str, data: bytes) -> dict:
    url = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
    content = [{"type": kind, kind: {"url": url}}, {"type": "text", "text": "what is it ?"}]
    return {"model": MODEL_ID, "max_tokens": 1, "messages": [{"role": "user", "content": content}]}


def test_mutated_media_never_give_a_server_error(model_dir, seeds):
    policy = MediaPolicy(max_image_pixels=4_000_000, max_frame_pixels=4_000_000, max_request_media_bytes=200_000_000)
    state = ServerState(LlavaMini.load(model_dir), MODEL_ID, policy, ServerLimits(max_new_tokens=2))
    rng, outcomes, slowest = random.Random(SEED), Counter(), 0.0
    deadline = time.monotonic() + SECONDS
    with TestClient(create_app(state), raise_server_exceptions=False) as client:
        while time.monotonic() < deadline:
            name = rng.choice(sorted(seeds))
            data = mutate(seeds[name][1], rng)
            kind = "video_url" if (name == "mp4") != (rng.random() < 0.1) else "image_url"
            started = time.monotonic()
            response = client.post("/v1/chat/completions", json=request(kind, data))
            slowest = max(slowest, time.monotonic() - started)
            assert response.status_code < 500, f"{response.status_code} for a mutated {name}: {response.text[:300]}"
            if response.status_code >= 400:
                message = response.json()["error"]["message"]
                assert message and "Traceback" not in message
                outcomes[f"{response.status_code} {message.split('(')[0].split(':')[0][:40]}"] += 1
            else:
                outcomes["200"] += 1
        answer = client.post("/v1/chat/completions", json=request("image_url", seeds["png"][1]))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nmedia fuzz (seed {SEED}, {SECONDS:.0f} s): {sum(outcomes.values())} requests, slowest {slowest:.2f} s, "
          f"peak RSS {peak_mb:.0f} MB:", dict(outcomes.most_common()))
    assert answer.status_code == 200, "the server must still answer after the fuzzing"
    assert sum(outcomes.values()) >= 5


def test_mutated_media_never_give_a_traceback_from_ask(model_dir, seeds, tmp_path, capsys):
    rng, codes = random.Random(SEED + 1), Counter()
    for case in range(ASK_CASES):
        name = sorted(seeds)[case % len(seeds)]
        suffix, data = seeds[name]
        path = tmp_path / f"case{case}{suffix}"
        path.write_bytes(mutate(data, rng))
        code = main(["ask", str(path), "what ?", "--model", str(model_dir), "--max-new-tokens", "1", "--no-stream"])
        error = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in error, f"mutated {name}: exit {code}, {error[-500:]}"
        assert code == 0 or error.startswith("llava-mini: error: "), error
        codes[code] += 1
    print(f"\nask fuzz: exit codes {dict(codes)}")
