"""MMBench: multiple choice with circular evaluation (every rotation of the options must be answered right).

Layout: a TSV such as mmbench_dev_20230712.tsv (or mmbench_test_*.tsv, *_cn_*.tsv) with the columns index,
question, hint, A..D (or more), answer (dev only), category, l2-category and image (base64). As in LLaVA's
`--all-rounds`, each question is asked once per rotation of its options. The prompt is the hint, the question,
"A. ..." lines and "Answer with the option's letter from the given choices directly." (its Chinese form for
the cn files). The submission is an .xlsx with one row per round, as MMBench's server takes it.
"""

from __future__ import annotations

import csv
import sys
import zipfile
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
from llava_mini.eval.scoring import LETTERS, circular_accuracy, extract_choice, letter_accuracy

OPTION_LETTER_PROMPT_CN = "请直接回答选项字母。"


def find_tsv(root: Path) -> Path:
    if root.is_file():
        return root
    found = sorted(root.glob("mmbench*.tsv")) or sorted(root.glob("*.tsv"))
    if not found:
        raise FileNotFoundError(f"no MMBench .tsv file found in {root}")
    return found[0]


def read_tsv(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)  # base64 images are long cells
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def load_mmbench(root: Path) -> list[Item]:
    path = find_tsv(root)
    instruction = OPTION_LETTER_PROMPT_CN if "_cn" in path.name.lower() else OPTION_LETTER_PROMPT
    items = []
    for row_number, row in enumerate(read_tsv(path), start=2):
        where = f"{path}:{row_number}"
        index = str(field_of(row, "index", where))
        options = [row[letter] for letter in LETTERS if letter in row and not is_missing(row[letter])]
        if len(options) < 2:
            raise ValueError(f"{where}: question {index} has {len(options)} options, needs at least 2")
        image = EncodedImage(field_of(row, "image", where), f"{where} (index {index})")
        question = field_of(row, "question", where)
        if not is_missing(row.get("hint")):
            question = f"{row['hint']}\n{question}"
        answer = row.get("answer")
        answer_index = LETTERS.index(answer.strip()) if not is_missing(answer) else None
        for round_number in range(len(options)):
            rotated = options[round_number:] + options[:round_number]
            rotated_answer = None if answer_index is None else (answer_index - round_number) % len(options)
            items.append(
                Item(
                    id=f"{index}-{round_number}",
                    media=[image],
                    prompt=f"{question}\n{options_block(rotated)}\n{instruction}",
                    meta={
                        "index": index,
                        "round": round_number,
                        "question": row["question"],
                        "options": rotated,
                        "answer": rotated_answer,
                        "category": row.get("category", ""),
                        "l2_category": row.get("l2-category", ""),
                        "hint": "" if is_missing(row.get("hint")) else row["hint"],
                    },
                )
            )
    return items


def _picked_letter(record: dict) -> str:
    picked = extract_choice(record["answer"], record["meta"]["options"])
    return "" if picked is None else LETTERS[picked]


def score_mmbench(records: list[dict], judge: Judge | None = None) -> Results:
    if any(r["meta"]["answer"] is None for r in records):
        return Results(
            metrics={"circular_accuracy": "not scored (no answers: upload the submission file)"},
            notes=["the TSV has no answer column (test split); the .xlsx submission was written instead"],
        )
    rounds = [
        (r["meta"]["index"], r["meta"]["category"], _picked_letter(r) == LETTERS[r["meta"]["answer"]])
        for r in records
    ]
    by_category = circular_accuracy(rounds)
    by_l2 = circular_accuracy(
        (i, r["meta"]["l2_category"], c) for (i, _, c), r in zip(rounds, records, strict=True)
    )
    first_round = letter_accuracy(
        (r["meta"]["category"], int(c))
        for (_, _, c), r in zip(rounds, records, strict=True)
        if r["meta"]["round"] == 0
    )
    categories = {f"l2/{k}": v for k, v in by_l2.items() if k != "all"}
    categories.update({k: v for k, v in by_category.items() if k != "all"})
    return Results(
        metrics={
            "circular_accuracy": by_category["all"]["accuracy"],
            "first_round_accuracy": first_round["all"]["accuracy"],
            "questions": by_category["all"]["total"],
        },
        categories=categories,
    )


def write_mmbench_submission(records: list[dict], data: Path, out: Path) -> list[Path]:
    """One row per round: index, question, hint, A.., prediction (a letter), answer, category, l2-category."""
    width = max(len(r["meta"]["options"]) for r in records)
    header = [
        "index",
        "round",
        "question",
        "hint",
        *LETTERS[:width],
        "prediction",
        "answer",
        "category",
        "l2-category",
    ]
    rows = [header]
    for record in records:
        meta = record["meta"]
        options = meta["options"] + [""] * (width - len(meta["options"]))
        answer = "" if meta["answer"] is None else LETTERS[meta["answer"]]
        rows.append(
            [
                meta["index"],
                str(meta["round"]),
                meta["question"],
                meta["hint"],
                *options,
                _picked_letter(record),
                answer,
                meta["category"],
                meta["l2_category"],
            ]
        )
    path = out / "submission" / f"{find_tsv(data).stem}_submission.xlsx"
    write_xlsx(path, rows)
    return [path]


def _column_name(number: int) -> str:
    name = ""
    number += 1
    while number:
        number, remainder = divmod(number - 1, 26)
        name = LETTERS[remainder] + name
    return name


def write_xlsx(path: Path, rows: list[list[str]]) -> None:
    """A minimal one-sheet .xlsx (inline strings): enough for MMBench's server, no extra dependency."""
    cells = []
    for r, row in enumerate(rows, start=1):
        values = "".join(
            f'<c r="{_column_name(c)}{r}" t="inlineStr"><is><t xml:space="preserve">{escape(str(v))}</t></is></c>'
            for c, v in enumerate(row)
        )
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
        layout="mmbench_dev_20230712.tsv (base64 images)",
    )
]
