"""VQAv2, VizWiz, TextVQA and GQA against the outputs of their official scripts on adversarial fixtures.

The fixtures and the recorded outputs live in tests/eval/official/ (RECORD.md says which script, at which
commit, produced each output, and with which command). Scores must agree to the digits the official scripts
print (and per question exactly); upload files must be byte-identical.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from llava_mini.eval.benchmarks import get_benchmark
from llava_mini.eval.benchmarks.base import Benchmark, Results
from llava_mini.eval.runner import ANSWERS_FILE, run_benchmark
from llava_mini.eval.scoring import (
    evalai_answer,
    official_vqa_accuracy,
    vqa_accuracy,
    vqa_process_digit_article,
    vqa_process_punctuation,
)

OFFICIAL = Path(__file__).parent / "official"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def with_images(source: Path, destination: Path, folder: str, names: list[str]) -> Path:
    """A copy of a fixture folder with a tiny image for every name under destination/folder."""
    shutil.copytree(source, destination)
    for name in names:
        (destination / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), "gray").save(destination / folder / name, format="PNG")
    return destination


def records_for(items, replies: list[str]) -> list[dict]:
    return [
        {"id": item.id, "prompt": item.prompt, "answer": reply, "meta": item.meta}
        for item, reply in zip(items, replies, strict=True)
    ]


# --- answer processing --------------------------------------------------------------------------------


def test_vqa_api_answer_processing_equals_vqaeval():
    recorded = json.loads((OFFICIAL / "vqav2" / "official_vqaeval_processing.json").read_text("utf-8"))
    ours = {raw: vqa_process_digit_article(vqa_process_punctuation(raw)) for raw in recorded}
    assert ours == recorded
    assert recorded["yes" + "." * 40] == "yes" + "." * 8  # only 32 periods go (re.UNICODE as `count`)
    assert official_vqa_accuracy("yes" + "." * 40, ["yes"] * 8 + ["no"] * 2) == 0
    assert vqa_accuracy("yes" + "." * 40, ["yes"] * 8 + ["no"] * 2) == 1  # lenient: every period goes


def test_evalai_processor_equals_release_m4c():
    recorded = json.loads((OFFICIAL / "m4c_processing.json").read_text("utf-8"))
    assert {raw: evalai_answer(raw) for raw in recorded} == recorded
    assert recorded["What's new"] == "what 's new" and recorded["red,white"] == "redwhite"


# --- VQAv2 ------------------------------------------------------------------------------------------


def vqav2_val(tmp_path: Path) -> Path:
    questions = json.loads((OFFICIAL / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    names = sorted({f"COCO_val2014_{q['image_id']:012d}.jpg" for q in questions["questions"]})
    return with_images(OFFICIAL / "vqav2", tmp_path / "vqav2", "val2014", names)


def test_vqav2_official_files_score_as_the_vqa_api(tmp_path):
    data = vqav2_val(tmp_path)
    vqav2 = get_benchmark("vqav2")
    items = vqav2.load(data)
    replies = {entry["question_id"]: entry["text"] for entry in read_jsonl(data / "merge.jsonl")}
    records = records_for(items, [replies[item.meta["question_id"]] for item in items])
    assert items[0].prompt == "Question 0?\nAnswer the question using a single word or phrase."
    assert items[0].media[0] == data / "val2014" / "COCO_val2014_000000000500.jpg"

    # the server's view: the release's converter, then vqaEval.py
    official = json.loads((data / "official_vqaeval_converted.json").read_text())
    results = vqav2.score(records, None)
    assert round(100 * results.metrics["accuracy"], 2) == official["accuracy"]["overall"]
    per_type = {kind: round(100 * row["accuracy"], 2) for kind, row in results.categories.items()}
    by_question_type = {k: v for k, v in per_type.items() if k.startswith("question type/")}
    assert {k: v for k, v in per_type.items() if k not in by_question_type} == official["accuracy"][
        "perAnswerType"
    ]
    assert {k.removeprefix("question type/"): v for k, v in by_question_type.items()} == official["accuracy"][
        "perQuestionType"
    ]
    for record in records:
        accuracy = official_vqa_accuracy(evalai_answer(record["answer"]), record["meta"]["answers"])
        assert round(100 * accuracy, 2) == official["evalQA"][str(record["meta"]["question_id"])]

    # vqaEval.py alone on the raw replies: normalisation only where the ground truths disagree
    raw = json.loads((data / "official_vqaeval_raw.json").read_text())
    for record in records:
        accuracy = official_vqa_accuracy(record["answer"], record["meta"]["answers"])
        assert round(100 * accuracy, 2) == raw["evalQA"][str(record["meta"]["question_id"])]
    # unanimous ground truths are compared exactly: "Yes" / "yes." against ten "yes" score 0, and the
    # converted "t shirt", "1 way", "lot" against ten "t-shirt", "one way", "a lot" score 0 on the server
    question_of = {r["answer"]: str(r["meta"]["question_id"]) for r in records}
    assert [raw["evalQA"][question_of[reply]] for reply in ("Yes", "yes.", "t-shirt")] == [0, 0, 100]
    assert [official["evalQA"][question_of[reply]] for reply in ("t-shirt", "one way", "a lot")] == [0, 0, 0]


def test_vqav2_lenient_reading_is_a_second_figure(tmp_path):
    data = vqav2_val(tmp_path)
    items = get_benchmark("vqav2").load(data)
    replies = {entry["question_id"]: entry["text"] for entry in read_jsonl(data / "merge.jsonl")}
    out = tmp_path / "out"
    out.mkdir()
    answers = records_for(items, [replies[item.meta["question_id"]] for item in items])
    (out / ANSWERS_FILE).write_text("".join(json.dumps(r) + "\n" for r in answers))

    def no_model():
        raise AssertionError("every item is answered; no model should load")

    official = run_benchmark("vqav2", data, out, no_model)
    lenient = run_benchmark("vqav2", data, out, no_model, reading="lenient")
    assert official["reading"] == "official" and lenient["reading"] == "lenient"
    recorded = json.loads((data / "official_vqaeval_converted.json").read_text())
    assert round(100 * official["metrics"]["accuracy"], 2) == recorded["accuracy"]["overall"]
    assert lenient["metrics"]["accuracy"] > official["metrics"]["accuracy"]  # t-shirt, one way, a lot score
    assert "lenient reading" in (out / "results.md").read_text()


def test_vqav2_test_dev_upload_equals_release_converter(tmp_path):
    root = tmp_path / "vqav2"
    root.mkdir()
    everything = read_jsonl(OFFICIAL / "vqav2" / "llava_vqav2_mscoco_test2015.jsonl")
    shutil.copy(OFFICIAL / "vqav2" / "llava_vqav2_mscoco_test2015.jsonl", root)
    test_dev = everything[:-2]  # two test2015 questions stay unanswered: "" in the upload
    (root / "llava_vqav2_mscoco_test-dev2015.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in test_dev)
    )
    with_images(root, tmp_path / "data", "test2015", [q["image"] for q in test_dev])
    vqav2 = get_benchmark("vqav2")
    items = vqav2.load(tmp_path / "data")
    replies = {
        entry["question_id"]: entry["text"] for entry in read_jsonl(OFFICIAL / "vqav2" / "merge.jsonl")
    }
    records = records_for(items, [replies[item.meta["question_id"]] for item in items])
    (path,) = vqav2.write_submission(records, tmp_path / "data", tmp_path / "out")
    assert path.read_bytes() == (OFFICIAL / "vqav2" / "official_upload_test-dev.json").read_bytes()


def test_vqav2_missing_files_are_named(tmp_path):
    vqav2 = get_benchmark("vqav2")
    with pytest.raises(FileNotFoundError, match="VQAv2 question file not found.*v2_OpenEnded_mscoco_val2014"):
        vqav2.load(tmp_path)
    data = vqav2_val(tmp_path)
    (data / "v2_mscoco_val2014_annotations.json").unlink()
    with pytest.raises(FileNotFoundError, match="v2_mscoco_val2014_annotations.json"):
        vqav2.load(data)
    shutil.rmtree(data / "val2014")
    with pytest.raises(FileNotFoundError, match="COCO_val2014_000000000500.jpg"):
        vqav2.load(data)


# --- VizWiz -----------------------------------------------------------------------------------------


def test_vizwiz_upload_equals_release_converter(tmp_path):
    questions = read_jsonl(OFFICIAL / "vizwiz" / "llava_test.jsonl")
    data = with_images(OFFICIAL / "vizwiz", tmp_path / "vizwiz", "test", [q["image"] for q in questions])
    vizwiz = get_benchmark("vizwiz")
    items = vizwiz.load(data)
    replies = {entry["question_id"]: entry["text"] for entry in read_jsonl(data / "merge.jsonl")}
    records = records_for(items, [replies[item.meta["question_id"]] for item in items])
    (path,) = vizwiz.write_submission(records, data, tmp_path / "out")
    assert path.read_bytes() == (OFFICIAL / "vizwiz" / "official_upload_test.json").read_bytes()
    assert vizwiz.score(records, None).metrics["accuracy"].startswith("not scored")


# --- TextVQA ----------------------------------------------------------------------------------------


def textvqa_data(tmp_path: Path) -> Path:
    questions = read_jsonl(OFFICIAL / "textvqa" / "llava_textvqa_val_v051_ocr.jsonl")
    return with_images(
        OFFICIAL / "textvqa", tmp_path / "textvqa", "train_images", [q["image"] for q in questions]
    )


def test_textvqa_shared_ids_score_as_release_eval_textvqa(tmp_path):
    data = textvqa_data(tmp_path)
    textvqa = get_benchmark("textvqa")
    items = textvqa.load(data)
    assert len({item.id for item in items}) == len(items)  # question ids shared per image: ids made unique
    assert items[0].id == "img0000#1" and items[0].meta["question_id"] == "img0000"
    replies = read_jsonl(data / "answers.jsonl")  # the release's answers, in question-file order
    records = records_for(items, [reply["text"] for reply in replies])
    results = textvqa.score(records, None)
    printed = (data / "official_eval_textvqa.txt").read_text()
    assert f"Samples: {len(records)}" in printed
    assert f"Accuracy: {100 * results.metrics['accuracy']:.2f}%" in printed
    official = {
        entry["question_id"]: entry["score"]
        for entry in json.loads((data / "official_scores.json").read_text())
    }
    ours = {r["meta"]["textvqa_id"]: textvqa_score(r) for r in records}
    assert ours == official


def textvqa_score(record: dict) -> float:
    return get_benchmark("textvqa").score([record], None).metrics["accuracy"]


def test_textvqa_runs_end_to_end_with_shared_ids(tmp_path):
    data = textvqa_data(tmp_path)
    items = get_benchmark("textvqa").load(data)
    replies = read_jsonl(data / "answers.jsonl")
    out = tmp_path / "out"
    out.mkdir()
    answers = records_for(items, [reply["text"] for reply in replies])
    (out / ANSWERS_FILE).write_text("".join(json.dumps(r) + "\n" for r in answers))
    payload = run_benchmark("textvqa", data, out, lambda: None)
    printed = (data / "official_eval_textvqa.txt").read_text()
    assert f"Accuracy: {100 * payload['metrics']['accuracy']:.2f}%" in printed


def test_textvqa_official_layout_and_errors(tmp_path):
    data = textvqa_data(tmp_path)
    (data / "llava_textvqa_val_v051_ocr.jsonl").rename(tmp_path / "moved.jsonl")
    items = get_benchmark("textvqa").load(data)  # TextVQA's own file alone
    assert len(items) == 36 and items[0].id == "34602" and len(items[0].meta["answers"]) == 10
    assert items[0].prompt == "What is written on sign 0?\nAnswer the question using a single word or phrase."
    (tmp_path / "moved.jsonl").rename(data / "llava_textvqa_val_v051_ocr.jsonl")
    lines = (data / "llava_textvqa_val_v051_ocr.jsonl").read_text().splitlines()
    (data / "llava_textvqa_val_v051_ocr.jsonl").write_text(lines[0].replace("sign 0", "sign 99") + "\n")
    with pytest.raises(
        ValueError, match=r"llava_textvqa_val_v051_ocr.jsonl:1: no question 'what is written on sign 99\?'"
    ):
        get_benchmark("textvqa").load(data)
    (data / "TextVQA_0.5.1_val.json").unlink()
    with pytest.raises(FileNotFoundError, match="TextVQA answers not found.*TextVQA_0.5.1_val.json"):
        get_benchmark("textvqa").load(data)


# --- GQA --------------------------------------------------------------------------------------------


SECTIONS = {
    "Accuracy / structural type": "structural",
    "Accuracy / semantic type": "semantic",
    "Accuracy / steps number": "steps",
    "Accuracy / words number": "words",
}


def gqa_printed(path: Path) -> dict[str, str]:
    """eval.py's output as {"Accuracy": "46.88", "Distribution": "0.04", "structural/query": "28.57", ...}."""
    printed, section = {}, None
    for line in path.read_text().splitlines():
        if line.rstrip(":") in SECTIONS:
            section = SECTIONS[line.rstrip(":")]
        elif match := re.match(r"^  (\w+): ([\d.]+)% \((\d+) questions\)$", line):
            printed[f"{section}/{match[1]}"] = match[2]
        elif match := re.match(r"^(\w+): ([\d.]+)", line):
            printed[match[1]] = match[2]
    return printed


def test_gqa_scores_and_predictions_equal_release_and_eval_py(tmp_path):
    questions = read_jsonl(OFFICIAL / "gqa" / "llava_gqa_testdev_balanced.jsonl")
    data = with_images(OFFICIAL / "gqa", tmp_path / "gqa", "images", sorted({q["image"] for q in questions}))
    gqa = get_benchmark("gqa")
    items = gqa.load(data)
    replies = read_jsonl(data / "merge.jsonl")
    records = records_for(items, [reply["text"] for reply in replies])
    (path,) = gqa.write_submission(records, data, tmp_path / "out")
    assert path.read_bytes() == (data / "official_testdev_balanced_predictions.json").read_bytes()

    printed = gqa_printed(data / "official_eval.txt")
    results = gqa.score(records, None)
    for metric in ("accuracy", "binary", "open", "distribution"):
        assert (
            f"{(1 if metric == 'distribution' else 100) * results.metrics[metric]:.2f}"
            == printed[metric.capitalize()]
        ), metric
    ours = {key: f"{100 * row['accuracy']:.2f}" for key, row in results.categories.items()}
    assert ours == {key: value for key, value in printed.items() if "/" in key}
    assert results.metrics["total"] == 32  # the unbalanced question is not scored
    lenient = gqa.lenient_score(records, None)
    assert lenient.metrics["accuracy"] > results.metrics["accuracy"]  # " yes", "yes. ", "red\n" count


# --- readings -----------------------------------------------------------------------------------------


def test_reading_names_are_checked():
    def score(records, judge=None):
        return Results(metrics={})

    only_official = Benchmark("x", "X", "image", lambda root: [], score)
    assert only_official.scorer() is score
    with pytest.raises(ValueError, match="X has no 'lenient' reading"):
        only_official.scorer("lenient")
    with pytest.raises(ValueError, match="unknown reading 'strict'"):
        only_official.scorer("strict")


def test_cli_reading_option(tmp_path, capsys):
    from llava_mini.cli import main

    questions = read_jsonl(OFFICIAL / "gqa" / "llava_gqa_testdev_balanced.jsonl")
    data = with_images(OFFICIAL / "gqa", tmp_path / "gqa", "images", sorted({q["image"] for q in questions}))
    items = get_benchmark("gqa").load(data)
    out = tmp_path / "out"
    out.mkdir()
    answers = records_for(items, [reply["text"] for reply in read_jsonl(data / "merge.jsonl")])
    (out / ANSWERS_FILE).write_text("".join(json.dumps(r) + "\n" for r in answers))
    printed = {}
    for reading in ("official", "lenient"):
        assert (
            main(["eval", "gqa", "--data", str(data), "--out", str(out), "--json", "--reading", reading]) == 0
        )
        printed[reading] = json.loads(capsys.readouterr().out)
    assert printed["official"]["reading"] == "official"
    assert (
        f"{100 * printed['official']['metrics']['accuracy']:.2f}"
        == gqa_printed(data / "official_eval.txt")["Accuracy"]
    )
    assert printed["lenient"]["metrics"]["accuracy"] > printed["official"]["metrics"]["accuracy"]
    with pytest.raises(SystemExit):
        main(["eval", "gqa", "--data", str(data), "--reading", "strict"])
