"""LLM-judged image benchmarks: LLaVA-Bench-in-the-Wild and MM-Vet, scored as their official scripts score.

LLaVA-Bench (llava-bench-in-the-wild/, LLaVA-1.5's playground layout): questions.jsonl ({"question_id",
"image", "text", "category"}), context.jsonl ({"image", "caption"}; a caption may be a list of sentences),
answers_gpt4.jsonl (the reference answers), images/. Protocol of LLaVA's llava/eval/eval_gpt_review_bench.py
and summarize_gpt_review.py (haotian-liu/LLaVA, unchanged in the LLaVA-Mini release): the judge (gpt-4-0314,
temperature 0.2, max_tokens 1024) reads the caption, the question, the reference (assistant 1) and our answer
(assistant 2) with rule.json's llava_bench_<category> prompt and puts two scores on its first line; a first
line that is not two numbers counts as (-1, -1). Per category and overall, the two mean scores are rounded to
3 decimals; the relative score is round(100 x ours / reference, 1), and each mean is reported x 10.

MM-Vet (mm-vet/): mm-vet.json ({"v1_0": {"imagename", "question", "answer", "capability"}}), images/.
Protocol of yuweihao/MM-Vet's mm-vet_evaluator.py: one user message (the few-shot table, then
"question | ground truth | prediction | "), gpt-4-0613, max_tokens 3, temperature 0; the score is the reply's
first space-separated token read as a number in [0, 1]. An unreadable reply is asked again with "Predict the
correctness of the answer (digit): " appended, at temperatures 0, 0.5, 1, 1.5, 2; after that it scores 0.
Scores are summed per capability and per capability set, divided by their counts, x 100, rounded to 1
decimal the way numpy rounds. The results file for MM-Vet's own evaluator ({"v1_0": answer, ...}) is always
written.

Both prompts to our model are the question alone, as in the release. Without --judge-url the answers are kept
and the scores read "not scored (no judge)".
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
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
from llava_mini.eval.judge import JudgeRequest, judge_model

# --- LLaVA-Bench-in-the-Wild: llava/eval/eval_gpt_review_bench.py + table/rule.json --------------------

LLAVA_BENCH_MODEL = "gpt-4-0314"
LLAVA_BENCH_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
# rule.json's "llava_bench_conv", "llava_bench_detail" and "llava_bench_complex" prompts (the same text).
LLAVA_BENCH_RULE = (
    "We would like to request your feedback on the performance of two AI assistants in response to the user "
    "question displayed above. The user asks the question on observing an image. For your reference, the "
    "visual content in the image is represented with a few sentences describing the image. \n"
    "Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant "
    "receives an overall score on a scale of 1 to 10, where a higher score indicates better overall "
    "performance.\n"
    "Please first output a single line containing only two values indicating the scores for Assistant 1 and 2, "
    "respectively. The two scores are separated by a space.\n"
    "In the subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any "
    "potential bias and ensuring that the order in which the responses were presented does not affect your "
    "judgment."
)
LLAVA_BENCH_CATEGORIES = ("conv", "detail", "complex")
UNREAD_PAIR = (-1.0, -1.0)


def load_llava_bench(root: Path) -> list[Item]:
    question_file = find_file(root, ["questions.jsonl"], "LLaVA-Bench questions.jsonl")
    folder = question_file.parent
    captions = {}
    for entry in read_jsonl(find_file(folder, ["context.jsonl"], "LLaVA-Bench context.jsonl")):
        caption = entry.get("caption", "")
        captions[entry["image"]] = "\n".join(caption) if isinstance(caption, list) else str(caption)
    references = {
        str(e["question_id"]): e["text"]
        for e in read_jsonl(find_file(folder, ["answers_gpt4.jsonl"], "LLaVA-Bench answers_gpt4.jsonl"))
    }
    items = []
    for line, entry in enumerate(read_jsonl(question_file), start=1):
        where = f"{question_file}:{line}"
        question_id = str(field_of(entry, "question_id", where))
        image = field_of(entry, "image", where)
        category = field_of(entry, "category", where)
        if category not in LLAVA_BENCH_CATEGORIES:
            raise ValueError(
                f"{where}: category {category!r} has no judge rule (rule.json has {', '.join(LLAVA_BENCH_CATEGORIES)})"
            )
        if question_id not in references:
            raise ValueError(f"{where}: question {question_id} has no reference answer in answers_gpt4.jsonl")
        if image not in captions:
            raise ValueError(f"{where}: image {image!r} has no caption in context.jsonl")
        question = field_of(entry, "text", where)
        items.append(
            Item(
                id=question_id,
                media=[resolve_media(folder / "images", image, where)],
                prompt=question,
                meta={
                    "category": category,
                    "question": question,
                    "caption": captions[image],
                    "reference": references[question_id],
                },
            )
        )
    return items


def llava_bench_request(caption: str, question: str, reference: str, answer: str, model: str) -> JudgeRequest:
    """The review request of eval_gpt_review_bench.py: reference = assistant 1, ours = assistant 2."""
    content = (
        f"[Context]\n{caption}\n\n[Question]\n{question}\n\n"
        f"[Assistant 1]\n{reference}\n\n[End of Assistant 1]\n\n"
        f"[Assistant 2]\n{answer}\n\n[End of Assistant 2]\n\n[System]\n{LLAVA_BENCH_RULE}\n\n"
    )
    return JudgeRequest(
        model, (("system", LLAVA_BENCH_SYSTEM), ("user", content)), temperature=0.2, max_tokens=1024
    )


def read_score_pair(review: str) -> tuple[float, float]:
    """The official parse_score: the first line, commas as spaces, split on single spaces, exactly two numbers.

    "8 7" and "8,7" read as (8, 7); "8, 7" (three fields), "Score: 8", "8/10 6/10" and a trailing space
    read as (-1, -1), which the official summary then averages in.
    """
    fields = review.split("\n")[0].replace(",", " ").split(" ")
    if len(fields) != 2:
        return UNREAD_PAIR
    try:
        return float(fields[0]), float(fields[1])
    except ValueError:
        return UNREAD_PAIR


def llava_bench_summary(pairs: list[tuple[float, float]]) -> dict[str, float | str]:
    """summarize_gpt_review.py's line: means rounded to 3 decimals, then relative score and both means x 10."""
    reference, ours = (round(sum(pair[i] for pair in pairs) / len(pairs), 3) for i in (0, 1))
    return {
        "relative_score": round(ours / reference * 100, 1)
        if reference
        else "undefined (reference mean is 0)",
        "reference_score": round(reference * 10, 1),
        "model_score": round(ours * 10, 1),
    }


def score_llava_bench(records: list[dict], judge: Judge | None) -> Results:
    if judge is None:
        return Results(
            metrics={"relative_score": NOT_SCORED}, notes=["pass --judge-url (and --judge-model) to score"]
        )
    model = judge_model(judge, LLAVA_BENCH_MODEL)
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    unread = 0
    for record in records:
        meta = record["meta"]
        request = llava_bench_request(
            meta["caption"], meta["question"], meta["reference"], record["answer"], LLAVA_BENCH_MODEL
        )
        pair = read_score_pair(judge.complete(request))
        unread += pair == UNREAD_PAIR
        pairs[meta["category"]].append(pair)
        pairs["all"].append(pair)
    overall = llava_bench_summary(pairs.pop("all"))
    notes = [f"judged by {model} (temperature 0.2, max_tokens 1024), as LLaVA's eval_gpt_review_bench.py"]
    if unread:
        notes.append(
            f"{unread} judge replies without two scores on the first line count as (-1, -1), as officially"
        )
    return Results(
        metrics={**overall, "unparsed": unread, "judge_model": model},
        categories={key: llava_bench_summary(value) for key, value in sorted(pairs.items())},
        notes=notes,
    )


# --- MM-Vet: yuweihao/MM-Vet mm-vet_evaluator.py ------------------------------------------------------

MMVET_MODEL = "gpt-4-0613"
MMVET_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""
MMVET_RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "
MMVET_RETRY_TEMPERATURES = (0.0, 0.5, 1.0, 1.5, 2.0)  # the evaluator's 5 re-asks; the 6th reply is not read


def load_mmvet(root: Path) -> list[Item]:
    question_file = find_file(root, ["mm-vet.json"], "MM-Vet mm-vet.json")
    folder = question_file.parent
    items = []
    for key, entry in read_json(question_file).items():
        where = f"{question_file} entry {key}"
        question = field_of(entry, "question", where)
        items.append(
            Item(
                id=key,
                media=[resolve_media(folder / "images", field_of(entry, "imagename", where), where)],
                prompt=question,
                meta={
                    "question": question,
                    "truth": str(field_of(entry, "answer", where)),
                    "capabilities": list(field_of(entry, "capability", where)),
                },
            )
        )
    return items


def mmvet_request(
    question: str, truth: str, prediction: str, model: str, attempt: int = 0, temperature: float = 0.0
) -> JudgeRequest:
    """The evaluator's request; a re-ask (attempt >= 1) ends with the "(digit)" instruction."""
    spaced = truth.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    content = MMVET_PROMPT + "\n" + " | ".join([question, spaced, prediction, ""])
    if attempt:
        content += MMVET_RETRY_SUFFIX
    return JudgeRequest(model, (("user", content),), temperature=temperature, max_tokens=3, attempt=attempt)


def read_correctness(content: str) -> float | None:
    """The evaluator's reading: the text before the first space, stripped, as a number in [0, 1]."""
    try:
        score = float(content.split(" ")[0].strip())
    except ValueError:
        return None
    return None if score > 1.0 or score < 0.0 else score


def grade_mmvet(judge: Judge, question: str, truth: str, prediction: str) -> float | None:
    """One sample's correctness, re-asking as the evaluator does; None when it gave up (scored 0 there)."""
    reply = judge.complete(mmvet_request(question, truth, prediction, MMVET_MODEL))
    for attempt, temperature in enumerate(MMVET_RETRY_TEMPERATURES, start=1):
        score = read_correctness(reply)
        if score is not None:
            return score
        reply = judge.complete(mmvet_request(question, truth, prediction, MMVET_MODEL, attempt, temperature))
    return None


def numpy_round(value: float, decimals: int) -> float:
    """Round as numpy does (the evaluator rounds numpy floats): scale by 10**decimals, round half to even.

    Python's round() rounds the exact binary value instead: round(0.15, 1) = 0.1, numpy gives 0.2.
    """
    if not math.isfinite(value):
        return value
    scale = 10.0**decimals
    return round(value * scale) / scale


def score_mmvet(records: list[dict], judge: Judge | None) -> Results:
    if judge is None:
        return Results(
            metrics={"total": NOT_SCORED},
            notes=["pass --judge-url (and --judge-model), or upload submission/mm-vet_results.json"],
        )
    model = judge_model(judge, MMVET_MODEL)
    capability_sums: dict[str, float] = defaultdict(float)
    capability_counts: Counter[str] = Counter()
    set_sums: dict[frozenset[str], float] = defaultdict(float)
    set_counts: Counter[frozenset[str]] = Counter()
    total, unread = 0.0, 0
    for record in records:
        meta = record["meta"]
        score = grade_mmvet(judge, meta["question"], meta["truth"], record["answer"])
        unread += score is None
        score = 0.0 if score is None else score
        capabilities = frozenset(meta["capabilities"])
        capability_counts.update(capabilities)
        set_counts[capabilities] += 1
        for capability in capabilities:
            capability_sums[capability] += score
        set_sums[capabilities] += score
        total += score
    categories: dict[str, dict[str, float]] = {
        name: {"capability": numpy_round(capability_sums[name] / count * 100, 1)}
        for name, count in capability_counts.most_common()
    }
    for capabilities, count in set_counts.most_common():
        name = "_".join(sorted(capabilities))
        categories[f"{name} (integration)"] = {
            "integration": numpy_round(set_sums[capabilities] / count * 100, 1)
        }
    notes = [f"judged by {model} (temperature 0, max_tokens 3), as MM-Vet's mm-vet_evaluator.py"]
    if unread:
        notes.append(f"{unread} answers still unreadable after 5 re-asks score 0, as officially")
    return Results(
        metrics={
            "total": numpy_round(total / len(records) * 100, 1),
            "unparsed": unread,
            "judge_model": model,
        },
        categories=categories,
        notes=notes,
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
