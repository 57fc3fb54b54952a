"""Open-ended VQA scored by VQA accuracy: VQAv2, VizWiz, TextVQA (LLaVA-1.5's question files).

Layout (LLaVA-1.5's `playground/data/eval/<name>/`):
  vqav2/   llava_vqav2_mscoco_test-dev2015.jsonl, test2015/ [, llava_vqav2_mscoco_test2015.jsonl (all ids,
           for the submission), v2_mscoco_val2014_annotations.json (local scoring of a val question file)]
  vizwiz/  llava_test.jsonl, test/ [, test.json (image order for the submission), val.json (answers)]
  textvqa/ llava_textvqa_val_v051_ocr.jsonl, train_images/, TextVQA_0.5.1_val.json (answers)
A question line is {"question_id", "image", "text"}; the text already carries the release's instruction
("Answer the question using a single word or phrase.", and VizWiz's unanswerable hint); it is appended when
missing. Without answers the score is left to the evaluation server and only the submission is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llava_mini.eval.benchmarks.base import (
    SHORT_ANSWER_PROMPT,
    Benchmark,
    Item,
    Judge,
    Results,
    field_of,
    find_file,
    read_json,
    read_jsonl,
    write_json,
)
from llava_mini.eval.scoring import group_mean, normalize_vqa_answer, vqa_accuracy


def image_folder(root: Path, first_image: str, candidates: Sequence[str]) -> Path:
    """The folder (among `candidates` under root) that holds the first question's image."""
    for name in candidates:
        if (root / name / first_image).is_file():
            return root / name
    looked = ", ".join(str(root / name / first_image) for name in candidates)
    raise FileNotFoundError(f"image {first_image!r} not found (looked at {looked})")


def load_llava_questions(
    question_file: Path, image_candidates: Sequence[str], answers: dict[str, dict] | None = None
) -> list[Item]:
    """Items from a LLaVA-1.5 question file; `answers` maps question id -> extra meta (answers, type)."""
    entries = read_jsonl(question_file)
    if not entries:
        raise ValueError(f"{question_file} holds no questions")
    images = image_folder(
        question_file.parent, field_of(entries[0], "image", f"{question_file}:1"), image_candidates
    )
    items = []
    for line, entry in enumerate(entries, start=1):
        where = f"{question_file}:{line}"
        text = str(field_of(entry, "text", where)).strip()
        if SHORT_ANSWER_PROMPT not in text:
            text = f"{text}\n{SHORT_ANSWER_PROMPT}"
        question_id = str(field_of(entry, "question_id", where))
        image = str(field_of(entry, "image", where))
        meta = {"question_id": entry["question_id"], "image": image, "category": entry.get("category", "")}
        if answers is not None and question_id in answers:
            meta.update(answers[question_id])
        items.append(Item(id=question_id, media=[images / image], prompt=text, meta=meta))
    return items


def score_vqa(records: list[dict], judge: Judge | None = None) -> Results:
    """VQA accuracy overall and per answer type, over the records that carry ground-truth answers."""
    scored = [
        (r["meta"].get("answer_type") or "all", vqa_accuracy(r["answer"], r["meta"]["answers"]))
        for r in records
        if r["meta"].get("answers")
    ]
    if not scored:
        return Results(
            metrics={"accuracy": "not scored (no answers: upload the submission file)"},
            notes=["no ground-truth answers in the data folder; the submission file was written instead"],
        )
    by_type = group_mean(scored)
    counts = {key: sum(1 for kind, _ in scored if key in ("all", kind)) for key in by_type}
    return Results(
        metrics={"accuracy": by_type["all"], "scored": len(scored), "total": len(records)},
        categories={
            key: {"accuracy": value, "total": counts[key]} for key, value in by_type.items() if key != "all"
        },
    )


# --- VQAv2 ------------------------------------------------------------------------------------------


def _answers_by_question(annotation_file: Path) -> dict[str, dict]:
    annotations = read_json(annotation_file)
    entries = annotations["annotations"] if isinstance(annotations, dict) else annotations
    table = {}
    for index, entry in enumerate(entries):
        where = f"{annotation_file} annotation {index}"
        answers = [a["answer"] if isinstance(a, dict) else a for a in field_of(entry, "answers", where)]
        table[str(field_of(entry, "question_id", where))] = {
            "answers": answers,
            "answer_type": entry.get("answer_type", ""),
        }
    return table


def load_vqav2(root: Path) -> list[Item]:
    names = ["llava_vqav2_mscoco_test-dev2015.jsonl", "llava_vqav2_mscoco_val2014.jsonl"]
    question_file = find_file(root, names, "VQAv2 question file")
    annotation_file = question_file.parent / "v2_mscoco_val2014_annotations.json"
    answers = _answers_by_question(annotation_file) if annotation_file.is_file() else None
    return load_llava_questions(question_file, ["test2015", "val2014", "images", "."], answers)


def write_vqav2_submission(records: list[dict], data: Path, out: Path) -> list[Path]:
    """EvalAI's test-dev upload: [{"question_id", "answer"}] over all test2015 ids ("" where unanswered)."""
    answered = {int(r["meta"]["question_id"]): normalize_vqa_answer(r["answer"]) for r in records}
    folder = data if data.is_dir() else data.parent
    everything = folder / "llava_vqav2_mscoco_test2015.jsonl"
    ids = (
        [int(entry["question_id"]) for entry in read_jsonl(everything)]
        if everything.is_file()
        else sorted(answered)
    )
    payload = [{"question_id": qid, "answer": answered.get(qid, "")} for qid in ids]
    return [write_json(out / "submission" / "vqav2_test-dev.json", payload)]


# --- VizWiz -----------------------------------------------------------------------------------------


def load_vizwiz(root: Path) -> list[Item]:
    question_file = find_file(root, ["llava_test.jsonl", "llava_val.jsonl"], "VizWiz question file")
    folder = question_file.parent
    answers = None
    if (folder / "val.json").is_file():
        answers = {}
        entries = read_jsonl(question_file)
        by_image = {entry["image"]: entry for entry in read_json(folder / "val.json")}
        for entry in entries:
            annotation = by_image.get(entry.get("image"))
            if annotation and annotation.get("answers"):
                answers[str(entry["question_id"])] = {
                    "answers": [a["answer"] if isinstance(a, dict) else a for a in annotation["answers"]],
                    "answer_type": annotation.get("answer_type", ""),
                }
    return load_llava_questions(question_file, ["test", "val", "images", "."], answers)


def write_vizwiz_submission(records: list[dict], data: Path, out: Path) -> list[Path]:
    """VizWiz's upload: [{"image", "answer"}], in test.json's order when it is present."""
    answered = {r["meta"]["image"]: normalize_vqa_answer(r["answer"]) for r in records}
    folder = data if data.is_dir() else data.parent
    order = (
        [entry["image"] for entry in read_json(folder / "test.json")]
        if (folder / "test.json").is_file()
        else list(answered)
    )
    payload = [{"image": image, "answer": answered.get(image, "")} for image in order]
    return [write_json(out / "submission" / "vizwiz_test.json", payload)]


# --- TextVQA ----------------------------------------------------------------------------------------


def load_textvqa(root: Path) -> list[Item]:
    question_file = find_file(
        root, ["llava_textvqa_val_v051_ocr.jsonl", "llava_textvqa_val_v051.jsonl"], "TextVQA question file"
    )
    annotation_file = find_file(question_file.parent, ["TextVQA_0.5.1_val.json"], "TextVQA answers")
    annotations = read_json(annotation_file)
    answers = {
        str(entry["question_id"]): {"answers": entry["answers"], "answer_type": ""}
        for entry in (annotations["data"] if isinstance(annotations, dict) else annotations)
    }
    return load_llava_questions(question_file, ["train_images", "images", "."], answers)


BENCHMARKS = [
    Benchmark(
        "vqav2",
        "VQAv2",
        "image",
        load_vqav2,
        score_vqa,
        16,
        write_vqav2_submission,
        layout="llava_vqav2_mscoco_test-dev2015.jsonl + test2015/",
    ),
    Benchmark(
        "vizwiz",
        "VizWiz",
        "image",
        load_vizwiz,
        score_vqa,
        16,
        write_vizwiz_submission,
        layout="llava_test.jsonl + test/ [+ test.json]",
    ),
    Benchmark(
        "textvqa",
        "TextVQA",
        "image",
        load_textvqa,
        score_vqa,
        16,
        layout="llava_textvqa_val_v051_ocr.jsonl + train_images/ + TextVQA_0.5.1_val.json",
    ),
]
