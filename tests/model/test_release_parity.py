"""Parity with the authors' own code (ictnlp/LLaVA-Mini) on small random checkpoints in the release's layout.

`tests/model/release_parity/` holds two checkpoints, their CLIP tower (4 heads of 24: not 64 wide), an image,
a 20-frame video and the tensors the release's own code computed on them (CPU, float32, transformers 4.43),
written by `scripts/release_parity/generate.py` (see its README for versions and the command). Nothing is
fetched here. Compared, for images, HD images (ratio 2), videos and HD videos, with C = 1 and C = 2:

* the model alone, fed the release's ids and pixels: tower output, compressor output, LLM input embeddings,
  logits (max |diff| <= 1e-4) and greedy ids (exact);
* the whole pipeline from the file and the question: ids, pixels, logits and greedy ids.

The release's two known defects are removed from its outputs (docs/release.md): its ids carry a second BOS,
dropped before its forward, and no prompt holds token id 0.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerFast

from llava_mini.inference.generate import GenerationSettings, LlavaMini
from llava_mini.model.convert import convert_release
from llava_mini.model.release import release_tokenizer
from llava_mini.processing.image import LlavaMiniImageProcessor, resize_frame_like_release
from llava_mini.processing.video import read_video_frames

ROOT = Path(__file__).parent / "release_parity"
INDEX = json.loads((ROOT / "references" / "index.json").read_text())
CASES = sorted(INDEX["cases"])
RELEASE_PLACEHOLDER = -200  # IMAGE_TOKEN_INDEX in the release's code
TOLERANCE = dict(atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def assistants() -> dict[str, LlavaMini]:
    return {name: LlavaMini.load(ROOT / name) for name in ("c1", "c2-hd")}


def reference(case: str) -> tuple[dict, dict[str, torch.Tensor]]:
    return INDEX["cases"][case], load_file(ROOT / "references" / f"{case}.safetensors")


def release_ids_for_us(assistant: LlavaMini, ids: torch.Tensor, pictures: int) -> torch.Tensor:
    """The release's ids (one -200 per image or video) with its placeholder expanded to our K slots per picture."""
    slots = assistant.processor.num_vision_tokens * pictures
    pieces = [
        torch.full((slots,), assistant.processor.image_token_id)
        if token == RELEASE_PLACEHOLDER
        else token.view(1)
        for token in ids
    ]
    return torch.cat(pieces).unsqueeze(0)


def greedy(assistant: LlavaMini, batch: dict) -> list[int]:
    with torch.inference_mode():
        output = assistant.model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=INDEX["max_new_tokens"],
            eos_token_id=assistant.stop_token_ids(),
            pad_token_id=assistant.processor.tokenizer.pad_token_id,
        )
    return output[0, batch["input_ids"].shape[1] :].tolist()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    difference = (actual.float() - expected.float()).abs().max().item()
    assert difference <= TOLERANCE["atol"], f"{what}: max |diff| {difference:.2e} > {TOLERANCE['atol']}"


@pytest.mark.parametrize("case", CASES)
def test_the_model_alone_matches_the_release(assistants, case):
    """The release's ids and pixels in; every intermediate, the logits and the greedy ids out."""
    info, ref = reference(case)
    assistant = assistants[info["checkpoint"]]
    model = assistant.model
    pixels = ref["pixel_values"]  # image: (S, 3, H, W); video: (T, S, 3, H, W)
    pixels = pixels if pixels.dim() == 5 else pixels.unsqueeze(0)
    ids = release_ids_for_us(assistant, ref["input_ids"], pictures=pixels.shape[0])
    with torch.inference_mode():
        tower = model.vision_tower(pixels.flatten(0, 1))
        _, grid = model.encode_views(pixels)
        compressed, _ = model.compressor(grid)
        embeds, _ = model.embed_multimodal(ids, pixels)
        logits = model(input_ids=ids, pixel_values=pixels).logits
    assert_close(tower, ref["tower_output"].flatten(0, 1), "tower output")
    assert_close(compressed, ref["compressor_output"], "compressor output")
    assert_close(embeds[0], ref["inputs_embeds"], "LLM input embeddings")
    vocab = ref["logits"].shape[-1]  # a tokenizer given new media tokens has a few more (never chosen)
    assert_close(logits[0, :, :vocab], ref["logits"], "logits")
    assert greedy(assistant, {"input_ids": ids, "pixel_values": pixels}) == ref["greedy_ids"].tolist()


@pytest.mark.parametrize("case", CASES)
def test_the_pipeline_from_file_and_question_matches_the_release(assistants, case):
    info, ref = reference(case)
    assistant = assistants[info["checkpoint"]]
    media = [assistant.medium(ROOT / info["media"])]
    batch = assistant.prepare([assistant.question_messages(info["question"], media)], media=[media])
    pixels = batch["pixel_values"]
    if not isinstance(pixels, torch.Tensor):  # a video file's pixels are decoded chunk by chunk
        pixels = torch.cat(list(pixels.chunks(4)))
    expected_pixels = ref["pixel_values"] if ref["pixel_values"].dim() == 5 else ref["pixel_values"][None]
    assert_close(pixels, expected_pixels, "pixel values")
    assert (
        batch["input_ids"].tolist()
        == release_ids_for_us(assistant, ref["input_ids"], pixels.shape[0]).tolist()
    )
    with torch.inference_mode():
        logits = assistant.model(**batch).logits
    assert_close(logits[0, :, : ref["logits"].shape[-1]], ref["logits"], "logits")
    assert greedy(assistant, batch) == ref["greedy_ids"].tolist()
    answer = assistant.ask(ROOT / info["media"], info["question"], max_new_tokens=INDEX["max_new_tokens"])
    assert answer == assistant.processor.decode(ref["greedy_ids"])


@pytest.mark.parametrize("case", CASES)
def test_the_release_ids_differ_from_ours_only_by_its_second_bos(case):
    """The double-BOS defect, as the release's own prompt building produced it."""
    info, ref = reference(case)
    raw = ref["input_ids_release"].tolist()
    bos = raw[0]
    assert raw[:2] == [bos, bos] and ref["input_ids"].tolist() == [bos, *raw[2:]]
    assert 0 not in raw  # the id-0 defect cannot touch these references


def test_the_tower_config_comes_from_mm_vision_tower_not_a_guess(assistants):
    for assistant in assistants.values():
        vision = assistant.config.vision_config
        assert (vision.hidden_size, vision.num_attention_heads) == (96, 4)  # a 64-wide guess would say 1


def test_without_the_tower_config_the_guess_is_named_and_measurably_wrong(tmp_path, caplog, assistants):
    """Cause 1 reproduced: a tower whose heads are not 64 wide, computed with the guessed head count."""
    checkpoint = tmp_path / "c1"
    shutil.copytree(ROOT / "c1", checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["mm_vision_tower"] = "./no-such-tower"
    (checkpoint / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="llava_mini.model.release"):
        guessed = LlavaMini.load(checkpoint)
    assert "guessing it from the stored weights with 1 attention heads (width 96 / 64)" in caplog.text
    _, ref = reference("c1_image")
    with torch.inference_mode():
        tower = guessed.model.vision_tower(ref["pixel_values"])
    assert (tower - ref["tower_output"][0]).abs().max() > 1e-2


def test_a_named_tower_config_that_does_not_fit_the_stored_weights_is_refused(tmp_path):
    checkpoint = tmp_path / "c1"
    shutil.copytree(ROOT / "c1", checkpoint)
    shutil.copytree(ROOT / "clip-tower", tmp_path / "clip-tower")
    tower_config = json.loads((tmp_path / "clip-tower" / "config.json").read_text())
    tower_config["num_hidden_layers"] = 3
    (tmp_path / "clip-tower" / "config.json").write_text(json.dumps(tower_config))
    with pytest.raises(ValueError, match="does not fit the stored tower's weights.*num_hidden_layers 3 vs 2"):
        LlavaMini.load(checkpoint)


def test_pillow_nearest_frames_are_not_the_releases(assistants):
    """Cause 2 reproduced: Pillow's NEAREST picks other source pixels than torch's, on the committed video."""
    frames = read_video_frames(ROOT / "media" / "video.mp4")
    torch_way = [resize_frame_like_release(frame) for frame in frames]
    pillow_way = [frame.resize(torch_way[0].size, 0) for frame in frames]  # Image.Resampling.NEAREST
    differing = sum(
        (np.asarray(a) != np.asarray(b)).any(axis=2).sum() for a, b in zip(torch_way, pillow_way, strict=True)
    )
    assert differing / (len(frames) * 336 * 336) > 0.1
    _, ref = reference("c1_video")
    release_way = assistants["c1"].processor.image_processor
    pillow = LlavaMiniImageProcessor(size=release_way.size, frame_resize="pillow")
    assert (pillow.preprocess_frames(frames) - ref["pixel_values"]).abs().max() > 0.1
    assert_close(
        release_way.preprocess_frames(frames), ref["pixel_values"], "frames resized the release's way"
    )


def test_a_tokenizer_with_too_few_reserved_tokens_gets_new_ones_and_keeps_every_id(tmp_path, caplog):
    """Cause 4: one reserved token (c2-hd) or none; the other ids never move."""
    original = PreTrainedTokenizerFast.from_pretrained(ROOT / "c2-hd").get_vocab()
    with caplog.at_level(logging.WARNING, logger="llava_mini.model.release"):
        tokenizer = release_tokenizer(ROOT / "c2-hd")
    assert "added <video> as new token(s) 329" in caplog.text
    vocab = tokenizer.get_vocab()
    assert vocab["<image>"] == original["<|reserved_special_token_0|>"] and vocab["<video>"] == len(original)
    assert all(vocab[token] == token_id for token, token_id in original.items() if "reserved" not in token)

    none_reserved = tmp_path / "none-reserved"
    none_reserved.mkdir()
    for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        text = (ROOT / "c2-hd" / file).read_text()
        (none_reserved / file).write_text(text.replace("<|reserved_special_token_0|>", "<|taken|>"))
    tokenizer = release_tokenizer(none_reserved)
    vocab = tokenizer.get_vocab()
    assert (vocab["<image>"], vocab["<video>"]) == (len(original), len(original) + 1)
    assert all(vocab[token] == token_id for token, token_id in original.items() if "reserved" not in token)


def test_converting_keeps_the_added_tokens_and_the_release_frame_resize(tmp_path, assistants):
    convert_release(ROOT / "c2-hd", tmp_path / "converted")
    converted = LlavaMini.load(tmp_path / "converted")
    assert converted.processor.image_processor.frame_resize == "release"
    assert converted.config.vision_config.num_attention_heads == 4
    assert converted.model.generation_config.suppress_tokens == [329]
    info, ref = reference("c2-hd_video")
    media = [converted.medium(ROOT / info["media"])]
    batch = converted.prepare([converted.question_messages(info["question"], media)], media=[media])
    with torch.inference_mode():
        logits = converted.model(**batch).logits
    assert_close(logits[0, :, : ref["logits"].shape[-1]], ref["logits"], "logits after conversion")
    settings = GenerationSettings(max_new_tokens=INDEX["max_new_tokens"])
    assert converted.chat(converted.question_messages(info["question"], media), media, settings) == (
        assistants["c2-hd"].processor.decode(ref["greedy_ids"])
    )
