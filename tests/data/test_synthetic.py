"""The synthetic world: determinism, coverage of question types, answers true to the scene."""

from __future__ import annotations

import json
import random

import pytest

from llava_mini.data.records import load_records
from llava_mini.data.synthetic import (
    CELL,
    SHAPES,
    Thing,
    existence_question,
    generate_dataset,
    image_questions,
    random_scene,
    relation,
)
from llava_mini.processing.video import read_video_frames


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate_dataset(out, seed=3, num_images=30, num_videos=8)
    return out


def test_same_seed_gives_identical_files(world, tmp_path):
    generate_dataset(tmp_path, seed=3, num_images=30, num_videos=8)
    for name in ("captions.json", "instructions.json", "questions.jsonl"):
        assert (world / name).read_bytes() == (tmp_path / name).read_bytes()
    assert (world / "images" / "000007.png").read_bytes() == (tmp_path / "images" / "000007.png").read_bytes()


def test_every_video_question_type_and_the_records_load(world):
    questions = [json.loads(line) for line in (world / "questions.jsonl").read_text().splitlines()]
    assert {q["type"] for q in questions if q["modality"] == "video"} == {"motion", "order", "event_count", "scene_change"}
    records = load_records(world / "instructions.json")
    assert len(records) == 38 and records[0].turns[0][1].startswith("<image>\n")
    video = next(r for r in records if r.media_kind == "video")
    frames = read_video_frames(video.media[0])
    assert 2 <= len(frames) <= 7


def test_image_questions_cover_every_type_and_are_true_to_the_scene():
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        things = random_scene(rng, rng.randint(1, 4))
        for q in image_questions(rng, things, popular=[("circle", "red")]):
            seen.add(q["type"])
            if q["type"] == "color":
                shape = next(s for s in SHAPES if s in q["question"])
                assert [t.colour for t in things if t.shape == shape] == [q["answer"]]
            elif q["type"] == "count" and "objects" in q["question"]:
                assert q["answer"] == str(len(things))
            elif q["type"] == "position":
                a, b = (t for t in things if t.name in q["question"])
                first = a if q["question"].index(a.name) < q["question"].index(b.name) else b
                second = b if first is a else a
                assert relation(first, second) == q["answer"]
    assert seen == {"color", "shape", "count", "position", "existence"}


def test_pope_negatives_are_absent_and_adversarial_ones_share_an_attribute():
    rng = random.Random(1)
    answers = []
    for _ in range(300):
        things = random_scene(rng, 3)
        q = existence_question(rng, things, popular=[("star", "red"), ("circle", "blue")])
        named = next((s, c) for s in SHAPES for c in {t.colour for t in things} | {"red", "blue", "green", "yellow", "purple", "orange", "white", "black"} if f"{c} {s}" in q["question"])
        present = (named[0], named[1]) in {(t.shape, t.colour) for t in things}
        assert present == (q["answer"] == "yes")
        if q["answer"] == "no" and q["pope_split"] == "adversarial":
            assert any(t.shape == named[0] or t.colour == named[1] for t in things)
        answers.append(q["answer"])
    assert 0.35 < answers.count("yes") / len(answers) < 0.65


def test_relation_is_only_defined_on_a_shared_row_or_column():
    a = Thing("circle", "red", CELL // 2, CELL // 2, 20)
    b = Thing("square", "blue", CELL // 2 + CELL, CELL // 2, 20)
    c = Thing("star", "green", CELL // 2 + CELL, CELL // 2 + CELL, 20)
    assert relation(a, b) == "left" and relation(b, a) == "right"
    assert relation(b, c) == "above" and relation(c, b) == "below"
    assert relation(a, c) is None
