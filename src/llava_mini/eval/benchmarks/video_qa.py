"""Open-ended video QA (MSVD-QA, MSRVTT-QA, ActivityNet-QA) and Video-ChatGPT's generative benchmark.

Both are judged by gpt-3.5-turbo with the prompts of Video-ChatGPT's quantitative evaluation, and scored as
the official scripts score them:
- Open-ended QA (Video-LLaVA's layout): test_q.json ([{"video_name", "question", "question_id"}]),
  test_a.json ([{"answer", "question_id", "type"?}]) and a video folder (videos/, videos/all/, all_test/,
  test_videos/ or the data folder). Protocol of the LLaVA-Mini release's llavamini/eval/video/eval_video_qa.py
  (Video-ChatGPT's evaluate_activitynet_qa.py with temperature 0 and at most 10 passes): the judge replies
  with a Python dict {'pred': 'yes'/'no', 'score': 0-5} read by ast.literal_eval; a reply that does not read
  is asked again on the next pass, and after 10 passes the question is left out. Score = sum of int(score)
  over the judged questions / their number (4.8 counts 4); accuracy = replies whose 'pred' contains "yes" /
  those containing "yes" or "no". A judged reply without a usable score or pred still counts in the score's
  denominator, as there.
- Generative (Video-ChatGPT's benchmark, VCGBench): generic_qa.json, temporal_qa.json, consistency_qa.json
  (in the folder or Benchmarking_QA/) and Test_Videos/. Protocol of Video-ChatGPT's
  quantitative_evaluation/evaluate_benchmark_{1..5}_*.py: correctness, detail orientation and contextual
  understanding on the generic questions, temporal understanding on the temporal ones, consistency on the two
  phrasings of each consistency question; no temperature is sent; each dimension's score is the mean of
  int(score) over its questions. The official scripts ask again until a reply reads; here a question is left
  out after 10 unreadable replies (counted under "unparsed").
The prompt to our model is the question alone (the release's video-QA inference puts an instruction with
example answers before it; see docs/evaluation.md). Without a judge: "not scored (no judge)".
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from llava_mini.eval.benchmarks.base import (
    NOT_SCORED,
    Benchmark,
    Item,
    Judge,
    Results,
    VideoClip,
    field_of,
    find_file,
    read_json,
)
from llava_mini.eval.judge import JudgeRequest, judge_model

VIDEO_EXTENSIONS = ("", ".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
VIDEO_JUDGE_MODEL = "gpt-3.5-turbo"  # the model name the release's and Video-ChatGPT's scripts send
MAX_PASSES = 10  # eval_video_qa.py's passes; Video-ChatGPT's benchmark scripts have no limit
GENERATIVE_DIMENSIONS = ("correctness", "detail", "context", "temporal", "consistency")

# --- the official prompts (Video-ChatGPT quantitative_evaluation/, the release's eval_video_qa.py) -----

QA_SYSTEM = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs "
    "for question-answer pairs. Your task is to compare the predicted answer with the correct answer "
    "and determine if they match meaningfully. Here's how you can accomplish the "
    "task:------##INSTRUCTIONS: - Focus on the meaningful match between the predicted answer and the "
    "correct answer.\n"
    "- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
)

QA_RULE = (
    "Provide your evaluation only as a yes/no and score where the score is an integer value between "
    "0 and 5, with 5 indicating the highest meaningful match. Please generate the response in the "
    "form of a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is  a "
    "string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER "
    "OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. For example, your "
    "response should look like this: {'pred': 'yes', 'score': 4.8}."
)

GENERATIVE_SYSTEMS = {
    "correctness": (
        "You are an intelligent chatbot designed for evaluating the factual accuracy of generative "
        "outputs for video-based question-answer pairs. Your task is to compare the predicted answer "
        "with the correct answer and determine if they are factually consistent. Here's how you can "
        "accomplish the task:------##INSTRUCTIONS: - Focus on the factual consistency between the "
        "predicted answer and the correct answer. The predicted answer should not contain any "
        "misinterpretations or misinformation.\n"
        "- The predicted answer must be factually accurate and align with the video content.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Evaluate the factual accuracy of the prediction compared to the answer."
    ),
    "detail": (
        "You are an intelligent chatbot designed for evaluating the detail orientation of generative "
        "outputs for video-based question-answer pairs. Your task is to compare the predicted answer "
        "with the correct answer and determine its level of detail, considering both completeness and "
        "specificity. Here's how you can accomplish the task:------##INSTRUCTIONS: - Check if the "
        "predicted answer covers all major points from the video. The response should not leave out any "
        "key aspects.\n"
        "- Evaluate whether the predicted answer includes specific details rather than just generic "
        "points. It should provide comprehensive information that is tied to specific elements of the "
        "video.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Provide a single evaluation score that reflects the level of detail orientation of the "
        "prediction, considering both completeness and specificity."
    ),
    "context": (
        "You are an intelligent chatbot designed for evaluating the contextual understanding of "
        "generative outputs for video-based question-answer pairs. Your task is to compare the predicted "
        "answer with the correct answer and determine if the generated response aligns with the overall "
        "context of the video content. Here's how you can accomplish the task:------##INSTRUCTIONS: - "
        "Evaluate whether the predicted answer aligns with the overall context of the video content. It "
        "should not provide information that is out of context or misaligned.\n"
        "- The predicted answer must capture the main themes and sentiments of the video.\n"
        "- Consider synonyms or paraphrases as valid matches.\n"
        "- Provide your evaluation of the contextual understanding of the prediction compared to the "
        "answer."
    ),
    "temporal": (
        "You are an intelligent chatbot designed for evaluating the temporal understanding of generative "
        "outputs for video-based question-answer pairs. Your task is to compare the predicted answer "
        "with the correct answer and determine if they correctly reflect the temporal sequence of events "
        "in the video content. Here's how you can accomplish the task:------##INSTRUCTIONS: - Focus on "
        "the temporal consistency between the predicted answer and the correct answer. The predicted "
        "answer should correctly reflect the sequence of events or details as they are presented in the "
        "video content.\n"
        "- Consider synonyms or paraphrases as valid matches, but only if the temporal order is "
        "maintained.\n"
        "- Evaluate the temporal accuracy of the prediction compared to the answer."
    ),
    "consistency": (
        "You are an intelligent chatbot designed for evaluating the consistency of generative outputs "
        "for similar video-based question-answer pairs. You will be given two very similar questions, a "
        "common answer common to both the questions and predicted answers for the two questions .Your "
        "task is to compare the predicted answers for two very similar question, with a common correct "
        "answer and determine if they are consistent. Here's how you can accomplish the "
        "task:------##INSTRUCTIONS: - Focus on the consistency between the two predicted answers and the "
        "correct answer. Both predicted answers should correspond to the correct answer and to each "
        "other, and should not contain any contradictions or significant differences in the conveyed "
        "information.\n"
        "- Both predicted answers must be consistent with each other and the correct answer, in terms of "
        "the information they provide about the video content.\n"
        "- Consider synonyms or paraphrases as valid matches, but only if they maintain the consistency "
        "in the conveyed information.\n"
        "- Evaluate the consistency of the two predicted answers compared to the correct answer."
    ),
}

GENERATIVE_RULES = {
    "correctness": (
        "Provide your evaluation only as a factual accuracy score where the factual accuracy score is an "
        "integer value between 0 and 5, with 5 indicating the highest level of factual consistency. "
        "Please generate the response in the form of a Python dictionary string with keys 'score', where "
        "its value is the factual accuracy score in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT "
        "TEXT OR EXPLANATION. Only provide the Python dictionary string. For example, your response "
        "should look like this: {''score': 4.8}."
    ),
    "detail": (
        "Provide your evaluation only as a detail orientation score where the detail orientation score "
        "is an integer value between 0 and 5, with 5 indicating the highest level of detail orientation. "
        "Please generate the response in the form of a Python dictionary string with keys 'score', where "
        "its value is the detail orientation score in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER "
        "OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. For example, your "
        "response should look like this: {''score': 4.8}."
    ),
    "context": (
        "Provide your evaluation only as a contextual understanding score where the contextual "
        "understanding score is an integer value between 0 and 5, with 5 indicating the highest level of "
        "contextual understanding. Please generate the response in the form of a Python dictionary "
        "string with keys 'score', where its value is contextual understanding score in INTEGER, not "
        "STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary "
        "string. For example, your response should look like this: {''score': 4.8}."
    ),
    "temporal": (
        "Provide your evaluation only as a temporal accuracy score where the temporal accuracy score is "
        "an integer value between 0 and 5, with 5 indicating the highest level of temporal consistency. "
        "Please generate the response in the form of a Python dictionary string with keys 'score', where "
        "its value is the temporal accuracy score in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT "
        "TEXT OR EXPLANATION. Only provide the Python dictionary string. For example, your response "
        "should look like this: {''score': 4.8}."
    ),
    "consistency": (
        "Provide your evaluation only as a consistency score where the consistency score is an integer "
        "value between 0 and 5, with 5 indicating the highest level of consistency. Please generate the "
        "response in the form of a Python dictionary string with keys 'score', where its value is the "
        "consistency score in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. "
        "Only provide the Python dictionary string. For example, your response should look like this: "
        "{''score': 4.8}."
    ),
}


def qa_request(question: str, answer: str, prediction: str) -> JudgeRequest:
    """eval_video_qa.py's request: system + user message, temperature 0, no max_tokens."""
    user = (
        "Please evaluate the following video-based question-answer pair:\n\n"
        f"Question: {question}\nCorrect Answer: {answer}\nPredicted Answer: {prediction}\n\n{QA_RULE}"
    )
    return JudgeRequest(VIDEO_JUDGE_MODEL, (("system", QA_SYSTEM), ("user", user)), temperature=0.0)


def generative_request(dimension: str, question: str, answer: str, prediction: str) -> JudgeRequest:
    """evaluate_benchmark_{1..4}: one question, the correct answer and ours; no temperature is sent."""
    user = (
        "Please evaluate the following video-based question-answer pair:\n\n"
        f"Question: {question}\nCorrect Answer: {answer}\nPredicted Answer: {prediction}\n\n"
        f"{GENERATIVE_RULES[dimension]}"
    )
    return JudgeRequest(VIDEO_JUDGE_MODEL, (("system", GENERATIVE_SYSTEMS[dimension]), ("user", user)))


def consistency_request(
    questions: tuple[str, str], answer: str, predictions: tuple[str, str]
) -> JudgeRequest:
    """evaluate_benchmark_5_consistency.py (Video-ChatGPT's fixed version: question 2 is Q2)."""
    user = (
        "Please evaluate the following video-based question-answer pair:\n\n"
        f"Question 1: {questions[0]}\nQuestion 2: {questions[1]}\nCorrect Answer: {answer}\n"
        f"Predicted Answer to Question 1: {predictions[0]}\nPredicted Answer to Question 2: {predictions[1]}\n\n"
        f"{GENERATIVE_RULES['consistency']}"
    )
    return JudgeRequest(VIDEO_JUDGE_MODEL, (("system", GENERATIVE_SYSTEMS["consistency"]), ("user", user)))


def read_literal_reply(reply: str) -> Any:
    """The reply as the official scripts keep it: ast.literal_eval, then stored as JSON and read back.

    Raises ValueError for a reply that is not one Python literal ("Sure! {...}", "{''score': 4}") or that
    JSON cannot store (the scripts then ask again, or stop).
    """
    try:
        value = ast.literal_eval(reply)
        return json.loads(json.dumps(value))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as error:
        raise ValueError(f"unreadable judge reply {reply[:80]!r}: {error}") from None


def judge_in_passes(judge: Judge, requests: list[JudgeRequest], read: Callable[[str], Any]) -> dict[int, Any]:
    """Ask every request, then again (attempt 1, 2, ...) those whose reply `read` rejects, for MAX_PASSES.

    Returns {request index: read(reply)} for the requests answered readably (a reply may read as None).
    """
    values: dict[int, Any] = {}
    pending = list(range(len(requests)))
    for attempt in range(MAX_PASSES):
        unread = []
        for index in pending:
            reply = judge.complete(replace(requests[index], attempt=attempt))
            try:
                values[index] = read(reply)
            except ValueError:
                unread.append(index)
        pending = unread
    return values


def find_video(folders: Sequence[Path], name: str, where: str) -> Path:
    """The first existing folder/name[.ext], also with ActivityNet's 'v_' prefix; errors list the folders."""
    for folder in folders:
        for stem in (name, f"v_{name}"):
            for extension in VIDEO_EXTENSIONS:
                path = folder / f"{stem}{extension}"
                if path.is_file():
                    return path
    raise FileNotFoundError(f"{where}: video {name!r} not found in {', '.join(str(f) for f in folders)}")


# --- open-ended QA -----------------------------------------------------------------------------------


def load_open_ended(root: Path) -> list[Item]:
    questions_file = find_file(root, ["test_q.json"], "test_q.json")
    folder = questions_file.parent
    answers = {str(a["question_id"]): a for a in read_json(find_file(folder, ["test_a.json"], "test_a.json"))}
    video_folders = [
        folder / name for name in ("videos", "videos/all", "all_test", "test_videos", "Test_Videos")
    ] + [folder]
    items = []
    for index, entry in enumerate(read_json(questions_file)):
        where = f"{questions_file} entry {index}"
        question_id = str(field_of(entry, "question_id", where))
        if question_id not in answers:
            raise ValueError(f"{where}: question {question_id} has no answer in test_a.json")
        question = str(field_of(entry, "question", where))
        items.append(
            Item(
                id=question_id,
                media=[
                    VideoClip(find_video(video_folders, str(field_of(entry, "video_name", where)), where))
                ],
                prompt=question.strip(),
                meta={
                    "question": question,
                    "truth": str(answers[question_id]["answer"]),
                    "type": str(answers[question_id].get("type", "")),
                },
            )
        )
    return items


def qa_tally(judgements: list[Any]) -> dict[str, Any]:
    """eval_video_qa.py's totals over the judged replies: int(score) summed, "yes"/"no" found in 'pred'.

    A judged reply counts in the score's denominator even when its score or pred cannot be used (as there,
    where an exception skips the rest of that reply).
    """
    score_sum = yes = no = malformed = 0
    for value in judgements:
        try:
            score_sum += int(value["score"])
            pred = value["pred"].lower()
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, IndexError):
            malformed += 1
            continue
        if "yes" in pred:
            yes += 1
        elif "no" in pred:
            no += 1
    count = len(judgements)
    return {
        "accuracy": yes / (yes + no) if yes + no else "undefined (no yes/no verdict)",
        "score": score_sum / count if count else "undefined (no judged reply)",
        "yes": yes,
        "no": no,
        "judged": count,
        "malformed": malformed,
    }


def score_open_ended(records: list[dict], judge: Judge | None) -> Results:
    if judge is None:
        return Results(
            metrics={"accuracy": NOT_SCORED, "score": NOT_SCORED},
            notes=["pass --judge-url (and --judge-model) to score"],
        )
    model = judge_model(judge, VIDEO_JUDGE_MODEL)
    requests = [qa_request(r["meta"]["question"], r["meta"]["truth"], r["answer"]) for r in records]
    values = judge_in_passes(judge, requests, read_literal_reply)
    judged = [values[index] for index in sorted(values)]
    tally = qa_tally(judged)
    notes = [f"judged by {model} (temperature 0), as the LLaVA-Mini release's eval_video_qa.py"]
    if len(judged) < len(records):
        notes.append(
            f"{len(records) - len(judged)} questions left out: no readable reply in {MAX_PASSES} passes"
        )
    if tally["malformed"]:
        notes.append(
            f"{tally['malformed']} judged replies without an integer score or a text pred, as officially"
        )
    return Results(
        metrics={**tally, "unparsed": len(records) - len(judged), "judge_model": model}, notes=notes
    )


# --- Video-ChatGPT generative benchmark -------------------------------------------------------------


def load_generative(root: Path) -> list[Item]:
    qa_folder = root / "Benchmarking_QA" if (root / "Benchmarking_QA").is_dir() else root
    video_folders = [root / "Test_Videos", root / "videos", root]
    items = []
    for kind in ("generic", "temporal", "consistency"):
        path = find_file(qa_folder, [f"{kind}_qa.json"], f"Video-ChatGPT {kind}_qa.json")
        for index, entry in enumerate(read_json(path)):
            where = f"{path} entry {index}"
            video = VideoClip(find_video(video_folders, str(field_of(entry, "video_name", where)), where))
            meta = {"kind": kind, "truth": str(field_of(entry, "A", where)), "index": index}
            if kind == "consistency":
                for phrasing in ("Q1", "Q2"):
                    question = str(field_of(entry, phrasing, where))
                    items.append(
                        Item(f"{kind}-{index}-{phrasing}", [video], question, dict(meta, phrasing=phrasing))
                    )
            else:
                items.append(Item(f"{kind}-{index}", [video], str(field_of(entry, "Q", where)), meta))
    return items


def read_generative_reply(reply: str) -> int:
    """int(reply['score']) of the literal reply; ValueError when the official summary could not use it."""
    value = read_literal_reply(reply)
    try:
        return int(value["score"])
    except (KeyError, TypeError, ValueError, OverflowError, IndexError) as error:
        raise ValueError(f"judge reply {reply[:80]!r} has no integer score: {error!r}") from None


def score_generative(records: list[dict], judge: Judge | None) -> Results:
    if judge is None:
        return Results(
            metrics=dict.fromkeys(GENERATIVE_DIMENSIONS, NOT_SCORED),
            notes=["pass --judge-url (and --judge-model) to score"],
        )
    model = judge_model(judge, VIDEO_JUDGE_MODEL)
    requests: dict[str, list[JudgeRequest]] = {d: [] for d in GENERATIVE_DIMENSIONS}
    pairs: dict[int, dict[str, dict]] = {}
    for record in records:
        meta = record["meta"]
        if meta["kind"] == "consistency":
            pairs.setdefault(meta["index"], {})[meta["phrasing"]] = record
            continue
        dimensions = ("correctness", "detail", "context") if meta["kind"] == "generic" else ("temporal",)
        for dimension in dimensions:
            requests[dimension].append(
                generative_request(dimension, record["prompt"], meta["truth"], record["answer"])
            )
    for index in sorted(pairs):
        pair = pairs[index]
        if set(pair) != {"Q1", "Q2"}:
            continue  # the other phrasing was not answered (a --limit cut it off)
        first, second = pair["Q1"], pair["Q2"]
        requests["consistency"].append(
            consistency_request(
                (first["prompt"], second["prompt"]),
                first["meta"]["truth"],
                (first["answer"], second["answer"]),
            )
        )
    metrics: dict[str, Any] = {}
    unread = 0
    for dimension, dimension_requests in requests.items():
        judged = list(judge_in_passes(judge, dimension_requests, read_generative_reply).values())
        unread += len(dimension_requests) - len(judged)
        metrics[dimension] = sum(judged) / len(judged) if judged else "no judged questions"
    answered = [v for v in metrics.values() if isinstance(v, float)]
    metrics["average"] = sum(answered) / len(answered) if answered else "no judged questions"
    notes = [
        f"judged by {model} (no temperature sent), as Video-ChatGPT's evaluate_benchmark_*.py",
        "average: the mean of the five dimensions (not computed by the official scripts)",
    ]
    if unread:
        notes.append(f"{unread} judgements left out: no reply with an integer score in {MAX_PASSES} tries")
    return Results(metrics={**metrics, "unparsed": unread, "judge_model": model}, notes=notes)


BENCHMARKS = [
    Benchmark(
        name,
        title,
        "video",
        load_open_ended,
        score_open_ended,
        128,
        uses_judge=True,
        layout="test_q.json + test_a.json + videos/",
    )
    for name, title in (
        ("msvd-qa", "MSVD-QA"),
        ("msrvtt-qa", "MSRVTT-QA"),
        ("activitynet-qa", "ActivityNet-QA"),
    )
] + [
    Benchmark(
        "video-chatgpt",
        "Video-ChatGPT generative",
        "video",
        load_generative,
        score_generative,
        512,
        uses_judge=True,
        layout="{generic,temporal,consistency}_qa.json + Test_Videos/",
    )
]
