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


def test_ctrl_c_during_an_answer_stops_it_and_the_chat_goes_on(tmp_path):
    import threading

    assistant = LlavaMini.load(write_random_model(tmp_path / "model"))
    session = ChatSession(assistant, GenerationSettings(max_new_tokens=40))
    lines = iter(["first question", "second question", "/quit"])
    out = io.StringIO()

    class CtrlCOnFirstPiece(io.StringIO):
        """The terminal: the user presses Ctrl-C as the first answer starts to appear."""

        interrupted = False

        def write(self, text: str) -> int:
            if text not in ("", "\n") and not self.interrupted and not text.startswith(("commands", "(")):
                CtrlCOnFirstPiece.interrupted = True
                raise KeyboardInterrupt
            return out.write(text)

    threads = threading.active_count()
    run_chat_loop(session, lambda: next(lines), CtrlCOnFirstPiece())
    assert CtrlCOnFirstPiece.interrupted and "(answer stopped" in out.getvalue()
    # The stopped turn left no trace; the next question was answered; no generating thread is left behind.
    assert [text for _, text in session.turns][::2] == ["second question"]
    assert threading.active_count() == threads


def test_ctrl_c_at_the_prompt_ends_the_chat_cleanly(tmp_path):
    def read() -> str:
        raise KeyboardInterrupt

    out = io.StringIO()
    run_chat_loop(ChatSession(LlavaMini.load(write_random_model(tmp_path / "model")), GenerationSettings()), read, out)
    assert out.getvalue().endswith("\n")


def test_a_failing_turn_is_reported_and_the_conversation_kept(tmp_path, monkeypatch):
    assistant = LlavaMini.load(write_random_model(tmp_path / "model"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    session = ChatSession(assistant, GenerationSettings(max_new_tokens=2))
    calls = []

    def failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory on the device")
        yield from original(*args, **kwargs)

    original = assistant.stream_chat
    monkeypatch.setattr(assistant, "stream_chat", failing_once)
    lines = iter(["hello", f"/image {tmp_path / 'broken.png'}", "and now ?", "still there ?", "/quit"])
    out = io.StringIO()
    run_chat_loop(session, lambda: next(lines), out)
    assert "error: " in out.getvalue() and "broken.png" in out.getvalue()
    assert "error: RuntimeError: out of memory on the device" in out.getvalue()
    assert [text for role, text in session.turns if role == "user"] == ["hello", "still there ?"]
