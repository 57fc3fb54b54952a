"""Evaluation on a held-out synthetic set (`questions.jsonl` from `llava-mini data synth` or `data independent`).

Short answers are scored by exact match after normalisation (case, punctuation, number words -> digits,
American -> British spelling). Descriptions ("describe" questions, which carry their ground-truth objects)
are scored by parsing the answer for "<colour> <shape>" mentions: the share of objects named with the right
colour and shape, and the share of descriptions that name no object absent from the picture.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from llava_mini.data.synthetic import COLOURS, SHAPES
from llava_mini.inference.generate import GenerationSettings, LlavaMini

logger = logging.getLogger(__name__)


@dataclass
class Question:
    id: str
    media_path: Path
    question: str
    answer: str
    type: str
    modality: str
    objects: list[dict] | None = None  # ground truth of a "describe" question: [{"shape", "colour"}, ...]


SAME_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "none": "0",
              "center": "centre", "gray": "grey", "color": "colour"}
DESCRIBE_TOKENS = 64  # new tokens for a sentence answer; short answers get 8
# Question types answered with a sentence: descriptions, and questions on pictures that hold none of the
# world's things ("I can only describe simple shapes, colours, words and motions.").
SENTENCE_TYPES = ("describe", "unknown")


def normalise_answer(text: str) -> str:
    """Lowercase, drop punctuation and surrounding space, number words as digits, British spelling:
    "Red." -> "red", "Two" -> "2", "center" -> "centre"."""
    words = re.sub(r"[^\w\s]", "", text.lower()).split()
    return " ".join(SAME_WORDS.get(word, word) for word in words)


def mentioned_objects(text: str) -> tuple[set[tuple[str, str]], set[str]]:
    """The (shape, colour) pairs a description names ("a red circle", "two blue squares") and the shapes
    it names without a colour."""
    words = normalise_answer(text).split()
    singular = {shape + ("es" if shape.endswith("s") else "s"): shape for shape in SHAPES} | {s: s for s in SHAPES}
    pairs, bare = set(), set()
    for index, word in enumerate(words):
        if word in singular:
            if index > 0 and words[index - 1] in COLOURS:
                pairs.add((singular[word], words[index - 1]))
            else:
                bare.add(singular[word])
    return pairs, bare


def description_score(answer: str, objects: Sequence[dict]) -> dict:
    """named: ground-truth objects named with the right colour and shape; hallucinated: named objects (or
    bare shapes) that are not in the picture."""
    truth = {(o["shape"], o["colour"]) for o in objects}
    pairs, bare = mentioned_objects(answer)
    hallucinated = len(pairs - truth) + len(bare - {shape for shape, _ in truth})
    return {"named": len(truth & pairs), "objects": len(truth), "hallucinated": hallucinated}


def load_questions(path: str | Path, limit: int | None = None) -> list[Question]:
    """Read questions.jsonl; media paths are relative to its folder. Errors name the file and line."""
    path = Path(path)
    if path.is_dir():
        path = path / "questions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (make one with `llava-mini data synth`)")
    questions = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            media = entry.get("image") or entry.get("video")
            questions.append(
                Question(
                    id=str(entry["id"]),
                    media_path=path.parent / media,
                    question=entry["question"],
                    answer=normalise_answer(entry["answer"]),
                    type=entry["type"],
                    modality=entry["modality"],
                    objects=entry.get("objects"),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path}:{line_number}: not a valid question entry ({error})") from error
        if questions[-1].type == "describe" and not isinstance(questions[-1].objects, list):
            raise ValueError(f"{path}:{line_number}: a 'describe' question needs its ground-truth 'objects' list")
        if limit is not None and len(questions) >= limit:
            break
    return questions


def score(records: Sequence[dict]) -> dict:
    """Accuracy per modality and per (modality, type) from records with `correct`, `modality`, `type`;
    for descriptions (records with `named`, `objects`, `hallucinated`) also "describe/objects named" (share
    of ground-truth objects named) and "describe/no hallucination" (share of descriptions)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for record in records:
        for key in (record["modality"], f"{record['modality']}/{record['type']}", "all"):
            totals[key][0] += int(record["correct"])
            totals[key][1] += 1
        if "named" in record:
            totals["describe/objects named"][0] += record["named"]
            totals["describe/objects named"][1] += record["objects"]
            totals["describe/no hallucination"][0] += int(record["hallucinated"] == 0)
            totals["describe/no hallucination"][1] += 1
    return {key: {"accuracy": right / count, "correct": right, "total": count}
            for key, (right, count) in sorted(totals.items()) if count}


def markdown_table(results: dict) -> str:
    lines = ["| split | accuracy | correct / total |", "| --- | ---: | ---: |"]
    for key, value in results.items():
        lines.append(f"| {key} | {100 * value['accuracy']:.1f}% | {value['correct']} / {value['total']} |")
    return "\n".join(lines)


def evaluate(
    assistant: LlavaMini, questions: Sequence[Question], batch_size: int = 16, with_media: bool = True
) -> list[dict]:
    """Greedy answers for each question, batched; one record per question with `correct`.

    with_media=False asks every question without its image or video (the text-only floor). Descriptions
    and other sentence answers (`SENTENCE_TYPES`) are asked in their own batches with room for a sentence;
    records keep the questions' order.
    """
    short = [q for q in questions if q.type not in SENTENCE_TYPES]
    long = [q for q in questions if q.type in SENTENCE_TYPES]
    records: dict[int, dict] = {}
    for group, tokens in ((short, 8), (long, DESCRIBE_TOKENS)):
        settings = GenerationSettings(max_new_tokens=tokens)
        for start in tqdm(range(0, len(group), batch_size), desc="eval synth", unit="batch"):
            chunk = group[start : start + batch_size]
            media = [[assistant.medium(q.media_path)] if with_media else [] for q in chunk]
            conversations = [assistant.question_messages(q.question, m) for q, m in zip(chunk, media, strict=True)]
            answers = assistant.chat_batch(conversations, media, settings)
            for question, answer in zip(chunk, answers, strict=True):
                records[id(question)] = answer_record(question, answer)
    return [records[id(q)] for q in questions]


def answer_record(question: Question, answer: str) -> dict:
    """One scored answer: exact match, or for a description its object counts (correct: all named, none made up)."""
    record = {"id": question.id, "type": question.type, "modality": question.modality, "question": question.question,
              "answer": answer, "expected": question.answer}
    if question.type == "describe":
        counts = description_score(answer, question.objects or [])
        record.update(counts, correct=counts["named"] == counts["objects"] and counts["hallucinated"] == 0)
    else:
        record["correct"] = normalise_answer(answer) == question.answer
    return record


def add_eval_synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help="folder (or questions.jsonl) from `llava-mini data synth` or `llava-mini data independent`")
    parser.add_argument("--model", default=None, help="local directory or hub id (default: the shipped model)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N questions only")
    parser.add_argument("--out", default=None, help="folder for answers.jsonl and results.json")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def run_eval_synth(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    questions = load_questions(args.data, args.limit)  # bad data is reported before the model loads
    assistant = LlavaMini.load(args.model)
    records = evaluate(assistant, questions, batch_size=args.batch_size)
    results = score(records)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "answers.jsonl").open("w") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in records)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "results.md").write_text(markdown_table(results) + "\n")
    print(json.dumps(results, indent=2) if args.json else markdown_table(results))
    return 0
