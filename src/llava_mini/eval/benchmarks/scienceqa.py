"""ScienceQA: multiple choice; the paper reports ScienceQA-IMG, the test questions that come with an image.

Layout: scienceqa/ llava_test_CQM-A.json (the release's: every test question) or llava_test_CQM-I.json
(image questions only), problems.json (answers, choices, subjects) and images/test/<id>/image.png.
The prompt is the release's question text (context, question, "Options: (A) ..."), without its `<image>`
marker, plus "Answer with the option's letter from the given choices directly." (its single-prediction mode).
Answers are read as the release's eval_science_qa.py reads them (`scoring.scienceqa_choice`): "B", "B. ..."
or one "The answer is B." ; anything else is wrong (the script returns -1 before its random pick).
Headline: IMG accuracy (questions with an image), as the script's "IMG-Accuracy".
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from llava_mini.eval.benchmarks.base import (
    OPTION_LETTER_PROMPT,
    Benchmark,
    Item,
    Judge,
    Results,
    field_of,
    find_file,
    read_json,
)
from llava_mini.eval.scoring import extract_choice, letter_accuracy, scienceqa_choice


def _image_path(root: Path, name: str, where: str) -> Path:
    for folder in (root / "images" / "test", root / "images", root / "test", root):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{where}: image {name!r} not found under {root / 'images' / 'test'}")


def load_scienceqa(root: Path) -> list[Item]:
    question_file = find_file(
        root, ["llava_test_CQM-A.json", "llava_test_CQM-I.json"], "ScienceQA question file"
    )
    folder = question_file.parent
    problems = read_json(find_file(folder, ["problems.json"], "ScienceQA problems.json"))
    items = []
    for index, entry in enumerate(read_json(question_file)):
        where = f"{question_file} entry {index}"
        problem_id = str(field_of(entry, "id", where))
        if problem_id not in problems:
            raise ValueError(f"{where}: problem {problem_id} is not in problems.json")
        problem = problems[problem_id]
        text = field_of(field_of(entry, "conversations", where)[0], "value", where)
        text = text.replace("<image>", "").strip()
        media = [_image_path(folder, entry["image"], where)] if entry.get("image") else []
        items.append(
            Item(
                id=problem_id,
                media=media,
                prompt=f"{text}\n{OPTION_LETTER_PROMPT}",
                meta={
                    "choices": problem["choices"],
                    "answer": int(problem["answer"]),
                    "subject": problem.get("subject", ""),
                    "has_image": bool(media),
                },
            )
        )
    return items


def score_scienceqa(records: list[dict], judge: Judge | None = None, reading: str = "official") -> Results:
    outcomes = []
    for record in records:
        meta, answer = record["meta"], record["answer"].strip()
        if reading == "official":
            picked = scienceqa_choice(answer, len(meta["choices"]))
            outcome = None if picked < 0 else int(picked == meta["answer"])
        else:
            picked = extract_choice(answer, meta["choices"])
            outcome = None if picked is None else int(picked == meta["answer"])
        outcomes.append(("IMG" if meta["has_image"] else "TXT", outcome))
        outcomes.append((f"subject/{meta['subject']}", outcome))
    table = letter_accuracy(outcomes)
    table.pop("all")
    image = table.get("IMG")
    every = outcomes[::2]  # one (IMG/TXT, outcome) pair per record
    metrics = {
        "img_accuracy": image["accuracy"] if image else "no image questions",
        "accuracy": sum(bool(o) for _, o in every) / len(every),
        "unparsed": sum(o is None for _, o in every),
    }
    notes = ["an answer the reading names no option in counts as wrong (as in the release's script)"]
    if reading != "official":
        metrics = {f"lenient_{k}": v for k, v in metrics.items()}
        notes.append("lenient reading (scoring.extract_choice): not the official score")
    return Results(metrics=metrics, categories=table, notes=notes)


BENCHMARKS = [
    Benchmark(
        "scienceqa",
        "ScienceQA-IMG",
        "image",
        load_scienceqa,
        score_scienceqa,
        16,
        layout="llava_test_CQM-A.json (or -I) + problems.json + images/test/",
        lenient_score=partial(score_scienceqa, reading="lenient"),
    )
]
