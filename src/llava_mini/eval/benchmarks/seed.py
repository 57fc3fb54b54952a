"""SEED-Bench: four-option multiple choice in 12 evaluation dimensions (9 image, 3 video).

Layout: seed_bench/ SEED-Bench.json ({"questions": [...], "question_type": {name: id}}), SEED-Bench-image/,
(or all of it in seed_bench/SEED-Bench/, the release's layout), and for the video dimensions either SEED-Bench-video-image/<question_id>.png (the middle frame LLaVA-1.5
extracts) or SEED-Bench-video/<data_id> (a video file or a folder of frames; LLaVA-Mini can read video).
Video questions whose media is absent are skipped with a warning (the image-only SEED-IMG protocol).
Prompt: question, "A. ..." lines, "Answer with the option's letter from the given choices directly."
Scored as the release's scripts/convert_seed_for_submission.py does: an answer is right only if it is the
letter itself ("A"; "A." or "(A)" are wrong); accuracy per dimension, over all, over image and over video
questions. The upload file is that script's: submission/seed_bench_upload.jsonl, {"question_id",
"prediction"} per line.
"""

from __future__ import annotations

import json
import logging
from functools import partial
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
from llava_mini.eval.scoring import LETTERS, extract_choice, letter_accuracy, seed_is_correct

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
    question_file = find_file(
        root, ["SEED-Bench.json", "SEED-Bench/SEED-Bench.json"], "SEED-Bench question file"
    )
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
                    "question_id": entry["question_id"],
                },
            )
        )
    if skipped:
        logger.warning(
            "SEED-Bench: skipped %d video questions whose frames or videos are not in %s", skipped, folder
        )
    return items


def score_seed(records: list[dict], judge: Judge | None = None, reading: str = "official") -> Results:
    outcomes = []
    for record in records:
        meta, answer = record["meta"], record["answer"].strip()
        if reading == "official":
            outcome: int | None = int(seed_is_correct(answer, LETTERS[meta["answer"]]))
        else:
            picked = extract_choice(answer, meta["options"])
            outcome = None if picked is None else int(picked == meta["answer"])
        outcomes.append((f"{meta['dimension_id']:02d} {meta['dimension']}", outcome))
    table = letter_accuracy(outcomes)
    overall = table.pop("all")
    image = [o for (_, o), r in zip(outcomes, records, strict=True) if r["meta"]["data_type"] == "image"]
    video = [o for (_, o), r in zip(outcomes, records, strict=True) if r["meta"]["data_type"] != "image"]
    metrics = {"accuracy": overall["accuracy"]}
    if reading != "official":
        metrics["unparsed"] = overall["unparsed"]
    if image:
        metrics["image_accuracy"] = sum(bool(o) for o in image) / len(image)
    if video:
        metrics["video_accuracy"] = sum(bool(o) for o in video) / len(video)
    notes = []
    if reading == "official":
        # convert_seed_for_submission.py counts only right answers per dimension and stops with a KeyError on a
        # dimension that has none: that dimension's accuracy is undefined, not 0.
        for name, row in table.items():
            if row["correct"] == 0:
                row["accuracy"] = None
                notes.append(f"{name}: no right answer; the official script stops here (KeyError), so undefined")
    else:
        metrics = {f"lenient_{k}": v for k, v in metrics.items()}
        notes.append("lenient reading (scoring.extract_choice): not the official score")
    return Results(metrics=metrics, categories=table, notes=notes)


def write_seed_submission(records: list[dict], data: Path, out: Path) -> list[Path]:
    """The release's upload file: one {"question_id", "prediction": the answer as given} per line."""
    path = out / "submission" / "seed_bench_upload.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"question_id": r["meta"]["question_id"], "prediction": r["answer"].strip()})
        for r in records
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return [path]


BENCHMARKS = [
    Benchmark(
        "seed-bench",
        "SEED-Bench",
        "image",
        load_seed,
        score_seed,
        16,
        write_seed_submission,
        lenient_score=partial(score_seed, reading="lenient"),
        layout="SEED-Bench.json + SEED-Bench-image/ [+ SEED-Bench-video-image/ or SEED-Bench-video/]",
    )
]
