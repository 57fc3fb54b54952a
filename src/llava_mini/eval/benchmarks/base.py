"""What every benchmark module provides: items to answer, a scorer, optionally a submission file.

A benchmark reads its own distribution format from local files and yields `Item`s (id, media, prompt, meta).
The runner answers each prompt and stores one record per item, {"id", "prompt", "answer", "meta"}; the
benchmark's scorer turns the records into `Results`. Nothing here imports torch: the CLI lists benchmarks
without loading a model.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

if TYPE_CHECKING:
    from llava_mini.eval.judge import JudgeRequest

SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
OPTION_LETTER_PROMPT = "Answer with the option's letter from the given choices directly."
NOT_SCORED = "not scored (no judge)"
# How answers are read: "official" reproduces the benchmark's official scripts (the headline figure);
# "lenient" is the project's more forgiving reading, for benchmarks that register one.
READINGS = ("official", "lenient")


@dataclass(frozen=True)
class VideoClip:
    """A video file, optionally cut to [start, end] seconds (MVBench's bounded tasks)."""

    path: Path
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class FrameFolder:
    """Extracted frames (sorted by name) recorded at `source_fps`, optionally cut to [start, end] seconds."""

    path: Path
    source_fps: float = 3.0
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class EncodedImage:
    """A base64 image kept encoded until it is answered (MMBench's TSV holds thousands)."""

    data: str
    where: str

    def open(self) -> Image.Image:
        return decode_base64_image(self.data, self.where)


MediaSource = Path | Image.Image | VideoClip | FrameFolder | EncodedImage


@dataclass
class Item:
    """One question: media in the order their placeholders appear, the full prompt, and scoring metadata.

    `meta` must be JSON-serialisable: it is stored with the answer and is all the scorer sees.
    """

    id: str
    media: list[MediaSource]
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    """Headline metrics, a per-category table, and notes (protocol caveats, unscored parts)."""

    metrics: dict[str, Any]
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "categories": self.categories, "notes": self.notes}


class Judge(Protocol):
    """Anything that answers a `JudgeRequest` with the reply's text, e.g. `eval.judge.OpenAIJudge`."""

    def complete(self, request: JudgeRequest) -> str: ...


Loader = Callable[[Path], list[Item]]
Scorer = Callable[[list[dict], "Judge | None"], Results]
SubmissionWriter = Callable[[list[dict], Path, Path], list[Path]]


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: `load(data_path)` -> items, `score(records, judge)` -> results.

    `write_submission(records, data_path, out_dir)` writes the file an evaluation server expects (VQAv2
    test-dev, VizWiz test, MMBench test, EgoSchema, MM-Vet) and returns the paths written.
    `score` follows the official protocol; `lenient_score`, when a benchmark has one, is the second figure
    asked for with `--reading lenient`.
    """

    name: str
    title: str
    modality: str
    load: Loader
    score: Scorer
    max_new_tokens: int = 16
    write_submission: SubmissionWriter | None = None
    uses_judge: bool = False
    layout: str = ""
    lenient_score: Scorer | None = None

    @property
    def readings(self) -> tuple[str, ...]:
        """The readings of answers this benchmark offers: always "official", and "lenient" where it has one."""
        return READINGS if self.lenient_score is not None else ("official",)

    def scorer(self, reading: str = "official") -> Scorer:
        """The scorer for a reading ("official" or "lenient"), or a ValueError naming what exists."""
        if reading not in READINGS:
            raise ValueError(f"unknown reading {reading!r}; choose from {', '.join(READINGS)}")
        if reading not in self.readings:
            raise ValueError(
                f"{self.title} has no {reading!r} reading of answers (it has: {', '.join(self.readings)})"
            )
        return self.score if reading == "official" else self.lenient_score

    def score_records(
        self, records: list[dict], judge: Judge | None = None, reading: str = "official"
    ) -> Results:
        """Score with the official reading (default) or, where offered, another one named by `reading`."""
        return self.scorer(reading)(records, judge)


# --- file helpers: every error names the file and the entry ----------------------------------------


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def find_file(root: Path, names: Sequence[str], what: str) -> Path:
    """`root` itself if it is a file, else the first of `names` under it (the error lists the candidates)."""
    if root.is_file():
        return root
    for name in names:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{what} not found under {root} (looked for {', '.join(names)})")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def read_jsonl(path: Path) -> list[dict]:
    """Entries of a JSON-lines file; a JSON array in the file is accepted too (POPE ships both)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return read_json(path)
    entries = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error})") from error
    return entries


def field_of(entry: dict, key: str, where: str) -> Any:
    """entry[key], or a ValueError naming the file/line and the missing field."""
    try:
        return entry[key]
    except (KeyError, TypeError):
        raise ValueError(f"{where}: missing field {key!r}") from None


def decode_base64_image(data: str, where: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    except (ValueError, OSError) as error:
        raise ValueError(f"{where}: the image is not valid base64 image data ({error})") from error


def is_missing(value: Any) -> bool:
    """Empty cells of a TSV ('', 'nan', None) count as missing."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return str(value).strip().lower() in ("", "nan", "none")


def options_block(options: Sequence[str]) -> str:
    """Options as "A. cat" lines, as LLaVA's MMBench and SEED prompts list them."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if len(options) > len(letters):
        raise ValueError(f"at most {len(letters)} options are supported, got {len(options)}")
    return "\n".join(f"{letters[i]}. {option}" for i, option in enumerate(options))


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def resolve_media(root: Path, name: str | os.PathLike, where: str) -> Path:
    """root/name, or a FileNotFoundError naming the entry that points at a missing file."""
    path = root / name
    if not path.exists():
        raise FileNotFoundError(f"{where}: media file not found: {path}")
    return path
