"""LLM-judged image benchmarks: LLaVA-Bench-in-the-Wild and MM-Vet.

LLaVA-Bench (llava-bench-in-the-wild/): questions.jsonl ({"question_id", "image", "text", "category"}),
context.jsonl ({"image", "caption"}), answers_gpt4.jsonl (reference answers), images/. The judge sees the
caption, the question, the reference answer (assistant 1) and ours (assistant 2) and scores each 1-10; a
category's score is 100 x mean(ours) / mean(reference), the protocol's relative score.

MM-Vet (mm-vet/): mm-vet.json ({"v1_0": {"imagename", "question", "answer", "capability"}}), images/. The
judge scores each answer against the ground truth from 0.0 to 1.0 (<AND>/<OR> in the truth mean all/any of the
parts); totals and per-capability scores are means x 100. The results file for MM-Vet's own evaluator
({"v1_0": answer, ...}) is always written.

Both prompts are free-form: the answer is the question alone, with no extra instruction, as in the release.
Without --judge-url the answers are kept and the scores read "not scored (no judge)".
"""

from __future__ import annotations

from pathlib import Path

from llava_mini.eval.benchmarks.base import (
    NOT_SCORED,
    Benchmark,
    Item,
    Judge,
    Results,
    field_of,
    find_file,
    read_json,
    read_jsonl,
    resolve_media,
    write_json,
)
from llava_mini.eval.judge import parse_number, parse_score_pair
from llava_mini.eval.scoring import group_mean, mean

PAIR_JUDGE_SYSTEM = "You are a careful and impartial reviewer who rates how well answers serve a user."
PAIR_JUDGE_RULE = (
    "Please judge the two AI assistants' replies to the user's question above. Neither assistant could see the "
    "picture; you are given a written description of it (the context) in its place. Consider how helpful, "
    "relevant, accurate and detailed each reply is, and give each assistant one overall score from 1 to 10, "
    "where a higher score means a better reply. Write only the two scores on the first line, first Assistant 1's "
    "and then Assistant 2's, separated by a space. On the lines after it, explain your judgement thoroughly; do "
    "not let the order in which the replies appear or their length influence you."
)

CORRECTNESS_SYSTEM = "You grade answers to questions about images against a ground truth."
CORRECTNESS_RULE = (
    "Compare the model's prediction with the ground truth and give the prediction a correctness score. In the "
    "ground truth, <AND> means the prediction is fully right only if it contains every listed part, and <OR> "
    "means any one listed part is enough. Use one of 0.0 (wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9 or "
    "1.0 (fully right); give partial credit to partly right or incomplete predictions. Reply with the score only.\n\n"
    "Examples:\n"
    "Question | Ground truth | Prediction | Correctness\n"
    "--- | --- | --- | ---\n"
    "How many apples are on the plate? | 3 | There are three apples. | 1.0\n"
    "How many apples are on the plate? | 3 | Two. | 0.0\n"
    "Which colours are the flags? | red <AND> white | The flags are red. | 0.5\n"
    "What could this sign mean? | stop <OR> halt | It tells drivers to halt. | 1.0\n"
    "What is the man doing, and why? | fixing a bike because the tyre is flat | He is repairing a bicycle. | 0.6\n"
)


# --- LLaVA-Bench-in-the-Wild -----------------------------------------------------------------------


def load_llava_bench(root: Path) -> list[Item]:
    question_file = find_file(root, ["questions.jsonl"], "LLaVA-Bench questions.jsonl")
    folder = question_file.parent
    captions = {
        e["image"]: e.get("caption", "")
        for e in read_jsonl(find_file(folder, ["context.jsonl"], "LLaVA-Bench context.jsonl"))
    }
    references = {
        str(e["question_id"]): e["text"]
        for e in read_jsonl(find_file(folder, ["answers_gpt4.jsonl"], "LLaVA-Bench answers_gpt4.jsonl"))
    }
    items = []
    for line, entry in enumerate(read_jsonl(question_file), start=1):
        where = f"{question_file}:{line}"
        question_id = str(field_of(entry, "question_id", where))
        image = field_of(entry, "image", where)
        if question_id not in references:
            raise ValueError(f"{where}: question {question_id} has no reference answer in answers_gpt4.jsonl")
        items.append(
            Item(
                id=question_id,
                media=[resolve_media(folder / "images", image, where)],
                prompt=field_of(entry, "text", where),
                meta={
                    "category": entry.get("category", ""),
                    "caption": captions.get(image, ""),
                    "reference": references[question_id],
                },
            )
        )
    return items


def pair_review_prompt(caption: str, question: str, reference: str, answer: str) -> str:
    return (
        f"[Context]\n{caption}\n\n[Question]\n{question}\n\n"
        f"[Assistant 1]\n{reference}\n\n[End of Assistant 1]\n\n"
        f"[Assistant 2]\n{answer}\n\n[End of Assistant 2]\n\n[System]\n{PAIR_JUDGE_RULE}\n"
    )


def score_llava_bench(records: list[dict], judge: Judge | None) -> Results:
    if judge is None:
        return Results(
            metrics={"relative_score": NOT_SCORED}, notes=["pass --judge-url and --judge-model to score"]
        )
    pairs, unparsed = [], 0
    for record in records:
        meta = record["meta"]
        question = record["prompt"]
        reply = judge.complete(
            PAIR_JUDGE_SYSTEM,
            pair_review_prompt(meta["caption"], question, meta["reference"], record["answer"]),
        )
        scores = parse_score_pair(reply)
        if scores is None:
            unparsed += 1
        else:
            pairs.append((meta["category"], scores))
    if not pairs:
        return Results(
            metrics={"relative_score": "not scored (no judge reply could be read)"},
            notes=[f"{unparsed} unreadable judge replies"],
        )
    reference = group_mean((c, s[0]) for c, s in pairs)
    ours = group_mean((c, s[1]) for c, s in pairs)
    categories = {
        key: {
            "relative_score": 100 * ours[key] / reference[key],
            "model_mean": ours[key],
            "reference_mean": reference[key],
        }
        for key in ours
        if key != "all"
    }
    return Results(
        metrics={
            "relative_score": 100 * ours["all"] / reference["all"],
            "model_mean": ours["all"],
            "reference_mean": reference["all"],
            "unparsed": unparsed,
        },
        categories=categories,
    )


# --- MM-Vet -----------------------------------------------------------------------------------------


def load_mmvet(root: Path) -> list[Item]:
    question_file = find_file(root, ["mm-vet.json"], "MM-Vet mm-vet.json")
    folder = question_file.parent
    items = []
    for key, entry in read_json(question_file).items():
        where = f"{question_file} entry {key}"
        items.append(
            Item(
                id=key,
                media=[resolve_media(folder / "images", field_of(entry, "imagename", where), where)],
                prompt=field_of(entry, "question", where),
                meta={
                    "truth": str(entry.get("answer", "")),
                    "capabilities": list(entry.get("capability", [])),
                },
            )
        )
    return items


def correctness_prompt(question: str, truth: str, prediction: str) -> str:
    flat = prediction.replace("\n", " ").strip()
    spaced = truth.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return f"{CORRECTNESS_RULE}{question} | {spaced} | {flat} | "


def score_mmvet(records: list[dict], judge: Judge | None) -> Results:
    if judge is None:
        return Results(
            metrics={"total": NOT_SCORED},
            notes=["pass --judge-url and --judge-model, or upload submission/mm-vet_results.json"],
        )
    scored, values, unparsed = [], [], 0
    for record in records:
        reply = judge.complete(
            CORRECTNESS_SYSTEM,
            correctness_prompt(record["prompt"], record["meta"]["truth"], record["answer"]),
        )
        value = parse_number(reply, 0.0, 1.0)
        unparsed += value is None
        values.append(0.0 if value is None else value)
        scored.extend((capability, values[-1]) for capability in record["meta"]["capabilities"] or ["(none)"])
    per_capability = group_mean(scored)
    per_capability.pop("all")
    return Results(
        metrics={"total": 100 * mean(values), "unparsed": unparsed},
        categories={key: {"score": 100 * value} for key, value in per_capability.items()},
        notes=["an unreadable judge reply counts as 0"] if unparsed else [],
    )


def write_mmvet_results(records: list[dict], data: Path, out: Path) -> list[Path]:
    return [write_json(out / "submission" / "mm-vet_results.json", {r["id"]: r["answer"] for r in records})]


BENCHMARKS = [
    Benchmark(
        "llava-bench",
        "LLaVA-Bench-in-the-Wild",
        "image",
        load_llava_bench,
        score_llava_bench,
        512,
        uses_judge=True,
        layout="questions.jsonl + context.jsonl + answers_gpt4.jsonl + images/",
    ),
    Benchmark(
        "mm-vet",
        "MM-Vet",
        "image",
        load_mmvet,
        score_mmvet,
        512,
        write_mmvet_results,
        uses_judge=True,
        layout="mm-vet.json + images/",
    ),
]
