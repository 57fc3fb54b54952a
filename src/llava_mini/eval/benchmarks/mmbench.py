"""MMBench: multiple choice with circular evaluation (every rotation of the options must be answered right).

Layout: the TSV as distributed, either the release's (LLaVA-1.5 playground: mmbench_dev_20230712.tsv, test /
cn variants) or VLMEvalKit's (MMBench_DEV_EN.tsv, ...), with the columns index, question, hint, A..D,
answer (dev only), category, l2-category and image (base64). The TSV already holds every circular rotation
as its own row: the rotation k of question i has index i + k x 1,000,000 and its options shifted. Each row is
asked once, as the release asks it (model_vqa_mmbench.py without --all-rounds): the hint, the question,
"A. ..." lines (A-D, up to the first empty one) and "Answer with the option's letter from the given choices
directly." (its Chinese form for the cn files).

Scored as VLMEvalKit's circular evaluation with exact matching (no LLM judge): a row's answer is read with
`scoring.mmbench_infer_option` (VLMEvalKit's `can_infer`), and a question (index < 1,000,000) is right only
when every row of its group (index % 1,000,000) is read as that row's answer; accuracy over questions, per
category and l2-category. The upload file is the release's (scripts/convert_mmbench_for_submission.py): the
TSV's columns without hint, category, source, image, comment and l2-category, with "prediction" (the answer
as given) inserted as the seventh column, one row per TSV row, as .xlsx.
"""

from __future__ import annotations

import csv
import sys
import zipfile
from functools import partial
from pathlib import Path
from xml.sax.saxutils import escape

from llava_mini.eval.benchmarks.base import (
    OPTION_LETTER_PROMPT,
    Benchmark,
    EncodedImage,
    Item,
    Judge,
    Results,
    field_of,
    is_missing,
    options_block,
)
from llava_mini.eval.scoring import LETTERS, extract_choice, letter_accuracy, mmbench_infer_option

OPTION_LETTER_PROMPT_CN = "请直接回答选项字母。"
CIRCULAR_STRIDE = 1_000_000  # rotation k of question i has index i + k * CIRCULAR_STRIDE
PROMPT_LETTERS = "ABCD"  # the release's options (model_vqa_mmbench.py: all_options)
# Columns the release's convert_mmbench_for_submission.py drops from the TSV for the upload file.
SUBMISSION_DROPPED = ("hint", "category", "source", "image", "comment", "l2-category")


def find_tsv(root: Path) -> Path:
    if root.is_file():
        return root
    found = (
        sorted(root.glob("mmbench*.tsv")) or sorted(root.glob("MMBench*.tsv")) or sorted(root.glob("*.tsv"))
    )
    if not found:
        raise FileNotFoundError(
            f"no MMBench .tsv file found in {root} (looked for mmbench_dev_20230712.tsv, MMBench_DEV_EN.tsv "
            "or any *.tsv)"
        )
    return found[0]


def read_tsv(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)  # base64 images are long cells
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _row_index(row: dict, where: str) -> int:
    value = str(field_of(row, "index", where)).strip()
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{where}: index must be an integer, got {value!r}") from None


def load_mmbench(root: Path) -> list[Item]:
    path = find_tsv(root)
    instruction = OPTION_LETTER_PROMPT_CN if "_cn" in path.name.lower() else OPTION_LETTER_PROMPT
    items = []
    for row_number, row in enumerate(read_tsv(path), start=2):
        where = f"{path}:{row_number}"
        index = _row_index(row, where)
        options = []
        for letter in PROMPT_LETTERS:  # up to the first empty option, as the release reads them
            if letter not in row or is_missing(row[letter]):
                break
            options.append(row[letter])
        if len(options) < 2:
            raise ValueError(f"{where}: question {index} has {len(options)} options, needs at least 2")
        choices = {letter: row[letter] for letter in LETTERS if letter in row and not is_missing(row[letter])}
        question = field_of(row, "question", where)
        if not is_missing(row.get("hint")):
            question = f"{row['hint']}\n{question}"
        answer = row.get("answer")
        answer = None if is_missing(answer) else answer.strip()
        if answer is not None and answer not in options and answer not in choices:
            raise ValueError(f"{where}: answer {answer!r} is not one of the options {', '.join(choices)}")
        items.append(
            Item(
                id=str(index),
                media=[EncodedImage(field_of(row, "image", where), f"{where} (index {index})")],
                prompt=f"{question}\n{options_block(options)}\n{instruction}",
                meta={
                    "index": index,
                    "group": index % CIRCULAR_STRIDE,
                    "options": options,
                    "choices": choices,
                    "answer": None if answer is None else LETTERS.index(answer),
                    "category": row.get("category", ""),
                    "l2_category": row.get("l2-category", ""),
                },
            )
        )
    return items


def _row_is_right(record: dict, reading: str) -> bool:
    meta, answer = record["meta"], record["answer"].strip()
    truth = LETTERS[meta["answer"]]
    if reading == "official":
        return mmbench_infer_option(answer, meta["choices"]) == truth
    picked = extract_choice(answer, meta["options"])
    return picked is not None and LETTERS[picked] == truth


def question_hits(records: list[dict], reading: str = "official") -> dict[int, bool]:
    """Question index -> right in every rotation (its group: rows with index % 1e6 == it), as VLMEvalKit."""
    groups: dict[int, list[bool]] = {}
    for record in records:
        groups.setdefault(record["meta"]["group"], []).append(_row_is_right(record, reading))
    return {
        r["meta"]["index"]: all(groups[r["meta"]["index"]])
        for r in records
        if r["meta"]["index"] == r["meta"]["group"]
    }


def score_mmbench(records: list[dict], judge: Judge | None = None, reading: str = "official") -> Results:
    if any(r["meta"]["answer"] is None for r in records):
        return Results(
            metrics={"circular_accuracy": "not scored (no answers: upload the submission file)"},
            notes=["the TSV has no answer column (test split); the .xlsx submission was written instead"],
        )
    questions = {r["meta"]["index"]: r for r in records if r["meta"]["index"] == r["meta"]["group"]}
    if not questions:
        return Results(metrics={"circular_accuracy": "not scored (no question row, index < 1e6, answered)"})
    rows = [r for r in records if r["meta"]["group"] in questions]
    hits = question_hits(rows, reading)
    by_category = letter_accuracy((questions[i]["meta"]["category"], int(hit)) for i, hit in hits.items())
    by_l2 = letter_accuracy((questions[i]["meta"]["l2_category"], int(hit)) for i, hit in hits.items())
    categories = {f"l2/{k}": v for k, v in by_l2.items() if k != "all"}
    categories.update({k: v for k, v in by_category.items() if k != "all"})
    first_round = [_row_is_right(question, reading) for question in questions.values()]
    metrics: dict = {
        "circular_accuracy": by_category["all"]["accuracy"],
        "first_round_accuracy": sum(first_round) / len(first_round),
        "questions": len(questions),
        "rows": len(rows),
    }
    notes = []
    if len(rows) < len(records):
        notes.append(
            f"{len(records) - len(rows)} rows whose question (index % 1e6) is not in the TSV: not scored"
        )
    if reading != "official":
        metrics = {f"lenient_{k}" if k.endswith("accuracy") else k: v for k, v in metrics.items()}
        notes.append("lenient reading (scoring.extract_choice): not the official score")
    return Results(metrics=metrics, categories=categories, notes=notes)


def write_mmbench_submission(records: list[dict], data: Path, out: Path) -> list[Path]:
    """The release's upload file: the TSV's rows and columns (less SUBMISSION_DROPPED), with "prediction"."""
    path = find_tsv(data)
    table = read_tsv(path)
    answers = {r["meta"]["index"]: r["answer"].strip() for r in records}
    columns = [c for c in (table[0].keys() if table else []) if c not in SUBMISSION_DROPPED]
    columns.insert(min(6, len(columns)), "prediction")
    rows: list[list[str | int]] = [list(columns)]
    for row_number, row in enumerate(table, start=2):
        index = _row_index(row, f"{path}:{row_number}")
        values = {**row, "index": index, "prediction": answers.get(index, "")}
        rows.append([values[c] for c in columns])
    target = out / "submission" / f"{path.stem}_submission.xlsx"
    write_xlsx(target, rows)
    return [target]


def _column_name(number: int) -> str:
    name = ""
    number += 1
    while number:
        number, remainder = divmod(number - 1, 26)
        name = LETTERS[remainder] + name
    return name


def _cell(reference: str, value: str | int) -> str:
    if isinstance(value, int):
        return f'<c r="{reference}"><v>{value}</v></c>'
    return f'<c r="{reference}" t="inlineStr"><is><t xml:space="preserve">{escape(str(value))}</t></is></c>'


def write_xlsx(path: Path, rows: list[list[str | int]]) -> None:
    """A minimal one-sheet .xlsx (integers as numbers, text inline): enough for MMBench's server."""
    cells = []
    for r, row in enumerate(rows, start=1):
        values = "".join(_cell(f"{_column_name(c)}{r}", v) for c, v in enumerate(row))
        cells.append(f'<row r="{r}">{values}</row>')
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    relations = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    package = "http://schemas.openxmlformats.org/package/2006"
    parts = {
        "[Content_Types].xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><Types xmlns="{package}/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{package}/relationships">'
            f'<Relationship Id="rId1" Type="{relations}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{main}" xmlns:r="{relations}">'
            '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{package}/relationships">'
            f'<Relationship Id="rId1" Type="{relations}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
        ),
        "xl/worksheets/sheet1.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{main}"><sheetData>{"".join(cells)}</sheetData></worksheet>'
        ),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in parts.items():
            archive.writestr(name, text)


BENCHMARKS = [
    Benchmark(
        "mmbench",
        "MMBench",
        "image",
        load_mmbench,
        score_mmbench,
        16,
        write_mmbench_submission,
        layout="mmbench_dev_20230712.tsv or MMBench_DEV_EN.tsv (base64 images, circular rows)",
        lenient_score=partial(score_mmbench, reading="lenient"),
    )
]
