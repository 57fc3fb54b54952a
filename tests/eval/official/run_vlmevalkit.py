"""Scores the MMBench fixture with VLMEvalKit's circular evaluation and writes the release's upload file.

Not part of the test suite: run by hand in an environment with pandas and openpyxl and VLMEvalKit's `vlmeval`
package importable (see RECORD.md), and with the folder holding the release's scripts:

    PYTHONPATH=VLMEVALKIT_DIR python tests/eval/official/run_vlmevalkit.py RELEASE_SCRIPTS_DIR

VLMEvalKit: `mcq_circular_eval` with model=None (its exact-matching policy: no LLM judge) on the fixture TSV
(the meta data) and the fixture answers as its "prediction" column, then `report_acc`, as
`ImageMCQDataset.evaluate` calls them. The release: scripts/convert_mmbench_for_submission.py as its
mmbench.sh calls it. Outputs: tests/eval/official/mmbench/official/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from vlmeval.dataset.utils.multiple_choice import mcq_circular_eval, report_acc

HERE = Path(__file__).parent / "mmbench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", type=Path, help="folder with the release's evaluation scripts")
    scripts = parser.parse_args().scripts.resolve()
    out = HERE / "official"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()

    meta = pd.read_csv(HERE / "mmbench_dev_20230712.tsv", sep="\t")
    answers = [json.loads(line) for line in (HERE / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    predictions = {entry["question_id"]: entry["text"] for entry in answers}
    data = meta.copy()
    data["prediction"] = [predictions[index] for index in data["index"]]
    with tempfile.TemporaryDirectory() as folder:
        scored = mcq_circular_eval(
            None, data, meta, 1, str(Path(folder) / "result.pkl"), dataset_name="MMBench"
        )
    hits = {int(index): int(hit) for index, hit in zip(scored["index"], scored["hit"], strict=True)}
    report = report_acc(scored)
    (out / "vlmevalkit_circular.json").write_text(
        json.dumps({"hit": hits, "report": report.to_dict(orient="records")}, indent=1) + "\n",
        encoding="utf-8",
    )

    with tempfile.TemporaryDirectory() as folder:
        result_dir, upload_dir = Path(folder) / "answers", Path(folder) / "upload"
        result_dir.mkdir()
        upload_dir.mkdir()
        shutil.copy(HERE / "answers.jsonl", result_dir / "fixture.jsonl")
        command = [sys.executable, str(scripts / "convert_mmbench_for_submission.py"), "--annotation-file",
                   "mmbench_dev_20230712.tsv", "--result-dir", str(result_dir), "--upload-dir", str(upload_dir),
                   "--experiment", "fixture"]  # fmt: skip
        done = subprocess.run(command, cwd=HERE, capture_output=True, text=True, check=True)
        upload = pd.read_excel(upload_dir / "fixture.xlsx", engine="openpyxl")
        rows = json.loads(upload.to_json(orient="split", index=False))
    (out / "convert_mmbench_for_submission.json").write_text(
        json.dumps({"columns": rows["columns"], "data": rows["data"], "printed": done.stdout}, indent=1,
                   ensure_ascii=False) + "\n",
        encoding="utf-8",
    )  # fmt: skip


if __name__ == "__main__":
    main()
