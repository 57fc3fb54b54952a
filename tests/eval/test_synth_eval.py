"""Scoring of the synthetic held-out set."""

from __future__ import annotations

import json

import pytest

from llava_mini.eval.synth import (
    description_score,
    load_questions,
    markdown_table,
    mentioned_objects,
    normalise_answer,
    score,
)


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


def test_number_words_and_american_spelling_are_the_same_answer():
    assert normalise_answer("Two.") == "2" == normalise_answer("2")
    assert normalise_answer("Center") == "centre" and normalise_answer("top  left") == "top left"


def test_descriptions_count_named_and_made_up_objects():
    objects = [{"shape": "circle", "colour": "red"}, {"shape": "square", "colour": "blue"}]
    assert description_score("A red circle at the top left and a blue square.", objects) == {
        "named": 2, "objects": 2, "hallucinated": 0}
    assert description_score("Two red circles and a green star.", objects) == {"named": 1, "objects": 2, "hallucinated": 1}
    assert description_score("a blue circle", objects)["hallucinated"] == 1  # right shape, wrong colour
    assert description_score("a triangle", objects) == {"named": 0, "objects": 2, "hallucinated": 1}
    assert mentioned_objects("Orange stars; a cross") == ({("star", "orange")}, {"cross"})


def test_score_reports_the_description_metrics():
    records = [
        {"modality": "image", "type": "describe", "correct": True, "named": 2, "objects": 2, "hallucinated": 0},
        {"modality": "video", "type": "describe", "correct": False, "named": 0, "objects": 1, "hallucinated": 2},
        {"modality": "image", "type": "color", "correct": True},
    ]
    results = score(records)
    assert results["describe/objects named"] == {"accuracy": 2 / 3, "correct": 2, "total": 3}
    assert results["describe/no hallucination"] == {"accuracy": 0.5, "correct": 1, "total": 2}
    assert results["image/describe"]["correct"] == 1


def test_a_description_question_needs_its_objects(tmp_path):
    entry = {"id": 1, "image": "a.png", "question": "Describe the image", "answer": "x", "type": "describe", "modality": "image"}
    (tmp_path / "questions.jsonl").write_text(json.dumps(entry) + "\n")
    with pytest.raises(ValueError, match="questions.jsonl:1: a 'describe' question needs its ground-truth 'objects'"):
        load_questions(tmp_path)


def test_sentence_answers_get_room_for_a_sentence(tmp_path):
    """Descriptions and questions on pictures without the world's things are answered with a sentence, so
    they are asked with DESCRIBE_TOKENS new tokens; short questions with 8."""
    from llava_mini.eval.synth import DESCRIBE_TOKENS, Question, evaluate

    class RecordingAssistant:
        def __init__(self) -> None:
            self.budgets: dict[str, int] = {}

        def medium(self, path):
            return path

        def question_messages(self, question, media):
            return [{"role": "user", "content": question}]

        def chat_batch(self, conversations, media, settings):
            for conversation in conversations:
                self.budgets[conversation[0]["content"]] = settings.max_new_tokens
            return ["I can only describe simple shapes, colours, words and motions."] * len(conversations)

    sentence = "I can only describe simple shapes, colours, words and motions."
    expected = normalise_answer(sentence)  # as load_questions stores answers
    questions = [Question("a", tmp_path / "a.png", "What is in the picture?", expected, "unknown", "image"),
                 Question("b", tmp_path / "b.png", "What colour is the circle?", "red", "color", "image")]
    assistant = RecordingAssistant()
    records = evaluate(assistant, questions)
    assert assistant.budgets == {"What is in the picture?": DESCRIBE_TOKENS, "What colour is the circle?": 8}
    assert [record["correct"] for record in records] == [True, False]
