"""lmms-eval itself scores the shipped model through the plugin, on synthetic questions written as an lmms-eval
task, and agrees with `llava-mini eval synth` answer for answer.

lmms-eval lives in a virtual environment of its own (`make lmms-eval-env` -> .venv-lmms-eval/, or the python
that $LMMS_EVAL_PYTHON names). Without it the run test is skipped on a developer's machine and fails in CI
(CI=true), where `.ci/run` builds it. The task writer is tested here without lmms-eval.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from llava_mini.data.synthetic import generate_dataset
from llava_mini.eval import lmms_eval_task
from llava_mini.eval.lmms_eval_task import TASK_NAME, write_lmms_eval_task
from llava_mini.eval.synth import evaluate, load_questions, score
from llava_mini.inference.generate import SHIPPED_MODEL_DIR, LlavaMini
from tests.conftest import REPO_ROOT

LMMS_EVAL_VENV = REPO_ROOT / ".venv-lmms-eval"


def lmms_eval_python() -> Path | None:
    """$LMMS_EVAL_PYTHON, or the python of a finished `make lmms-eval-env`; None when there is neither."""
    if "LMMS_EVAL_PYTHON" in os.environ:
        return Path(os.environ["LMMS_EVAL_PYTHON"])
    return LMMS_EVAL_VENV / "bin" / "python" if (LMMS_EVAL_VENV / ".installed").is_file() else None


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    world = tmp_path_factory.mktemp("heldout")
    generate_dataset(world, seed=1, num_images=4, num_videos=2, questions_per_image=2)
    return load_questions(world)


def test_the_task_is_lmms_eval_yaml_over_the_questions(questions, tmp_path):
    class FunctionLoader(yaml.SafeLoader):
        pass

    FunctionLoader.add_constructor("!function", lambda loader, node: ("function", loader.construct_scalar(node)))
    config = yaml.load(write_lmms_eval_task(questions, tmp_path).read_text(), Loader=FunctionLoader)
    assert config["task"] == TASK_NAME and config["dataset_path"] == "json"
    assert config["doc_to_visual"] == ("function", "llava_mini.eval.lmms_eval_task.doc_to_visual")
    documents = [json.loads(line) for line in Path(config["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()]
    assert [d["id"] for d in documents] == [q.id for q in questions]
    assert {d["modality"] for d in documents} == {"image", "video"}
    first = documents[0]
    assert lmms_eval_task.doc_to_visual(first) == [str(questions[0].media_path.resolve())]
    assert lmms_eval_task.doc_to_text(first) == questions[0].question
    assert lmms_eval_task.process_results(first, [f" {first['answer'].upper()}."]) == {"exact_match": 1.0}
    assert lmms_eval_task.process_results(first, ["something else"]) == {"exact_match": 0.0}
    with pytest.raises(ValueError, match="no questions"):
        write_lmms_eval_task([], tmp_path)


def test_lmms_eval_scores_the_shipped_model_like_eval_synth(questions, tmp_path):
    python = lmms_eval_python()
    if python is None:
        message = f"no lmms-eval environment at {LMMS_EVAL_VENV} (make lmms-eval-env) and no $LMMS_EVAL_PYTHON"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": CI must build it")
        pytest.skip(message)
    write_lmms_eval_task(questions, tmp_path / "task")
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT / "src"),  # this checkout's plugin, whatever the environment installed
        OMP_NUM_THREADS="1",
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
    )
    command = [
        str(python), "-m", "lmms_eval",
        "--model", "llava_mini",
        "--model_args", f"pretrained={SHIPPED_MODEL_DIR}",
        "--tasks", TASK_NAME,
        "--include_path", str(tmp_path / "task"),
        "--batch_size", "4",
        "--output_path", str(tmp_path / "out"),
        "--log_samples",
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (results_file,) = (tmp_path / "out").rglob("*_results.json")
    (samples_file,) = (tmp_path / "out").rglob(f"*_samples_{TASK_NAME}.jsonl")
    lmms_score = json.loads(results_file.read_text())["results"][TASK_NAME]["exact_match,none"]
    samples = sorted((json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"])
    assert [s["target"] for s in samples] == [q.answer for q in questions]

    records = evaluate(LlavaMini.load(), questions, batch_size=4)
    assert [s["filtered_resps"] for s in samples] == [record["answer"] for record in records]
    assert lmms_score == pytest.approx(score(records)["all"]["accuracy"], abs=1e-12)
