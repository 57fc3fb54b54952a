"""GQA test-dev balanced, scored as the release does: its converter, then GQA's own eval.py.

Layout: gqa/ llava_gqa_testdev_balanced.jsonl, images/, testdev_balanced_questions.json (answers and types);
or testdev_balanced_questions.json + images/ alone (one question per entry, LLaVA's instruction appended).
Official reading (default): the prediction is the reply with every trailing period stripped, lowercased
(scripts/convert_gqa_for_eval.py), compared exactly with the answer over the balanced questions (eval.py).
Lenient reading: outer space also stripped before the comparison (`scoring.normalize_short_answer`).
Also writes testdev_balanced_predictions.json ([{"questionId", "prediction"}]) for GQA's eval.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llava_mini.eval.benchmarks.base import (
    Benchmark,
    Item,
    Judge,
    Results,
    field_of,
    find_file,
    read_json,
)
from llava_mini.eval.benchmarks.vqa import (
    image_folder,
    load_llava_questions,
    with_instruction,
    write_upload,
)
from llava_mini.eval.scoring import gqa_prediction, letter_accuracy, normalize_short_answer

QUESTIONS = "testdev_balanced_questions.json"


def _annotation(entry: dict, where: str) -> dict:
    types = entry.get("types", {})
    return {
        "answer": field_of(entry, "answer", where),
        "balanced": bool(entry.get("isBalanced", True)),
        "structural": types.get("structural", ""),
        "semantic": types.get("semantic", ""),
    }


def load_gqa(root: Path) -> list[Item]:
    folder = root if root.is_dir() else root.parent
    if (
        root.is_dir()
        and not (root / "llava_gqa_testdev_balanced.jsonl").is_file()
        and (root / QUESTIONS).is_file()
    ):
        return load_official_gqa(root / QUESTIONS)
    question_file = find_file(root, ["llava_gqa_testdev_balanced.jsonl"], "GQA question file")
    annotation_file = find_file(folder, [QUESTIONS], "GQA answers")
    annotations = read_json(annotation_file)
    items = load_llava_questions(question_file, ["images", "."])
    for item in items:
        entry = annotations.get(str(item.meta["question_id"]))
        if entry is not None:
            item.meta.update(_annotation(entry, f"{annotation_file} question {item.meta['question_id']}"))
    return items


def load_official_gqa(question_file: Path) -> list[Item]:
    """GQA's own questions file: {question id: {"question", "imageId", "answer", "types", "isBalanced"}}."""
    questions = read_json(question_file)
    if not questions:
        raise ValueError(f"{question_file} holds no questions")
    first_id, first = next(iter(questions.items()))
    first_image = f"{field_of(first, 'imageId', f'{question_file} question {first_id}')}.jpg"
    images = image_folder(question_file.parent, first_image, ["images", "."])
    items = []
    for question_id, entry in questions.items():
        where = f"{question_file} question {question_id}"
        image = f"{field_of(entry, 'imageId', where)}.jpg"
        question = str(field_of(entry, "question", where))
        meta = {"question_id": question_id, "image": image, "text": question, **_annotation(entry, where)}
        items.append(Item(str(question_id), [images / image], with_instruction(question), meta))
    return items


def gqa_results(records: list[dict], correct: Callable[[str, str], bool], reading: str) -> Results:
    """Accuracy over the balanced questions, split as eval.py prints it: binary / open, structural and
    semantic types. Records of unbalanced questions are not scored (eval.py skips them)."""
    missing = [r["id"] for r in records if "answer" not in r["meta"]]
    if missing:
        raise ValueError(f"GQA: no answer in {QUESTIONS} for question ids {missing[:5]}")
    balanced = [r for r in records if r["meta"].get("balanced", True)]
    if not balanced:
        raise ValueError("GQA: none of the answered questions is balanced (isBalanced); nothing to score")
    outcomes, by_kind = [], {"binary": [], "open": []}
    for record in balanced:
        right = int(correct(record["answer"], record["meta"]["answer"]))
        structural = record["meta"]["structural"]
        by_kind["open" if structural == "query" else "binary"].append(right)
        outcomes.append((f"structural/{structural}", right))
        outcomes.append((f"semantic/{record['meta']['semantic']}", right))
    table = letter_accuracy(outcomes)
    table.pop("all")
    total_right = sum(by_kind["binary"]) + sum(by_kind["open"])
    metrics = {
        "accuracy": total_right / len(balanced),
        "binary": sum(by_kind["binary"]) / len(by_kind["binary"]) if by_kind["binary"] else 0.0,
        "open": sum(by_kind["open"]) / len(by_kind["open"]) if by_kind["open"] else 0.0,
        "correct": total_right,
        "total": len(balanced),
    }
    notes = [f"{reading} reading"]
    if len(balanced) < len(records):
        notes.append(f"{len(records) - len(balanced)} unbalanced questions are not scored")
    return Results(
        metrics=metrics,
        categories={key: {"accuracy": row["accuracy"], "total": row["total"]} for key, row in table.items()},
        notes=notes,
    )


def score_gqa(records: list[dict], judge: Judge | None = None) -> Results:
    return gqa_results(
        records,
        lambda answer, gold: gqa_prediction(answer) == gold,
        "official (release convert_gqa_for_eval.py + GQA eval.py)",
    )


def score_gqa_lenient(records: list[dict], judge: Judge | None = None) -> Results:
    return gqa_results(
        records,
        lambda answer, gold: normalize_short_answer(answer) == normalize_short_answer(gold),
        "lenient (outer space and trailing periods stripped, lowercase)",
    )


def write_gqa_predictions(records: list[dict], data: Path, out: Path) -> list[Path]:
    """testdev_balanced_predictions.json as scripts/convert_gqa_for_eval.py writes it."""
    payload = [
        {"questionId": r["meta"]["question_id"], "prediction": gqa_prediction(r["answer"])} for r in records
    ]
    return [write_upload(out / "submission" / "testdev_balanced_predictions.json", payload)]


BENCHMARKS = [
    Benchmark(
        "gqa",
        "GQA",
        "image",
        load_gqa,
        score_gqa,
        16,
        write_gqa_predictions,
        layout="llava_gqa_testdev_balanced.jsonl + images/ + testdev_balanced_questions.json",
        lenient_score=score_gqa_lenient,
    )
]
