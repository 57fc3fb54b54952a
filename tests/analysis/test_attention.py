"""Attention analysis (sec. 3, appendix A) and the compression heatmap (appendix F) on tiny random models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from llava_mini.analysis.attention import (
    INSTRUCTION,
    RESPONSE,
    VISION,
    analyze_attention,
    attention_shares,
    drop_vision_tokens,
    encode_with_answer,
    layer_attentions,
    layer_ranges,
    load_eager,
    token_types,
    vision_attention_entropy,
)
from llava_mini.analysis.compression import compressor_attention, displayed_picture, plot_compression
from llava_mini.data.synthetic import generate_dataset
from llava_mini.eval.synth import load_questions
from llava_mini.inference.generate import LlavaMini
from llava_mini.inference.random_model import write_random_model
from llava_mini.model.modeling import LlavaMiniForConditionalGeneration
from llava_mini.processing.image import LlavaMiniImageProcessor, load_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, seed=0, num_images=3, num_videos=0)
    return out


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory):
    """A random tiny LLaVA-v1.5-style model: all 64 patch tokens reach the LLM, no pre-fusion."""
    return write_random_model(tmp_path_factory.mktemp("baseline"), compressor_type="none", prefusion_layers=0)


@pytest.fixture(scope="module")
def mini_dir(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("mini"), compressor_size=2)


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, path


def test_shares_on_a_handmade_map():
    types = torch.tensor([INSTRUCTION, VISION, VISION, RESPONSE])
    attention = torch.ones(4, 4).tril()
    attention = attention / attention.sum(1, keepdim=True)  # uniform causal rows
    shares = attention_shares(attention, types)
    torch.testing.assert_close(shares[INSTRUCTION], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(shares[VISION], torch.tensor([(1 / 2 + 1 / 3) / 2, (1 / 2 + 2 / 3) / 2, 0.0]))
    torch.testing.assert_close(shares[RESPONSE], torch.tensor([0.25, 0.5, 0.25]))
    assert torch.isnan(attention_shares(attention, torch.zeros(4, dtype=torch.long))[VISION]).all()


def test_shares_per_layer_sum_to_one(baseline_dir, synth_data):
    assistant = load_eager(str(baseline_dir), "cpu", torch.float32)
    inputs = encode_with_answer(assistant, load_questions(synth_data, limit=1)[0])
    types = token_types(inputs["input_ids"][0], inputs["labels"][0], assistant.config.image_token_id)
    assert int((types == VISION).sum()) == assistant.config.num_patches
    assert (types == RESPONSE).any() and (types == INSTRUCTION).any()
    maps = layer_attentions(assistant, inputs)
    assert len(maps) == assistant.config.text_config.num_hidden_layers
    for attention in maps:
        shares = attention_shares(attention, types)
        torch.testing.assert_close(shares.sum(1), torch.ones(3))
        assert shares[VISION, RESPONSE] == 0  # causal: vision tokens precede the answer


def test_entropy_normalisation_bounds():
    types = torch.tensor([INSTRUCTION] + [VISION] * 6 + [INSTRUCTION, RESPONSE])
    uniform = torch.zeros(9, 9)
    uniform[7:, 1:7] = 1 / 6  # text after the image spreads evenly over the vision tokens
    uniform[:7] = torch.eye(9)[:7]
    entropy, normalised = vision_attention_entropy(uniform, types)
    assert entropy == pytest.approx(math.log(6)) and normalised == pytest.approx(1.0)
    peaked = torch.eye(9)
    peaked[7:, 3] = 1.0
    assert vision_attention_entropy(peaked, types) == (pytest.approx(0.0), pytest.approx(0.0))
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        scores = torch.randn(9, 9, generator=generator) * 3
        attention = scores.masked_fill(torch.ones(9, 9).triu(1).bool(), -math.inf).softmax(-1)
        _, normalised = vision_attention_entropy(attention, types)
        assert 0.0 <= normalised <= 1.0
    one_vision = torch.tensor([INSTRUCTION, VISION, RESPONSE])
    assert all(math.isnan(value) for value in vision_attention_entropy(torch.eye(3), one_vision))


def test_dropping_zero_layers_is_the_normal_forward(baseline_dir, synth_data):
    assistant = load_eager(str(baseline_dir), "cpu", torch.float32)
    inputs = encode_with_answer(assistant, load_questions(synth_data, limit=1)[0])
    model = assistant.model
    with torch.inference_mode():
        normal = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits
        with drop_vision_tokens(model, []):
            none_dropped = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits
        with drop_vision_tokens(model, range(4)):
            all_dropped = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits
        again = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits
    assert torch.equal(normal, none_dropped)
    assert torch.equal(normal, again)  # hooks are removed on exit
    after_image = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().max() + 1
    assert not torch.allclose(normal[:, after_image:], all_dropped[:, after_image:], atol=1e-4)
    with pytest.raises(ValueError, match="out of range"), drop_vision_tokens(model, [4]):
        pass


def test_dropping_agrees_across_mask_forms_and_with_the_cache(baseline_dir, synth_data):
    """eager (float mask) == sdpa without a mask == sdpa with a boolean (left-padding) mask; cached decoding
    under the drop equals recomputing the whole sequence under it."""
    eager = load_eager(str(baseline_dir), "cpu", torch.float32)
    sdpa = LlavaMiniForConditionalGeneration.from_pretrained(baseline_dir, attn_implementation="sdpa").eval()
    inputs = encode_with_answer(eager, load_questions(synth_data, limit=1)[0])
    ids, pixels = inputs["input_ids"], inputs["pixel_values"]
    padded = torch.cat([torch.zeros_like(ids[:, :2]), ids], dim=1)  # two left-padding columns
    padding_mask = (torch.arange(padded.shape[1]) >= 2).long().unsqueeze(0)
    layers = [1, 2]
    with torch.inference_mode():
        with drop_vision_tokens(eager.model, layers):
            eager_logits = eager.model(input_ids=ids, pixel_values=pixels).logits
        with drop_vision_tokens(sdpa, layers):
            sdpa_logits = sdpa(input_ids=ids, pixel_values=pixels).logits
            padded_logits = sdpa(input_ids=padded, pixel_values=pixels, attention_mask=padding_mask).logits
            generated = sdpa.generate(
                input_ids=ids,
                pixel_values=pixels,
                max_new_tokens=4,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
            recomputed = sdpa(input_ids=generated.sequences[:, :-1], pixel_values=pixels).logits
        plain = sdpa(input_ids=generated.sequences[:, :-1], pixel_values=pixels).logits
    torch.testing.assert_close(eager_logits, sdpa_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(padded_logits[:, 2:], sdpa_logits, atol=1e-4, rtol=1e-4)
    cached = torch.stack(generated.logits, dim=1)  # (1, new tokens, vocab)
    torch.testing.assert_close(recomputed[:, ids.shape[1] - 1 :], cached, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(plain[:, ids.shape[1] :], cached[:, 1:], atol=1e-4)  # the drop mattered


def test_layer_ranges():
    assert [list(r) for r in layer_ranges(10, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ValueError, match="drop-span"):
        layer_ranges(4, 0)


def test_analysis_writes_figures_and_statistics(mini_dir, synth_data, tmp_path):
    assistant = load_eager(str(mini_dir), "cpu", torch.float32)
    questions = load_questions(synth_data, limit=2)
    analysis = analyze_attention(assistant, questions, tmp_path, span=2, batch_size=2)
    for name in (
        "attention_shares.png",
        "vision_entropy.png",
        "attention_maps.png",
        "drop_vision_layers.png",
    ):
        assert_png(tmp_path / name)
    saved = json.loads((tmp_path / "attention.json").read_text())
    assert saved["layers"] == 4 and saved["samples"] == 2
    assert list(saved["ablation"]) == ["none", "1-2", "3-4"]
    assert all(0.0 <= value <= 1.0 for value in analysis.ablation.values())
    for layer in analysis.shares:
        assert sum(layer[RESPONSE]) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= value <= 1.0 for value in analysis.normalised_entropy)  # 4 compressed tokens per image


def test_compression_heatmap(mini_dir, baseline_dir, synth_data, tmp_path):
    assistant = LlavaMini.load(str(mini_dir))
    image = load_image(load_questions(synth_data, limit=1)[0].media_path)
    attention = compressor_attention(assistant, image, "What is in the image?")
    side = assistant.config.patch_grid_side
    assert attention.shape == (4, side, side)
    torch.testing.assert_close(attention.sum((1, 2)), torch.ones(4))
    picture = displayed_picture(image, assistant.processor.image_processor)
    assert picture.size == (assistant.config.vision_config.image_size,) * 2
    hd = LlavaMiniImageProcessor(size=96, resolution_ratio=2)
    assert displayed_picture(image.resize((150, 100)), hd).size == (192, 192)  # 2 x 2 padded crops
    assert_png(plot_compression(picture, attention, tmp_path / "compression.png"))
    with pytest.raises(ValueError, match="no compressor"):
        compressor_attention(LlavaMini.load(str(baseline_dir)), image, "What is in the image?")
