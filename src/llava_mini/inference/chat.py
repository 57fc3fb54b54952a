"""`llava-mini chat`: a multi-turn terminal conversation; attach media at any turn, answers stream."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from llava_mini.inference.generate import GenerationSettings, LlavaMini
from llava_mini.processing.processor import Medium, is_video
from llava_mini.processing.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN

HELP = "commands: /image PATH, /video PATH, /reset, /help, /quit; anything else is a question"


@dataclass
class ChatSession:
    """The conversation so far: messages with media markers and the media in order."""

    assistant: LlavaMini
    settings: GenerationSettings
    turns: list[tuple[str, str]] = field(default_factory=list)
    media: list[Medium] = field(default_factory=list)
    pending: list[Medium] = field(default_factory=list)

    def attach(self, path: str, kind: str) -> Medium:
        medium = self.assistant.medium(path)
        if (kind == "video") != is_video(medium):
            raise ValueError(f"{path} is not a{'' if kind == 'video' else 'n'} {kind} file")
        self.pending.append(medium)
        return medium

    def reset(self) -> None:
        self.turns, self.media, self.pending = [], [], []

    def ask(self, question: str, write: Callable[[str], None]) -> str:
        markers = "".join((VIDEO_TOKEN if is_video(m) else IMAGE_TOKEN) + "\n" for m in self.pending)
        turns = self.turns + [("user", markers + question)]
        media = self.media + self.pending
        pieces = []
        for piece in self.assistant.stream_chat(self.assistant.processor.build_messages(turns), media, self.settings):
            pieces.append(piece)
            write(piece)
        answer = "".join(pieces).strip()
        self.turns = turns + [("assistant", answer)]
        self.media, self.pending = media, []
        return answer


def run_chat_loop(session: ChatSession, read: Callable[[], str], out: TextIO = sys.stdout) -> None:
    """Read lines until /quit or end of input; errors are reported and the session goes on."""
    out.write(HELP + "\n")
    while True:
        try:
            line = read().strip()
        except EOFError:
            return
        if not line:
            continue
        command, _, argument = line.partition(" ")
        try:
            if command == "/quit":
                return
            if command == "/help":
                out.write(HELP + "\n")
            elif command == "/reset":
                session.reset()
                out.write("(conversation cleared)\n")
            elif command in ("/image", "/video"):
                session.attach(argument.strip(), command[1:])
                out.write(f"(attached {argument.strip()})\n")
            elif command.startswith("/"):
                out.write(f"unknown command {command}; {HELP}\n")
            else:
                session.ask(line, lambda piece: (out.write(piece), out.flush()))
                out.write("\n")
        except (FileNotFoundError, ValueError) as error:
            out.write(f"error: {error}\n")
