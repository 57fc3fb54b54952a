"""A seeded synthetic visual world: shapes, text and short videos with captions and questions.

Nothing pretrained can be downloaded offline, so the shipped model learns on this world. Images are 96 px
(an 8 x 8 patch grid for the tiny tower), videos 2-6 s at 4 fps with events aligned to whole seconds, so
the 1-frame-per-second sampler sees each of them. Records use the LLaVA JSON format. This grid world is
`llava-mini data synth`'s default (the shipped model's data); `--world randomized` draws the same vocabulary
with wide variation (`randomized.py`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from llava_mini.data.records import write_world_files
from llava_mini.processing.video import write_video

logger = logging.getLogger(__name__)

IMAGE_SIZE = 96
CELL = IMAGE_SIZE // 3
VIDEO_FPS = 4
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
}
BACKGROUND = (128, 128, 128)
SHAPES = ("circle", "square", "triangle", "star", "cross")
WORDS = ("cat", "dog", "sun", "box", "car", "hat", "cup", "key", "map", "pen",
         "bus", "egg", "fox", "jam", "owl", "pig", "toy", "van", "web", "zip")
NUMBER_WORDS = {0: "0", 1: "1", 2: "2", 3: "3", 4: "4"}

PHRASES = {
    "color": ("What colour is the {shape}?", "What is the colour of the {shape}?", "Which colour does the {shape} have?"),
    "shape": ("What shape is the {colour} object?", "Which shape is {colour}?", "What is the shape of the {colour} object?"),
    "count_all": ("How many objects are there?", "How many shapes are in the image?", "Count the objects in the image."),
    "count_shape": ("How many {shapes} are there?", "How many {shapes} can you see?", "Count the {shapes}."),
    "position": (
        "Where is the {a} relative to the {b}?",
        "Is the {a} left, right, above or below the {b}?",
        "What is the position of the {a} compared with the {b}?",
    ),
    "place": ("Where is the {name}?", "In which part of the image is the {name}?", "Where in the image is the {name}?"),
    "existence": ("Is there a {colour} {shape} in the image?", "Do you see a {colour} {shape}?", "Does the image contain a {colour} {shape}?"),
    "text": ("What word is written in the image?", "What does the text say?", "Read the word in the image."),
    "motion": ("Which direction does the {shape} move?", "Where is the {shape} moving?", "In which direction is the {shape} going?"),
    "order_first": ("Which object appeared first?", "Which shape appears first?", "What was the first object to appear?"),
    "order_last": ("Which object appeared last?", "Which shape appears last?", "What was the last object to appear?"),
    "event_count": ("How many times does the {shape} appear?", "How often does the {shape} show up?", "Count how many times the {shape} appears."),
    "scene_change": ("Does the scene change?", "Does the background change during the video?", "Is there a scene change?"),
    "scene_end": ("What colour is the background at the end?", "Which colour is the background in the end?", "What is the final background colour?"),
    "caption_image": ("Describe the image briefly.", "Give a short description of the image.", "What is in the image?"),
    "caption_video": ("Describe the video briefly.", "What happens in the video?", "Give a short description of the video."),
}


@dataclass(frozen=True)
class Thing:
    """An object in a scene: shape, colour and the centre of its cell (pixels)."""

    shape: str
    colour: str
    x: int
    y: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def cell(self) -> int:
        """Index of the 3 x 3 cell holding the object's centre, row by row from the top left."""
        return (self.y // CELL) * 3 + self.x // CELL


def draw_thing(draw: ImageDraw.ImageDraw, thing: Thing) -> None:
    half = thing.size // 2
    x, y, fill = thing.x, thing.y, COLOURS[thing.colour]
    box = (x - half, y - half, x + half, y + half)
    if thing.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif thing.shape == "square":
        draw.rectangle(box, fill=fill)
    elif thing.shape == "triangle":
        draw.polygon([(x, y - half), (x - half, y + half), (x + half, y + half)], fill=fill)
    elif thing.shape == "star":
        draw.polygon(star_points(x, y, half), fill=fill)
    elif thing.shape == "cross":
        bar = max(3, thing.size // 4)
        draw.rectangle((x - half, y - bar, x + half, y + bar), fill=fill)
        draw.rectangle((x - bar, y - half, x + bar, y + half), fill=fill)
    else:
        raise ValueError(f"unknown shape {thing.shape!r}")


def star_points(x: int, y: int, radius: int) -> list[tuple[float, float]]:
    """The ten corners of a five-pointed star of outer radius `radius`."""
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.45
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((x + r * math.cos(angle), y + r * math.sin(angle)))
    return points


def render(things: list[Thing], background: tuple[int, int, int] = BACKGROUND, size: int = IMAGE_SIZE) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for thing in things:
        draw_thing(draw, thing)
    return image


def render_word(word: str, colour: str, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=30)
    text = word.upper()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (IMAGE_SIZE - (right - left)) // 2 - left + rng.randint(-4, 4)
    y = (IMAGE_SIZE - (bottom - top)) // 2 - top + rng.randint(-8, 8)
    draw.text((x, y), text, fill=COLOURS[colour], font=font)
    return image


def random_scene(rng: random.Random, count: int) -> list[Thing]:
    """`count` objects with distinct (shape, colour) in distinct cells of a 3 x 3 grid."""
    cells = rng.sample(range(9), count)
    kinds = rng.sample([(s, c) for s in SHAPES for c in COLOURS], count)
    return [
        Thing(shape, colour, (cell % 3) * CELL + CELL // 2, (cell // 3) * CELL + CELL // 2, rng.randint(20, 26))
        for cell, (shape, colour) in zip(cells, kinds, strict=True)
    ]


def scene_labels(things: list[Thing], word: str | None = None) -> dict:
    """Dense labels of an image for vision-tower pre-training: per 3 x 3 cell 0 (empty) or
    1 + shape * len(COLOURS) + colour, and 0 (no word) or 1 + the word's index."""
    cells = [0] * 9
    colours = list(COLOURS)
    for thing in things:
        cells[thing.cell] = 1 + SHAPES.index(thing.shape) * len(colours) + colours.index(thing.colour)
    return {"cells": cells, "word": 0 if word is None else 1 + WORDS.index(word)}


NUM_CELL_CLASSES = 1 + len(SHAPES) * len(COLOURS)
NUM_WORD_CLASSES = 1 + len(WORDS)


def with_article(noun_phrase: str) -> str:
    """'orange star' -> 'an orange star', 'red star' -> 'a red star'."""
    return f"{'an' if noun_phrase[0] in 'aeiou' else 'a'} {noun_phrase}"


# Where each 3 x 3 cell lies (row by row from the top left): as a short answer, and as a caption says it.
CELL_NAMES = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")
CELL_PLACES = tuple(
    f"{'in' if name == 'centre' else 'on' if name in ('left', 'right') else 'at'} the {name}" for name in CELL_NAMES
)
# Where a moving object starts, by its direction: the edge it leaves from.
MOTION_START = {"left": CELL_PLACES[5], "right": CELL_PLACES[3], "up": CELL_PLACES[7], "down": CELL_PLACES[1]}


def describe(things: list[Thing]) -> str:
    """A caption naming every object and its place, in reading order: 'a red circle at the top left and ...'."""
    ordered = sorted(things, key=lambda t: (t.y, t.x))
    names = [f"{with_article(t.name)} {CELL_PLACES[t.cell]}" for t in ordered]
    return (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]) + "."


def unique_by(things: list[Thing], attribute: str) -> list[Thing]:
    counts = Counter(getattr(t, attribute) for t in things)
    return [t for t in things if counts[getattr(t, attribute)] == 1]


def relation(a: Thing, b: Thing) -> str | None:
    """left/right/above/below when a and b share a row or a column; None when ambiguous."""
    if a.y == b.y and a.x != b.x:
        return "left" if a.x < b.x else "right"
    if a.x == b.x and a.y != b.y:
        return "above" if a.y < b.y else "below"
    return None


def phrase(rng: random.Random, kind: str, **slots: str) -> str:
    return rng.choice(PHRASES[kind]).format(**slots)


def image_questions(rng: random.Random, things: list[Thing], popular: list[tuple[str, str]]) -> list[dict]:
    """All question types answerable for a scene, each a dict(question, answer, type[, pope_split])."""
    questions = []
    shapes_unique = unique_by(things, "shape")
    if shapes_unique:
        t = rng.choice(shapes_unique)
        questions.append(dict(question=phrase(rng, "color", shape=t.shape), answer=t.colour, type="color"))
    colours_unique = unique_by(things, "colour")
    if colours_unique:
        t = rng.choice(colours_unique)
        questions.append(dict(question=phrase(rng, "shape", colour=t.colour), answer=t.shape, type="shape"))
    if rng.random() < 0.5:
        questions.append(dict(question=phrase(rng, "count_all"), answer=NUMBER_WORDS[len(things)], type="count"))
    else:
        shape = rng.choice(SHAPES)
        number = sum(t.shape == shape for t in things)
        plural = shape + ("es" if shape.endswith("s") else "s")
        questions.append(dict(question=phrase(rng, "count_shape", shapes=plural), answer=NUMBER_WORDS[number], type="count"))
    pairs = [(a, b, relation(a, b)) for a in things for b in things if a is not b]
    pairs = [p for p in pairs if p[2] is not None]
    if pairs:
        a, b, answer = rng.choice(pairs)
        questions.append(dict(question=phrase(rng, "position", a=a.name, b=b.name), answer=answer, type="position"))
    questions.append(existence_question(rng, things, popular))
    return questions


def place_questions(rng: random.Random, things: list[Thing], count: int) -> list[dict]:
    """Up to `count` questions on where single objects are ("Where is the red circle?" -> "top left")."""
    return [
        dict(question=phrase(rng, "place", name=t.name), answer=CELL_NAMES[t.cell], type="place")
        for t in rng.sample(things, min(count, len(things)))
    ]


def existence_question(rng: random.Random, things: list[Thing], popular: list[tuple[str, str]]) -> dict:
    """POPE-style yes/no: present objects, or absent ones drawn at random, among popular ones, or adversarially."""
    present = {(t.shape, t.colour) for t in things}
    split = rng.choice(("random", "popular", "adversarial"))
    if rng.random() < 0.5:
        shape, colour = rng.choice(sorted(present))
        answer = "yes"
    else:
        absent = [(s, c) for s in SHAPES for c in COLOURS if (s, c) not in present]
        if split == "popular":
            candidates = [k for k in popular if k not in present] or absent
        elif split == "adversarial":
            candidates = [k for k in absent if any(k[0] == s or k[1] == c for s, c in present)] or absent
        else:
            candidates = absent
        shape, colour = rng.choice(candidates)
        answer = "no"
    question = phrase(rng, "existence", colour=colour, shape=shape)
    return dict(question=question, answer=answer, type="existence", pope_split=split)


def make_video(rng: random.Random, kind: str) -> tuple[list[Image.Image], str, list[dict]]:
    """Frames (4 fps), a caption and the questions of one video of the given kind."""
    seconds = rng.randint(2, 6)
    frames: list[Image.Image] = []
    if kind == "motion":
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        direction = rng.choice(("left", "right", "up", "down"))
        start, end = 18, IMAGE_SIZE - 18
        other = rng.randint(24, IMAGE_SIZE - 24)
        total = seconds * VIDEO_FPS
        for i in range(total):
            progress = start + (end - start) * i / max(1, total - 1)
            along = progress if direction in ("right", "down") else IMAGE_SIZE - progress
            x, y = (along, other) if direction in ("left", "right") else (other, along)
            frames.append(render([Thing(shape, colour, int(x), int(y), 24)]))
        caption = f"{with_article(f'{colour} {shape}')} starts {MOTION_START[direction]} and moves {direction}."
        questions = [dict(question=phrase(rng, "motion", shape=shape), answer=direction, type="motion")]
    elif kind == "order":
        count = min(seconds, rng.randint(2, 3))
        scene = random_scene(rng, count)
        for second in range(seconds):
            visible = scene[: min(count, second + 1)]
            frames.extend([render(visible)] * VIDEO_FPS)
        first, last = scene[0], scene[count - 1]
        caption = "objects appear one after another: " + ", then ".join(with_article(t.name) for t in scene[:count]) + "."
        questions = [
            dict(question=phrase(rng, "order_first"), answer=first.shape, type="order"),
            dict(question=phrase(rng, "order_last"), answer=last.shape, type="order"),
        ]
    elif kind == "event_count":
        times = rng.randint(1, 3)
        seconds = 2 * times + rng.randint(0, 1)
        thing = random_scene(rng, 1)[0]
        pattern = [second % 2 == 0 and second // 2 < times for second in range(seconds)]
        for on in pattern:
            frames.extend([render([thing] if on else [])] * VIDEO_FPS)
        caption = f"{with_article(thing.name)} appears {times} times."
        questions = [dict(question=phrase(rng, "event_count", shape=thing.shape), answer=str(times), type="event_count")]
    elif kind == "scene_change":
        seconds = max(seconds, 2)
        first, second_colour = rng.sample(list(COLOURS), 2)
        change = rng.random() < 0.5
        switch = rng.randint(1, seconds - 1)
        for second in range(seconds):
            colour = second_colour if change and second >= switch else first
            frames.extend([render([], COLOURS[colour])] * VIDEO_FPS)
        end_colour = second_colour if change else first
        caption = f"the background turns from {first} to {second_colour}." if change else f"a still {first} background."
        questions = [
            dict(question=phrase(rng, "scene_change"), answer="yes" if change else "no", type="scene_change"),
            dict(question=phrase(rng, "scene_end"), answer=end_colour, type="scene_change"),
        ]
    else:
        raise ValueError(f"unknown video kind {kind!r}")
    return frames, caption, questions


VIDEO_KINDS = ("motion", "order", "event_count", "scene_change")


def video_kind_schedule(weights: dict[str, int] | None = None) -> tuple[str, ...]:
    """The cycle of video kinds: each kind `weights[kind]` times (1 unless given), in VIDEO_KINDS order.

    `{"motion": 3}` gives (motion, motion, motion, order, event_count, scene_change), so a training set can
    hold more of the kinds that need more examples while a held-out set keeps the balanced default.
    """
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(VIDEO_KINDS))
    if unknown:
        raise ValueError(f"unknown video kind(s) {unknown}; choose from {list(VIDEO_KINDS)}")
    for kind, weight in weights.items():
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise ValueError(f"video kind weight for {kind!r} must be a whole number >= 0, got {weight!r}")
    schedule = tuple(kind for kind in VIDEO_KINDS for _ in range(weights.get(kind, 1)))
    if not schedule:
        raise ValueError("every video kind has weight 0; give at least one kind a weight >= 1")
    return schedule


def parse_video_mix(text: str) -> dict[str, int]:
    """'motion=3,order=2' -> {'motion': 3, 'order': 2} (for --video-mix)."""
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(f"--video-mix item {item!r} is not KIND=COUNT (e.g. motion=3)")
        weights[kind.strip()] = int(value)
    try:
        video_kind_schedule(weights)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--video-mix: {error}") from None
    return weights


def conversation(marker: str, caption_or_qas: list[tuple[str, str]]) -> list[dict]:
    turns = []
    for index, (question, answer) in enumerate(caption_or_qas):
        prefix = f"{marker}\n" if index == 0 and marker else ""
        turns += [{"from": "human", "value": prefix + question}, {"from": "gpt", "value": answer}]
    return turns


def generate_dataset(
    out_dir: str | Path,
    seed: int,
    num_images: int,
    num_videos: int,
    questions_per_image: int = 4,
    text_fraction: float = 0.15,
    video_mix: dict[str, int] | None = None,
    place_turns: int = 0,
) -> dict:
    """Write images/, videos/, captions.json, instructions.json, questions.jsonl, scenes.jsonl (dense labels
    of each image, for the tiny recipe's vision pre-training) and world.json to out_dir.

    video_mix: how often each video kind comes in the cycle of kinds (see `video_kind_schedule`).
    place_turns: questions on where single objects are, added at the end of each training conversation of
        an image with objects (grounding supervision for the relative-position questions). They come from
        their own random stream, so the other files are the same with or without them.
    """
    schedule = video_kind_schedule(video_mix)
    if place_turns < 0:
        raise ValueError(f"place_turns must be >= 0, got {place_turns}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    place_rng = random.Random(f"{seed}/place-turns")
    popular = rng.sample([(s, c) for s in SHAPES for c in COLOURS], 6)
    captions, instructions, evaluation, scenes = [], [], [], []
    for index in tqdm(range(num_images), desc="images", unit="img", leave=False):
        name = f"images/{index:06d}.png"
        if rng.random() < text_fraction:
            word, colour = rng.choice(WORDS), rng.choice(["white", "black", "yellow", "blue", "red"])
            image = render_word(word, colour, rng)
            caption = f'the word "{word}" written in {colour}.'
            questions = [dict(question=phrase(rng, "text"), answer=word, type="text")]
            labels = scene_labels([], word)
        else:
            things = random_scene(rng, rng.randint(1, 4))
            image = render(things)
            caption = describe(things)
            questions = image_questions(rng, things, popular)
            labels = scene_labels(things)
        image.save(out / name)
        scenes.append({"image": name, **labels})
        add_records(rng, f"img{index:06d}", "image", name, caption, questions, questions_per_image,
                    captions, instructions, evaluation)
        if place_turns and labels["word"] == 0:
            extra = place_questions(place_rng, things, place_turns)
            instructions[-1]["conversations"] += conversation("", [(q["question"], q["answer"]) for q in extra])
    for index in tqdm(range(num_videos), desc="videos", unit="video", leave=False):
        name = f"videos/{index:06d}.mp4"
        frames, caption, questions = make_video(rng, schedule[index % len(schedule)])
        write_video(out / name, frames, VIDEO_FPS)
        add_records(rng, f"vid{index:06d}", "video", name, caption, questions, questions_per_image,
                    captions, instructions, evaluation)
    world = {
        "seed": seed, "images": num_images, "videos": num_videos, "questions_per_image": questions_per_image,
        "text_fraction": text_fraction, "image_size": IMAGE_SIZE, "video_fps": VIDEO_FPS,
        "questions": len(evaluation), "instruction_records": len(instructions),
        "place_turns": place_turns, "video_kinds": dict(Counter(schedule[index % len(schedule)] for index in range(num_videos))),
    }
    write_world_files(out, world, captions=captions, instructions=instructions, questions=evaluation, scenes=scenes)
    return world


def add_records(
    rng: random.Random, record_id: str, modality: str, path: str, caption: str, questions: list[dict],
    questions_per_item: int, captions: list, instructions: list, evaluation: list,
) -> None:
    marker = "<image>" if modality == "image" else "<video>"
    caption_prompt = phrase(rng, "caption_image" if modality == "image" else "caption_video")
    captions.append({"id": record_id, modality: path, "conversations": conversation(marker, [(caption_prompt, caption)])})
    chosen = rng.sample(questions, min(len(questions), questions_per_item))
    qas = [(q["question"], q["answer"]) for q in chosen]
    instructions.append({"id": record_id, modality: path, "conversations": conversation(marker, qas)})
    held_out = rng.choice(questions)
    entry = {"id": record_id, modality: path, "question": held_out["question"], "answer": held_out["answer"],
             "type": held_out["type"], "modality": modality}
    if "pope_split" in held_out:
        entry["pope_split"] = held_out["pope_split"]
    evaluation.append(entry)


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--world", choices=("grid", "randomized"), default="grid",
                        help="grid: the 96 px 3 x 3 world the shipped model was trained on (default, so its recipe "
                             "regenerates byte for byte); randomized: free sizes, backgrounds, fonts, frame rates "
                             "and phrasings (data/randomized.py), for robust training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=whole_number(0), default=1000)
    parser.add_argument("--videos", type=whole_number(0), default=200)
    parser.add_argument("--questions-per-image", type=whole_number(1), default=4,
                        help="question turns per training record")
    parser.add_argument("--text-fraction", type=fraction, default=0.15, help="share of images showing a word (grid)")
    parser.add_argument("--place-turns", type=whole_number(0), default=0, metavar="N",
                        help="questions on where single objects are, added to each training conversation (grid)")
    parser.add_argument("--workers", type=whole_number(1), default=1,
                        help="processes drawing the randomized world (same files for any number)")
    parser.add_argument("--unknown-share", type=fraction, default=None, metavar="P",
                        help="share of pictures holding none of the world's things, answered \"I can only describe "
                             "simple shapes, colours, words and motions.\" (randomized; default 0.05)")
    parser.add_argument("--video-mix", type=parse_video_mix, default=None, metavar="KIND=N,...",
                        help=f"relative count of each video kind (default 1 each; kinds: {', '.join(VIDEO_KINDS)})")


def run_synth(args: argparse.Namespace) -> int:
    if args.images + args.videos == 0:
        raise ValueError("nothing to generate: --images and --videos are both 0")
    if args.world == "randomized":
        from llava_mini.data.randomized import UNKNOWN_SHARE, generate_randomized

        if args.place_turns or args.text_fraction != 0.15:
            raise ValueError("--place-turns and --text-fraction belong to --world grid; the randomized world asks "
                             "where objects are among its own questions and draws words in 15% of its pictures")
        share = UNKNOWN_SHARE if args.unknown_share is None else args.unknown_share
        world = generate_randomized(args.out, args.seed, args.images, args.videos, args.questions_per_image,
                                    args.video_mix, args.workers, share)
        print(json.dumps(world, indent=2))
        return 0
    if args.unknown_share is not None:
        raise ValueError("--unknown-share belongs to --world randomized")
    if args.workers != 1:
        raise ValueError("--workers belongs to --world randomized; the grid world is drawn from one random stream")
    world = generate_dataset(args.out, args.seed, args.images, args.videos, args.questions_per_image, args.text_fraction,
                             args.video_mix, args.place_turns)
    print(json.dumps(world, indent=2))
    return 0
