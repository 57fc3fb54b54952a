"""Write a randomly initialised tiny model with a locally trained tokenizer (demos and tests, no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from llava_mini.model.modeling import LlavaMiniForConditionalGeneration
from llava_mini.model.presets import preset_config
from llava_mini.processing.image import LlavaMiniImageProcessor
from llava_mini.processing.processor import LlavaMiniProcessor
from llava_mini.processing.tokenizer import IMAGE_TOKEN, train_bpe_tokenizer

CORPUS = [
    "what colour is the square ? the square is red . how many circles are there ? two .",
    "describe the image briefly . a green triangle above a yellow star on a grey background .",
    "which direction does the circle move ? left right up down . does the scene change ? yes no .",
]


def write_random_model(directory: str | os.PathLike, preset: str = "tiny", seed: int = 0, **overrides) -> Path:
    """Save a random `preset` model and its processor to `directory`; returns the directory."""
    directory = Path(directory)
    tokenizer = train_bpe_tokenizer(CORPUS, vocab_size=400)
    overrides.setdefault("text_config", {})["vocab_size"] = len(tokenizer)
    config = preset_config(preset, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), **overrides)
    torch.manual_seed(seed)
    model = LlavaMiniForConditionalGeneration(config)
    image_processor = LlavaMiniImageProcessor(size=int(config.vision_config.image_size))
    processor = LlavaMiniProcessor.for_config(config, tokenizer, image_processor)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
