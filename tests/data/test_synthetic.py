"""The synthetic world: determinism, coverage of question types, answers true to the scene."""

from __future__ import annotations

import argparse
import json
import random

import pytest

from llava_mini.cli import main
from llava_mini.data.records import load_records
from llava_mini.data.synthetic import (
    CELL,
    CELL_NAMES,
    COLOURS,
    SHAPES,
    Thing,
    existence_question,
    generate_dataset,
    image_questions,
    parse_video_mix,
    random_scene,
    relation,
    video_kind_schedule,
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


def test_video_mix_weights_the_kinds_and_leaves_images_alone(world, tmp_path):
    generate_dataset(tmp_path, seed=3, num_images=30, num_videos=8, video_mix={"motion": 3, "scene_change": 0})
    world_json = json.loads((tmp_path / "world.json").read_text())
    assert world_json["video_kinds"] == {"motion": 6, "order": 1, "event_count": 1}
    questions = [json.loads(line) for line in (tmp_path / "questions.jsonl").read_text().splitlines()]
    assert sum(q["type"] == "motion" for q in questions) == 6
    balanced = [json.loads(line) for line in (world / "questions.jsonl").read_text().splitlines()]
    assert questions[:30] == balanced[:30]  # the images come first and do not depend on the mix


def test_place_turns_end_training_conversations_and_change_nothing_else(world, tmp_path):
    generate_dataset(tmp_path, seed=3, num_images=30, num_videos=8, place_turns=2)
    for name in ("captions.json", "questions.jsonl", "scenes.jsonl"):
        assert (world / name).read_bytes() == (tmp_path / name).read_bytes()
    plain = json.loads((world / "instructions.json").read_text())
    placed = json.loads((tmp_path / "instructions.json").read_text())
    scenes = [json.loads(line) for line in (tmp_path / "scenes.jsonl").read_text().splitlines()]
    checked = 0
    for before, after, scene in zip(plain, placed, scenes, strict=False):
        extra = after["conversations"][len(before["conversations"]):]
        assert after["conversations"][: len(before["conversations"])] == before["conversations"]
        objects = sum(cell > 0 for cell in scene["cells"])
        assert len(extra) == 2 * min(2, objects)
        for question, answer in zip(extra[::2], extra[1::2], strict=True):
            assert "<image>" not in question["value"] and question["value"].startswith(("Where", "In which"))
            colour, shape = question["value"].rstrip("?").split()[-2:]
            cell_class = 1 + SHAPES.index(shape) * len(COLOURS) + list(COLOURS).index(colour)
            assert scene["cells"][CELL_NAMES.index(answer["value"])] == cell_class
            checked += 1
    assert checked > 20
    with pytest.raises(ValueError, match="place_turns must be >= 0"):
        generate_dataset(tmp_path, seed=3, num_images=1, num_videos=0, place_turns=-1)


def test_video_mix_rejects_unknown_kinds_and_bad_counts():
    assert video_kind_schedule() == ("motion", "order", "event_count", "scene_change")
    assert parse_video_mix("motion=3, order=2") == {"motion": 3, "order": 2}
    with pytest.raises(ValueError, match="unknown video kind.*'spin'"):
        video_kind_schedule({"spin": 2})
    with pytest.raises(ValueError, match="every video kind has weight 0"):
        video_kind_schedule(dict.fromkeys(("motion", "order", "event_count", "scene_change"), 0))
    with pytest.raises(argparse.ArgumentTypeError, match="'motion' is not KIND=COUNT"):
        parse_video_mix("motion")
    with pytest.raises(argparse.ArgumentTypeError, match="--video-mix: unknown video kind"):
        parse_video_mix("motions=2")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--images", "-3"], "argument --images: must be >= 0, got -3"),
        (["--videos", "many"], "argument --videos: 'many' is not a whole number"),
        (["--text-fraction", "1.5"], "argument --text-fraction: must be between 0 and 1"),
        (["--questions-per-image", "0"], "argument --questions-per-image: must be >= 1"),
    ],
)
def test_synth_cli_names_a_bad_count(arguments, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", str(tmp_path), *arguments])
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_synth_cli_refuses_an_empty_world(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "w"), "--images", "0", "--videos", "0"]) == 2
    assert "nothing to generate" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


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
