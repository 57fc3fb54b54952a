"""The default (official) scores of POPE, ScienceQA, SEED-Bench, MVBench, MLVU, EgoSchema and MMBench equal
what the official scripts computed on the same adversarial answers (tests/eval/official/, RECORD.md).

Each fixture folder holds the benchmark's files in the official layout, the answers in the official answer
format, and under official/ the recorded output of the official code. Here the project's loader reads the
folder (media are empty placeholder files), the answers become the runner's records, and the project's
scorer must print what the official code printed.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from llava_mini.eval.benchmarks import get_benchmark
from llava_mini.eval.benchmarks.mmbench import SUBMISSION_DROPPED, question_hits
from llava_mini.eval.benchmarks.video_choice import MLVU_TASKS, MVBENCH_TASKS, egoschema_choice
from llava_mini.eval.scoring import LETTERS, scienceqa_choice

OFFICIAL = Path(__file__).parent / "official"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def fixture(name: str, tmp_path: Path) -> Path:
    """A copy of the fixture folder (without the recorded outputs) to add placeholder media to."""
    root = tmp_path / name
    shutil.copytree(OFFICIAL / name, root, ignore=shutil.ignore_patterns("official"))
    return root


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def records_for(items, answers: dict[str, str]) -> list[dict]:
    return [{"id": i.id, "prompt": i.prompt, "answer": answers[i.id], "meta": i.meta} for i in items]


# --- POPE -------------------------------------------------------------------------------------------

_POPE_PRINTED = {"Accuracy": "accuracy", "Precision": "precision", "Recall": "recall", "F1 score": "f1",
                 "Yes ratio": "yes_ratio"}  # fmt: skip


def pope_records(tmp_path: Path) -> list[dict]:
    root = fixture("pope", tmp_path)
    for split in ("adversarial", "popular", "random"):
        for entry in read_jsonl(root / "coco" / f"coco_pope_{split}.json"):
            touch(root / "val2014" / entry["image"])
    items = get_benchmark("pope").load(root)
    categories = {q["question_id"]: q["category"] for q in read_jsonl(root / "llava_pope_test.jsonl")}
    answers = {}
    for split in ("adversarial", "popular", "random"):
        # eval_pope.py pairs a split's answers (in file order) with its label file's lines
        texts = [
            a["text"] for a in read_jsonl(root / "answers.jsonl") if categories[a["question_id"]] == split
        ]
        split_items = [i for i in items if i.meta["split"] == split]
        assert len(texts) == len(split_items)
        answers.update({i.id: text for i, text in zip(split_items, texts, strict=True)})
    return records_for(items, answers)


def test_pope_equals_eval_pope(tmp_path):
    results = get_benchmark("pope").score_records(pope_records(tmp_path))
    for split in ("adversarial", "popular", "random"):
        printed = (OFFICIAL / "pope" / "official" / f"eval_pope_{split}.txt").read_text(encoding="utf-8")
        ours = results.categories[split]
        counts = printed.split("TP\tFP\tTN\tFN\t\n")[1].splitlines()[0].split("\t")
        assert [ours["tp"], ours["fp"], ours["tn"], ours["fn"]] == [int(c) for c in counts]
        for label, name in _POPE_PRINTED.items():
            value = re.search(rf"^{label}: (\S+)$", printed, re.M)
            if value:
                assert ours[name] == float(value.group(1)), (split, name)  # repr-exact
        if "ZeroDivisionError" in printed:
            failed = re.search(r"^\s+(\w+) = ", printed.split("Traceback")[1], re.M).group(1)
            assert ours[failed] is None, (split, failed)  # undefined, where the script divides by zero
            assert any(split in note and failed in note for note in results.notes)
    assert "ZeroDivisionError" in (OFFICIAL / "pope" / "official" / "eval_pope_adversarial.txt").read_text()
    assert results.metrics["f1"].startswith("undefined")  # the mean over splits needs every split's F1


def test_pope_lenient_reading_is_a_second_named_figure(tmp_path):
    records = pope_records(tmp_path)
    official = get_benchmark("pope").score_records(records)
    lenient = get_benchmark("pope").score_records(records, reading="lenient")
    assert set(lenient.metrics) == {"lenient_f1", "lenient_accuracy"}
    # "There is no\ndog" is yes for eval_pope.py, no for the lenient reading: two splits differ
    differ = [s for s in ("popular", "random") if lenient.categories[s]["f1"] != official.categories[s]["f1"]]
    assert differ == ["popular", "random"]


# --- ScienceQA ----------------------------------------------------------------------------------------


def scienceqa_records(tmp_path: Path) -> list[dict]:
    root = fixture("scienceqa", tmp_path)
    for entry in json.loads((root / "llava_test_CQM-A.json").read_text()):
        if "image" in entry:
            touch(root / "images" / "test" / entry["image"])
    items = get_benchmark("scienceqa").load(root)
    return records_for(items, {a["question_id"]: a["text"] for a in read_jsonl(root / "answers.jsonl")})


def test_scienceqa_equals_eval_science_qa(tmp_path):
    records = scienceqa_records(tmp_path)
    official = json.loads((OFFICIAL / "scienceqa" / "official" / "merge_result.json").read_text())
    outputs = json.loads((OFFICIAL / "scienceqa" / "official" / "merge_output.json").read_text())
    assert {r["id"]: scienceqa_choice(r["answer"], len(r["meta"]["choices"])) for r in records} == official[
        "results"
    ]
    results = get_benchmark("scienceqa").score_records(records)
    assert results.metrics["accuracy"] * 100 == official["acc"]
    image_right = sum(x["is_multimodal"] for x in outputs["correct"])
    image_total = image_right + sum(x["is_multimodal"] for x in outputs["incorrect"])
    assert (results.categories["IMG"]["correct"], results.categories["IMG"]["total"]) == (
        image_right,
        image_total,
    )
    printed = (OFFICIAL / "scienceqa" / "official" / "eval_science_qa.txt").read_text()
    assert f"IMG-Accuracy: {results.metrics['img_accuracy'] * 100:.2f}%" in printed
    lenient = get_benchmark("scienceqa").score_records(records, reading="lenient")
    assert lenient.metrics["lenient_accuracy"] > results.metrics["accuracy"]  # the readings differ


# --- SEED-Bench ---------------------------------------------------------------------------------------


def test_seed_equals_convert_seed_for_submission(tmp_path):
    root = fixture("seed_bench", tmp_path)
    for entry in json.loads((root / "SEED-Bench.json").read_text())["questions"]:
        if entry["data_type"] == "image":
            touch(root / "SEED-Bench-image" / entry["data_id"])
        else:
            touch(root / "SEED-Bench-video-image" / f"{entry['question_id']}.png")
    benchmark = get_benchmark("seed-bench")
    items = benchmark.load(root)
    records = records_for(
        items, {str(a["question_id"]): a["text"] for a in read_jsonl(root / "answers.jsonl")}
    )
    results = benchmark.score_records(records)
    lines = [
        f"{name.split(' ', 1)[1]}: {row['accuracy'] * 100:.2f}%" for name, row in results.categories.items()
    ]
    lines += [
        f"Total accuracy: {results.metrics['accuracy'] * 100:.2f}%",
        f"image accuracy: {results.metrics['image_accuracy'] * 100:.2f}%",
        f"video accuracy: {results.metrics['video_accuracy'] * 100:.2f}%",
    ]
    printed = (OFFICIAL / "seed_bench" / "official" / "convert_seed_for_submission.txt").read_text()
    assert printed.splitlines()[2:] == lines
    (path,) = benchmark.write_submission(records, root, tmp_path / "out")
    assert read_jsonl(path) == read_jsonl(OFFICIAL / "seed_bench" / "official" / "upload.jsonl")


# --- MVBench and MLVU -----------------------------------------------------------------------------------


def video_choice_records(name: str, root: Path, tasks: dict[str, str]) -> list[dict]:
    for task_file, folder in tasks.items():
        for entry in json.loads((root / "json" / task_file).read_text()):
            path = root / "video" / folder / entry["video"]
            if Path(entry["video"]).suffix:
                touch(path)
            else:
                path.mkdir(parents=True, exist_ok=True)  # a frame folder
    items = get_benchmark(name).load(root)
    answers = {f"{Path(a['file']).stem}-{a['entry']}": a["text"] for a in read_jsonl(root / "answers.jsonl")}
    return records_for(items, answers)


@pytest.mark.parametrize(
    ("name", "folder", "tasks"),
    [
        ("mvbench", "mvbench", {spec[0]: spec[1] for spec in MVBENCH_TASKS.values()}),
        ("mlvu", "mlvu", {f"{stem}.json": stem for stem in MLVU_TASKS.values()}),
    ],
)
def test_video_choice_equals_release_scripts(name, folder, tasks, tmp_path):
    records = video_choice_records(name, fixture(folder, tmp_path), tasks)
    results = get_benchmark(name).score_records(records)
    official = OFFICIAL / folder / "official"
    final = json.loads((official / "result_1_0.json").read_text())
    counts = json.loads((official / "save_1_0.json.json").read_text())["acc_dict"]
    assert {k: [v["correct"], v["total"]] for k, v in results.categories.items()} == counts
    assert {k: v["accuracy"] * 100 for k, v in results.categories.items()} == {
        k: v for k, v in final.items() if k != "Avg"
    }
    assert results.metrics["accuracy"] * 100 == pytest.approx(final["Avg"], rel=1e-15)
    # the prompts are the release's: its question template + "Answer with one letter."
    questions = [line["question"] for line in read_jsonl(official / "1_0.jsonl")]
    assert sorted(r["prompt"] for r in records) == sorted(q + "\nAnswer with one letter." for q in questions)
    lenient = get_benchmark(name).score_records(records, reading="lenient")
    assert lenient.metrics["lenient_accuracy"] > results.metrics["accuracy"]  # the readings differ


# --- EgoSchema --------------------------------------------------------------------------------------------


def test_egoschema_equals_release_script(tmp_path):
    root = fixture("egoschema", tmp_path)
    entries = json.loads((root / "mc.json").read_text())
    for entry in entries:
        touch(root / "videos" / f"{entry['q_uid']}.mp4")
    benchmark = get_benchmark("egoschema")
    items = benchmark.load(root)
    records = records_for(items, {a["q_uid"]: a["text"] for a in read_jsonl(root / "answers.jsonl")})
    official = read_jsonl(OFFICIAL / "egoschema" / "official" / "1_0.json")
    assert [egoschema_choice(r["answer"]) for r in records] == [line["pred"] for line in official]
    assert [r["prompt"] for r in records] == [line["prompt"] for line in official]
    printed = (OFFICIAL / "egoschema" / "official" / "egoschema_mc.txt").read_text()
    assert printed.strip() == f"ACC:  {benchmark.score_records(records).metrics['accuracy']}"
    (path,) = benchmark.write_submission(records, root, tmp_path / "out")
    rows = path.read_text().splitlines()
    assert rows[1:] == [f"{line['q_uid']},{line['pred']}" for line in official]


# --- MMBench ---------------------------------------------------------------------------------------------


def mmbench_records(tmp_path: Path) -> tuple[Path, list[dict]]:
    root = fixture("mmbench", tmp_path)
    items = get_benchmark("mmbench").load(root)
    answers = {str(a["question_id"]): a["text"] for a in read_jsonl(root / "answers.jsonl")}
    return root, records_for(items, answers)


def test_mmbench_rows_are_the_tsv_rows(tmp_path):
    root, records = mmbench_records(tmp_path)
    lines = (root / "mmbench_dev_20230712.tsv").read_text().splitlines()
    assert len(records) == len(lines) - 1  # no rotation of our own: the TSV holds every rotation
    assert records[1]["id"] == "1000000" and records[1]["meta"]["group"] == 0
    assert records[1]["prompt"] == (
        "Which animal (0)?\nA. a dog\nB. a bird\nC. a red car\nD. a cat\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_mmbench_equals_vlmevalkit_circular(tmp_path):
    root, records = mmbench_records(tmp_path)
    results = get_benchmark("mmbench").score_records(records)
    official = json.loads((OFFICIAL / "mmbench" / "official" / "vlmevalkit_circular.json").read_text())
    (report,) = official["report"]
    assert results.metrics["circular_accuracy"] == report["Overall"]
    assert results.metrics["questions"] == len(official["hit"])
    for name, value in report.items():
        if name not in ("split", "Overall"):
            key = name if name in results.categories else f"l2/{name}"
            assert results.categories[key]["accuracy"] == value, name
    assert {str(k): int(v) for k, v in question_hits(records).items()} == official["hit"]
    assert any("not scored" in note for note in results.notes)  # the orphan rotation 3000077


def _xlsx_rows(path: Path) -> list[list[str | int | None]]:
    space = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    with zipfile.ZipFile(path) as archive:
        sheet = ET.fromstring(archive.read("xl/worksheets/sheet1.xml"))
    rows = []
    for row in sheet.iterfind(".//m:row", space):
        cells = []
        for cell in row.iterfind("m:c", space):
            if cell.get("t") == "inlineStr":
                cells.append(cell.findtext("m:is/m:t", default="", namespaces=space) or None)
            else:
                cells.append(int(cell.findtext("m:v", namespaces=space)))
        rows.append(cells)
    return rows


def test_mmbench_submission_equals_release_upload(tmp_path):
    root, records = mmbench_records(tmp_path)
    (path,) = get_benchmark("mmbench").write_submission(records, root, tmp_path / "out")
    official = json.loads(
        (OFFICIAL / "mmbench" / "official" / "convert_mmbench_for_submission.json").read_text()
    )
    header, *rows = _xlsx_rows(path)
    assert header == official["columns"]
    assert not set(SUBMISSION_DROPPED) & set(header)
    # pandas reads an empty cell back as None; multi-line answers keep their newlines in both
    assert rows == [[None if v == "" else v for v in row] for row in official["data"]]


def test_every_owned_benchmark_offers_both_readings():
    for name in ("pope", "scienceqa", "seed-bench", "mvbench", "mlvu", "egoschema", "mmbench"):
        assert get_benchmark(name).readings == ("official", "lenient")
    with pytest.raises(ValueError, match="MME has no 'lenient' reading"):
        get_benchmark("mme").score_records([], reading="lenient")
    assert LETTERS.startswith("ABCDE")


def test_runner_and_cli_take_the_reading(tmp_path):
    from llava_mini.cli import build_parser
    from llava_mini.eval.runner import append_answers, format_value, run_benchmark

    root, records = mmbench_records(tmp_path)
    append_answers(tmp_path / "run" / "answers.jsonl", records)  # all answered: no model is loaded

    def no_model():
        raise AssertionError("every item has an answer; nothing should be generated")

    official = run_benchmark("mmbench", root, tmp_path / "run", no_model)
    lenient = run_benchmark("mmbench", root, tmp_path / "run", no_model, reading="lenient")
    assert official["reading"] == "official" and "circular_accuracy" in official["metrics"]
    assert lenient["reading"] == "lenient" and "lenient_circular_accuracy" in lenient["metrics"]
    assert "lenient reading (not the official score)" in (tmp_path / "run" / "results.md").read_text()
    assert format_value(None) == "undefined" and format_value(0.25) == "0.2500"
    with pytest.raises(ValueError, match="MME has no 'lenient' reading"):
        run_benchmark("mme", root, tmp_path / "mme", no_model, reading="lenient")
    arguments = build_parser().parse_args(["eval", "mmbench", "--data", str(root), "--reading", "lenient"])
    assert arguments.reading == "lenient"
    assert build_parser().parse_args(["eval", "pope", "--data", "x"]).reading == "official"


# --- MME (agreed before; pinned here too) -----------------------------------------------------------------


def test_mme_equals_calculation_py():
    records = []
    for path in sorted((OFFICIAL / "mme" / "answers").glob("*.txt")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            image, _question, truth, answer = line.split("\t")
            meta = {"category": path.stem, "image": image, "label": truth.lower()}
            records.append({"id": f"{path.stem}/{number}", "prompt": "", "answer": answer, "meta": meta})
    results = get_benchmark("mme").score_records(records)
    printed = (OFFICIAL / "mme" / "official" / "calculation.txt").read_text(encoding="utf-8")
    totals = [float(value) for value in re.findall(r"^total score: (\S+)", printed, re.M)]
    assert totals == [results.metrics["perception"], results.metrics["cognition"]]  # repr-exact
    tasks = {name: float(value) for name, value in re.findall(r"^\t (\w+)  score: (\S+)$", printed, re.M)}
    assert tasks == {name: row["score"] for name, row in results.categories.items()}
    assert len(tasks) == 14


def test_release_layouts_load_and_missing_files_are_named(tmp_path):
    # SEED-Bench as the release's playground keeps it: seed_bench/SEED-Bench/{SEED-Bench.json, SEED-Bench-image/}
    root = tmp_path / "seed_bench"
    shutil.copytree(OFFICIAL / "seed_bench", root / "SEED-Bench", ignore=shutil.ignore_patterns("official"))
    for entry in json.loads((root / "SEED-Bench" / "SEED-Bench.json").read_text())["questions"]:
        if entry["data_type"] == "image":
            touch(root / "SEED-Bench" / "SEED-Bench-image" / entry["data_id"])
    items = get_benchmark("seed-bench").load(root)
    assert items and all(i.meta["data_type"] == "image" for i in items)  # video frames absent: skipped
    empty = tmp_path / "empty"
    empty.mkdir()
    expected = {
        "pope": "coco_pope_adversarial.json",
        "scienceqa": "llava_test_CQM-A.json, llava_test_CQM-I.json",
        "seed-bench": "SEED-Bench.json, SEED-Bench/SEED-Bench.json",
        "mmbench": "mmbench_dev_20230712.tsv, MMBench_DEV_EN.tsv",
        "mlvu": "1_plotQA.json",
        "egoschema": "questions.json, mc.json",
        "mvbench": "MVBench video folder not found",
    }
    for name, message in expected.items():
        with pytest.raises(FileNotFoundError, match=re.escape(message)):
            get_benchmark(name).load(empty)


def test_a_seed_dimension_with_no_right_answer_is_undefined_as_the_official_script_crashes_there():
    def record(dimension: int, answer: str) -> dict:
        meta = {"answer": 0, "options": ["x", "y", "z", "w"], "dimension_id": dimension,
                "dimension": f"dim{dimension}", "data_type": "image", "question_id": str(dimension)}
        return {"meta": meta, "answer": answer}

    results = get_benchmark("seed-bench").score_records([record(1, "A"), record(2, "B")])
    assert results.categories["01 dim1"]["accuracy"] == 1.0
    assert results.categories["02 dim2"]["accuracy"] is None
    assert any("02 dim2" in note and "KeyError" in note for note in results.notes)
    assert results.metrics["accuracy"] == 0.5
