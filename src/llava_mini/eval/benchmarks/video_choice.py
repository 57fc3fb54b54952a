"""Multiple-choice video benchmarks: MVBench (20 tasks), MLVU (long videos, 7 tasks), EgoSchema.

Prompt for all three: "Question: ...\\nOptions:\\n(A) ...\\n(B) ...\\nAnswer with the option's letter from the
given choices directly."; the letter is read with `scoring.extract_choice`. Layouts:
- MVBench: json/<task>.json ([{"video", "question", "candidates", "answer", "start"?, "end"?}]) and video/
  with each task's source folder (star/Charades_v1_480/, clevrer/video_validation/, ...) as in MVBench's
  release; bounded tasks are cut to [start, end]; episodic reasoning reads frame folders (3 fps).
- MLVU: json/<n_task>.json ([{"video", "question", "candidates", "answer", "question_type"}]) and
  video/<n_task>/; M-Avg is the mean of the per-task accuracies.
- EgoSchema: questions.json ([{"q_uid", "question", "option 0".."option 4"}]), videos/<q_uid>.mp4 (or
  good_clips_git/), and subset_answers.json ({q_uid: index}) for local scoring of the 500-question subset.
  The full-set answers go to Kaggle: submission/egoschema_submission.csv ("q_uid,answer").
"""

from __future__ import annotations

import csv
from pathlib import Path

from llava_mini.eval.benchmarks.base import (
    OPTION_LETTER_PROMPT,
    Benchmark,
    FrameFolder,
    Item,
    Judge,
    MediaSource,
    Results,
    VideoClip,
    field_of,
    find_file,
    options_block,
    read_json,
    require_dir,
    resolve_media,
)
from llava_mini.eval.scoring import extract_choice, letter_accuracy, mean


def choice_prompt(question: str, options: list[str]) -> str:
    options_text = options_block(options, style="paren")
    return f"Question: {question.strip()}\nOptions:\n{options_text}\n{OPTION_LETTER_PROMPT}"


def score_choices(records: list[dict], judge: Judge | None = None, task_key: str = "task") -> Results:
    """Accuracy per task, the mean over tasks ("accuracy") and over questions ("overall")."""
    outcomes = []
    for record in records:
        picked = extract_choice(record["answer"], record["meta"]["options"])
        outcomes.append(
            (record["meta"][task_key], None if picked is None else int(picked == record["meta"]["answer"]))
        )
    table = letter_accuracy(outcomes)
    overall = table.pop("all")
    return Results(
        metrics={
            "accuracy": mean([row["accuracy"] for row in table.values()]),
            "overall": overall["accuracy"],
            "unparsed": overall["unparsed"],
        },
        categories=table,
    )


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


def load_mlvu(root: Path) -> list[Item]:
    json_folder = require_dir(root / "json" if (root / "json").is_dir() else root, "MLVU json folder")
    files = sorted(json_folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no MLVU task file (1_plotQA.json, ...) found in {json_folder}")
    items = []
    for path in files:
        for index, entry in enumerate(read_json(path)):
            where = f"{path} entry {index}"
            video = resolve_media(root / "video" / path.stem, field_of(entry, "video", where), where)
            task = str(entry.get("question_type") or path.stem)
            items.append(_choice_item(f"{path.stem}-{index}", VideoClip(video), entry, where, task))
    return items


# --- EgoSchema --------------------------------------------------------------------------------------


def load_egoschema(root: Path) -> list[Item]:
    question_file = find_file(root, ["questions.json"], "EgoSchema questions.json")
    folder = question_file.parent
    answers_file = folder / "subset_answers.json"
    answers = {str(k): int(v) for k, v in read_json(answers_file).items()} if answers_file.is_file() else {}
    video_folder = next((folder / n for n in ("videos", "good_clips_git") if (folder / n).is_dir()), folder)
    items = []
    for index, entry in enumerate(read_json(question_file)):
        where = f"{question_file} entry {index}"
        uid = str(field_of(entry, "q_uid", where))
        options = [str(field_of(entry, f"option {k}", where)) for k in range(5)]
        items.append(
            Item(
                id=uid,
                media=[VideoClip(resolve_media(video_folder, f"{uid}.mp4", where))],
                prompt=choice_prompt(str(field_of(entry, "question", where)), options),
                meta={"task": "subset", "options": options, "answer": answers.get(uid)},
            )
        )
    return items


def score_egoschema(records: list[dict], judge: Judge | None = None) -> Results:
    known = [r for r in records if r["meta"]["answer"] is not None]
    if not known:
        return Results(
            metrics={"accuracy": "not scored (no subset_answers.json: upload the submission file)"},
            notes=["the full test set is scored on Kaggle from submission/egoschema_submission.csv"],
        )
    results = score_choices(known)
    results.categories = {}
    results.metrics["scored"] = len(known)
    return results


def write_egoschema_submission(records: list[dict], data: Path, out: Path) -> list[Path]:
    """Kaggle's format: q_uid,answer with the option index (-1 where no option could be read)."""
    path = out / "submission" / "egoschema_submission.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["q_uid", "answer"])
        for record in records:
            picked = extract_choice(record["answer"], record["meta"]["options"])
            writer.writerow([record["id"], -1 if picked is None else picked])
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
    ),
    Benchmark(
        "mlvu", "MLVU", "video", load_mlvu, score_choices, 16, layout="json/<n_task>.json + video/<n_task>/"
    ),
    Benchmark(
        "egoschema",
        "EgoSchema",
        "video",
        load_egoschema,
        score_egoschema,
        16,
        write_egoschema_submission,
        layout="questions.json + videos/<q_uid>.mp4 [+ subset_answers.json]",
    ),
]
