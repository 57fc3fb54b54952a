"""GQA test-dev balanced: exact match after lowercasing and dropping a trailing period.

Layout: gqa/ llava_gqa_testdev_balanced.jsonl, images/, testdev_balanced_questions.json (answers and types).
Also writes testdev_balanced_predictions.json ([{"questionId", "prediction"}]) for GQA's own eval script.
"""

from __future__ import annotations

from pathlib import Path

from llava_mini.eval.benchmarks.base import Benchmark, Item, Judge, Results, find_file, read_json, write_json
from llava_mini.eval.benchmarks.vqa import load_llava_questions
from llava_mini.eval.scoring import exact_match, letter_accuracy, normalize_short_answer


def load_gqa(root: Path) -> list[Item]:
    question_file = find_file(root, ["llava_gqa_testdev_balanced.jsonl"], "GQA question file")
    annotation_file = find_file(question_file.parent, ["testdev_balanced_questions.json"], "GQA answers")
    answers = {}
    for question_id, entry in read_json(annotation_file).items():
        types = entry.get("types", {})
        answers[str(question_id)] = {
            "answer": entry["answer"],
            "structural": types.get("structural", ""),
            "semantic": types.get("semantic", ""),
        }
    return load_llava_questions(question_file, ["images", "."], answers)


def score_gqa(records: list[dict], judge: Judge | None = None) -> Results:
    missing = [r["id"] for r in records if "answer" not in r["meta"]]
    if missing:
        raise ValueError(f"GQA: no answer in testdev_balanced_questions.json for question ids {missing[:5]}")
    outcomes, correct_total = [], 0
    for record in records:
        correct = int(exact_match(record["answer"], record["meta"]["answer"]))
        correct_total += correct
        outcomes.append((f"structural/{record['meta']['structural']}", correct))
        outcomes.append((f"semantic/{record['meta']['semantic']}", correct))
    table = letter_accuracy(outcomes)
    table.pop("all")
    return Results(
        metrics={"accuracy": correct_total / len(records), "correct": correct_total, "total": len(records)},
        categories={key: {"accuracy": row["accuracy"], "total": row["total"]} for key, row in table.items()},
    )


def write_gqa_predictions(records: list[dict], data: Path, out: Path) -> list[Path]:
    payload = [
        {"questionId": r["meta"]["question_id"], "prediction": normalize_short_answer(r["answer"])}
        for r in records
    ]
    return [write_json(out / "submission" / "testdev_balanced_predictions.json", payload)]


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
    )
]
