"""Scoring of the synthetic held-out set."""

from __future__ import annotations

import json

import pytest

from llava_mini.eval.synth import load_questions, markdown_table, normalise_answer, score


def test_normalisation():
    assert normalise_answer(" Red.") == "red"
    assert normalise_answer("YES!") == "yes"
    assert normalise_answer("3") == "3"


def test_score_per_modality_and_type():
    records = [
        {"modality": "image", "type": "color", "correct": True},
        {"modality": "image", "type": "color", "correct": False},
        {"modality": "image", "type": "count", "correct": True},
        {"modality": "video", "type": "motion", "correct": True},
    ]
    results = score(records)
    assert results["image"]["accuracy"] == pytest.approx(2 / 3)
    assert results["image/color"] == {"accuracy": 0.5, "correct": 1, "total": 2}
    assert results["video"]["accuracy"] == 1.0
    assert results["all"]["total"] == 4
    assert "| image/color | 50.0% | 1 / 2 |" in markdown_table(results)


def test_load_questions_names_the_bad_line(tmp_path):
    good = {"id": 1, "image": "images/a.png", "question": "q", "answer": "Red", "type": "color", "modality": "image"}
    (tmp_path / "questions.jsonl").write_text(json.dumps(good) + "\n{not json}\n")
    with pytest.raises(ValueError, match="questions.jsonl:2"):
        load_questions(tmp_path)
    assert load_questions(tmp_path, limit=1)[0].answer == "red"
    with pytest.raises(FileNotFoundError):
        load_questions(tmp_path / "missing")
