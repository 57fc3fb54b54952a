"""Multiple-choice video benchmarks: MVBench (20 tasks), MLVU (long videos, 7 tasks), EgoSchema.

Prompts and scores are the release's (llavamini/eval/video/{mvbench,mlvu,egoschema}_mc.py):
- MVBench and MLVU: "Question: ...\\nOptions:\\n(A) ...\\n(B) ...\\nAnswer with one letter."; an answer is
  right as the release's `check_ans` reads it (`scoring.video_check_answer`: the character before the first
  ")", else the whole answer, must be the letter); the headline is the mean of the per-task accuracies.
- EgoSchema: the release's expert prompt with "A: ..." choices and "Answer with one letter."; the answer is
  the first character of the reply in A-E (`scoring.first_letter`; none = -1, wrong); accuracy over questions.
Layouts:
- MVBench: json/<task>.json ([{"video", "question", "candidates", "answer", "start"?, "end"?}]) and video/
  with each task's source folder (star/Charades_v1_480/, clevrer/video_validation/, ...) as in MVBench's
  release; bounded tasks are cut to [start, end]; episodic reasoning reads frame folders (3 fps).
- MLVU: json/<n_task>.json for the 7 multiple-choice tasks the release runs (1_plotQA ... 7_topic_reasoning;
  [{"video", "question", "candidates", "answer"}]) and video/<n_task>/.
- EgoSchema: questions.json ([{"q_uid", "question", "option 0".."option 4"}]) with subset_answers.json
  ({q_uid: index}) as EgoSchema ships them, or the release's mc.json (the same entries with "answer");
  videos/<q_uid>.{mp4,avi,mov,mkv} (or good_clips_git/). The answers go to Kaggle as
  submission/egoschema_submission.csv ("q_uid,answer").
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

from llava_mini.eval.benchmarks.base import (
    Benchmark,
    FrameFolder,
    Item,
    Judge,
    MediaSource,
    Results,
    VideoClip,
    field_of,
    find_file,
    read_json,
    require_dir,
    resolve_media,
)
from llava_mini.eval.scoring import (
    LETTERS,
    extract_choice,
    first_letter,
    letter_accuracy,
    mean,
    video_check_answer,
)

ONE_LETTER_PROMPT = "Answer with one letter."
# The release's EgoSchema prompt (egoschema_mc.py), word for word.
EGOSCHEMA_PROMPT = (
    "You are a helpful expert in first person view video analysis. Please provide a single-letter answer "
    "(A, B, C, D, E) to the following multiple-choice question based on this video.\n{question}\nChoices:\n"
    "A: {options[0]}\nB: {options[1]}\nC: {options[2]}\nD: {options[3]}\nE: {options[4]}\n\n"
    "Answer with one letter."
)


def choice_prompt(question: str, options: list[str]) -> str:
    """The release's MVBench / MLVU question (`qa_template`, stripped at the end) + "Answer with one letter."."""
    lines = "".join(f"({LETTERS[i]}) {option}\n" for i, option in enumerate(options))
    return f"Question: {question}\nOptions:\n{lines}".rstrip() + f"\n{ONE_LETTER_PROMPT}"


def _is_right(record: dict, reading: str) -> int | None:
    """1/0 for a record under a reading, None when the lenient reading finds no option."""
    meta, answer = record["meta"], record["answer"].strip()
    if reading == "official":
        return int(video_check_answer(answer, LETTERS[meta["answer"]]))
    picked = extract_choice(answer, meta["options"])
    return None if picked is None else int(picked == meta["answer"])


def score_choices(records: list[dict], judge: Judge | None = None, reading: str = "official") -> Results:
    """Accuracy per task, the mean over tasks ("accuracy", the release's Avg) and over questions ("overall")."""
    table = letter_accuracy((r["meta"]["task"], _is_right(r, reading)) for r in records)
    overall = table.pop("all")
    metrics = {"accuracy": mean([row["accuracy"] for row in table.values()]), "overall": overall["accuracy"]}
    notes = []
    if reading != "official":
        metrics = {f"lenient_{k}": v for k, v in metrics.items()} | {"lenient_unparsed": overall["unparsed"]}
        notes.append("lenient reading (scoring.extract_choice): not the official score")
    return Results(metrics=metrics, categories=table, notes=notes)


def _choice_item(item_id: str, media: MediaSource, entry: dict, where: str, task: str) -> Item:
    options = [str(c) for c in field_of(entry, "candidates", where)]
    answer = str(field_of(entry, "answer", where))
    if answer not in options:
        raise ValueError(f"{where}: the answer {answer!r} is not one of the candidates {options}")
    prompt = choice_prompt(str(field_of(entry, "question", where)), options)
    return Item(item_id, [media], prompt, {"task": task, "options": options, "answer": options.index(answer)})


# --- MVBench ----------------------------------------------------------------------------------------

# task title -> (json file, source folder under video/, media kind, cut to [start, end])
MVBENCH_TASKS = {
    "Action Sequence": ("action_sequence.json", "star/Charades_v1_480", "video", True),
    "Action Prediction": ("action_prediction.json", "star/Charades_v1_480", "video", True),
    "Action Antonym": ("action_antonym.json", "ssv2_video", "video", False),
    "Fine-grained Action": ("fine_grained_action.json", "Moments_in_Time_Raw/videos", "video", False),
    "Unexpected Action": ("unexpected_action.json", "FunQA_test/test", "video", False),
    "Object Existence": ("object_existence.json", "clevrer/video_validation", "video", False),
    "Object Interaction": ("object_interaction.json", "star/Charades_v1_480", "video", True),
    "Object Shuffle": ("object_shuffle.json", "perception/videos", "video", False),
    "Moving Direction": ("moving_direction.json", "clevrer/video_validation", "video", False),
    "Action Localization": ("action_localization.json", "sta/sta_video", "video", True),
    "Scene Transition": ("scene_transition.json", "scene_qa/video", "video", False),
    "Action Count": ("action_count.json", "perception/videos", "video", False),
    "Moving Count": ("moving_count.json", "clevrer/video_validation", "video", False),
    "Moving Attribute": ("moving_attribute.json", "clevrer/video_validation", "video", False),
    "State Change": ("state_change.json", "perception/videos", "video", False),
    "Fine-grained Pose": ("fine_grained_pose.json", "nturgbd", "video", False),
    "Character Order": ("character_order.json", "perception/videos", "video", False),
    "Egocentric Navigation": ("egocentric_navigation.json", "vlnqa", "video", False),
    "Episodic Reasoning": ("episodic_reasoning.json", "tvqa/frames_fps3_hq", "frame", True),
    "Counterfactual Inference": ("counterfactual_inference.json", "clevrer/video_validation", "video", False),
}


def load_mvbench(root: Path) -> list[Item]:
    json_folder = root / "json" if (root / "json").is_dir() else root
    video_root = require_dir(root / "video", "MVBench video folder")
    present = {task: spec for task, spec in MVBENCH_TASKS.items() if (json_folder / spec[0]).is_file()}
    if not present:
        raise FileNotFoundError(f"no MVBench task file (action_sequence.json, ...) found in {json_folder}")
    items = []
    for task, (file_name, source, kind, bounded) in present.items():
        path = json_folder / file_name
        for index, entry in enumerate(read_json(path)):
            where = f"{path} entry {index}"
            location = resolve_media(video_root / source, field_of(entry, "video", where), where)
            start, end = (entry.get("start"), entry.get("end")) if bounded else (None, None)
            media = (
                FrameFolder(location, 3.0, start, end) if kind == "frame" else VideoClip(location, start, end)
            )
            items.append(_choice_item(f"{Path(file_name).stem}-{index}", media, entry, where, task))
    return items


# --- MLVU -------------------------------------------------------------------------------------------


# the release's MLVU tasks: name -> file stem under json/ and video/
MLVU_TASKS = {
    "count": "4_count",
    "ego": "3_ego",
    "needle": "2_needle",
    "order": "5_order",
    "plotQA": "1_plotQA",
    "anomaly_reco": "6_anomaly_reco",
    "topic_reasoning": "7_topic_reasoning",
}


def load_mlvu(root: Path) -> list[Item]:
    json_folder = require_dir(root / "json" if (root / "json").is_dir() else root, "MLVU json folder")
    present = {task: stem for task, stem in MLVU_TASKS.items() if (json_folder / f"{stem}.json").is_file()}
    if not present:
        names = ", ".join(f"{stem}.json" for stem in MLVU_TASKS.values())
        raise FileNotFoundError(f"no MLVU task file found in {json_folder} (looked for {names})")
    items = []
    for task, stem in present.items():
        path = json_folder / f"{stem}.json"
        for index, entry in enumerate(read_json(path)):
            where = f"{path} entry {index}"
            video = resolve_media(root / "video" / stem, field_of(entry, "video", where), where)
            items.append(_choice_item(f"{stem}-{index}", VideoClip(video), entry, where, task))
    return items


# --- EgoSchema --------------------------------------------------------------------------------------


EGOSCHEMA_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def _egoschema_video(folder: Path, uid: str, where: str) -> Path:
    for suffix in EGOSCHEMA_VIDEO_SUFFIXES:
        if (folder / f"{uid}{suffix}").is_file():
            return folder / f"{uid}{suffix}"
    raise FileNotFoundError(
        f"{where}: media file not found: {folder / uid}{{{','.join(EGOSCHEMA_VIDEO_SUFFIXES)}}}"
    )


def load_egoschema(root: Path) -> list[Item]:
    question_file = find_file(root, ["questions.json", "mc.json"], "EgoSchema questions.json (or mc.json)")
    folder = question_file.parent
    answers_file = folder / "subset_answers.json"
    answers = {str(k): int(v) for k, v in read_json(answers_file).items()} if answers_file.is_file() else {}
    video_folder = next((folder / n for n in ("videos", "good_clips_git") if (folder / n).is_dir()), folder)
    items = []
    for index, entry in enumerate(read_json(question_file)):
        where = f"{question_file} entry {index}"
        uid = str(field_of(entry, "q_uid", where))
        options = [str(field_of(entry, f"option {k}", where)) for k in range(5)]
        answer = int(entry["answer"]) if "answer" in entry else answers.get(uid)
        items.append(
            Item(
                id=uid,
                media=[VideoClip(_egoschema_video(video_folder, uid, where))],
                prompt=EGOSCHEMA_PROMPT.format(question=field_of(entry, "question", where), options=options),
                meta={"task": "subset", "options": options, "answer": answer},
            )
        )
    return items


def egoschema_choice(answer: str) -> int:
    """The release's reading: the first character of the answer in A-E, as an index; -1 if there is none."""
    letter = first_letter(answer.strip(), "ABCDE")
    return -1 if letter is None else "ABCDE".index(letter)


def score_egoschema(records: list[dict], judge: Judge | None = None, reading: str = "official") -> Results:
    known = [r for r in records if r["meta"]["answer"] is not None]
    if not known:
        return Results(
            metrics={"accuracy": "not scored (no answers: upload the submission file)"},
            notes=["the full test set is scored on Kaggle from submission/egoschema_submission.csv"],
        )
    if reading == "official":
        right = [egoschema_choice(r["answer"]) == r["meta"]["answer"] for r in known]
        metrics: dict = {"accuracy": sum(right) / len(right), "scored": len(known)}
        return Results(metrics=metrics)
    results = score_choices(known, reading=reading)
    results.categories = {}
    results.metrics["scored"] = len(known)
    return results


def write_egoschema_submission(records: list[dict], data: Path, out: Path) -> list[Path]:
    """Kaggle's format: q_uid,answer with the option index as the release reads it (-1 where none)."""
    path = out / "submission" / "egoschema_submission.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["q_uid", "answer"])
        for record in records:
            writer.writerow([record["id"], egoschema_choice(record["answer"])])
    return [path]


BENCHMARKS = [
    Benchmark(
        "mvbench",
        "MVBench",
        "video",
        load_mvbench,
        score_choices,
        16,
        layout="json/<task>.json + video/<source>/",
        lenient_score=partial(score_choices, reading="lenient"),
    ),
    Benchmark(
        "mlvu",
        "MLVU",
        "video",
        load_mlvu,
        score_choices,
        16,
        layout="json/<n_task>.json + video/<n_task>/",
        lenient_score=partial(score_choices, reading="lenient"),
    ),
    Benchmark(
        "egoschema",
        "EgoSchema",
        "video",
        load_egoschema,
        score_egoschema,
        16,
        write_egoschema_submission,
        layout="questions.json + videos/<q_uid>.mp4 [+ subset_answers.json], or mc.json + videos/",
        lenient_score=partial(score_egoschema, reading="lenient"),
    ),
]
