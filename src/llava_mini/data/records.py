"""LLaVA-format conversation records (LLaVA-665K, Video-ChatGPT, the synthetic world) -> validated samples."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
MARKERS = {"image": "<image>", "video": "<video>"}


class RecordError(ValueError):
    """A record that cannot be used; the message names the file, the entry and the field."""


@dataclass
class ConversationRecord:
    """One training conversation: media (absolute paths) and (role, text) turns, user first."""

    id: str
    media_kind: str | None
    media: list[Path]
    turns: list[tuple[str, str]]
    meta: dict = field(default_factory=dict)


def read_entries(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordError(f"{path}: invalid JSON ({error})") from error
    if not isinstance(entries, list):
        raise RecordError(f"{path}: expected a JSON list of records")
    return entries


def parse_record(entry: dict, where: str, media_root: Path, check_media: bool) -> ConversationRecord:
    if not isinstance(entry, dict) or "conversations" not in entry:
        raise RecordError(f"{where}: missing field 'conversations'")
    kinds = [kind for kind in MARKERS if kind in entry]
    if len(kinds) > 1:
        raise RecordError(f"{where}: has both 'image' and 'video'")
    kind = kinds[0] if kinds else None
    names = entry[kind] if kind else []
    names = [names] if isinstance(names, str) else list(names)
    media = [media_root / name for name in names]
    if check_media:
        for path in media:
            if not path.is_file():
                raise RecordError(f"{where}: field '{kind}' names a missing file {path}")
    turns = []
    for index, turn in enumerate(entry["conversations"]):
        role = ROLES.get(turn.get("from", turn.get("role")))
        if role is None:
            raise RecordError(f"{where}: conversations[{index}] has unknown role {turn.get('from')!r}")
        if role != ("user" if index % 2 == 0 else "assistant"):
            raise RecordError(f"{where}: conversations[{index}] breaks the user/assistant alternation")
        turns.append((role, str(turn.get("value", turn.get("content", "")))))
    if not turns or turns[-1][0] != "assistant":
        raise RecordError(f"{where}: 'conversations' must end with an assistant turn")
    text = "".join(t for _, t in turns)
    placeholders = text.count("<image>") + text.count("<video>")
    if kind and placeholders == 0 and len(media) == 1:
        turns[0] = ("user", f"{MARKERS[kind]}\n{turns[0][1]}")  # LLaVA convention: the medium leads
        placeholders = 1
    if placeholders != len(media):
        raise RecordError(f"{where}: {placeholders} placeholders in 'conversations' but {len(media)} media files")
    meta = {k: v for k, v in entry.items() if k not in ("id", "conversations", "image", "video")}
    return ConversationRecord(str(entry.get("id", where)), kind, media, turns, meta)


def load_records(
    path: str | os.PathLike, media_root: str | os.PathLike | None = None, check_media: bool = True
) -> list[ConversationRecord]:
    """Read a LLaVA JSON list or JSONL file; media paths are relative to `media_root` (default: its folder)."""
    path = Path(path)
    root = Path(media_root) if media_root is not None else path.parent
    return [
        parse_record(entry, f"{path} entry {index} (id {entry.get('id', '?')})" if isinstance(entry, dict) else f"{path} entry {index}", root, check_media)
        for index, entry in enumerate(read_entries(path))
    ]


def write_world_files(out: Path, world: dict, **files: list[dict]) -> None:
    """Write a generated world's record files to `out`: `captions` / `instructions` as JSON lists
    (captions.json, instructions.json), `questions` / `scenes` as JSON lines (questions.jsonl,
    scenes.jsonl), each only when given, then the `world` summary as world.json."""
    for name, entries in files.items():
        if name in ("captions", "instructions"):
            (out / f"{name}.json").write_text(json.dumps(entries, indent=1) + "\n")
        elif name in ("questions", "scenes"):
            with (out / f"{name}.jsonl").open("w") as handle:
                handle.writelines(json.dumps(entry) + "\n" for entry in entries)
        else:
            raise ValueError(f"unknown world file {name!r}: captions, instructions, questions or scenes")
    (out / "world.json").write_text(json.dumps(world, indent=2) + "\n")

