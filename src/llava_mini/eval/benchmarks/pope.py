"""POPE (object hallucination): yes/no questions in three splits, scored per split.

Layout: pope/ coco/coco_pope_{random,popular,adversarial}.json (or the files directly in pope/), val2014/.
Each line is {"question_id", "image", "text", "label": "yes"|"no"}. The release's layout (LLaVA-1.5
playground: llava_pope_test.jsonl beside coco/ and val2014/) loads as is. The prompt is the text plus the
release's short-answer instruction. Answers are read as the release's eval_pope.py reads them
(`pope_yes_no`), and scored per split as it does; a metric the script would divide by zero for (precision
on a split with no "yes") is reported as undefined with a note. The headline F1 and accuracy are the means
over the splits present, as LLaVA-1.5 and LLaVA-Mini report (the script prints the splits only).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from llava_mini.eval.benchmarks.base import (
    SHORT_ANSWER_PROMPT,
    Benchmark,
    Item,
    Judge,
    Results,
    field_of,
    read_jsonl,
    resolve_media,
)
from llava_mini.eval.scoring import mean, pope_metrics, pope_yes_no, pope_yes_no_lenient

POPE_SPLITS = ("adversarial", "popular", "random")


def load_pope(root: Path) -> list[Item]:
    folder = root / "coco" if (root / "coco").is_dir() else root
    files = {split: folder / f"coco_pope_{split}.json" for split in POPE_SPLITS}
    present = {split: path for split, path in files.items() if path.is_file()}
    if not present:
        raise FileNotFoundError(
            f"no POPE file found (looked for {', '.join(str(p) for p in files.values())})"
        )
    images = next((root / name for name in ("val2014", "images") if (root / name).is_dir()), root)
    items = []
    for split, path in present.items():
        for line, entry in enumerate(read_jsonl(path), start=1):
            where = f"{path}:{line}"
            label = str(field_of(entry, "label", where)).strip().lower()
            if label not in ("yes", "no"):
                raise ValueError(f"{where}: label must be 'yes' or 'no', got {label!r}")
            question_id = field_of(entry, "question_id", where)
            items.append(
                Item(
                    id=f"{split}-{question_id}",
                    media=[resolve_media(images, field_of(entry, "image", where), where)],
                    prompt=f"{field_of(entry, 'text', where).strip()}\n{SHORT_ANSWER_PROMPT}",
                    meta={"split": split, "label": label, "question_id": question_id},
                )
            )
    return items


def score_pope(records: list[dict], judge: Judge | None = None, reading: str = "official") -> Results:
    read = pope_yes_no if reading == "official" else pope_yes_no_lenient
    per_split, notes = {}, []
    for split in POPE_SPLITS:
        chosen = [r for r in records if r["meta"]["split"] == split]
        if chosen:
            predictions = [read(r["answer"].strip()) for r in chosen]
            per_split[split] = pope_metrics(predictions, [r["meta"]["label"] for r in chosen])
            undefined = [name for name, value in per_split[split].items() if value is None]
            if undefined:
                notes.append(
                    f"{split}: {', '.join(undefined)} undefined (a zero denominator: eval_pope.py stops "
                    "with ZeroDivisionError there)"
                )
    metrics: dict = {}
    for name in ("f1", "accuracy"):
        values = [m[name] for m in per_split.values()]
        metrics[name] = mean(values) if None not in values else "undefined (see notes)"
    if reading != "official":
        metrics = {f"lenient_{k}": v for k, v in metrics.items()}
        notes.append("lenient reading (split on any whitespace): not the official score")
    return Results(metrics=metrics, categories=per_split, notes=notes)


BENCHMARKS = [
    Benchmark(
        "pope",
        "POPE",
        "image",
        load_pope,
        score_pope,
        16,
        layout="coco/coco_pope_{random,popular,adversarial}.json + val2014/",
        lenient_score=partial(score_pope, reading="lenient"),
    )
]
