"""The randomized synthetic world: the grid world's vocabulary drawn with wide variation (issue 17).

The grid world (`synthetic.py`) draws every object on one grey 96 px picture, in a 3 x 3 grid, at one
scale, with hard edges, and asks in one wording; a model trained only on it answers from those habits. This
world keeps the vocabulary (shapes, colours, words, directions, counts) and varies everything else, each
factor drawn from the seeded random stream:

- pictures 64-640 px on the long side, aspect 1:2 to 2:1 (the model pads them to a square);
- backgrounds: plain colours (white, black, neighbours of the objects' colours), gradients, noise, stripes
  and checks; every object's colour stays far from every colour of its background;
- objects at continuous positions and sizes, sometimes touching or partly covered, filled or outlined,
  slightly rotated, drawn at 4x and reduced (anti-aliased), colours jittered; then blur, noise, JPEG;
- words in matplotlib's DejaVu / STIX fonts, sizes, casings and slight rotations;
- videos at 4-30 fps, 2-8 s, any size and aspect, speed and background; events change on whole seconds,
  so the 1-frame-per-second sampler (midpoint of each second) sees each state;
- questions in many phrasings (color / colour, center / centre, digits and number words), short answers,
  and open questions ("Describe the image", "What happens in the video?") answered with a sentence naming
  every object, its colour and where it is.

Files and record format are those of the grid world (`llava-mini data synth --world randomized`); the
questions on descriptions carry their ground-truth objects for `llava-mini eval synth`.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from matplotlib import get_data_path
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

from llava_mini.data.records import write_world_files
from llava_mini.data.synthetic import (
    COLOURS,
    SHAPES,
    WORDS,
    conversation,
    star_points,
    video_kind_schedule,
    with_article,
)
from llava_mini.processing.video import write_video

SUPERSAMPLE = 4  # objects are drawn at 4x and reduced, for anti-aliased edges
MIN_CONTRAST = 110.0  # least RGB distance between an object's colour and any colour of its background
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
              "DejaVuSansMono.ttf", "DejaVuSans-Oblique.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf")
NUMBER_NAMES = ("zero", "one", "two", "three", "four")
# What the model says about a picture holding none of the world's things (a photograph, say).
UNKNOWN_ANSWER = "I can only describe simple shapes, colours, words and motions."
UNKNOWN_SHARE = 0.05  # of the pictures, drawn from their own random stream
PLACES = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")

# {color}: "color" or "colour"; {center}: "center" or "centre"; answers never change with the spelling.
PHRASES = {
    "color": ("What {color} is the {shape}?", "What is the {color} of the {shape}?", "Which {color} is the {shape}?",
              "The {shape} is what {color}?", "Tell me the {color} of the {shape}.", "what {color} is the {shape}",
              "Name the {color} of the {shape}.", "In what {color} is the {shape} drawn?"),
    "shape": ("What shape is the {colour} object?", "Which shape is {colour}?", "What is the {colour} shape?",
              "What kind of shape is the {colour} one?", "Name the shape that is {colour}.",
              "Which object is {colour}?", "what shape is {colour}"),
    "count_all": ("How many objects are there?", "How many shapes do you see?", "Count the shapes.",
                  "How many things are in the picture?", "What is the number of objects?",
                  "how many shapes are there"),
    "count_shape": ("How many {shapes} are there?", "How many {shapes} can you see?", "Count the {shapes}.",
                    "What is the number of {shapes} in the image?", "how many {shapes}"),
    "count_check": ("Are there {number} {shapes}?", "Is the number of {shapes} {number}?",
                    "Do you see exactly {number} {shapes}?"),
    "position": ("Where is the {a} relative to the {b}?", "Is the {a} left, right, above or below the {b}?",
                 "Where is the {a} compared to the {b}?", "What is the position of the {a} relative to the {b}?",
                 "Relative to the {b}, where is the {a}?"),
    "place": ("Where is the {name}?", "In which part of the image is the {name}?", "Where in the picture is the {name}?",
              "Which part of the image holds the {name}?"),
    "existence": ("Is there a {colour} {shape}?", "Is there a {colour} {shape} in the image?", "Do you see a {colour} {shape}?",
                  "Does the picture contain a {colour} {shape}?", "Can you find a {colour} {shape}?", "any {colour} {shape}?"),
    "text": ("What word is written in the image?", "What does the text say?", "Read the word.", "What is written here?",
             "Which word do you see?", "what does it say"),
    "motion": ("Which direction does the {shape} move?", "In which direction does the {colour} {shape} move?",
               "Where is the {shape} moving?", "Which way is the {shape} going?", "Where does the {shape} go?"),
    "order_first": ("Which object appeared first?", "Which shape appears first?", "What shape shows up first?",
                    "What was the first object to appear?"),
    "order_last": ("Which object appeared last?", "Which shape appears last?", "What shape shows up last?",
                   "What was the last object to appear?"),
    "event_count": ("How many times does the {shape} appear?", "How often does the {shape} show up?",
                    "Count how many times the {shape} appears.", "How many times is the {shape} shown?"),
    "scene_change": ("Does the scene change?", "Does the background change?", "Is there a scene change?",
                     "Does the background {color} change during the video?"),
    "scene_end": ("What {color} is the background at the end?", "What is the final background {color}?",
                  "Which {color} is the background in the end?"),
    "describe_image": ("Describe the image.", "Describe the image briefly.", "What is in the picture?",
                       "What is in the image?", "What do you see?", "Give a short description of the image."),
    "describe_video": ("What happens in the video?", "Describe the video.", "Describe the video briefly.",
                       "What do you see in the video?"),
}


@dataclass(frozen=True)
class Item:
    """An object drawn in a picture: shape, colour name, its drawn RGB, centre and size (pixels, floats)."""

    shape: str
    colour: str
    rgb: tuple[int, int, int]
    x: float
    y: float
    size: float
    angle: float = 0.0
    outline: bool = False

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def phrase(rng: random.Random, kind: str, **slots: str) -> str:
    spelling = rng.random() < 0.5
    return rng.choice(PHRASES[kind]).format(color="color" if spelling else "colour",
                                            center="center" if spelling else "centre", **slots)


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return math.dist(a, b)


def jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)


def random_colour(rng: random.Random) -> tuple[int, int, int]:
    """A background colour: a grey from white to black, a neighbour of a named colour, or any colour."""
    roll = rng.random()
    if roll < 0.25:
        level = rng.choice((255, 245, 230, 200, 128, 60, 0)) if rng.random() < 0.6 else rng.randint(0, 255)
        return (level, level, level)
    if roll < 0.6:
        return jitter(rng, COLOURS[rng.choice(list(COLOURS))], 60)
    return (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))


def background(rng: random.Random, width: int, height: int) -> tuple[Image.Image, list[tuple[int, int, int]]]:
    """A plain, gradient, noise, striped or checked background and the colours it holds (for contrast checks)."""
    kind = rng.choice(("plain", "plain", "gradient", "noise", "stripes", "checks"))
    first = random_colour(rng)
    if kind == "plain":
        return Image.new("RGB", (width, height), first), [first]
    second = jitter(rng, first, 70) if kind != "gradient" else random_colour(rng)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b = np.array(first, np.float32), np.array(second, np.float32)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        pixels = a + (b - a) * t[..., None]
        return Image.fromarray(pixels.round().astype(np.uint8)), [first, second]
    if kind == "noise":
        sigma = rng.uniform(8, 30)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, sigma, (height, width, 3))
        pixels = np.clip(a + noise, 0, 255)
        spread = [first, tuple(min(255, int(c + 2 * sigma)) for c in first),
                  tuple(max(0, int(c - 2 * sigma)) for c in first)]
        return Image.fromarray(pixels.round().astype(np.uint8)), spread
    period = rng.uniform(4, 24) * max(width, height) / 160
    if kind == "stripes":
        angle = rng.uniform(0, math.pi)
        mask = ((xs * math.cos(angle) + ys * math.sin(angle)) // period) % 2 == 0
    else:
        mask = ((xs // period) + (ys // period)) % 2 == 0
    pixels = np.where(mask[..., None], a, b)
    return Image.fromarray(pixels.astype(np.uint8)), [first, second]


def contrasting_colours(backdrop: list[tuple[int, int, int]]) -> list[str]:
    """Colour names whose colours lie far from every colour of the background."""
    return [name for name, rgb in COLOURS.items() if all(distance(rgb, c) >= MIN_CONTRAST for c in backdrop)]


def picture_size(rng: random.Random, smallest: int = 64, largest: int = 640) -> tuple[int, int]:
    """(width, height): long side `smallest`-`largest` px, aspect ratio 1:2 to 2:1 (log-uniform)."""
    long_side = round(math.exp(rng.uniform(math.log(smallest), math.log(largest))))
    ratio = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    short_side = max(smallest // 2, round(long_side * min(ratio, 1 / ratio)))
    return (long_side, short_side) if ratio >= 1 else (short_side, long_side)


def outline_points(shape: str, x: float, y: float, size: float, angle: float) -> list[tuple[float, float]]:
    """The corners of a polygonal shape of width `size` centred on (x, y), turned by `angle` radians."""
    half = size / 2
    if shape == "square":
        corners = [(-half, -half), (half, -half), (half, half), (-half, half)]
    elif shape == "triangle":
        corners = [(0.0, -half), (half, half * 0.8), (-half, half * 0.8)]
    elif shape == "star":
        corners = [(px, py) for px, py in star_points(0, 0, half)]
    elif shape == "cross":
        bar = size / 6
        corners = [(-bar, -half), (bar, -half), (bar, -bar), (half, -bar), (half, bar), (bar, bar),
                   (bar, half), (-bar, half), (-bar, bar), (-half, bar), (-half, -bar), (-bar, -bar)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    cos, sin = math.cos(angle), math.sin(angle)
    return [(x + px * cos - py * sin, y + px * sin + py * cos) for px, py in corners]


def draw_item(canvas: Image.Image, item: Item) -> None:
    """Draw `item` onto `canvas` with anti-aliased edges (a 4x mask reduced with a box filter)."""
    margin = item.size * 0.8 + 2
    left, top = math.floor(item.x - margin), math.floor(item.y - margin)
    side = math.ceil(2 * margin) + 1
    mask = Image.new("L", (side * SUPERSAMPLE, side * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, size = (item.x - left) * SUPERSAMPLE, (item.y - top) * SUPERSAMPLE, item.size * SUPERSAMPLE
    width = max(SUPERSAMPLE * 2, round(size * 0.14))
    if item.shape == "circle":
        box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        draw.ellipse(box, fill=None if item.outline else 255, outline=255 if item.outline else None,
                     width=width if item.outline else 1)
    else:
        points = outline_points(item.shape, cx, cy, size, item.angle)
        if item.outline:
            draw.line([*points, points[0], points[1]], fill=255, width=width, joint="curve")
        else:
            draw.polygon(points, fill=255)
    alpha = mask.resize((side, side), Image.Resampling.BOX)
    canvas.paste(Image.new("RGB", (side, side), item.rgb), (left, top), alpha)


def place_items(rng: random.Random, width: int, height: int, count: int, colours: list[str],
                overlap: bool) -> list[Item]:
    """Up to `count` objects of distinct (shape, colour), at free positions and sizes inside the picture.

    overlap=True lets objects touch or partly cover each other (centres at least 0.7 of their radii apart)."""
    kinds = rng.sample([(s, c) for s in SHAPES for c in colours], min(count, len(SHAPES) * len(colours)))
    long_side, short_side = max(width, height), min(width, height)
    items: list[Item] = []
    for shape, colour in kinds:
        for _ in range(40):
            size = min(rng.uniform(0.1, 0.24) * long_side, 0.45 * short_side)
            size = max(size, 7.0)
            x = rng.uniform(size * 0.6, width - size * 0.6)
            y = rng.uniform(size * 0.6, height - size * 0.6)
            spacing = 0.7 if overlap else 1.1
            if all(math.dist((x, y), (o.x, o.y)) >= spacing * (size + o.size) / 2 for o in items):
                rgb = jitter(rng, COLOURS[colour], 18)
                angle = math.radians(rng.uniform(-15, 15)) if rng.random() < 0.6 else 0.0
                items.append(Item(shape, colour, rgb, x, y, size, angle, rng.random() < 0.2))
                break
    return items


def degrade(rng: random.Random, image: Image.Image) -> tuple[Image.Image, bool]:
    """Blur, noise and JPEG artefacts, each sometimes; returns the image and whether to save it as JPEG."""
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * max(image.size) / 200))
    if rng.random() < 0.3:
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 10), (image.height, image.width, 3))
        image = Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).round().astype(np.uint8))
    return image, rng.random() < 0.35


def font_path(name: str) -> Path:
    return Path(get_data_path()) / "fonts" / "ttf" / name


def render_word_picture(rng: random.Random, word: str) -> tuple[Image.Image, str]:
    """A word in a random font, size, casing and slight rotation on a random background; returns the
    picture and the ink's colour name."""
    width, height = picture_size(rng)
    canvas, backdrop = background(rng, width, height)
    inks = contrasting_colours(backdrop)
    if not inks:
        canvas, inks = Image.new("RGB", (width, height), COLOURS["white"]), ["black", "blue", "red"]
    colour = rng.choice(inks)
    text = rng.choice((word.upper(), word.lower(), word.capitalize()))
    font = ImageFont.truetype(str(font_path(rng.choice(FONT_FILES))), 100)
    left, top, right, bottom = font.getbbox(text)
    layer = Image.new("L", (right - left + 20, bottom - top + 20), 0)
    ImageDraw.Draw(layer).text((10 - left, 10 - top), text, fill=255, font=font)
    layer = layer.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BICUBIC, expand=True)
    scale = min(rng.uniform(0.35, 0.8) * width / layer.width, 0.7 * height / layer.height)
    layer = layer.resize((max(1, round(layer.width * scale)), max(1, round(layer.height * scale))), Image.Resampling.LANCZOS)
    x = rng.randint(0, max(0, width - layer.width))
    y = rng.randint(0, max(0, height - layer.height))
    canvas.paste(Image.new("RGB", layer.size, jitter(rng, COLOURS[colour], 15)), (x, y), layer)
    return canvas, colour


def place_of(item: Item, width: int, height: int, margin: float = 0.04) -> str | None:
    """The picture's ninth holding the item's centre; None when it lies within `margin` of a border line."""
    column, row = item.x / width * 3, item.y / height * 3
    if any(abs(value - line) < 3 * margin for value in (column, row) for line in (1, 2)):
        return None
    return PLACES[min(2, int(row)) * 3 + min(2, int(column))]


def relation(a: Item, b: Item) -> str | None:
    """left / right / above / below of a relative to b when one axis clearly dominates; else None."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dx) >= 1.5 * abs(dy) and abs(dx) >= 0.5 * (a.size + b.size) / 2:
        return "left" if dx < 0 else "right"
    if abs(dy) >= 1.5 * abs(dx) and abs(dy) >= 0.5 * (a.size + b.size) / 2:
        return "above" if dy < 0 else "below"
    return None


def describe(items: list[Item], width: int, height: int) -> str:
    """'A red circle at the top left and a blue square on the right.' (reading order; places by ninths)."""
    parts = []
    for item in sorted(items, key=lambda t: (round(t.y / height * 3 - 0.5), t.x)):
        place = place_of(item, width, height, margin=0.0)
        where = "in the centre" if place == "centre" else f"on the {place}" if place in ("left", "right") else f"at the {place}"
        parts.append(f"{with_article(item.name)} {where}")
    text = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
    return text[0].upper() + text[1:] + "."


def objects_of(items: list[Item]) -> list[dict]:
    return [{"shape": item.shape, "colour": item.colour} for item in items]


def unique_by(items: list[Item], attribute: str) -> list[Item]:
    counts = Counter(getattr(t, attribute) for t in items)
    return [t for t in items if counts[getattr(t, attribute)] == 1]


def image_questions(rng: random.Random, items: list[Item], width: int, height: int, caption: str) -> list[dict]:
    """Every question type answerable for a picture, each a dict(question, answer, type[, objects])."""
    questions = []
    if shapes_unique := unique_by(items, "shape"):
        t = rng.choice(shapes_unique)
        questions.append(dict(question=phrase(rng, "color", shape=t.shape), answer=t.colour, type="color"))
    if colours_unique := unique_by(items, "colour"):
        t = rng.choice(colours_unique)
        questions.append(dict(question=phrase(rng, "shape", colour=t.colour), answer=t.shape, type="shape"))
    roll = rng.random()
    if roll < 0.4:
        questions.append(dict(question=phrase(rng, "count_all"), answer=str(len(items)), type="count"))
    else:
        shape = rng.choice(SHAPES)
        number = sum(t.shape == shape for t in items)
        if roll < 0.75:
            questions.append(dict(question=phrase(rng, "count_shape", shapes=plural(shape)), answer=str(number), type="count"))
        else:
            asked = number if rng.random() < 0.5 else rng.choice([n for n in range(1, 5) if n != number])
            said = str(asked) if rng.random() < 0.5 else NUMBER_NAMES[asked]
            questions.append(dict(question=phrase(rng, "count_check", number=said, shapes=plural(shape)),
                                  answer="yes" if asked == number else "no", type="count"))
    pairs = [(a, b, relation(a, b)) for a in items for b in items if a is not b]
    if pairs := [p for p in pairs if p[2] is not None]:
        a, b, answer = rng.choice(pairs)
        questions.append(dict(question=phrase(rng, "position", a=a.name, b=b.name), answer=answer, type="position"))
    placed = [(t, place_of(t, width, height)) for t in items]
    if placed := [p for p in placed if p[1] is not None]:
        t, where = rng.choice(placed)
        questions.append(dict(question=phrase(rng, "place", name=t.name), answer=where, type="place"))
    present = {(t.shape, t.colour) for t in items}
    if rng.random() < 0.5:
        shape, colour = rng.choice(sorted(present))
    else:
        shape, colour = rng.choice([(s, c) for s in SHAPES for c in COLOURS if (s, c) not in present])
    questions.append(dict(question=phrase(rng, "existence", colour=colour, shape=shape),
                          answer="yes" if (shape, colour) in present else "no", type="existence"))
    questions.append(dict(question=phrase(rng, "describe_image"), answer=caption, type="describe",
                          objects=objects_of(items)))
    return questions


def render_unknown_picture(rng: random.Random) -> Image.Image:
    """A picture holding none of the world's things, drawn to look more like a photograph than a diagram:
    smooth fields of arbitrary colour, many irregular blobs, strokes and fine texture."""
    width, height = picture_size(rng, 96, 640)
    saturation = rng.uniform(0.2, 1.0)  # photographs are mostly muted: colours pulled towards a grey

    def any_colour() -> tuple[int, int, int]:
        grey = rng.randint(40, 220)
        return tuple(round(grey + saturation * (rng.randint(0, 255) - grey)) for _ in range(3))

    rows, columns = rng.randint(2, 6), rng.randint(2, 6)
    field = np.array([[any_colour() for _ in range(columns)] for _ in range(rows)], np.uint8)
    canvas = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.randint(6, 40)):
        colour = any_colour()
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.02, 0.25) * max(width, height)
        roll = rng.random()
        if roll < 0.55:  # an irregular blob: many corners at random distances, never one of the world's shapes
            corners = rng.randint(7, 16)
            points = [(x + radius * rng.uniform(0.3, 1.0) * math.cos(2 * math.pi * k / corners),
                       y + radius * rng.uniform(0.3, 1.0) * math.sin(2 * math.pi * k / corners)) for k in range(corners)]
            draw.polygon(points, fill=colour)
        elif roll < 0.85:  # a stroke
            points = [(x, y)] + [(x + rng.uniform(-radius, radius), y + rng.uniform(-radius, radius)) for _ in range(3)]
            draw.line(points, fill=colour, width=max(1, round(radius * rng.uniform(0.05, 0.3))))
        else:  # a patch of fine texture
            side = max(2, round(radius))
            texture = np.random.default_rng(rng.getrandbits(32)).normal(colour, rng.uniform(10, 60), (side, side, 3))
            canvas.paste(Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8)), (round(x), round(y)))
    return canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 2.0) * max(width, height) / 320))


def unknown_questions(rng: random.Random) -> list[dict]:
    """Questions about a picture without the world's things, each answered with `UNKNOWN_ANSWER`."""
    asked = [phrase(rng, "describe_image"), phrase(rng, "count_all"), phrase(rng, "text"),
             phrase(rng, "color", shape=rng.choice(SHAPES)), phrase(rng, "shape", colour=rng.choice(list(COLOURS)))]
    return [dict(question=question, answer=UNKNOWN_ANSWER, type="unknown") for question in asked]


def make_image(rng: random.Random) -> tuple[Image.Image, str, list[dict], dict]:
    """A picture (objects, or a word), its caption, its questions and its dense labels."""
    if rng.random() < 0.15:
        word = rng.choice(WORDS)
        image, colour = render_word_picture(rng, word)
        caption = f'The word "{word}" written in {colour}.'
        questions = [dict(question=phrase(rng, "text"), answer=word, type="text")]
        return image, caption, questions, {"cells": [0] * 9, "word": 1 + WORDS.index(word), "objects": []}
    for _ in range(20):
        width, height = picture_size(rng)
        canvas, backdrop = background(rng, width, height)
        colours = contrasting_colours(backdrop)
        if len(colours) >= 2:
            break
    else:
        canvas, colours = Image.new("RGB", (width, height), (128, 128, 128)), list(COLOURS)
    items = place_items(rng, width, height, rng.randint(1, 4), colours, overlap=rng.random() < 0.25)
    for item in items:
        draw_item(canvas, item)
    caption = describe(items, width, height)
    return canvas, caption, image_questions(rng, items, width, height, caption), cell_labels(items, width, height)


def cell_labels(items: list[Item], width: int, height: int) -> dict:
    """scenes.jsonl labels in the padded square the model sees: per 3 x 3 cell 0 or 1 + shape x colour
    (the last-drawn object wins a shared cell)."""
    side = max(width, height)
    left, top = (side - width) / 2, (side - height) / 2
    cells = [0] * 9
    for item in items:
        column = min(2, int((item.x + left) / side * 3))
        row = min(2, int((item.y + top) / side * 3))
        cells[row * 3 + column] = 1 + SHAPES.index(item.shape) * len(COLOURS) + list(COLOURS).index(item.colour)
    # each object's place and size in the padded square (fractions of its side), for labels per patch
    objects = [[SHAPES.index(item.shape), list(COLOURS).index(item.colour), round((item.x + left) / side, 4),
                round((item.y + top) / side, 4), round(item.size / 2 / side, 4)] for item in items]
    return {"cells": cells, "word": 0, "objects": objects}


def video_format(rng: random.Random) -> tuple[int, int, int, int]:
    """(fps, seconds, width, height) of a video: 4-30 fps, 2-8 s, long side 64-480 px, aspect 1:2 to 2:1."""
    width, height = picture_size(rng, 64, 480)
    return rng.randint(4, 30), rng.randint(2, 8), width, height


def make_video(rng: random.Random, kind: str) -> tuple[list[Image.Image], int, str, list[dict]]:
    """Frames, frame rate, caption and questions of one video of the given kind."""
    fps, seconds, width, height = video_format(rng)
    backdrop_image, backdrop = background(rng, width, height)
    colours = contrasting_colours(backdrop)
    if len(colours) < 3:
        backdrop_image, colours = Image.new("RGB", (width, height), (128, 128, 128)), list(COLOURS)
    frames: list[Image.Image] = []
    if kind == "motion":
        item = place_items(rng, width, height, 1, colours, overlap=False)[0]
        direction = rng.choice(("left", "right", "up", "down"))
        extent, half = (width, height) if direction in ("left", "right") else (height, width), item.size * 0.6
        travel = rng.uniform(0.4, 1.0) * (extent[0] - 2 * half)
        start = rng.uniform(half, extent[0] - half - travel)
        total = seconds * fps
        for i in range(total):
            along = start + travel * i / max(1, total - 1)
            along = along if direction in ("right", "down") else extent[0] - along
            moved = Item(item.shape, item.colour, item.rgb, along if direction in ("left", "right") else item.x,
                         along if direction in ("up", "down") else item.y, item.size, item.angle, item.outline)
            frame = backdrop_image.copy()
            draw_item(frame, moved)
            frames.append(frame)
        caption = f"{with_article(item.name).capitalize()} moves {direction}."
        questions = [dict(question=phrase(rng, "motion", shape=item.shape, colour=item.colour), answer=direction, type="motion")]
        objects = objects_of([item])
    elif kind == "order":
        count = min(seconds, rng.randint(2, 3))
        items = place_items(rng, width, height, count, colours, overlap=False)
        count = len(items)
        for second in range(seconds):
            frame = backdrop_image.copy()
            for item in items[: min(count, second + 1)]:
                draw_item(frame, item)
            frames.extend([frame] * fps)
        caption = "Objects appear one after another: " + ", then ".join(with_article(t.name) for t in items) + "."
        questions = [dict(question=phrase(rng, "order_first"), answer=items[0].shape, type="order"),
                     dict(question=phrase(rng, "order_last"), answer=items[-1].shape, type="order")]
        objects = objects_of(items)
    elif kind == "event_count":
        times = rng.randint(1, 3)
        seconds = 2 * times + rng.randint(0, 1)
        item = place_items(rng, width, height, 1, colours, overlap=False)[0]
        shown = backdrop_image.copy()
        draw_item(shown, item)
        for second in range(seconds):
            frames.extend([shown if second % 2 == 0 and second // 2 < times else backdrop_image] * fps)
        caption = f"{with_article(item.name).capitalize()} appears {times} time{'s' if times > 1 else ''}."
        questions = [dict(question=phrase(rng, "event_count", shape=item.shape), answer=str(times), type="event_count")]
        objects = objects_of([item])
    elif kind == "scene_change":
        seconds = max(seconds, 2)
        first, second_colour = rng.sample(list(COLOURS), 2)
        change = rng.random() < 0.5
        switch = rng.randint(1, seconds - 1)
        plates = {name: Image.new("RGB", (width, height), jitter(rng, COLOURS[name], 12)) for name in (first, second_colour)}
        for second in range(seconds):
            frames.extend([plates[second_colour if change and second >= switch else first]] * fps)
        end_colour = second_colour if change else first
        caption = f"The background turns from {first} to {second_colour}." if change else f"A still {first} background."
        questions = [dict(question=phrase(rng, "scene_change"), answer="yes" if change else "no", type="scene_change"),
                     dict(question=phrase(rng, "scene_end"), answer=end_colour, type="scene_change")]
        objects = []
    else:
        raise ValueError(f"unknown video kind {kind!r}")
    if objects:
        questions.append(dict(question=phrase(rng, "describe_video"), answer=caption, type="describe", objects=objects))
    return frames, fps, caption, questions


def add_records(rng: random.Random, record_id: str, modality: str, path: str, caption: str, questions: list[dict],
                questions_per_item: int, captions: list, instructions: list, evaluation: list) -> None:
    """A caption record, a training conversation of up to `questions_per_item` questions and one held-out
    question (a description, with its `objects`, about one time in ten)."""
    marker = f"<{modality}>"
    prompt = phrase(rng, "describe_image" if modality == "image" else "describe_video")
    captions.append({"id": record_id, modality: path, "conversations": conversation(marker, [(prompt, caption)])})
    chosen = rng.sample(questions, min(len(questions), questions_per_item))
    instructions.append({"id": record_id, modality: path,
                         "conversations": conversation(marker, [(q["question"], q["answer"]) for q in chosen])})
    short = [q for q in questions if q["type"] != "describe"]
    described = [q for q in questions if q["type"] == "describe"]
    held_out = rng.choice(described if described and (not short or rng.random() < 0.1) else short)
    entry = {"id": record_id, modality: path, "question": held_out["question"], "answer": held_out["answer"],
             "type": held_out["type"], "modality": modality}
    if "objects" in held_out:
        entry["objects"] = held_out["objects"]
    evaluation.append(entry)


def image_item(out: Path, seed: int, questions_per_image: int, unknown_share: float, index: int) -> dict:
    """Draw and save picture `index` from its own random stream; returns its scene labels, caption record,
    training conversation and held-out question."""
    rng = random.Random(f"randomized/{seed}/image/{index}")
    unknown = random.Random(f"randomized/{seed}/unknown/{index}")  # its own stream: other pictures stay the same
    if unknown.random() < unknown_share:
        image, caption, questions = render_unknown_picture(unknown), UNKNOWN_ANSWER, unknown_questions(unknown)
        labels = {"cells": [0] * 9, "word": 0, "objects": []}
    else:
        image, caption, questions, labels = make_image(rng)
    image, as_jpeg = degrade(rng, image)
    name = f"images/{index:06d}.{'jpg' if as_jpeg else 'png'}"
    if as_jpeg:
        image.save(out / name, quality=rng.randint(25, 90))
    else:
        image.save(out / name)
    captions, instructions, evaluation = [], [], []
    add_records(rng, f"img{index:06d}", "image", name, caption, questions, questions_per_image,
                captions, instructions, evaluation)
    return {"scene": {"image": name, **labels}, "caption": captions[0], "instruction": instructions[0],
            "question": evaluation[0]}


def video_item(out: Path, seed: int, questions_per_image: int, kind: str, index: int) -> dict:
    """Draw and save video `index` of the given kind from its own random stream; returns its records."""
    rng = random.Random(f"randomized/{seed}/video/{index}")
    name = f"videos/{index:06d}.mp4"
    frames, fps, caption, questions = make_video(rng, kind)
    write_video(out / name, frames, fps)
    captions, instructions, evaluation = [], [], []
    add_records(rng, f"vid{index:06d}", "video", name, caption, questions, questions_per_image,
                captions, instructions, evaluation)
    return {"caption": captions[0], "instruction": instructions[0], "question": evaluation[0]}


def generate_randomized(out_dir: str | Path, seed: int, num_images: int, num_videos: int,
                        questions_per_image: int = 4, video_mix: dict[str, int] | None = None,
                        workers: int = 1, unknown_share: float = UNKNOWN_SHARE) -> dict:
    """Write the randomized world to out_dir, in the grid world's files (images/, videos/, captions.json,
    instructions.json, questions.jsonl, scenes.jsonl, world.json).

    Every picture and video has its own random stream (seed and index), so `workers` processes make the
    same files as one. `unknown_share` of the pictures hold none of the world's things (`render_unknown_picture`)
    and every question on them is answered "I can only describe ..." (type "unknown")."""
    if not 0.0 <= unknown_share <= 1.0:
        raise ValueError(f"unknown_share must lie in [0, 1], got {unknown_share}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    schedule = video_kind_schedule(video_mix)
    kinds = [schedule[index % len(schedule)] for index in range(num_videos)]
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    images = partial(image_item, out, seed, questions_per_image, unknown_share)
    videos = partial(video_item, out, seed, questions_per_image)
    with ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=get_context("spawn")))
            run = partial(pool.map, chunksize=8)
        else:
            run = map
        drawn = list(tqdm(run(images, range(num_images)), total=num_images, desc="images", unit="img", leave=False))
        filmed = list(tqdm(run(videos, kinds, range(num_videos)), total=num_videos, desc="videos", unit="video",
                           leave=False))
    scenes = [item["scene"] for item in drawn]
    captions, instructions, evaluation = ([item[key] for item in drawn + filmed] for key in ("caption", "instruction", "question"))
    world = {
        "world": "randomized", "seed": seed, "images": num_images, "videos": num_videos,
        "questions_per_image": questions_per_image, "unknown_share": unknown_share, "questions": len(evaluation),
        "instruction_records": len(instructions),
        "question_types": dict(sorted(Counter(f"{e['modality']}/{e['type']}" for e in evaluation).items())),
        "video_kinds": dict(Counter(kinds)),
    }
    write_world_files(out, world, captions=captions, instructions=instructions, questions=evaluation, scenes=scenes)
    return world
