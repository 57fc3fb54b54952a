"""SEED-Bench: four-option multiple choice in 12 evaluation dimensions (9 image, 3 video).

Layout: seed_bench/ SEED-Bench.json ({"questions": [...], "question_type": {name: id}}), SEED-Bench-image/,
and for the video dimensions either SEED-Bench-video-image/<question_id>.png (the middle frame LLaVA-1.5
extracts) or SEED-Bench-video/<data_id> (a video file or a folder of frames; LLaVA-Mini can read video).
Video questions whose media is absent are skipped with a warning (the image-only SEED-IMG protocol).
Prompt: question, "A. ..." lines, "Answer with the option's letter from the given choices directly."
"""

from __future__ import annotations

import logging
from pathlib import Path

from llava_mini.eval.benchmarks.base import (
    OPTION_LETTER_PROMPT,
    Benchmark,
    FrameFolder,
    Item,
    Judge,
    MediaSource,
    Results,
    VideoClip,
    field_of,
    find_file,
    options_block,
    read_json,
    resolve_media,
)
from llava_mini.eval.scoring import LETTERS, extract_choice, letter_accuracy

logger = logging.getLogger(__name__)
CHOICE_KEYS = ("choice_a", "choice_b", "choice_c", "choice_d")


def _video_media(root: Path, entry: dict) -> MediaSource | None:
    frame = root / "SEED-Bench-video-image" / f"{entry['question_id']}.png"
    if frame.is_file():
        return frame
    video = root / "SEED-Bench-video" / str(entry["data_id"])
    if video.is_dir():
        return FrameFolder(video)
    if video.is_file():
        return VideoClip(video)
    return None


def load_seed(root: Path) -> list[Item]:
    question_file = find_file(root, ["SEED-Bench.json"], "SEED-Bench question file")
    folder = question_file.parent
    data = read_json(question_file)
    names = {int(number): name for name, number in data.get("question_type", {}).items()}
    items, skipped = [], 0
    for index, entry in enumerate(field_of(data, "questions", str(question_file))):
        where = f"{question_file} question {index}"
        if entry.get("data_type", "image") == "image":
            media = resolve_media(folder / "SEED-Bench-image", field_of(entry, "data_id", where), where)
        else:
            media = _video_media(folder, entry)
            if media is None:
                skipped += 1
                continue
        options = [str(field_of(entry, key, where)) for key in CHOICE_KEYS]
        dimension = int(field_of(entry, "question_type_id", where))
        items.append(
            Item(
                id=str(field_of(entry, "question_id", where)),
                media=[media],
                prompt=f"{entry['question']}\n{options_block(options)}\n{OPTION_LETTER_PROMPT}",
                meta={
                    "options": options,
                    "answer": LETTERS.index(str(field_of(entry, "answer", where)).strip()),
                    "dimension": names.get(dimension, str(dimension)),
                    "dimension_id": dimension,
                    "data_type": entry.get("data_type", "image"),
                },
            )
        )
    if skipped:
        logger.warning(
            "SEED-Bench: skipped %d video questions whose frames or videos are not in %s", skipped, folder
        )
    return items


def score_seed(records: list[dict], judge: Judge | None = None) -> Results:
    outcomes = []
    for record in records:
        picked = extract_choice(record["answer"], record["meta"]["options"])
        outcome = None if picked is None else int(picked == record["meta"]["answer"])
        outcomes.append((f"{record['meta']['dimension_id']:02d} {record['meta']['dimension']}", outcome))
    table = letter_accuracy(outcomes)
    overall = table.pop("all")
    image = [o for (_, o), r in zip(outcomes, records, strict=True) if r["meta"]["data_type"] == "image"]
    video = [o for (_, o), r in zip(outcomes, records, strict=True) if r["meta"]["data_type"] != "image"]
    metrics = {"accuracy": overall["accuracy"], "unparsed": overall["unparsed"]}
    if image:
        metrics["image_accuracy"] = sum(bool(o) for o in image) / len(image)
    if video:
        metrics["video_accuracy"] = sum(bool(o) for o in video) / len(video)
    return Results(metrics=metrics, categories=table)


BENCHMARKS = [
    Benchmark(
        "seed-bench",
        "SEED-Bench",
        "image",
        load_seed,
        score_seed,
        16,
        layout="SEED-Bench.json + SEED-Bench-image/ [+ SEED-Bench-video-image/ or SEED-Bench-video/]",
    )
]
