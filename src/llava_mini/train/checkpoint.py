"""Atomic checkpoints: written to a temporary folder, then renamed into place; resumable state."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch

STATE_FILE = "trainer_state.pt"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def atomic_directory_write(target: Path, write) -> Path:
    """Call write(tmp_dir), then move tmp_dir to `target`; a failure leaves no partial `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        write(temporary)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(temporary, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return target


def list_checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a stage, oldest first."""
    if not stage_dir.is_dir():
        return []
    found = []
    for child in stage_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def prune_checkpoints(stage_dir: Path, keep: int) -> None:
    for _, path in list_checkpoints(stage_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def save_training_state(directory: Path, state: dict) -> None:
    torch.save(state, directory / STATE_FILE)


def load_training_state(directory: Path) -> dict:
    return torch.load(directory / STATE_FILE, weights_only=False)


def truncate_log(path: Path, step: int) -> None:
    """Keep the lines of a jsonl training log up to `step` (a run resumed there, or restarted at 0, writes the
    later steps again); unreadable lines (a write cut by a kill) are dropped. Rewritten atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= step:
            kept.append(line)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)
