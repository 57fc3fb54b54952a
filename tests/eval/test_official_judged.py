"""The judged benchmarks against their official scripts, on the fixtures in tests/eval/official/.

Each fixture holds a benchmark's data in its official layout, a model's answers, and the judge replies a
recorded fake gives (replies*.json: marker -> n-th reply). official/ holds what the official scripts did with
them (run by hand, unchanged, with the same fake: see official/RECORD.md): every request they sent and their
final scores. Here the project scores the same answers through `OpenAIJudge` + `CachedJudge` (the CLI's path)
with a fake client answering from the same replies, and must send the same requests and print the same
numbers. Nothing reaches the network.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from llava_mini.eval.benchmarks import get_benchmark
from llava_mini.eval.benchmarks.judged_image import (
    MMVET_PROMPT,
    UNREAD_PAIR,
    numpy_round,
    read_correctness,
    read_score_pair,
)
from llava_mini.eval.benchmarks.video_qa import (
    GENERATIVE_SYSTEMS,
    qa_tally,
    read_generative_reply,
    read_literal_reply,
)
from llava_mini.eval.judge import CachedJudge, JudgeRequest, OpenAIJudge

OFFICIAL = Path(__file__).parent / "official"


class RecordedReplies:
    """A stand-in for `openai.OpenAI`, answering as record/run_official.py's fake does.

    `books` maps a system message (None: any) to {marker: [replies]}: the request's marker is the one key found
    in its messages, and its n-th request (counted per book) gets the n-th reply, the last one repeating.
    """

    def __init__(self, books: dict[str | None, dict[str, list[str]]]) -> None:
        self.books = books
        self.log: list[dict] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, **request):
        messages = request["messages"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        book = self.books.get(system, self.books.get(None))
        text = "\n".join(message["content"] for message in messages)
        (key,) = [key for key in book if key in text]
        attempt = sum(entry["key"] == key and entry["book"] == system for entry in self.log)
        reply = book[key][min(attempt, len(book[key]) - 1)]
        self.log.append({"book": system, "key": key, "attempt": attempt, "request": request, "reply": reply})
        message = SimpleNamespace(role="assistant", content=reply)
        return SimpleNamespace(choices=[SimpleNamespace(message=message)], model=request["model"])

    def requests(self) -> list[str]:
        """The log as the official record has it, order-free (the official scripts work in parallel)."""
        return sorted(
            json.dumps({k: v for k, v in e.items() if k != "book"}, sort_keys=True) for e in self.log
        )


def official_requests(*paths: Path) -> list[str]:
    entries = [json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()]
    return sorted(json.dumps(entry, sort_keys=True) for entry in entries)


def judge_with(client: RecordedReplies, tmp_path: Path) -> CachedJudge:
    return CachedJudge(OpenAIJudge("http://127.0.0.1:1/v1", client=client), tmp_path / "judgements.jsonl")


def copy_data(name: str, tmp_path: Path) -> Path:
    data = tmp_path / name
    shutil.copytree(OFFICIAL / name / "data", data)
    return data


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- LLaVA-Bench: eval_gpt_review_bench.py + summarize_gpt_review.py ---------------------------------


def test_llava_bench_equals_official(tmp_path):
    fixture = OFFICIAL / "llava-bench"
    data = copy_data("llava-bench", tmp_path)
    for entry in read_jsonl(data / "questions.jsonl"):
        touch(data / "images" / entry["image"])
    benchmark = get_benchmark("llava-bench")
    answers = {str(a["question_id"]): a["text"] for a in read_jsonl(data / "answers" / "llava-mini.jsonl")}
    records = [
        {"id": i.id, "prompt": i.prompt, "answer": answers[i.id], "meta": i.meta}
        for i in benchmark.load(data)
    ]
    client = RecordedReplies({None: json.loads((fixture / "replies.json").read_text())})
    results = benchmark.score(records, judge_with(client, tmp_path))

    assert client.requests() == official_requests(fixture / "official" / "requests.jsonl")
    # summarize_gpt_review.py prints: category, relative score, reference mean x 10, ours x 10
    lines = [line.split() for line in (fixture / "official" / "summary.txt").read_text().splitlines()]
    printed = {fields[0]: tuple(map(float, fields[1:])) for fields in lines if len(fields) == 4}
    assert set(printed) == {"all", "llava_bench_conv", "llava_bench_detail", "llava_bench_complex"}
    mine = {"all": results.metrics} | {f"llava_bench_{k}": v for k, v in results.categories.items()}
    for key, (relative, reference, ours) in printed.items():
        assert (mine[key]["relative_score"], mine[key]["reference_score"], mine[key]["model_score"]) == (
            relative,
            reference,
            ours,
        ), key
    reviews = read_jsonl(fixture / "official" / "reviews.jsonl")
    assert results.metrics["unparsed"] == sum(review["tuple"] == [-1, -1] for review in reviews) == 5
    assert results.metrics["judge_model"] == "gpt-4-0314"


def test_llava_bench_score_pair_reading():
    """parse_score of eval_gpt_review_bench.py, reply by reply."""
    assert read_score_pair("8 7\nAssistant 1 is better.") == (8.0, 7.0)
    assert read_score_pair("8,7") == (8.0, 7.0)
    assert read_score_pair("9.3 7.1") == (9.3, 7.1)
    for unread in (
        "8, 7",
        "Score: 8\n7",
        "8/10 6/10",
        "9 8 ",
        "I cannot rate these answers.",
        "",
        "8\t7",
        "8",
    ):
        assert read_score_pair(unread) == UNREAD_PAIR, unread


# --- MM-Vet: mm-vet_evaluator.py ------------------------------------------------------------------------


def test_mmvet_equals_official(tmp_path):
    fixture = OFFICIAL / "mm-vet"
    data = copy_data("mm-vet", tmp_path)
    for entry in json.loads((data / "mm-vet.json").read_text()).values():
        touch(data / "images" / entry["imagename"])
    benchmark = get_benchmark("mm-vet")
    answers = json.loads((fixture / "results" / "llava-mini.json").read_text())
    records = [
        {"id": i.id, "prompt": i.prompt, "answer": answers[i.id], "meta": i.meta}
        for i in benchmark.load(data)
    ]
    client = RecordedReplies({None: json.loads((fixture / "replies.json").read_text())})
    results = benchmark.score(records, judge_with(client, tmp_path))

    assert client.requests() == official_requests(fixture / "official" / "requests.jsonl")
    with (fixture / "official" / "llava-mini_gpt-4-0613-cap-score-1runs.csv").open() as handle:
        (capabilities,) = list(csv.DictReader(handle))
    assert results.metrics["total"] == float(capabilities.pop("total")) == 59.1
    for column in ("", "std", "runs"):
        capabilities.pop(column)
    assert {k: v["capability"] for k, v in results.categories.items() if "capability" in v} == {
        k: float(v) for k, v in capabilities.items()
    }
    with (fixture / "official" / "llava-mini_gpt-4-0613-cap-int-score-1runs.csv").open() as handle:
        (integrations,) = list(csv.DictReader(handle))
    official_sets = {
        frozenset(k.split("_")): float(v)
        for k, v in integrations.items()
        if k not in ("", "total", "std", "runs")
    }
    mine = {
        frozenset(k.removesuffix(" (integration)").split("_")): v["integration"]
        for k, v in results.categories.items()
        if "integration" in v
    }
    assert mine == official_sets
    grades = json.loads((fixture / "official" / "llava-mini_gpt-4-0613-grade-1runs.json").read_text())
    assert grades["v1_4"]["score"] == [0.0] and results.metrics["unparsed"] == 1


def test_mmvet_reply_reading_and_rounding():
    assert read_correctness("0.8 because it is right") == 0.8
    assert read_correctness("0.4\n") == 0.4
    assert read_correctness("1") == 1.0
    for unread in ("Score: 0.7", " 0.5", "1.5", "-0.1", "N/A", "0.8/1", ""):
        assert read_correctness(unread) is None, unread
    # numpy's rounding of the evaluator, not Python's (which rounds 0.15 down to 0.1)
    for value in (0.15, 2.675, 56.25, 59.09090909, 12.35, 1 / 3 * 100, 0.05, 100.0):
        assert numpy_round(value, 1) == float(np.round(value, 1)), value
    assert numpy_round(0.15, 1) == 0.2 and round(0.15, 1) == 0.1
    assert math.isnan(numpy_round(float("nan"), 1))


def test_mmvet_request_text():
    request = JudgeRequest("gpt-4-0613", (("user", MMVET_PROMPT),))
    assert request.arguments()["messages"][0]["content"].endswith("| 1.0\n")


# --- open-ended video QA: the release's eval_video_qa.py --------------------------------------------


def test_video_qa_equals_official(tmp_path):
    fixture = OFFICIAL / "video-qa"
    data = copy_data("video-qa", tmp_path)
    for entry in json.loads((data / "test_q.json").read_text()):
        touch(data / "videos" / f"{entry['video_name']}.mp4")
    predictions = {p["id"]: p["pred"] for p in read_jsonl(fixture / "pred" / "merge.jsonl")}
    client = RecordedReplies({None: json.loads((fixture / "replies.json").read_text())})
    judge = judge_with(client, tmp_path)
    for name in ("msvd-qa", "msrvtt-qa", "activitynet-qa"):
        benchmark = get_benchmark(name)
        records = [
            {"id": i.id, "prompt": i.prompt, "answer": predictions[i.id], "meta": i.meta}
            for i in benchmark.load(data)
        ]
        results = benchmark.score(records, judge)  # the cache answers the second and third benchmark
        assert client.requests() == official_requests(fixture / "official" / "requests.jsonl")
        printed = dict(
            line.split(": ") for line in (fixture / "official" / "results.txt").read_text().splitlines()
        )
        assert results.metrics["yes"] == int(printed["Yes count"]) == 5
        assert results.metrics["no"] == int(printed["No count"]) == 3
        assert results.metrics["accuracy"] == float(printed["Accuracy"])
        assert results.metrics["score"] == float(printed["Average score"])
        assert results.metrics["unparsed"] == 1 and results.metrics["judged"] == 13
        assert results.metrics["judge_model"] == "gpt-3.5-turbo"
    # the official combined file holds the same judged replies
    combined = json.loads((fixture / "official" / "results.json").read_text())
    assert len(combined) == 13 and "q5" not in combined


def test_video_qa_reply_reading():
    assert read_literal_reply("{'pred': 'yes', 'score': 4.8}") == {"pred": "yes", "score": 4.8}
    assert read_literal_reply(" {'score': 4}\n") == {"score": 4}
    assert read_literal_reply("(1, 2)") == [1, 2]  # stored as JSON by the official scripts
    for unread in ("Sure! {'pred': 'yes', 'score': 5}", "{''score': 4.8}", "yes", "{'score': b'4'}", ""):
        with pytest.raises(ValueError, match="unreadable judge reply"):
            read_literal_reply(unread)
    tally = qa_tally([{"pred": "yes", "score": 4.8}, {"pred": "unknown", "score": "2"}, {"score": 3}, [1]])
    assert (tally["yes"], tally["no"], tally["score"], tally["malformed"]) == (1, 1, 9 / 4, 2)
    assert read_literal_reply("None") is None  # read (and counted without a score), not unreadable
    assert qa_tally([None])["judged"] == 1 and qa_tally([None])["malformed"] == 1
    assert "undefined" in qa_tally([{"pred": "maybe", "score": 1}])["accuracy"]
    assert "undefined" in qa_tally([])["score"]


# --- Video-ChatGPT generative benchmark: quantitative_evaluation/evaluate_benchmark_*.py ------------


def test_video_chatgpt_equals_official(tmp_path):
    fixture = OFFICIAL / "video-chatgpt"
    data = copy_data("video-chatgpt", tmp_path)
    predictions = {
        kind: json.loads((fixture / "pred" / f"{kind}.json").read_text())
        for kind in ("generic", "temporal", "consistency")
    }
    for entries in predictions.values():
        for entry in entries:
            touch(data / "Test_Videos" / f"{entry['video_name']}.mp4")
    benchmark = get_benchmark("video-chatgpt")
    records = []
    for item in benchmark.load(data):
        prediction = predictions[item.meta["kind"]][item.meta["index"]]
        answer = (
            prediction["pred1" if item.meta.get("phrasing") == "Q1" else "pred2"]
            if "pred1" in prediction
            else prediction["pred"]
        )
        records.append({"id": item.id, "prompt": item.prompt, "answer": answer, "meta": item.meta})
    books = {
        GENERATIVE_SYSTEMS[d]: json.loads((fixture / "replies" / f"{d}.json").read_text())
        for d in GENERATIVE_SYSTEMS
    }
    client = RecordedReplies(books)
    results = benchmark.score(records, judge_with(client, tmp_path))

    recorded = [fixture / "official" / f"{d}-requests.jsonl" for d in GENERATIVE_SYSTEMS]
    assert client.requests() == official_requests(*recorded)
    for dimension in GENERATIVE_SYSTEMS:
        last = (fixture / "official" / f"{dimension}-stdout.txt").read_text().strip().splitlines()[-1]
        assert last.startswith("Average score")
        assert results.metrics[dimension] == float(last.rsplit(": ", 1)[1]), dimension
    assert results.metrics["average"] == pytest.approx((3.5 + 1.5 + 3.5 + 2.0 + 3.0) / 5)
    assert results.metrics["unparsed"] == 0


def test_video_qa_reply_none_is_judged_not_retried(tmp_path):
    """eval_video_qa.py stores a reply "None" and counts it (with no score): it is not asked again."""
    records = [
        {"id": "q0", "prompt": "what?", "answer": "A cat.", "meta": {"question": "what?", "truth": "cat"}},
        {"id": "q1", "prompt": "who?", "answer": "A man.", "meta": {"question": "who?", "truth": "man"}},
    ]
    client = RecordedReplies({None: {"A cat.": ["None"], "A man.": ["{'pred': 'yes', 'score': 4}"]}})
    results = get_benchmark("msvd-qa").score(records, judge_with(client, tmp_path))
    assert len(client.log) == 2
    assert (results.metrics["judged"], results.metrics["score"], results.metrics["accuracy"]) == (2, 2.0, 1.0)


def test_release_consistency_script_sends_question_1_twice():
    """The release's copy of the consistency script differs from Video-ChatGPT's only in question 2."""
    fixture = OFFICIAL / "video-chatgpt"
    official = read_jsonl(fixture / "official" / "consistency-requests.jsonl")
    release = read_jsonl(fixture / "release" / "consistency-requests.jsonl")
    pairs = {
        e["pred1"]: (e["Q1"], e["Q2"])
        for e in json.loads((fixture / "pred" / "consistency.json").read_text())
    }
    assert len(official) == len(release) == 3
    by_key = {entry["key"]: entry for entry in release}
    for entry in official:
        first, second = pairs[entry["key"]]
        expected = json.loads(
            json.dumps(entry["request"]).replace(f"Question 2: {second}", f"Question 2: {first}")
        )
        assert by_key[entry["key"]]["request"] == expected != entry["request"]


def test_video_chatgpt_unreadable_replies_are_asked_again_then_left_out(tmp_path):
    """The official scripts ask again forever; here 10 tries, then the question is left out."""
    assert read_generative_reply("{'score': '3'}") == 3
    for unread in ("{'score': '4.5'}", "{'pred': 'yes'}", "{'score': None}", "Score: 4"):
        with pytest.raises(ValueError):
            read_generative_reply(unread)
    benchmark = get_benchmark("video-chatgpt")
    records = [
        {
            "id": "temporal-0",
            "prompt": "What happens first?",
            "answer": "A cat jumps.",
            "meta": {"kind": "temporal", "truth": "A dog runs.", "index": 0},
        },
        {
            "id": "temporal-1",
            "prompt": "What happens last?",
            "answer": "A cat sleeps.",
            "meta": {"kind": "temporal", "truth": "A dog sits.", "index": 1},
        },
    ]
    client = RecordedReplies(
        {None: {"A cat jumps.": ["no idea"], "A cat sleeps.": ["Score: 2", "{'score': 2}"]}}
    )
    results = benchmark.score(records, judge_with(client, tmp_path))
    assert results.metrics["temporal"] == 2.0 and results.metrics["unparsed"] == 1
    assert [e["attempt"] for e in client.log if e["key"] == "A cat jumps."] == list(range(10))
    assert results.metrics["correctness"] == "no judged questions"
