"""What the vision tower's patch tokens say about the object under them: linear probes on held-out pictures.

For every patch that lies on an object of a randomized-world picture (the footprints of its scenes.jsonl,
`train/vision_pretraining.py`), a linear classifier reads the object's shape and its colour from the patch
token; for pictures showing a word, one reads the word from the mean patch token. Fitted on the first 80%
of the patches (or word pictures), scored on the rest. A tower that sees shapes scores near 1; chance is
1/5 for shapes, 1/8 for colours and 1/20 for words. It tells a tower that cannot see a thing from an LLM
that cannot read it.

    llava-mini data synth --world randomized --out runs/randomized-heldout --seed 1 --images 1000 --videos 400
    python benchmarks/tower_probe.py --data runs/randomized-heldout [--model DIR ...] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from llava_mini.data.synthetic import COLOURS, SHAPES, WORDS
from llava_mini.inference.generate import LlavaMini
from llava_mini.processing.image import load_image
from llava_mini.train.vision_pretraining import footprint_labels


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int = 300) -> float:
    """Held-out accuracy of a linear classifier fitted (Adam, full batch) on the first 80% of the rows."""
    split = int(0.8 * len(features))
    mean, std = features[:split].mean(0), features[:split].std(0) + 1e-6
    inputs = (features - mean) / std
    classifier = torch.nn.Linear(features.shape[1], classes)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(classifier(inputs[:split]), labels[:split]).backward()
        optimizer.step()
    with torch.no_grad():
        return float((classifier(inputs[split:]).argmax(-1) == labels[split:]).float().mean())


def tower_probes(model: str | None, data: Path, limit: int) -> dict:
    chat = LlavaMini.load(model)
    image_processor = chat.processor.image_processor
    vision = chat.model.config.vision_config
    grid_side = int(vision.image_size) // int(vision.patch_size)
    scenes = [json.loads(line) for line in (data / "scenes.jsonl").read_text().splitlines()][:limit]
    if not any(scene.get("objects") for scene in scenes):
        raise SystemExit(f"{data / 'scenes.jsonl'} gives no object footprints; make it with --world randomized")
    on_objects, under, word_features, words = [], [], [], []
    with torch.no_grad():
        for start in range(0, len(scenes), 50):
            chunk = scenes[start : start + 50]
            pixels = torch.stack([image_processor.preprocess_image(load_image(data / s["image"]))[0] for s in chunk])
            patches, _ = chat.model.encode_views(pixels.unsqueeze(1))  # (B, N, Dv)
            for scene, tokens in zip(chunk, patches, strict=True):
                labels = footprint_labels(scene.get("objects") or [], grid_side)
                on_objects.append(tokens[labels > 0])
                under.append(labels[labels > 0] - 1)
                if scene["word"]:
                    word_features.append(tokens.mean(0))
                    words.append(scene["word"] - 1)
    features, classes = torch.cat(on_objects), torch.cat(under)
    result = {
        "model": model or "shipped",
        "object_patches": len(features),
        "shape": probe_accuracy(features, classes // len(COLOURS), len(SHAPES)),
        "colour": probe_accuracy(features, classes % len(COLOURS), len(COLOURS)),
    }
    if len(words) >= 10:
        result.update(word_pictures=len(words), word=probe_accuracy(torch.stack(word_features), torch.tensor(words), len(WORDS)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a randomized-world folder (its scenes.jsonl)")
    parser.add_argument("--model", action="append", default=None, help="model directory (repeatable; default: shipped)")
    parser.add_argument("--limit", type=int, default=1000, help="pictures to use")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    for model in args.model or [None]:
        result = tower_probes(model, args.data, args.limit)
        if args.json:
            print(json.dumps(result))
        else:
            print(", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}" for key, value in result.items()))


if __name__ == "__main__":
    main()
