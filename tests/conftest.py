"""Shared fixtures: tiny random LLaVA-Mini configs and a locally trained tokenizer (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llava_mini.model.configuration import LlavaMiniConfig

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDIA = REPO_ROOT.parent / "shared" / "media"
TINY_VOCAB = 320
TINY_IMAGE_SIZE = 32
TINY_PATCH = 8  # a 4 x 4 patch grid

TOKENIZER_CORPUS = [
    "what colour is the red square ? the square is red .",
    "how many circles are there ? there are two blue circles .",
    "describe the image briefly . a green triangle above a yellow star .",
    "which direction does the circle move ? left right up down yes no",
    "you are a helpful language and vision assistant .",
]


def tiny_vision_config(kind: str = "clip") -> dict:
    common = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH,
    )
    if kind == "clip":
        return dict(model_type="clip_vision_model", **common)
    if kind == "siglip":
        return dict(model_type="siglip_vision_model", **common)
    raise ValueError(kind)


def tiny_text_config(kind: str = "llama", vocab_size: int = TINY_VOCAB) -> dict:
    common = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    return dict(model_type=kind, **common)


def tiny_config(
    vision: str = "clip", text: str = "llama", image_token_id: int = 300, **fields
) -> LlavaMiniConfig:
    settings = dict(compressor_size=1, compressor_num_heads=4, prefusion_layers=2)
    settings.update(fields)
    return LlavaMiniConfig(
        vision_config=tiny_vision_config(vision),
        text_config=tiny_text_config(text),
        image_token_id=image_token_id,
        **settings,
    )


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from llava_mini.processing.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(TOKENIZER_CORPUS, vocab_size=TINY_VOCAB - 10, chat_template="llama3")
    assert len(tokenizer) <= TINY_VOCAB
    return tokenizer
