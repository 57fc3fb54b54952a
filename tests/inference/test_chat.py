"""The terminal chat loop, driven by scripted input."""

from __future__ import annotations

import io

from PIL import Image

from llava_mini.inference.chat import ChatSession, run_chat_loop
from llava_mini.inference.generate import GenerationSettings, LlavaMini
from llava_mini.inference.random_model import write_random_model


def test_multi_turn_chat_with_media_commands(tmp_path):
    assistant = LlavaMini.load(write_random_model(tmp_path / "model"))
    Image.new("RGB", (30, 30), "red").save(tmp_path / "red.png")
    session = ChatSession(assistant, GenerationSettings(max_new_tokens=3))
    lines = iter([
        f"/image {tmp_path / 'red.png'}", "what colour ?", "and the shape ?",
        f"/video {tmp_path / 'red.png'}", "/image /missing.png", "/bogus", "/reset", "hello", "/quit",
    ])
    out = io.StringIO()
    run_chat_loop(session, lambda: next(lines), out)
    text = out.getvalue()
    assert "(attached" in text and "is not a video file" in text and "/missing.png" in text
    assert "unknown command /bogus" in text and "(conversation cleared)" in text
    # After /reset only the last question remains in the history.
    assert [role for role, _ in session.turns] == ["user", "assistant"] and session.media == []


def test_media_persist_across_turns(tmp_path):
    assistant = LlavaMini.load(write_random_model(tmp_path / "model"))
    Image.new("RGB", (30, 30), "blue").save(tmp_path / "blue.png")
    session = ChatSession(assistant, GenerationSettings(max_new_tokens=2))
    session.attach(str(tmp_path / "blue.png"), "image")
    session.ask("what colour ?", lambda piece: None)
    session.ask("are you sure ?", lambda piece: None)
    assert len(session.media) == 1 and session.turns[0][1].startswith("<image>\n")
    assert len(session.turns) == 4
