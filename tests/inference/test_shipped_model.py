"""The shipped model, end to end: it answers held-out synthetic questions correctly (no mocks)."""

from __future__ import annotations

import pytest

from llava_mini.data.synthetic import generate_dataset
from llava_mini.eval.synth import evaluate, load_questions, score
from llava_mini.inference.generate import SHIPPED_MODEL_DIR, LlavaMini


@pytest.fixture(scope="module")
def shipped() -> LlavaMini:
    assert (SHIPPED_MODEL_DIR / "config.json").is_file(), f"the shipped model is missing at {SHIPPED_MODEL_DIR}"
    return LlavaMini.load()


def test_the_shipped_model_gives_the_llm_one_vision_token_per_image(shipped):
    assert shipped.config.num_vision_tokens() == 1
    assert shipped.config.prefusion_layers > 0


def test_held_out_answers_are_right(shipped, tmp_path):
    # A fresh world with a seed the model never saw (training used seed 0, the README's held-out set seed 1).
    generate_dataset(tmp_path, seed=7, num_images=40, num_videos=12)
    records = evaluate(shipped, load_questions(tmp_path), batch_size=16)
    results = score(records)
    # The shipped model reaches 91.6% on image and 99.0% on video questions of the README's held-out set
    # (targets 90% / 80%); on this small world it answered 39 / 40 and 12 / 12. Floors leave room for a
    # retrained model's noise yet sit far above chance (1 in 2 to 1 in 20 per question type):
    assert results["image"]["accuracy"] >= 0.8, results
    assert results["video"]["accuracy"] >= 0.75, results
    assert results["all"]["accuracy"] >= 0.8, results


def test_a_single_question_from_python(shipped, tmp_path):
    from llava_mini.data.synthetic import Thing, render

    render([Thing("circle", "red", 48, 48, 24)]).save(tmp_path / "red_circle.png")  # the world's sizes: 20-26 px
    assert shipped.ask(tmp_path / "red_circle.png", "What colour is the circle?") == "red"
    assert shipped.ask(tmp_path / "red_circle.png", "What shape is the red object?") == "circle"
