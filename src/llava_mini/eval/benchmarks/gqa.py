"""GQA test-dev balanced, scored as the release does: its converter, then GQA's own eval.py.

Layout: gqa/ llava_gqa_testdev_balanced.jsonl, images/, testdev_balanced_questions.json (answers and types);
or testdev_balanced_questions.json + images/ alone (one question per entry, LLaVA's instruction appended).
Official reading (default): the prediction is the reply with every trailing period stripped, lowercased
(scripts/convert_gqa_for_eval.py), compared exactly with the answer over the balanced questions (eval.py).
Lenient reading: outer space also stripped before the comparison (`scoring.normalize_short_answer`).
Also writes testdev_balanced_predictions.json ([{"questionId", "prediction"}]) for GQA's eval.py.
"""

from __future__ import annotations

from collections import Counter, defaultdict
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


# Program steps eval.py does not count as reasoning steps (the final query adds no reasoning length).
NOT_A_STEP = ("exist", "query: name", "choose name")


def reasoning_steps(program: list[dict]) -> int:
    """eval.py's getStepsNum: the program's operations, less those naming one of `NOT_A_STEP`."""
    steps = [f"{op.get('operation')}: {op.get('argument')}" for op in program]
    return sum(1 for step in steps if not any(skip in step for skip in NOT_A_STEP))


def _annotation(entry: dict, where: str) -> dict:
    """What the scorer needs of one GQA question: answer, balanced flag, types, lengths, answer group."""
    types = entry.get("types", {})
    return {
        "answer": field_of(entry, "answer", where),
        "balanced": bool(entry.get("isBalanced", True)),
        "structural": types.get("structural", ""),
        "semantic": types.get("semantic", ""),
        "steps": reasoning_steps(entry.get("semantic", [])),
        "words": len(str(entry.get("question", "")).split()),
        "group": (entry.get("groups") or {}).get("global"),
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


def chi_square(gold: dict[str, Counter], predicted: dict[str, Counter]) -> float:
    """eval.py's distribution score before its / 100: per answer group, sum of (o - e)^2 / e over the gold
    answers, averaged over the groups weighted by their number of questions."""
    weighted, questions = 0.0, 0
    for group, expected in gold.items():
        score = sum(
            (predicted[group].get(answer, 0) - count) ** 2 / count for answer, count in expected.items()
        )
        weighted += score * sum(expected.values())
        questions += sum(expected.values())
    return weighted / questions


def gqa_results(
    records: list[dict], read: Callable[[str], str], read_gold: Callable[[str], str], reading: str
) -> Results:
    """Accuracy over the balanced questions, split as eval.py prints it: binary / open, structural and
    semantic types, reasoning steps and question words, and the answer-distribution score (chi-square / 100,
    lower is better). Records of unbalanced questions are not scored (eval.py skips them)."""
    missing = [r["id"] for r in records if "answer" not in r["meta"]]
    if missing:
        raise ValueError(f"GQA: no answer in {QUESTIONS} for question ids {missing[:5]}")
    balanced = [r for r in records if r["meta"].get("balanced", True)]
    if not balanced:
        raise ValueError("GQA: none of the answered questions is balanced (isBalanced); nothing to score")
    outcomes, by_kind = [], {"binary": [], "open": []}
    gold, predicted = defaultdict(Counter), defaultdict(Counter)
    for record in balanced:
        meta = record["meta"]
        prediction, answer = read(record["answer"]), read_gold(meta["answer"])
        right = int(prediction == answer)
        by_kind["open" if meta["structural"] == "query" else "binary"].append(right)
        for key in ("structural", "semantic", "steps", "words"):
            if key in meta:
                outcomes.append((f"{key}/{meta[key]}", right))
        if meta.get("group") is not None:
            gold[meta["group"]][answer] += 1
            predicted[meta["group"]][prediction] += 1
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
    if gold:
        metrics["distribution"] = chi_square(gold, predicted) / 100
    notes = [f"{reading} reading"]
    if len(balanced) < len(records):
        notes.append(f"{len(records) - len(balanced)} unbalanced questions are not scored")
    return Results(
        metrics=metrics,
        categories={key: {"accuracy": row["accuracy"], "total": row["total"]} for key, row in table.items()},
        notes=notes,
    )


def score_gqa(records: list[dict], judge: Judge | None = None) -> Results:
    """Official: the release's converter (`gqa_prediction`), compared exactly with the answer (eval.py)."""
    return gqa_results(
        records, gqa_prediction, str, "official (release convert_gqa_for_eval.py + GQA eval.py)"
    )


def score_gqa_lenient(records: list[dict], judge: Judge | None = None) -> Results:
    return gqa_results(
        records,
        normalize_short_answer,
        normalize_short_answer,
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
