"""The synthetic held-out questions as an lmms-eval task, so lmms-eval itself can score a model through the plugin.

    llava-mini data synth --out runs/synth-heldout --seed 1 --images 1000 --videos 400
    llava-mini data lmms-task --data runs/synth-heldout --out runs/lmms-task
    .venv-lmms-eval/bin/python -m lmms_eval --model llava_mini --tasks llava_mini_synth \
        --include_path runs/lmms-task --batch_size 16 --output_path runs/lmms-out

The task folder holds `llava_mini_synth.jsonl` (one document per question: id, absolute media path, question,
normalised answer, type, modality) and `llava_mini_synth.yaml` in lmms-eval's own task format: a local JSON
`dataset_path`, greedy answers of at most 8 tokens, and exact match after `normalise_answer`, the settings of
`llava-mini eval synth`, so the two score the same questions the same way. The functions the YAML names
(`doc_to_visual`, `doc_to_text`, `process_results`) live here and are imported by module path.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from llava_mini.eval.synth import Question, load_questions, normalise_answer

TASK_NAME = "llava_mini_synth"
MAX_NEW_TOKENS = 8  # as `llava-mini eval synth`


def task_yaml(name: str, documents: Path) -> str:
    """lmms-eval's task YAML for `documents` (a JSON-lines file); `!function` tags are lmms-eval's own."""
    functions = __name__
    return f"""\
# lmms-eval task written by `llava-mini data lmms-task`; answers and scores as `llava-mini eval synth`.
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {json.dumps(str(documents.resolve()))}
test_split: test
output_type: generate_until
doc_to_visual: !function {functions}.doc_to_visual
doc_to_text: !function {functions}.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {MAX_NEW_TOKENS}
  temperature: 0
  do_sample: false
process_results: !function {functions}.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  - version: 0.0
"""


def write_lmms_eval_task(questions: Sequence[Question], out: str | Path, name: str = TASK_NAME) -> Path:
    """Write `name.jsonl` and `name.yaml` into `out`; returns the YAML's path."""
    if not questions:
        raise ValueError("no questions to write as an lmms-eval task")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    documents = out / f"{name}.jsonl"
    with documents.open("w") as handle:
        for question in questions:
            document = {
                "id": question.id,
                "media": str(question.media_path.resolve()),
                "question": question.question,
                "answer": question.answer,
                "type": question.type,
                "modality": question.modality,
            }
            handle.write(json.dumps(document) + "\n")
    config = out / f"{name}.yaml"
    config.write_text(task_yaml(name, documents))
    return config


# The task's functions (lmms-eval calls them with its documents) --------------------------------------------
def doc_to_visual(document: dict) -> list[str]:
    """The image or video path; the plugin opens it as `llava-mini eval synth` does (`LlavaMini.medium`)."""
    return [document["media"]]


def doc_to_text(document: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return document["question"]


def process_results(document: dict, results: Sequence[str]) -> dict[str, float]:
    """Exact match of the normalised answer (lmms-eval averages it over the task)."""
    return {"exact_match": float(normalise_answer(results[0]) == document["answer"])}


# CLI: llava-mini data lmms-task ---------------------------------------------------------------------------
def add_lmms_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="folder (or questions.jsonl) from `llava-mini data synth`")
    parser.add_argument("--out", required=True, help="task folder, for lmms-eval's --include_path")
    parser.add_argument("--limit", type=int, default=None, help="the first N questions only")
    parser.add_argument("--name", default=TASK_NAME, help="task name (lmms-eval's --tasks)")


def run_lmms_task(args: argparse.Namespace) -> int:
    config = write_lmms_eval_task(load_questions(args.data, args.limit), args.out, args.name)
    print(f"lmms-eval task {args.name}: {config} (lmms-eval --include_path {config.parent} --tasks {args.name})")
    return 0
