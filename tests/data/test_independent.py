"""The independent test set: its own renderer and wording, determinism per seed, factors, true answers."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from llava_mini.cli import main
from llava_mini.data import independent, randomized, synthetic
from llava_mini.data.independent import (
    CLIP_KINDS,
    WORDING,
    dimensions,
    draw_picture,
    film,
    generate_independent,
    picture_questions,
    side_of,
)
from llava_mini.eval.synth import load_questions
from llava_mini.processing.video import probe_video


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("independent")
    generate_independent(out, seed=2, num_images=14, num_videos=4, describe_fraction=0.3)
    return out


def test_same_seed_same_files_other_seed_other_files(test_set, tmp_path):
    generate_independent(tmp_path / "same", seed=2, num_images=14, num_videos=4, describe_fraction=0.3)
    for name in ("questions.jsonl", "world.json"):
        assert (test_set / name).read_bytes() == (tmp_path / "same" / name).read_bytes()
    for image in sorted((test_set / "images").iterdir()):
        assert image.read_bytes() == (tmp_path / "same" / "images" / image.name).read_bytes()
    generate_independent(tmp_path / "other", seed=3, num_images=14, num_videos=0)
    assert (test_set / "questions.jsonl").read_text() != (tmp_path / "other" / "questions.jsonl").read_text()


def test_the_set_loads_for_eval_synth_and_clips_keep_their_rates(test_set):
    questions = load_questions(test_set)
    assert len(questions) == 18 and all(q.media_path.is_file() for q in questions)
    assert {q.modality for q in questions} == {"image", "video"}
    assert all(4 <= probe_video(path).average_fps <= 30 for path in (test_set / "videos").iterdir())


def test_shares_only_vocabulary_with_the_training_generators():
    borrowed = {name for name, value in vars(independent).items()
                if getattr(value, "__module__", None) in (synthetic.__name__, randomized.__name__)}
    assert borrowed <= {"fraction", "whole_number"}  # argparse types; COLOURS, SHAPES, WORDS are plain data
    assert not hasattr(independent, "randomized")
    templates = {t for group in WORDING.values() for t in group}
    training = {t for group in (*synthetic.PHRASES.values(), *randomized.PHRASES.values()) for t in group}
    spelled = training | {t.replace("{color}", c) for t in training for c in ("color", "colour")}
    issue_prompts = {"What is in the picture?", "Describe the image", "What happens in the video?"}
    assert issue_prompts <= templates and templates & spelled <= issue_prompts  # only the issue's open questions


def test_pictures_vary_and_answers_are_true():
    rng = random.Random(5)
    sizes = [dimensions(rng) for _ in range(200)]
    assert min(max(s) for s in sizes) < 120 and max(max(s) for s in sizes) > 550
    assert min(w / h for w, h in sizes) < 0.6 and max(w / h for w, h in sizes) > 1.7
    types, hollow, turned = set(), set(), set()
    for _ in range(40):
        image, shows = draw_picture(rng)
        assert image.size[0] >= 32 and image.size[1] >= 32
        if "word" in shows:
            types.add("text")
            continue
        objects = shows["objects"]
        hollow |= {o["hollow"] for o in objects}
        turned |= {round(o["turn"]) for o in objects}
        for q in picture_questions(rng, objects, shows["width"], shows["height"]):
            types.add(q["type"])
            if q["type"] == "color":
                assert [o["colour"] for o in objects if f" {o['shape']}" in q["question"]] == [q["answer"]]
            elif q["type"] == "position":
                a, b = sorted((o for o in objects if f"{o['colour']} {o['shape']}" in q["question"]),
                              key=lambda o: q["question"].index(f"{o['colour']} {o['shape']}"))
                assert q["answer"] in (side_of(a, b), side_of(b, a))
            elif q["type"] == "existence":
                assert (q["answer"] == "yes") == any(f"{o['colour']} {o['shape']}" in q["question"] for o in objects)
    assert types == {"text", "color", "shape", "count", "position", "place", "existence"}
    assert hollow == {True, False} and len(turned) > 5


@pytest.mark.parametrize("kind", CLIP_KINDS)
def test_clips_vary_and_are_whole_seconds(kind):
    rng = random.Random(len(kind))
    rates = set()
    for _ in range(3):
        frames, rate, questions, shown = film(rng, kind)
        rates.add(rate)
        assert 4 <= rate <= 30 and len(frames) % rate == 0 and questions
        assert frames[0].dtype == np.uint8 and all(f.shape == frames[0].shape for f in frames)
        assert (shown == []) == (kind == "change")
    assert len(rates) > 1


def test_cli_writes_a_test_set_and_refuses_an_empty_one(tmp_path, capsys):
    assert main(["data", "independent", "--out", str(tmp_path / "t"), "--images", "2", "--videos", "0"]) == 0
    assert json.loads((tmp_path / "t" / "world.json").read_text())["world"] == "independent"
    capsys.readouterr()
    assert main(["data", "independent", "--out", str(tmp_path / "e"), "--images", "0", "--videos", "0"]) == 2
    assert "nothing to generate" in capsys.readouterr().err
