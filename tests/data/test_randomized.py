"""The randomized world: determinism per seed, every factor exercised, answers true to the picture."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from PIL import Image

from llava_mini.cli import main
from llava_mini.data.randomized import (
    MIN_CONTRAST,
    Item,
    background,
    contrasting_colours,
    distance,
    draw_item,
    generate_randomized,
    image_questions,
    make_image,
    make_video,
    picture_size,
    place_items,
    relation,
)
from llava_mini.data.synthetic import COLOURS, VIDEO_KINDS
from llava_mini.processing.video import probe_video


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("randomized")
    generate_randomized(out, seed=4, num_images=16, num_videos=4)
    return out


def test_same_seed_same_files_other_seed_other_files(world, tmp_path):
    generate_randomized(tmp_path / "same", seed=4, num_images=16, num_videos=4)
    for name in ("captions.json", "instructions.json", "questions.jsonl", "scenes.jsonl", "world.json"):
        assert (world / name).read_bytes() == (tmp_path / "same" / name).read_bytes()
    for image in sorted((world / "images").iterdir()):
        assert image.read_bytes() == (tmp_path / "same" / "images" / image.name).read_bytes()
    generate_randomized(tmp_path / "other", seed=5, num_images=16, num_videos=0)
    assert (world / "questions.jsonl").read_text() != (tmp_path / "other" / "questions.jsonl").read_text()


def test_files_load_and_videos_have_their_own_frame_rates(world):
    from llava_mini.data.records import load_records

    records = load_records(world / "instructions.json")
    assert len(records) == 20 and load_records(world / "captions.json")[0].turns[0][1].startswith("<image>\n")
    rates = {probe_video(path).average_fps for path in sorted((world / "videos").iterdir())}
    assert all(4 <= rate <= 30 for rate in rates)
    scenes = [json.loads(line) for line in (world / "scenes.jsonl").read_text().splitlines()]
    assert len(scenes) == 16 and all(len(s["cells"]) == 9 for s in scenes)


def test_sizes_aspects_and_backgrounds_vary():
    rng = random.Random(0)
    sizes = [picture_size(rng) for _ in range(300)]
    assert min(max(s) for s in sizes) < 100 and max(max(s) for s in sizes) > 500
    aspects = [w / h for w, h in sizes]
    assert min(aspects) < 0.6 and max(aspects) > 1.7 and all(0.45 < a < 2.2 for a in aspects)
    kinds = set()
    for _ in range(60):
        image, colours = background(rng, 80, 60)
        unique = len(np.unique(np.asarray(image).reshape(-1, 3), axis=0))
        kinds.add("plain" if unique == 1 else "two-colour" if unique == 2 else "many")
        assert colours
    assert kinds == {"plain", "two-colour", "many"}  # plain; stripes and checks; gradients and noise


def test_objects_stand_out_vary_and_have_soft_edges():
    rng = random.Random(1)
    backdrop = [COLOURS["white"]]
    colours = contrasting_colours(backdrop)
    assert "white" not in colours and all(distance(COLOURS[c], backdrop[0]) >= MIN_CONTRAST for c in colours)
    items = [item for _ in range(60) for item in place_items(rng, 300, 200, 4, colours, overlap=rng.random() < 0.5)]
    assert {item.outline for item in items} == {True, False}
    assert any(item.angle != 0 for item in items) and len({round(item.size) for item in items}) > 10
    assert len({(round(item.x), round(item.y)) for item in items}) > 100  # free positions, not a grid
    canvas = Image.new("RGB", (40, 40), (255, 255, 255))
    draw_item(canvas, Item("circle", "blue", COLOURS["blue"], 20.3, 19.7, 20.0))
    levels = set(np.asarray(canvas)[..., 0].ravel().tolist())
    assert len(levels) > 4  # anti-aliased: in-between shades on the edge


def test_touching_objects_only_when_allowed():
    rng = random.Random(2)
    for overlap, factor in ((False, 1.1), (True, 0.7)):
        for _ in range(30):
            items = place_items(rng, 200, 200, 4, list(COLOURS), overlap=overlap)
            for a in items:
                for b in items:
                    if a is not b:
                        assert np.hypot(a.x - b.x, a.y - b.y) >= factor * (a.size + b.size) / 2 - 1e-9


def test_questions_are_true_to_the_picture_and_worded_many_ways():
    rng = random.Random(3)
    seen, wordings = set(), set()
    for _ in range(150):
        items = place_items(rng, 240, 160, rng.randint(1, 4), list(COLOURS), overlap=False)
        for q in image_questions(rng, items, 240, 160, "caption"):
            seen.add(q["type"])
            wordings.add(q["question"])
            if q["type"] == "color":
                assert [t.colour for t in items if f" {t.shape}" in q["question"]] == [q["answer"]]
            elif q["type"] == "position":
                a, b = sorted((t for t in items if t.name in q["question"]), key=lambda t: q["question"].index(t.name))
                assert relation(a, b) == q["answer"] or relation(b, a) == q["answer"]
            elif q["type"] == "existence":
                named = any(t.name in q["question"] for t in items)
                assert (q["answer"] == "yes") == named
            elif q["type"] == "describe":
                assert q["objects"] == [{"shape": t.shape, "colour": t.colour} for t in items]
    assert seen == {"color", "shape", "count", "position", "place", "existence", "describe"}
    text = " ".join(wordings)
    assert " color " in text and " colour " in text  # American and British spelling
    assert any(word in text for word in (" two ", " three ")) and any(f" {n} " in text for n in "234")
    assert len(wordings) > 100


def test_pictures_cover_words_and_captions_name_every_object():
    rng = random.Random(4)
    found = set()
    for _ in range(40):
        image, caption, questions, labels = make_image(rng)
        found.add(questions[0]["type"] == "text")
        assert 64 // 2 <= min(image.size) and max(image.size) <= 640
        described = [q for q in questions if q["type"] == "describe"]
        for q in described:
            assert all(f"{o['colour']} {o['shape']}" in caption for o in q["objects"])
        if labels["word"]:
            assert questions[0]["answer"] in caption
    assert found == {True, False}


@pytest.mark.parametrize("kind", VIDEO_KINDS)
def test_videos_vary_in_rate_and_size_and_keep_states_whole_seconds(kind):
    rng = random.Random(hash(kind) % 1000)
    rates = set()
    for _ in range(3):
        frames, fps, caption, questions = make_video(rng, kind)
        rates.add(fps)
        assert 4 <= fps <= 30 and len(frames) % fps == 0 and 2 <= len(frames) // fps <= 8
        assert all(frame.size == frames[0].size for frame in frames)
        assert questions and caption
    assert len(rates) > 1


def test_motion_answer_follows_the_object():
    rng = random.Random(7)
    for _ in range(6):
        frames, fps, _, questions = make_video(rng, "motion")
        stack = np.stack([np.asarray(frame, np.float32) for frame in frames])
        still = np.median(stack, axis=0)  # the background: the object covers each pixel less than half the time
        centres = []
        for frame in (stack[0], stack[-1]):
            ys, xs = np.nonzero(np.abs(frame - still).sum(-1) > 60)
            centres.append((xs.mean(), ys.mean()))
        dx, dy = centres[1][0] - centres[0][0], centres[1][1] - centres[0][1]
        assert {"left": -dx, "right": dx, "up": -dy, "down": dy}[questions[0]["answer"]] > 0


def test_cli_randomized_world_and_grid_only_options(tmp_path, capsys):
    assert main(["data", "synth", "--world", "randomized", "--out", str(tmp_path / "r"), "--images", "3", "--videos", "0"]) == 0
    assert json.loads((tmp_path / "r" / "world.json").read_text())["world"] == "randomized"
    capsys.readouterr()
    assert main(["data", "synth", "--world", "randomized", "--out", str(tmp_path / "x"), "--images", "2",
                 "--place-turns", "2"]) == 2
    assert "--place-turns and --text-fraction belong to --world grid" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "g"), "--images", "2", "--workers", "2"]) == 2
    assert "--workers belongs to --world randomized" in capsys.readouterr().err


def test_two_workers_make_the_same_files(world, tmp_path):
    generate_randomized(tmp_path, seed=4, num_images=16, num_videos=4, workers=2)
    for name in ("captions.json", "instructions.json", "questions.jsonl", "scenes.jsonl", "world.json"):
        assert (world / name).read_bytes() == (tmp_path / name).read_bytes()
    for image in sorted((world / "images").iterdir()):
        assert image.read_bytes() == (tmp_path / "images" / image.name).read_bytes()
    with pytest.raises(ValueError, match="workers must be >= 1"):
        generate_randomized(tmp_path, seed=4, num_images=1, num_videos=0, workers=0)


def test_scene_labels_are_cells_of_the_padded_square_the_tower_sees():
    from llava_mini.data.randomized import cell_labels

    blue = COLOURS["blue"]
    items = [Item("circle", "red", COLOURS["red"], 100, 50, 20), Item("star", "blue", blue, 10, 50, 20)]
    cells = cell_labels(items, 200, 100)["cells"]  # padded to 200 x 200: 50 px above and below
    assert cells[4] == 1 + 0 * len(COLOURS) + list(COLOURS).index("red")
    assert cells[3] == 1 + 3 * len(COLOURS) + list(COLOURS).index("blue")
    assert sum(cell > 0 for cell in cells) == 2


def test_unknown_pictures_are_answered_with_what_the_model_can_describe(tmp_path, capsys):
    from llava_mini.data.randomized import UNKNOWN_ANSWER, render_unknown_picture, unknown_questions

    generate_randomized(tmp_path / "some", seed=4, num_images=40, num_videos=0, unknown_share=0.5)
    generate_randomized(tmp_path / "none", seed=4, num_images=40, num_videos=0, unknown_share=0.0)
    scenes = [json.loads(line) for line in (tmp_path / "some" / "scenes.jsonl").read_text().splitlines()]
    plain = [json.loads(line) for line in (tmp_path / "none" / "scenes.jsonl").read_text().splitlines()]
    records = json.loads((tmp_path / "some" / "instructions.json").read_text())
    unknown = [r for r in records if r["conversations"][1]["value"] == UNKNOWN_ANSWER]
    assert 10 <= len(unknown) <= 30
    for record in unknown:  # every question on such a picture gets the same answer, and the tower sees no object
        assert {turn["value"] for turn in record["conversations"][1::2]} == {UNKNOWN_ANSWER}
        index = int(record["id"][3:])
        assert scenes[index]["cells"] == [0] * 9 and scenes[index]["word"] == 0
    # the other pictures are those of a world without unknown pictures (their own random stream)
    kept = [i for i, record in enumerate(records) if record not in unknown]
    for index in kept:
        assert scenes[index] == plain[index]
        name = scenes[index]["image"]
        assert (tmp_path / "some" / name).read_bytes() == (tmp_path / "none" / name).read_bytes()
    world = json.loads((tmp_path / "some" / "world.json").read_text())
    assert world["unknown_share"] == 0.5 and world["question_types"].get("image/unknown", 0) > 0
    # busy, many-coloured, and not one of the world's shapes on a plain background
    picture = np.asarray(render_unknown_picture(random.Random(3)), np.float32)
    assert len(np.unique(picture.reshape(-1, 3) // 32, axis=0)) > 40
    assert {q["type"] for q in unknown_questions(random.Random(3))} == {"unknown"}
    with pytest.raises(ValueError, match="unknown_share must lie in"):
        generate_randomized(tmp_path / "x", seed=4, num_images=1, num_videos=0, unknown_share=1.5)
    assert main(["data", "synth", "--out", str(tmp_path / "g"), "--images", "2", "--unknown-share", "0.1"]) == 2
    assert "--unknown-share belongs to --world randomized" in capsys.readouterr().err
