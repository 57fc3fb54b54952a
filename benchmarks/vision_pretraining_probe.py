"""Vision pre-training alone on a randomized world, then linear probes of the tower on held-out pictures.

A quick check of a tower setting (patch size, epochs, pictures) before any LLM stage: it pre-trains the tiny
preset's tower at 128 px with `--patch` px patches on the first `--images` pictures of `--train` and reports
how well its patch tokens give the shape and colour of the object under them (benchmarks/tower_probe.py's
probes) on `--heldout`.

    python benchmarks/vision_pretraining_probe.py --train runs/synth-robust --heldout runs/randomized-heldout \
        --patch 8 --images 8000 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from tower_probe import probe_accuracy  # same folder

from llava_mini.data.synthetic import COLOURS, SHAPES
from llava_mini.model.modeling import LlavaMiniForConditionalGeneration
from llava_mini.model.presets import preset_config
from llava_mini.processing.image import LlavaMiniImageProcessor, load_image
from llava_mini.train.vision_pretraining import VisionPretrainingArgs, footprint_labels, pretrain_vision_tower


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="randomized-world folder to pre-train on")
    parser.add_argument("--heldout", type=Path, required=True, help="randomized-world folder to probe on")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--probe-images", type=int, default=600)
    args = parser.parse_args()
    if args.size % args.patch:
        parser.error(f"--size {args.size} is not a multiple of --patch {args.patch}")
    torch.manual_seed(0)
    config = preset_config("tiny", vision_config={"image_size": args.size, "patch_size": args.patch}, image_token_id=0)
    tower = LlavaMiniForConditionalGeneration(config).vision_tower
    image_processor = LlavaMiniImageProcessor(size=args.size)
    with tempfile.TemporaryDirectory() as folder:  # the first --images scene lines, beside the pictures
        lines = (args.train / "scenes.jsonl").read_text().splitlines()[: args.images]
        (Path(folder) / "scenes.jsonl").write_text("\n".join(lines) + "\n")
        (Path(folder) / "images").symlink_to((args.train / "images").resolve())
        started = time.perf_counter()
        summary = pretrain_vision_tower(tower, image_processor, Path(folder), VisionPretrainingArgs(epochs=args.epochs))
        seconds = time.perf_counter() - started
        shutil.rmtree(folder, ignore_errors=True)
    scenes = [json.loads(line) for line in (args.heldout / "scenes.jsonl").read_text().splitlines()][: args.probe_images]
    grid_side = args.size // args.patch
    features, under = [], []
    tower.eval()
    with torch.no_grad():
        for start in range(0, len(scenes), 50):
            chunk = scenes[start : start + 50]
            pixels = torch.stack([image_processor.preprocess_image(load_image(args.heldout / s["image"]))[0] for s in chunk])
            for scene, tokens in zip(chunk, tower(pixels), strict=True):
                labels = footprint_labels(scene.get("objects") or [], grid_side)
                features.append(tokens[labels > 0])
                under.append(labels[labels > 0] - 1)
    inputs, classes = torch.cat(features), torch.cat(under)
    print(json.dumps({
        "patch": args.patch, "patches_per_picture": grid_side**2, "images": len(lines), "epochs": args.epochs,
        "pretraining_s": round(seconds), "final_loss": summary["losses"][-1], "object_patches": len(inputs),
        "shape": probe_accuracy(inputs, classes // len(COLOURS), len(SHAPES)),
        "colour": probe_accuracy(inputs, classes % len(COLOURS), len(COLOURS)),
    }))


if __name__ == "__main__":
    main()
