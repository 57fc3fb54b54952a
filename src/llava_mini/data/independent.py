"""An independent test set: the world's vocabulary drawn by a second renderer, never used for training.

Written separately from the training generators (`synthetic.py`, `randomized.py`) and sharing none of
their drawing or question code: pictures are matplotlib figures (patches, text, images for backgrounds,
rendered by Agg), colours are other shades of the same names, and the questions have their own wording.
Only the vocabulary (shape, colour and word lists) and the record format (`questions.jsonl`, read by
`llava-mini eval synth`) are shared, so a model that learnt the training renderer's habits instead of
shapes, colours, words and motion scores low here.

Factors, each drawn from the seed: picture size 64-640 px and aspect 1:2 to 2:1; plain, gradient, radial,
noisy and hatched backgrounds; 1-4 objects at free positions and sizes, sometimes touching, filled or
outlined, turned a little; words in DejaVu / STIX / Computer Modern fonts, sizes, casings, slants and
turns; sometimes blur or JPEG; videos at 4-30 fps, 2-7 s, any size, speed and background.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections import Counter
from io import BytesIO
from pathlib import Path

import numpy as np
from matplotlib import patches
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.transforms import Affine2D
from PIL import Image, ImageFilter
from tqdm import tqdm

from llava_mini.data.records import write_world_files
from llava_mini.data.synthetic import (  # vocabulary, argparse types
    COLOURS,
    SHAPES,
    WORDS,
    fraction,
    whole_number,
)
from llava_mini.processing.video import write_video

SHADES = {  # other shades of each colour name than the training world's
    "red": ("#e41a1c", "#d62728", "#ff1a1a", "#c0392b"),
    "green": ("#2ca02c", "#4daf4a", "#00a000", "#27ae60"),
    "blue": ("#1f4fd8", "#377eb8", "#0000ff", "#2e66de"),
    "yellow": ("#ffd700", "#f1c40f", "#ffff33", "#e6d800"),
    "purple": ("#984ea3", "#9467bd", "#800080", "#8e44ad"),
    "orange": ("#ff7f00", "#ff8c00", "#e67e22", "#fd8d3c"),
    "white": ("#ffffff", "#f8f8f8", "#f0f0f0"),
    "black": ("#000000", "#111111", "#262626"),
}
FONTS = ("DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono", "STIXGeneral", "cmr10", "cmss10")
REGIONS = (("top left", "top", "top right"), ("left", "centre", "right"), ("bottom left", "bottom", "bottom right"))
SEPARATION = 90.0  # least RGB distance (0-255 scale) between an object's shade and the background's colours

WORDING = {
    "color": ("Can you name the color of the {shape}?", "Tell me which colour the {shape} has.",
              "The {shape}: what color is it?", "What is the {shape}'s colour?"),
    "shape": ("Name the {colour} shape.", "Which shape is drawn in {colour}?", "What is the {colour} figure?",
              "The {colour} thing: what shape is it?"),
    "count": ("How many figures are drawn?", "Give the number of shapes in the picture.",
              "Tell me how many shapes there are."),
    "count_kind": ("Give the number of {shapes}.", "How many {shapes} does the picture show?",
                   "Tell me how many {shapes} you can count."),
    "position": ("Is the {a} to the left of, to the right of, above or below the {b}?",
                 "Seen from the {b}, where is the {a}: left, right, above or below?",
                 "Where does the {a} sit relative to the {b}?"),
    "place": ("Which area of the picture is the {name} in?", "Tell me where the {name} is in the image.",
              "Where can the {name} be found?"),
    "existence": ("Is a {colour} {shape} visible?", "Does a {colour} {shape} appear in the picture?",
                  "Is there any {colour} {shape} here?"),
    "text": ("Which word appears in the picture?", "Read the text in this image.", "What word can you read?"),
    "motion": ("Which direction is the {shape} travelling in?", "The {colour} {shape} moves. Which way?",
               "Tell me the direction the {colour} {shape} moves in."),
    "first": ("Which shape was shown first?", "Name the shape that came first.", "What shape came into view first?"),
    "last": ("Which shape was shown last?", "Name the shape that came last.", "What shape came into view last?"),
    "blinks": ("How many separate times is the {shape} visible?", "Count the appearances of the {shape}.",
               "How many times does the {shape} show up in the clip?"),
    "change": ("Does the background colour change at some point?", "Is the backdrop the same colour throughout? Does it change?",
               "Does the colour of the background switch?"),
    "end": ("At the end of the clip, what colour is the background?", "What color is the backdrop in the last second?",
            "Name the background colour at the end."),
    "describe_image": ("What is in the picture?", "Describe the image", "Tell me what you see in this image."),
    "describe_video": ("What happens in the video?", "Describe the video", "Tell me what goes on in this clip."),
}


def ask(rng: random.Random, kind: str, **slots: str) -> str:
    return rng.choice(WORDING[kind]).format(**slots)


def rgb255(colour: str) -> np.ndarray:
    return np.array(to_rgb(colour)) * 255


def canvas(width: int, height: int) -> tuple[Figure, object]:
    """A figure of width x height pixels whose axes map pixel coordinates (y downwards) onto it."""
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_axis_off()
    return figure, axes


def to_image(figure: Figure, width: int, height: int) -> Image.Image:
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3]
    return Image.fromarray(pixels).resize((width, height)) if pixels.shape[:2] != (height, width) else Image.fromarray(pixels.copy())


def paint_backdrop(rng: random.Random, axes, width: int, height: int) -> list[np.ndarray]:
    """Fill the axes with a plain, gradient, radial, noisy or hatched backdrop; returns its colours (0-255)."""
    style = rng.choice(("plain", "plain", "linear", "radial", "noisy", "hatched"))

    def pick() -> np.ndarray:  # any colour, or a grey from black to white
        if rng.random() < 0.6:
            return np.array([rng.randint(0, 255) for _ in range(3)], float)
        return np.full(3, float(rng.choice((0, 40, 128, 215, 255))))

    base = pick()
    if style == "plain":
        axes.add_patch(patches.Rectangle((0, 0), width, height, color=base / 255, zorder=0))
        return [base]
    other = pick() if style in ("linear", "radial") else np.clip(base + [rng.randint(-50, 50) for _ in range(3)], 0, 255)
    ys, xs = np.mgrid[0:1:complex(0, max(2, height // 4)), 0:1:complex(0, max(2, width // 4))]
    if style == "linear":
        t = xs if rng.random() < 0.5 else ys
    elif style == "radial":
        t = np.clip(np.hypot(xs - 0.5, ys - 0.5) / 0.71, 0, 1)
    elif style == "noisy":
        t = np.random.default_rng(rng.randrange(2**32)).random(xs.shape)
    if style != "hatched":
        field = base + (other - base) * t[..., None]
        axes.imshow(field.astype(np.uint8), extent=(0, width, height, 0), interpolation="bilinear", zorder=0)
        return [base, other]
    axes.add_patch(patches.Rectangle((0, 0), width, height, facecolor=base / 255, edgecolor=other / 255,
                                     hatch=rng.choice(("//", "\\\\", "xx", "..", "--", "++")), linewidth=0, zorder=0))
    return [base, other]


def shade_for(rng: random.Random, name: str, backdrop: list[np.ndarray]) -> str | None:
    """A shade of colour `name` far from every backdrop colour, or None."""
    fitting = [s for s in SHADES[name] if all(np.linalg.norm(rgb255(s) - c) >= SEPARATION for c in backdrop)]
    return rng.choice(fitting) if fitting else None


def add_figure(axes, shape: str, x: float, y: float, size: float, shade: str, hollow: bool, turn: float) -> None:
    """One matplotlib patch for the shape (size = its width in pixels), filled or hollow, turned by `turn` degrees."""
    style = dict(facecolor="none" if hollow else shade, edgecolor=shade, linewidth=max(1.0, size * 0.1) * 0.72 if hollow else 0,
                 antialiased=True, zorder=2)
    r = size / 2
    if shape == "circle":
        patch = patches.Circle((x, y), r, **style)
    elif shape == "square":
        patch = patches.Rectangle((x - r, y - r), size, size, **style)
    elif shape == "triangle":
        patch = patches.RegularPolygon((x, y + r * 0.2), 3, radius=r * 1.1, orientation=math.pi, **style)
    elif shape == "star":
        angles = np.arange(10) * math.pi / 5 + math.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, r * 1.05, r * 0.42)
        patch = patches.Polygon(np.stack([x + radii * np.cos(angles), y - radii * np.sin(angles)], 1), closed=True, **style)
    elif shape == "cross":
        w = r * 0.36
        corners = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
        patch = patches.Polygon([(x + a, y + b) for a, b in corners], closed=True, **style)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    patch.set_transform(Affine2D().rotate_deg_around(x, y, turn) + axes.transData)
    axes.add_patch(patch)


def scatter_objects(rng: random.Random, width: int, height: int, count: int, backdrop: list[np.ndarray]) -> list[dict]:
    """Up to `count` objects of distinct (shape, colour) with shades that stand out from the backdrop."""
    names = [n for n in COLOURS if shade_for(random.Random(0), n, backdrop)]
    pool = [(s, c) for s in SHAPES for c in names]
    touching = rng.random() < 0.2
    objects: list[dict] = []
    for shape, colour in rng.sample(pool, min(count, len(pool))):
        for _ in range(50):
            size = max(8.0, min(rng.uniform(0.11, 0.25) * max(width, height), 0.42 * min(width, height)))
            x, y = rng.uniform(0.6 * size, width - 0.6 * size), rng.uniform(0.6 * size, height - 0.6 * size)
            gap = 0.8 if touching else 1.15
            if all(math.hypot(x - o["x"], y - o["y"]) >= gap * (size + o["size"]) / 2 for o in objects):
                objects.append(dict(shape=shape, colour=colour, x=x, y=y, size=size, shade=shade_for(rng, colour, backdrop),
                                    hollow=rng.random() < 0.2, turn=rng.uniform(-12, 12)))
                break
    return objects


def dimensions(rng: random.Random, low: int = 64, high: int = 640) -> tuple[int, int]:
    side = rng.randint(low, high)
    aspect = rng.uniform(0.5, 2.0)
    other = max(low // 2, int(side / aspect)) if aspect >= 1 else max(low // 2, int(side * aspect))
    return (side, other) if aspect >= 1 else (other, side)


def region(o: dict, width: int, height: int, border: float = 0.05) -> str | None:
    fx, fy = o["x"] / width, o["y"] / height
    if min(abs(fx - 1 / 3), abs(fx - 2 / 3), abs(fy - 1 / 3), abs(fy - 2 / 3)) < border:
        return None
    return REGIONS[min(2, int(fy * 3))][min(2, int(fx * 3))]


def side_of(a: dict, b: dict) -> str | None:
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]
    if abs(dx) > 2 * abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) > 2 * abs(dx):
        return "above" if dy < 0 else "below"
    return None


def sentence(objects: list[dict], width: int, height: int) -> str:
    named = [f"a {o['colour']} {o['shape']} ({region(o, width, height, 0.0)})" for o in objects]
    return "; ".join(named) + "."


def picture_questions(rng: random.Random, objects: list[dict], width: int, height: int) -> list[dict]:
    """One question of each answerable type about a picture of objects (its own wording and rules)."""
    found = []
    by_shape, by_colour = Counter(o["shape"] for o in objects), Counter(o["colour"] for o in objects)
    lone = [o for o in objects if by_shape[o["shape"]] == 1]
    if lone:
        o = rng.choice(lone)
        found.append(("color", ask(rng, "color", shape=o["shape"]), o["colour"]))
    lone = [o for o in objects if by_colour[o["colour"]] == 1]
    if lone:
        o = rng.choice(lone)
        found.append(("shape", ask(rng, "shape", colour=o["colour"]), o["shape"]))
    if rng.random() < 0.5:
        found.append(("count", ask(rng, "count"), str(len(objects))))
    else:
        kind = rng.choice(SHAPES)
        found.append(("count", ask(rng, "count_kind", shapes=kind + ("es" if kind.endswith("s") else "s")), str(by_shape[kind])))
    sides = [(a, b, side_of(a, b)) for a in objects for b in objects if a is not b and side_of(a, b)]
    if sides:
        a, b, where = rng.choice(sides)
        found.append(("position", ask(rng, "position", a=f"{a['colour']} {a['shape']}", b=f"{b['colour']} {b['shape']}"), where))
    located = [(o, region(o, width, height)) for o in objects if region(o, width, height)]
    if located:
        o, where = rng.choice(located)
        found.append(("place", ask(rng, "place", name=f"{o['colour']} {o['shape']}"), where))
    there = {(o["shape"], o["colour"]) for o in objects}
    if rng.random() < 0.5:
        shape, colour = rng.choice(sorted(there))
    else:
        shape, colour = rng.choice(sorted({(s, c) for s in SHAPES for c in COLOURS} - there))
    found.append(("existence", ask(rng, "existence", colour=colour, shape=shape), "yes" if (shape, colour) in there else "no"))
    return [dict(type=t, question=q, answer=a) for t, q, a in found]


def finish(rng: random.Random, image: Image.Image, path: Path) -> str:
    """Sometimes blur; save as JPEG (sometimes) or PNG; returns the file name."""
    if rng.random() < 0.25:
        image = image.filter(ImageFilter.BoxBlur(rng.choice((1, 1, 2))))
    if rng.random() < 0.3:
        buffer = BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(30, 85))
        path = path.with_suffix(".jpg")
        path.write_bytes(buffer.getvalue())
    else:
        path = path.with_suffix(".png")
        image.save(path)
    return path.name


def draw_picture(rng: random.Random) -> tuple[Image.Image, dict]:
    """A picture (objects, or a word) and what it shows."""
    width, height = dimensions(rng)
    figure, axes = canvas(width, height)
    backdrop = paint_backdrop(rng, axes, width, height)
    if rng.random() < 0.15:
        word = rng.choice(WORDS)
        ink = next(filter(None, (shade_for(rng, n, backdrop) for n in rng.sample(list(COLOURS), len(COLOURS)))), None)
        if ink is None:
            axes.add_patch(patches.Rectangle((0, 0), width, height, color="white", zorder=1))
            ink = "#000000"
        text = rng.choice((word.upper(), word.lower(), word.title()))
        points = rng.uniform(0.18, 0.4) * min(width * 2.2 / len(text), height) * 72 / 100
        axes.text(rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height, text, color=ink, ha="center", va="center",
                  fontsize=points, family=rng.choice(FONTS), rotation=rng.uniform(-15, 15),
                  fontweight=rng.choice(("normal", "bold")), fontstyle=rng.choice(("normal", "italic")), zorder=3)
        return to_image(figure, width, height), {"word": word}
    objects = scatter_objects(rng, width, height, rng.randint(1, 4), backdrop)
    if not objects:  # a backdrop nothing stands out from: start again on white
        axes.add_patch(patches.Rectangle((0, 0), width, height, color="white", zorder=1))
        objects = scatter_objects(rng, width, height, rng.randint(1, 4), [np.full(3, 255.0)])
    for o in objects:
        add_figure(axes, o["shape"], o["x"], o["y"], o["size"], o["shade"], o["hollow"], o["turn"])
    return to_image(figure, width, height), {"objects": objects, "width": width, "height": height}


def sprite(shape: str, shade: str, size: float, hollow: bool, turn: float) -> np.ndarray:
    """The shape alone as an RGBA array (side x side x 4, floats 0-1), for moving it over a backdrop."""
    side = int(size * 1.6) + 2
    figure = Figure(figsize=(side / 100, side / 100), dpi=100)
    FigureCanvasAgg(figure)
    figure.patch.set_alpha(0)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, side)
    axes.set_ylim(side, 0)
    axes.set_axis_off()
    axes.patch.set_alpha(0)
    add_figure(axes, shape, side / 2, side / 2, size, shade, hollow, turn)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba()).astype(np.float32) / 255


def overlay(base: np.ndarray, rgba: np.ndarray, x: float, y: float) -> np.ndarray:
    """`base` (H, W, 3 floats 0-255) with the sprite centred at (x, y), clipped at the borders."""
    out = base.copy()
    side = rgba.shape[0]
    left, top = int(round(x - side / 2)), int(round(y - side / 2))
    x0, y0, x1, y1 = max(0, left), max(0, top), min(base.shape[1], left + side), min(base.shape[0], top + side)
    if x1 <= x0 or y1 <= y0:
        return out
    piece = rgba[y0 - top : y1 - top, x0 - left : x1 - left]
    alpha = piece[..., 3:4]
    out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - alpha) + piece[..., :3] * 255 * alpha
    return out


def film(rng: random.Random, kind: str) -> tuple[list[np.ndarray], int, list[dict], list[dict]]:
    """Frames (uint8 arrays), frame rate, questions and objects of one clip of the given kind."""
    rate, seconds = rng.randint(4, 30), rng.randint(2, 7)
    width, height = dimensions(rng, 64, 400)
    figure, axes = canvas(width, height)
    backdrop = paint_backdrop(rng, axes, width, height)
    plate = np.asarray(to_image(figure, width, height), np.float32)
    cast = scatter_objects(rng, width, height, 3, backdrop)
    if len(cast) < 3 or kind == "change":
        plate, cast = np.full((height, width, 3), 128.0, np.float32), scatter_objects(rng, width, height, 3, [np.full(3, 128.0)])
    sprites = [sprite(o["shape"], o["shade"], o["size"], o["hollow"], o["turn"]) for o in cast]
    frames: list[np.ndarray] = []
    if kind == "move":
        o, look = cast[0], sprites[0]
        way = rng.choice(("left", "right", "up", "down"))
        span = (width if way in ("left", "right") else height) - o["size"] * 1.2
        distance = rng.uniform(0.45, 1.0) * span
        begin = o["size"] * 0.6 + rng.uniform(0, span - distance)
        steps = rate * seconds
        for i in range(steps):
            p = begin + distance * i / (steps - 1)
            if way in ("left", "up"):
                p = (width if way == "left" else height) - p
            frames.append(overlay(plate, look, p, o["y"]) if way in ("left", "right") else overlay(plate, look, o["x"], p))
        questions = [dict(type="motion", question=ask(rng, "motion", shape=o["shape"], colour=o["colour"]), answer=way)]
        shown = [o]
    elif kind == "sequence":
        count = min(seconds, rng.choice((2, 3)))
        state = plate
        for second in range(seconds):
            if second < count:
                state = overlay(state, sprites[second], cast[second]["x"], cast[second]["y"])
            frames.extend([state] * rate)
        questions = [dict(type="order", question=ask(rng, "first"), answer=cast[0]["shape"]),
                     dict(type="order", question=ask(rng, "last"), answer=cast[count - 1]["shape"])]
        shown = cast[:count]
    elif kind == "blink":
        times = rng.randint(1, 3)
        seconds = 2 * times + rng.randint(0, 1)
        on = overlay(plate, sprites[0], cast[0]["x"], cast[0]["y"])
        for second in range(seconds):
            frames.extend([on if second % 2 == 0 and second // 2 < times else plate] * rate)
        questions = [dict(type="event_count", question=ask(rng, "blinks", shape=cast[0]["shape"]), answer=str(times))]
        shown = cast[:1]
    elif kind == "change":
        seconds = max(2, seconds)
        before, after = rng.sample(list(COLOURS), 2)
        switches = rng.random() < 0.5
        at = rng.randint(1, seconds - 1)
        names = [after if switches and second >= at else before for second in range(seconds)]
        for name in names:
            frames.extend([np.full((height, width, 3), rgb255(rng.choice(SHADES[name])), np.float32)] * rate)
        questions = [dict(type="scene_change", question=ask(rng, "change"), answer="yes" if switches else "no"),
                     dict(type="scene_change", question=ask(rng, "end"), answer=names[-1])]
        shown = []
    else:
        raise ValueError(f"unknown clip kind {kind!r}")
    return [np.clip(f, 0, 255).round().astype(np.uint8) for f in frames], rate, questions, shown


CLIP_KINDS = ("move", "sequence", "blink", "change")


def generate_independent(out_dir: str | Path, seed: int, num_images: int, num_videos: int,
                         describe_fraction: float = 0.1) -> dict:
    """Write images/, videos/, questions.jsonl (one question per picture or clip; descriptions carry their
    ground-truth `objects`) and world.json to out_dir. Nothing here is meant for training."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"independent-test-set:{seed}")
    entries = []
    for index in tqdm(range(num_images), desc="independent images", unit="img", leave=False):
        image, shows = draw_picture(rng)
        name = "images/" + finish(rng, image, out / "images" / f"{index:06d}")
        entry = {"id": f"ind-img{index:06d}", "image": name, "modality": "image"}
        if "word" in shows:
            entry.update(question=ask(rng, "text"), answer=shows["word"], type="text")
        elif rng.random() < describe_fraction:
            objects = shows["objects"]
            entry.update(question=ask(rng, "describe_image"), answer=sentence(objects, shows["width"], shows["height"]),
                         type="describe", objects=[{"shape": o["shape"], "colour": o["colour"]} for o in objects])
        else:
            entry.update(rng.choice(picture_questions(rng, shows["objects"], shows["width"], shows["height"])))
        entries.append(entry)
    for index in tqdm(range(num_videos), desc="independent videos", unit="video", leave=False):
        frames, rate, questions, shown = film(rng, CLIP_KINDS[index % len(CLIP_KINDS)])
        name = f"videos/{index:06d}.mp4"
        write_video(out / name, frames, rate)
        entry = {"id": f"ind-vid{index:06d}", "video": name, "modality": "video"}
        if shown and rng.random() < describe_fraction:
            entry.update(question=ask(rng, "describe_video"), answer="; ".join(f"a {o['colour']} {o['shape']}" for o in shown),
                         type="describe", objects=[{"shape": o["shape"], "colour": o["colour"]} for o in shown])
        else:
            entry.update(rng.choice(questions))
        entries.append(entry)
    summary = {"world": "independent", "seed": seed, "images": num_images, "videos": num_videos, "questions": len(entries),
               "question_types": dict(sorted(Counter(f"{e['modality']}/{e['type']}" for e in entries).items()))}
    write_world_files(out, summary, questions=entries)
    return summary


def add_independent_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=whole_number(0), default=1000)
    parser.add_argument("--videos", type=whole_number(0), default=400)
    parser.add_argument("--describe-fraction", type=fraction, default=0.1,
                        help="share of pictures and clips asked for a description")


def run_independent(args: argparse.Namespace) -> int:
    if args.images + args.videos == 0:
        raise ValueError("nothing to generate: --images and --videos are both 0")
    print(json.dumps(generate_independent(args.out, args.seed, args.images, args.videos, args.describe_fraction), indent=2))
    return 0
