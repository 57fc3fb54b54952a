"""`llava-mini chat`: a multi-turn terminal conversation; attach media at any turn, answers stream."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from llava_mini.inference.generate import GenerationSettings, LlavaMini
from llava_mini.processing.image import describe_error
from llava_mini.processing.processor import Medium, is_video
from llava_mini.processing.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN

logger = logging.getLogger(__name__)

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
        """Stream the answer to `question` through `write`; the turn joins the history only once answered
        (an error or Ctrl-C half-way leaves the conversation as it was, pending media still attached)."""
        markers = "".join((VIDEO_TOKEN if is_video(m) else IMAGE_TOKEN) + "\n" for m in self.pending)
        turns = self.turns + [("user", markers + question)]
        media = self.media + self.pending
        pieces = []
        stream = self.assistant.stream_chat(self.assistant.processor.build_messages(turns), media, self.settings)
        try:
            for piece in stream:
                pieces.append(piece)
                write(piece)
        finally:
            stream.close()  # on Ctrl-C: stops the generating thread and waits for it
        answer = "".join(pieces).strip()
        self.turns = turns + [("assistant", answer)]
        self.media, self.pending = media, []
        return answer


def run_chat_loop(session: ChatSession, read: Callable[[], str], out: TextIO = sys.stdout) -> None:
    """Read lines until /quit, end of input or Ctrl-C at the prompt; errors are reported and the session goes
    on, and Ctrl-C during an answer stops that answer only."""
    out.write(HELP + "\n")
    while True:
        try:
            line = read().strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
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
        except KeyboardInterrupt:
            out.write("\n(answer stopped; Ctrl-C at the prompt or /quit ends the chat)\n")
        except (OSError, ValueError) as error:  # bad files and media, over-long prompts
            out.write(f"error: {error}\n")
        except Exception as error:  # anything else a turn raises: report it, keep the conversation
            logger.info("chat turn failed", exc_info=True)
            out.write(f"error: {describe_error(error)}\n")
