"""Open-ended VQA scored by VQA accuracy: VQAv2, VizWiz, TextVQA, as the release (LLaVA-1.5's scripts) does.

Layouts (LLaVA-1.5's `playground/data/eval/<name>/`, or the datasets' own files):
  vqav2/   llava_vqav2_mscoco_test-dev2015.jsonl, test2015/ [, llava_vqav2_mscoco_test2015.jsonl (all ids,
           for the upload)]; or the official v2_OpenEnded_mscoco_val2014_questions.json +
           v2_mscoco_val2014_annotations.json + val2014/ (scored locally), or
           v2_OpenEnded_mscoco_test-dev2015_questions.json + test2015/ (upload only)
  vizwiz/  llava_test.jsonl, test/ [, llava_val.jsonl + val/ + val.json (answers)]
  textvqa/ llava_textvqa_val_v051_ocr.jsonl (question_id = image id, shared by the questions on one image),
           train_images/, TextVQA_0.5.1_val.json; or TextVQA_0.5.1_val.json + train_images/ alone
A LLaVA question line is {"question_id", "image", "text"}; the text already carries the release's
instruction ("Answer the question using a single word or phrase."); it is appended when missing.

Official reading (the default): answers go through the release's converter (m4c `EvalAIAnswerProcessor`,
`scoring.evalai_answer`) as the upload files do, and VQAv2 / VizWiz answers are scored by the VQA API's
`vqaEval.py` (normalisation only where the ten ground truths disagree); TextVQA is scored as the release's
`eval_textvqa.py` does. The lenient reading normalises both sides always (`scoring.vqa_accuracy`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
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
)
from llava_mini.eval.scoring import (
    count_by,
    evalai_answer,
    group_mean,
    official_vqa_accuracy,
    textvqa_accuracy,
    vqa_accuracy,
)


def image_folder(root: Path, first_image: str, candidates: Sequence[str]) -> Path:
    """The folder (among `candidates` under root) that holds the first question's image."""
    for name in candidates:
        if (root / name / first_image).is_file():
            return root / name
    looked = ", ".join(str(root / name / first_image) for name in candidates)
    raise FileNotFoundError(f"image {first_image!r} not found (looked at {looked})")


def with_instruction(text: str) -> str:
    text = text.strip()
    return text if SHORT_ANSWER_PROMPT in text else f"{text}\n{SHORT_ANSWER_PROMPT}"


def load_llava_questions(question_file: Path, image_candidates: Sequence[str]) -> list[Item]:
    """Items from a LLaVA-1.5 question file, in file order.

    An item's id is its question_id; where the file shares question ids between lines (TextVQA's carries
    the image id), every id gets its line number ("<question_id>#<line>") so that ids stay unique.
    meta: question_id (as in the file), image, text (the line's text as given), line, category.
    """
    entries = read_jsonl(question_file)
    if not entries:
        raise ValueError(f"{question_file} holds no questions")
    images = image_folder(
        question_file.parent, field_of(entries[0], "image", f"{question_file}:1"), image_candidates
    )
    ids = [str(field_of(entry, "question_id", f"{question_file}:{n}")) for n, entry in enumerate(entries, 1)]
    shared = len(set(ids)) < len(ids)
    items = []
    for line, (entry, question_id) in enumerate(zip(entries, ids, strict=True), start=1):
        where = f"{question_file}:{line}"
        text = str(field_of(entry, "text", where))
        image = str(field_of(entry, "image", where))
        meta = {
            "question_id": entry["question_id"],
            "image": image,
            "text": text,
            "line": line,
            "category": entry.get("category", ""),
        }
        item_id = f"{question_id}#{line}" if shared else question_id
        items.append(Item(id=item_id, media=[images / image], prompt=with_instruction(text), meta=meta))
    return items


def attach_answers(items: list[Item], answers: dict[str, dict]) -> list[Item]:
    """Adds answers[str(question_id)] (answers, answer_type, ...) to the items that have an entry."""
    for item in items:
        item.meta.update(answers.get(str(item.meta["question_id"]), {}))
    return items


# --- scoring ----------------------------------------------------------------------------------------

AccuracyFn = Callable[[str, Sequence[str]], float]


def vqa_results(records: list[dict], accuracy: AccuracyFn, reading: str) -> Results:
    """Mean accuracy overall, per answer type and (VQAv2) per "question type/<type>", over the records that
    carry ground-truth answers, as the VQA API's accuracy dict splits it."""
    answered = [r for r in records if r["meta"].get("answers")]
    if not answered:
        return Results(
            metrics={"accuracy": "not scored (no answers: upload the submission file)"},
            notes=["no ground-truth answers in the data folder; the submission file was written instead"],
        )
    scores = [accuracy(r["answer"], r["meta"]["answers"]) for r in answered]
    by_answer_type = [
        (r["meta"].get("answer_type") or "all", score) for r, score in zip(answered, scores, strict=True)
    ]
    by_question_type = [
        (f"question type/{r['meta']['question_type']}", score)
        for r, score in zip(answered, scores, strict=True)
        if r["meta"].get("question_type")
    ]
    categories = {}
    for pairs in (by_answer_type, by_question_type):
        totals = count_by(key for key, _ in pairs)
        categories.update(
            {
                key: {"accuracy": value, "total": totals[key]}
                for key, value in group_mean(pairs).items()
                if key != "all"
            }
        )
    notes = [f"{reading} reading"]
    if len(answered) < len(records):
        notes.append(
            f"{len(records) - len(answered)} of {len(records)} questions have no answers and are not scored"
        )
    return Results(
        metrics={"accuracy": sum(scores) / len(scores), "scored": len(answered), "total": len(records)},
        categories=categories,
        notes=notes,
    )


def converted_vqa_accuracy(prediction: str, truths: Sequence[str]) -> float:
    """What the evaluation server gives the release's upload: the VQA API on the converted answer."""
    return official_vqa_accuracy(evalai_answer(prediction), truths)


def score_vqa(records: list[dict], judge: Judge | None = None) -> Results:
    """VQAv2 / VizWiz, official: the release's converter, then the VQA API's accuracy (vqaEval.py)."""
    return vqa_results(records, converted_vqa_accuracy, "official (release converter + VQA API vqaEval.py)")


def score_vqa_lenient(records: list[dict], judge: Judge | None = None) -> Results:
    """Both sides always normalised: "t-shirt" matches a unanimous "t-shirt" ("t shirt" on both sides)."""
    return vqa_results(records, vqa_accuracy, "lenient (both sides always normalised)")


def write_upload(path: Path, payload: list[dict]) -> Path:
    """JSON as the release's converters write it (json.dump defaults: ASCII, ", " / ": ", no newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


# --- VQAv2 ------------------------------------------------------------------------------------------

LLAVA_VQAV2 = ["llava_vqav2_mscoco_test-dev2015.jsonl", "llava_vqav2_mscoco_val2014.jsonl"]
OFFICIAL_VQAV2 = [
    f"v2_OpenEnded_mscoco_{split}_questions.json" for split in ("val2014", "test-dev2015", "test2015")
]
# COCO image folder (and file-name infix) of each split: test-dev questions are on test2015 images.
VQAV2_IMAGES = {
    "train2014": "train2014",
    "val2014": "val2014",
    "test-dev2015": "test2015",
    "test2015": "test2015",
}


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
            "question_type": entry.get("question_type", ""),
        }
    return table


def load_official_vqav2(question_file: Path) -> list[Item]:
    """The VQA API's files: v2_OpenEnded_mscoco_<split>_questions.json, its annotations (train/val), images."""
    questions = read_json(question_file)
    where = str(question_file)
    split = str(field_of(questions, "data_subtype", where))
    if split not in VQAV2_IMAGES:
        raise ValueError(
            f"{where}: unknown data_subtype {split!r}; expected one of {', '.join(VQAV2_IMAGES)}"
        )
    entries = field_of(questions, "questions", where)
    if not entries:
        raise ValueError(f"{where} holds no questions")
    folder = VQAV2_IMAGES[split]

    def image_name(entry: dict, index: int) -> str:
        return f"COCO_{folder}_{int(field_of(entry, 'image_id', f'{where} question {index}')):012d}.jpg"

    images = image_folder(question_file.parent, image_name(entries[0], 0), [folder, "images", "."])
    items = []
    for index, entry in enumerate(entries):
        question_id = field_of(entry, "question_id", f"{where} question {index}")
        question = str(field_of(entry, "question", f"{where} question {index}"))
        image = image_name(entry, index)
        meta = {"question_id": question_id, "image": image, "text": question}
        items.append(Item(str(question_id), [images / image], with_instruction(question), meta))
    if split.startswith("test"):
        return items
    annotation_file = question_file.parent / f"v2_mscoco_{split}_annotations.json"
    if not annotation_file.is_file():
        raise FileNotFoundError(f"VQAv2 {split} annotations not found: {annotation_file} (needed to score)")
    return attach_answers(items, _answers_by_question(annotation_file))


def load_vqav2(root: Path) -> list[Item]:
    if root.is_file() and root.suffix == ".json":
        return load_official_vqav2(root)
    if root.is_dir() and not any((root / name).is_file() for name in LLAVA_VQAV2):
        official = [root / name for name in OFFICIAL_VQAV2 if (root / name).is_file()]
        if official:
            return load_official_vqav2(official[0])
    question_file = find_file(root, LLAVA_VQAV2 + OFFICIAL_VQAV2, "VQAv2 question file")
    items = load_llava_questions(question_file, ["test2015", "val2014", "images", "."])
    annotation_file = question_file.parent / "v2_mscoco_val2014_annotations.json"
    return (
        attach_answers(items, _answers_by_question(annotation_file)) if annotation_file.is_file() else items
    )


def _vqav2_upload_ids(folder: Path) -> list | None:
    """Every test2015 question id, for the upload (the release's list, or the official questions file)."""
    if (folder / "llava_vqav2_mscoco_test2015.jsonl").is_file():
        return [entry["question_id"] for entry in read_jsonl(folder / "llava_vqav2_mscoco_test2015.jsonl")]
    if (folder / "v2_OpenEnded_mscoco_test2015_questions.json").is_file():
        questions = read_json(folder / "v2_OpenEnded_mscoco_test2015_questions.json")
        return [entry["question_id"] for entry in questions["questions"]]
    return None


def write_vqav2_submission(records: list[dict], data: Path, out: Path) -> list[Path]:
    """EvalAI's test-dev upload, as scripts/convert_vqav2_for_submission.py writes it: [{"question_id",
    "answer"}] over every test2015 id ("" where unanswered), answers through `evalai_answer`."""
    answered = {r["meta"]["question_id"]: evalai_answer(r["answer"]) for r in records}
    ids = _vqav2_upload_ids(data if data.is_dir() else data.parent) or list(answered)
    payload = [{"question_id": qid, "answer": answered.get(qid, "")} for qid in ids]
    return [write_upload(out / "submission" / "vqav2_test-dev.json", payload)]


# --- VizWiz -----------------------------------------------------------------------------------------


def load_vizwiz(root: Path) -> list[Item]:
    question_file = find_file(root, ["llava_test.jsonl", "llava_val.jsonl"], "VizWiz question file")
    items = load_llava_questions(question_file, ["test", "val", "images", "."])
    annotation_file = question_file.parent / "val.json"
    if not annotation_file.is_file():
        return items
    by_image = {entry["image"]: entry for entry in read_json(annotation_file)}
    for item in items:
        annotation = by_image.get(item.meta["image"])
        if annotation and annotation.get("answers"):
            item.meta["answers"] = [a["answer"] if isinstance(a, dict) else a for a in annotation["answers"]]
            item.meta["answer_type"] = annotation.get("answer_type", "")
    return items


def write_vizwiz_submission(records: list[dict], data: Path, out: Path) -> list[Path]:
    """VizWiz's upload, as scripts/convert_vizwiz_for_submission.py writes it: [{"image", "answer"}] in the
    question file's order, answers through `evalai_answer`."""
    payload = [{"image": r["meta"]["image"], "answer": evalai_answer(r["answer"])} for r in records]
    return [write_upload(out / "submission" / "vizwiz_test.json", payload)]


# --- TextVQA ----------------------------------------------------------------------------------------

TEXTVQA_ANSWERS = "TextVQA_0.5.1_val.json"
_OCR_PROMPT_QUESTION = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)


def textvqa_question(prompt: str, where: str) -> str:
    """The question inside a LLaVA TextVQA prompt, lowercased, as the release's eval_textvqa.py finds it:
    "OCR tokens: ... Question: Q Short answer:", or the line that is not the "Reference OCR token:" line of
    a three-line prompt, or the first line of a two-line prompt."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = _OCR_PROMPT_QUESTION.search(prompt)
        if match is None:
            raise ValueError(f"{where}: an 'OCR tokens:' prompt without 'Question: ... Short answer:'")
        return match.group(1).lower()
    if "Reference OCR token: " in prompt and len(lines) == 3:
        return (lines[1] if prompt.startswith("Reference OCR token:") else lines[0]).lower()
    if len(lines) == 2:
        return lines[0].lower()
    raise ValueError(
        f"{where}: the prompt has {len(lines)} lines; the release reads only 2 or 3-line prompts"
    )


def _textvqa_entries(annotation_file: Path) -> list[dict]:
    annotations = read_json(annotation_file)
    return annotations["data"] if isinstance(annotations, dict) else annotations


def load_textvqa(root: Path) -> list[Item]:
    """The release's question file matched to TextVQA_0.5.1_val.json by (image id, question), as
    eval_textvqa.py matches them; or, without the release's file, the questions of TextVQA_0.5.1_val.json."""
    names = ["llava_textvqa_val_v051_ocr.jsonl", "llava_textvqa_val_v051.jsonl"]
    folder = root if root.is_dir() else root.parent
    if (
        root.is_dir()
        and not any((root / name).is_file() for name in names)
        and (root / TEXTVQA_ANSWERS).is_file()
    ):
        return load_official_textvqa(root / TEXTVQA_ANSWERS)
    question_file = find_file(root, names, "TextVQA question file")
    annotation_file = find_file(folder, [TEXTVQA_ANSWERS], "TextVQA answers")
    table = {
        (entry["image_id"], entry["question"].lower()): entry for entry in _textvqa_entries(annotation_file)
    }
    items = load_llava_questions(question_file, ["train_images", "images", "."])
    for item in items:
        where = f"{question_file}:{item.meta['line']}"
        key = (item.meta["question_id"], textvqa_question(item.meta["text"], where))
        if key not in table:
            raise ValueError(f"{where}: no question {key[1]!r} on image {key[0]!r} in {annotation_file}")
        item.meta.update(answers=table[key]["answers"], answer_type="", textvqa_id=table[key]["question_id"])
    return items


def load_official_textvqa(annotation_file: Path) -> list[Item]:
    """TextVQA's own file: one item per question, image <image_id>.jpg, no OCR tokens in the prompt."""
    entries = _textvqa_entries(annotation_file)
    if not entries:
        raise ValueError(f"{annotation_file} holds no questions")
    where = f"{annotation_file} question 0"
    images = image_folder(
        annotation_file.parent,
        f"{field_of(entries[0], 'image_id', where)}.jpg",
        ["train_images", "images", "."],
    )
    items = []
    for index, entry in enumerate(entries):
        where = f"{annotation_file} question {index}"
        question_id, question = field_of(entry, "question_id", where), str(field_of(entry, "question", where))
        image = f"{field_of(entry, 'image_id', where)}.jpg"
        meta = {"question_id": question_id, "image": image, "text": question}
        meta.update(answers=field_of(entry, "answers", where), answer_type="")
        items.append(Item(str(question_id), [images / image], with_instruction(question), meta))
    return items


def score_textvqa(records: list[dict], judge: Judge | None = None) -> Results:
    """Official: the release's eval_textvqa.py (m4c TextVQAAccuracyEvaluator, EvalAI processing both sides)."""
    return vqa_results(records, textvqa_accuracy, "official (release eval_textvqa.py, m4c evaluator)")


BENCHMARKS = [
    Benchmark(
        "vqav2",
        "VQAv2",
        "image",
        load_vqav2,
        score_vqa,
        16,
        write_vqav2_submission,
        layout="llava_vqav2_mscoco_test-dev2015.jsonl + test2015/, or v2_OpenEnded_mscoco_val2014_questions.json"
        " + v2_mscoco_val2014_annotations.json + val2014/",
        lenient_score=score_vqa_lenient,
    ),
    Benchmark(
        "vizwiz",
        "VizWiz",
        "image",
        load_vizwiz,
        score_vqa,
        16,
        write_vizwiz_submission,
        layout="llava_test.jsonl + test/",
        lenient_score=score_vqa_lenient,
    ),
    Benchmark(
        "textvqa",
        "TextVQA",
        "image",
        load_textvqa,
        score_textvqa,
        16,
        layout="llava_textvqa_val_v051_ocr.jsonl + train_images/ + TextVQA_0.5.1_val.json",
        lenient_score=score_vqa_lenient,
    ),
]
