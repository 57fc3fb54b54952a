"""MME: two yes/no questions per image in 14 categories; perception (10) and cognition (4) scores.

Layout: MME_Benchmark_release_version/<category>/ with either images/ + questions_answers_YN/ (one .txt per
image) or the images and .txt files side by side. Each .txt line is "question<TAB>Yes|No". The prompt is the
question plus the release's short-answer instruction. A category scores acc + acc+ (both questions of an image
right), in percent; perception sums its 10 categories (max 2000), cognition its 4 (max 800).
"""

from __future__ import annotations

from pathlib import Path

from llava_mini.eval.benchmarks.base import SHORT_ANSWER_PROMPT, Benchmark, Item, Judge, Results, require_dir
from llava_mini.eval.scoring import MME_COGNITION, MME_PERCEPTION, mme_scores, mme_yes_no

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _category_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(question file, image) pairs of one category folder, in either of MME's two layouts."""
    if (folder / "questions_answers_YN").is_dir():
        texts, images = folder / "questions_answers_YN", folder / "images"
    else:
        texts, images = folder, folder
    pairs = []
    for text_file in sorted(texts.glob("*.txt")):
        image = next(
            (
                images / (text_file.stem + s)
                for s in IMAGE_SUFFIXES
                if (images / (text_file.stem + s)).is_file()
            ),
            None,
        )
        if image is None:
            raise FileNotFoundError(
                f"{text_file}: no image {text_file.stem}{{{','.join(IMAGE_SUFFIXES)}}} in {images}"
            )
        pairs.append((text_file, image))
    return pairs


def load_mme(root: Path) -> list[Item]:
    if (root / "MME_Benchmark_release_version").is_dir():
        root = root / "MME_Benchmark_release_version"
    require_dir(root, "MME folder")
    known = set(MME_PERCEPTION) | set(MME_COGNITION)
    categories = sorted(p for p in root.iterdir() if p.is_dir() and p.name in known)
    if not categories:
        raise FileNotFoundError(f"no MME category folder (existence, OCR, ...) found in {root}")
    items = []
    for folder in categories:
        for text_file, image in _category_pairs(folder):
            lines = [line for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
            for number, line in enumerate(lines, start=1):
                question, separator, answer = line.rpartition("\t")
                if not separator or answer.strip().lower() not in ("yes", "no"):
                    raise ValueError(f"{text_file}:{number}: expected 'question<TAB>Yes|No', got {line!r}")
                items.append(
                    Item(
                        id=f"{folder.name}/{text_file.stem}/{number}",
                        media=[image],
                        prompt=f"{question.strip()}\n{SHORT_ANSWER_PROMPT}",
                        meta={"category": folder.name, "image": image.name, "label": answer.strip().lower()},
                    )
                )
    return items


def score_mme(records: list[dict], judge: Judge | None = None) -> Results:
    scores = mme_scores(
        (r["meta"]["category"], r["meta"]["image"], mme_yes_no(r["answer"].strip()), r["meta"]["label"])
        for r in records
    )
    return Results(
        metrics={"perception": scores["perception"], "cognition": scores["cognition"]},
        categories=scores["categories"],
    )


BENCHMARKS = [
    Benchmark(
        "mme", "MME", "image", load_mme, score_mme, 16, layout="MME_Benchmark_release_version/<category>/"
    )
]
