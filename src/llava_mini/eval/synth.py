"""Exact-match evaluation on a held-out synthetic set (`questions.jsonl` from `llava-mini data synth`)."""

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


def normalise_answer(text: str) -> str:
    """Lowercase, drop punctuation and surrounding space: "Red." -> "red"."""
    return re.sub(r"[^\w\s]", "", text.lower()).strip()


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
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{line_number}: not a valid question entry ({error})") from error
        if limit is not None and len(questions) >= limit:
            break
    return questions


def score(records: Sequence[dict]) -> dict:
    """Accuracy per modality and per (modality, type) from records with `correct`, `modality`, `type`."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for record in records:
        for key in (record["modality"], f"{record['modality']}/{record['type']}", "all"):
            totals[key][0] += int(record["correct"])
            totals[key][1] += 1
    return {
        key: {"accuracy": right / count, "correct": right, "total": count}
        for key, (right, count) in sorted(totals.items())
    }


def markdown_table(results: dict) -> str:
    lines = ["| split | accuracy | correct / total |", "| --- | ---: | ---: |"]
    for key, value in results.items():
        lines.append(f"| {key} | {100 * value['accuracy']:.1f}% | {value['correct']} / {value['total']} |")
    return "\n".join(lines)


def evaluate(
    assistant: LlavaMini, questions: Sequence[Question], batch_size: int = 16, with_media: bool = True
) -> list[dict]:
    """Greedy answers for each question, batched; one record per question with `correct`.

    with_media=False asks every question without its image or video (the text-only floor).
    """
    settings = GenerationSettings(max_new_tokens=8)
    records = []
    for start in tqdm(range(0, len(questions), batch_size), desc="eval synth", unit="batch"):
        chunk = questions[start : start + batch_size]
        media = [[assistant.medium(q.media_path)] if with_media else [] for q in chunk]
        conversations = [
            assistant.question_messages(q.question, m) for q, m in zip(chunk, media, strict=True)
        ]
        answers = assistant.chat_batch(conversations, media, settings)
        for question, answer in zip(chunk, answers, strict=True):
            records.append(
                {
                    "id": question.id,
                    "type": question.type,
                    "modality": question.modality,
                    "question": question.question,
                    "answer": answer,
                    "expected": question.answer,
                    "correct": normalise_answer(answer) == question.answer,
                }
            )
    return records


def add_eval_synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, help="folder (or questions.jsonl) from `llava-mini data synth`"
    )
    parser.add_argument(
        "--model", default=None, help="local directory or hub id (default: the shipped model)"
    )
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
