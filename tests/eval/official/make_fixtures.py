"""Writes the adversarial answer fixtures of tests/eval/test_official_choice.py (run once, by hand).

`PYTHONPATH=src python tests/eval/official/make_fixtures.py` rewrites tests/eval/official/<benchmark>/
with each benchmark's data files (in the layout its official script reads) and an answer file in the
format that script reads. The official outputs beside them come from `run_release.py` and
`run_vlmevalkit.py` (see RECORD.md). Everything is deterministic.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from PIL import Image

from llava_mini.eval.scoring import (
    LETTERS,
    MME_COGNITION,
    MME_PERCEPTION,
    extract_choice,
    mmbench_infer_option,
)

HERE = Path(__file__).parent
OPTION_TEXTS = ["a cat", "a dog", "a bird", "a red car", "a fish"]
# Letters in every form, option text, two letters, newlines, refusals; "{B}" is option B's text.
LETTER_ANSWERS = [
    "A", "B", "C", "D", "(A)", "(B)", "A.", "B.", "C. {C}", "a", "b", "Answer: B", "The answer is C",
    "The answer is C.", "The answer is (B).", "{B}", "A or B", "A\nB", "B\nBecause the dog runs.", "B) {B}",
    "(C", "I don't know", "", "Because the sky is blue, D", "C)", "Best option:(B)", "the answer is b", "Z",
    "The correct answer is **B**", "A cat", "E", "(E)", "The answer is A. The answer is B.", "Option B",
    "answer is (d)", "D. {D}", "(D) {D}", "c.", "B, {B}", "{A} and {B}", "Cannot determine the answer",
    "My answer: the picture shows a dog so B", "(B) because it is a dog, not a cat",
]  # fmt: skip
POPE_ANSWERS = [
    "Yes", "No", "no", "No.", "There is no\ndog in the image.", "There is not a dog.", "Yes, there is.",
    "Not at all", "NO", "Yes. No.", "no, there is", "I do not think so", "There is no dog", "nope", "",
    "Yes\nNo", "No\nthere is none", "There\tis no dog", "There is a dog, not a cat.", "not\nsure", "yes",
    "There is no.dog",
]  # fmt: skip
# answers the official reading takes as "no" only (a split without "yes": precision divides by zero)
POPE_ALL_NO = ["No", "no", "No.", "There is not a dog.", "no, there is", "Not at all", "There is no dog"]


class _OptionTexts(dict):
    def __missing__(self, key: str) -> str:
        return "a whale"  # the text of an option the question does not have


def answer_text(template: str, options: list[str]) -> str:
    return template.format_map(_OptionTexts({LETTERS[i]: option for i, option in enumerate(options)}))


def truth_for(index: int, answer: str, options: list[str]) -> int:
    """Mostly the option the lenient reading picks (so readings disagree), sometimes another one."""
    picked = extract_choice(answer, options)
    if picked is None:
        return index % len(options)
    return picked if index % 3 != 2 else (picked + 1) % len(options)


def dump_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def dump_jsonl(path: Path, entries: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")


def make_pope(root: Path) -> None:
    questions, answers, question_id = [], [], 1000
    for split, texts in (
        ("random", POPE_ANSWERS),
        ("popular", POPE_ANSWERS[::-1]),
        ("adversarial", POPE_ALL_NO),
    ):
        labels = []
        for number, text in enumerate(texts, start=1):
            question_id += 1
            label = "yes" if number % 2 else "no"
            entry = {
                "question_id": number,
                "image": f"COCO_val2014_{number:012d}.jpg",
                "text": "Is there a dog?",
            }
            labels.append({**entry, "label": label})
            prompt = "Is there a dog?\nAnswer the question using a single word or phrase."
            questions.append({**entry, "question_id": question_id, "text": prompt, "category": split})
            answers.append({"question_id": question_id, "prompt": prompt, "text": text})
        dump_jsonl(root / "coco" / f"coco_pope_{split}.json", labels)
    dump_jsonl(root / "llava_pope_test.jsonl", questions)
    dump_jsonl(root / "answers.jsonl", answers)


def make_scienceqa(root: Path) -> None:
    problems, questions, answers = {}, [], []
    for index, template in enumerate(LETTER_ANSWERS):
        pid = str(100 + index)
        options = OPTION_TEXTS[: (4, 2, 3, 5)[index % 4]]
        text = answer_text(template, options)
        has_image = index % 3 != 1
        problems[pid] = {
            "question": f"Which animal is number {index}?",
            "choices": options,
            "answer": truth_for(index, text, options),
            "subject": ("natural science", "social science", "language science")[index % 3],
            "image": "image.png" if has_image else None,
            "split": "test",
        }
        listed = " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
        value = f"Context: none.\nQuestion: Which animal is number {index}?\nOptions: {listed}"
        entry = {
            "id": pid,
            "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": ""}],
        }
        prompt = value + "\nAnswer with the option's letter from the given choices directly."
        if has_image:
            entry["image"] = f"{pid}/image.png"
            entry["conversations"][0]["value"] = "<image>\n" + value
            prompt = "<image>\n" + prompt
        questions.append(entry)
        answers.append({"question_id": pid, "prompt": prompt, "text": text})
    dump_json(root / "problems.json", problems)
    dump_json(root / "pid_splits.json", {"test": list(problems)})
    dump_json(root / "llava_test_CQM-A.json", questions)
    dump_jsonl(root / "answers.jsonl", answers)


def make_seed(root: Path) -> None:
    dimensions = {
        "Scene Understanding": 1,
        "Instance Identity": 2,
        "Instance Counting": 5,
        "Action Recognition": 10,
    }
    entries, answers = [], []
    for index, template in enumerate(LETTER_ANSWERS):
        options = OPTION_TEXTS[:4]
        text = answer_text(template, options)
        dimension = (1, 2, 5, 10)[index % 4]
        question_id = 2000 + index
        # the first question of each dimension is answered right: with none right, the release's script
        # stops with a KeyError before it prints the totals
        truth = extract_choice(text, options) if index < 4 else truth_for(index, text, options)
        entries.append(
            {
                "answer": LETTERS[truth],
                **{f"choice_{letter}": option for letter, option in zip("abcd", options, strict=True)},
                "data_id": f"{index}.jpg" if dimension != 10 else f"v{index}.mp4",
                "data_type": "image" if dimension != 10 else "video",
                "question": f"What is shown ({index})?",
                "question_id": str(question_id),
                "question_type_id": dimension,
            }
        )
        answers.append({"question_id": question_id, "prompt": "", "text": text})
    dump_json(root / "SEED-Bench.json", {"questions": entries, "question_type": dimensions})
    dump_jsonl(root / "answers.jsonl", answers)


# MVBench: the tasks that get entries (the others ship as empty lists; the release opens all 20 files)
MVBENCH_USED = {
    "action_sequence.json": True,
    "object_shuffle.json": False,
    "episodic_reasoning.json": True,
    "counterfactual_inference.json": False,
}


def make_video_choice(root: Path, files: list[str], used: dict[str, bool], offset: int) -> None:
    answers = []
    for name in files:
        entries = []
        if name in used:
            for number in range(len(LETTER_ANSWERS) // len(used) + 1):
                index = (offset + number * len(used) + list(used).index(name)) % len(LETTER_ANSWERS)
                options = OPTION_TEXTS[: (4, 3, 2, 5)[number % 4]]
                text = answer_text(LETTER_ANSWERS[index], options)
                entry = {
                    "video": f"{Path(name).stem}_{number}"
                    + ("" if name == "episodic_reasoning.json" else ".mp4"),
                    "question": f"What happens ({number})? ",
                    "candidates": options,
                    "answer": options[truth_for(index, text, options)],
                }
                if used[name]:
                    entry |= {"start": 1.0, "end": 4.5}
                entries.append(entry)
                answers.append({"file": name, "entry": number, "text": text})
        dump_json(root / "json" / name, entries)
    dump_jsonl(root / "answers.jsonl", answers)


MVBENCH_FILES = [
    "action_sequence.json", "action_prediction.json", "action_antonym.json", "fine_grained_action.json",
    "unexpected_action.json", "object_existence.json", "object_interaction.json", "object_shuffle.json",
    "moving_direction.json", "action_localization.json", "scene_transition.json", "action_count.json",
    "moving_count.json", "moving_attribute.json", "state_change.json", "fine_grained_pose.json",
    "character_order.json", "egocentric_navigation.json", "episodic_reasoning.json",
    "counterfactual_inference.json",
]  # fmt: skip
MLVU_FILES = [
    "4_count.json", "3_ego.json", "2_needle.json", "5_order.json", "1_plotQA.json", "6_anomaly_reco.json",
    "7_topic_reasoning.json",
]  # fmt: skip


def make_egoschema(root: Path) -> None:
    entries, answers = [], []
    for index, template in enumerate(LETTER_ANSWERS):
        text = answer_text(template, OPTION_TEXTS)
        entries.append(
            {
                "q_uid": f"uid-{index:03d}",
                "question": f"What does C do ({index})?",
                **{f"option {k}": option for k, option in enumerate(OPTION_TEXTS)},
                "answer": truth_for(index, text, OPTION_TEXTS),
            }
        )
        answers.append({"q_uid": f"uid-{index:03d}", "text": text})
    dump_json(root / "mc.json", entries)
    dump_jsonl(root / "answers.jsonl", answers)


def png_base64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def make_mmbench(root: Path) -> None:
    """Questions with every rotation as its own row (index + k * 1e6), as MMBench's TSV ships them."""
    columns = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "source", "l2-category",
               "comment", "split", "image"]  # fmt: skip
    rows, answers, image = [], [], png_base64()
    cursor = 0
    for question in range(12):
        options = OPTION_TEXTS[: (4, 2, 3, 4)[question % 4]]
        truth = question % len(options)
        for rotation in range(len(options)):
            shifted = options[rotation:] + options[:rotation]
            index = question + rotation * 1_000_000
            text = answer_text(LETTER_ANSWERS[cursor % len(LETTER_ANSWERS)], shifted)
            answer = (truth - rotation) % len(options)
            # questions 0, 3, 6, 9: what VLMEvalKit reads is right (where it reads a letter); 1, 4, 7, 10:
            # what the lenient reading picks is right; the others keep their rotated answer
            choices = {LETTERS[i]: option for i, option in enumerate(shifted)}
            picked = mmbench_infer_option(text, choices) if question % 3 == 0 else None
            if question % 3 == 1 and extract_choice(text, shifted) is not None:
                picked = LETTERS[extract_choice(text, shifted)]
            answer = LETTERS.index(picked) if picked in choices else answer
            cursor += 1
            padded = shifted + [""] * (4 - len(shifted))
            rows.append(
                [index, f"Which animal ({question})?", "A photo." if question % 2 else "", *padded,
                 LETTERS[answer], ("animals", "objects", "scenes")[question % 3], "fixture",
                 ("perception", "reasoning")[question % 2], "", "dev", image]
            )  # fmt: skip
            answers.append({"question_id": index, "round_id": 0, "text": text})
    # a rotation whose question row is absent: VLMEvalKit does not score it
    rows.append([3_000_077, "Orphan?", "", "a cat", "a dog", "", "", "A", "animals", "fixture", "perception",
                 "", "dev", image])  # fmt: skip
    answers.append({"question_id": 3_000_077, "round_id": 0, "text": "A"})
    root.mkdir(parents=True, exist_ok=True)
    with (root / "mmbench_dev_20230712.tsv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    dump_jsonl(root / "answers.jsonl", answers)


MME_ANSWERS = [
    "Yes", "No", "yes.", "No, it is not.", "Not sure", "Nope", "y.es", ". Yes", "...no", "I think yes", "YES!",
    "", "Yes, there is", "There is no", "n o", "noyes", "Ye s", "no", "yes", "N.o",
]  # fmt: skip


def make_mme(root: Path) -> None:
    """Result files in the layout MME's calculation.py reads: image, question, truth, answer per line."""
    cursor = 0
    for category in MME_PERCEPTION + MME_COGNITION:
        lines = []
        for image in range(2 + len(category) % 2):
            for question, truth in ((0, "Yes"), (1, "No")):
                answer = MME_ANSWERS[cursor % len(MME_ANSWERS)]
                cursor += 1
                lines.append(
                    f"{image:012d}.jpg\tIs it thing {question}? Please answer yes or no.\t{truth}\t{answer}\n"
                )
        (root / "answers").mkdir(parents=True, exist_ok=True)
        (root / "answers" / f"{category}.txt").write_text("".join(lines), encoding="utf-8")


if __name__ == "__main__":
    make_pope(HERE / "pope")
    make_scienceqa(HERE / "scienceqa")
    make_seed(HERE / "seed_bench")
    make_video_choice(HERE / "mvbench", MVBENCH_FILES, MVBENCH_USED, 0)
    make_video_choice(HERE / "mlvu", MLVU_FILES, {"1_plotQA.json": False, "4_count.json": False}, 7)
    make_egoschema(HERE / "egoschema")
    make_mmbench(HERE / "mmbench")
    make_mme(HERE / "mme")
