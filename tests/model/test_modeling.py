"""The LLaVA-Mini model on tiny random configs: shapes, gradients, caching, padding, save/load."""

from __future__ import annotations

import pytest
import torch

from llava_mini.model.modeling import LlavaMiniForConditionalGeneration
from tests.conftest import TINY_IMAGE_SIZE, tiny_config

IMAGE_TOKEN = 300


def build(**fields) -> LlavaMiniForConditionalGeneration:
    torch.manual_seed(0)
    return LlavaMiniForConditionalGeneration(tiny_config(**fields)).eval()


def prompt(num_slots: int, before: list[int], after: list[int]) -> list[int]:
    return before + [IMAGE_TOKEN] * num_slots + after


def pixels(num_pictures: int, views: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_pictures, views, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=generator)


VARIANTS = {
    "llava-mini C=1 N=2": dict(),
    "llava-mini C=2 N=1": dict(compressor_size=2, prefusion_layers=1),
    "llava-mini C=4 N=0": dict(compressor_size=4, prefusion_layers=0),
    "pool C=2 N=0": dict(compressor_type="pool", compressor_size=2, prefusion_layers=0),
    "pool C=1 N=2": dict(compressor_type="pool", prefusion_layers=2),
    "baseline llava-v1.5": dict(compressor_type="none", prefusion_layers=0),
    "paper arrangement": dict(arrangement="paper", compressor_size=2),
}


@pytest.mark.parametrize("fields", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_variant_gives_logits_and_the_expected_number_of_llm_vision_tokens(fields):
    model = build(**fields)
    slots = model.config.num_vision_tokens()
    expected = {"none": 16}.get(model.config.compressor_type, model.config.compressor_size**2)
    assert slots == expected
    ids = torch.tensor([prompt(slots, [1, 2], [3, 4, 5]), prompt(slots, [6], [7, 8, 9, 10])])
    captured = {}
    hook = model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    out = model(input_ids=ids, pixel_values=pixels(2), attention_mask=torch.ones_like(ids))
    hook.remove()
    assert out.logits.shape == (2, ids.shape[1], model.config.text_config.vocab_size)
    assert captured["embeds"].shape == (2, ids.shape[1], 32)
    if model.compressor is not None:
        assert out.compressor_attentions.shape == (2, slots, 16)
        torch.testing.assert_close(out.compressor_attentions.sum(-1), torch.ones(2, slots))


def test_placeholder_and_picture_counts_must_agree():
    model = build()
    ids = torch.tensor([prompt(1, [1], [2])])
    with pytest.raises(ValueError, match="placeholder"):
        model(input_ids=ids, pixel_values=pixels(2))
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=ids)


def test_token_id_zero_is_an_ordinary_token_that_enters_prefusion():
    model = build()
    ids = torch.tensor([prompt(1, [0, 0], [0, 5])])
    mask = model.prefusion_text_mask(ids, torch.ones_like(ids), None)
    assert mask.tolist() == [[True, True, False, True, True]]
    base = model(input_ids=ids, pixel_values=pixels(1)).logits
    other = model(input_ids=ids, pixel_values=pixels(1, seed=1)).logits
    # Pre-fusion changes the token-0 positions' inputs with the image: different pictures, different logits.
    assert not torch.allclose(base[0, 0], other[0, 0])


def test_gradients_reach_trainable_parts_and_never_the_frozen_vision_tower():
    model = build().train()
    model.vision_tower.requires_grad_(False)
    ids = torch.tensor([prompt(1, [1, 2], [3, 4, 5])])
    labels = torch.full_like(ids, -100)
    labels[0, -2:] = ids[0, -2:]
    model(input_ids=ids, pixel_values=pixels(1), labels=labels).loss.backward()
    for name in ("projector", "compressor", "prefusion", "language_model"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads[:3]), name
        assert any(g.abs().sum() > 0 for g in grads if g is not None), name
    assert all(p.grad is None for p in model.vision_tower.parameters())


def test_loss_only_on_labelled_positions():
    model = build()
    ids = torch.tensor([prompt(1, [1, 2], [3, 4, 5])])
    labels = torch.full_like(ids, -100)
    labels[0, -1] = 5
    out = model(input_ids=ids, pixel_values=pixels(1), labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[0, -2:-1], torch.tensor([5]))
    torch.testing.assert_close(out.loss, expected)


def greedy_without_cache(model, ids: torch.Tensor, picture: torch.Tensor, steps: int) -> list[int]:
    """Recompute the whole sequence at every step; generated tokens keep raw embeddings."""
    generated: list[int] = []
    prompt_length = ids.shape[1]
    for _ in range(steps):
        full = torch.cat([ids, torch.tensor([generated], dtype=torch.long)], dim=1) if generated else ids
        labels = torch.full_like(full, -100)
        labels[0, prompt_length:] = full[0, prompt_length:]  # generated tokens stay out of pre-fusion
        with torch.no_grad():
            embeds, _ = model.embed_multimodal(full, picture, None, labels)
            logits = model(inputs_embeds=embeds, use_cache=False).logits
        generated.append(int(logits[0, -1].argmax()))
    return generated


@pytest.mark.parametrize("fields", [dict(), dict(compressor_type="none", prefusion_layers=0)], ids=["mini", "baseline"])
def test_cached_greedy_generation_equals_recomputing_without_cache(fields):
    model = build(**fields)
    slots = model.config.num_vision_tokens()
    ids = torch.tensor([prompt(slots, [1, 2], [3, 4, 5])])
    picture = pixels(1)
    out = model.generate(
        input_ids=ids, pixel_values=picture, attention_mask=torch.ones_like(ids),
        max_new_tokens=6, do_sample=False, min_new_tokens=6, eos_token_id=None, pad_token_id=0,
    )
    assert out[0, ids.shape[1]:].tolist() == greedy_without_cache(model, ids, picture, 6)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_a_padded_batch_equals_each_sample_alone(padding_side):
    model = build()
    rows = [prompt(1, [1, 2], [3, 4, 5, 6, 7]), prompt(1, [8], [9]), prompt(1, [], [10, 11, 0])]
    pictures = pixels(3)
    length = max(map(len, rows))
    ids = torch.full((3, length), 0)
    mask = torch.zeros((3, length), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if padding_side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    with torch.no_grad():
        batched = model(input_ids=ids, pixel_values=pictures, attention_mask=mask).logits
        for i, row in enumerate(rows):
            alone = model(input_ids=torch.tensor([row]), pixel_values=pictures[i : i + 1]).logits[0]
            span = slice(length - len(row), length) if padding_side == "left" else slice(0, len(row))
            torch.testing.assert_close(batched[i, span], alone, atol=2e-5, rtol=1e-4)
    generated = model.generate(
        input_ids=ids, pixel_values=pictures, attention_mask=mask, max_new_tokens=4, do_sample=False,
        eos_token_id=None, pad_token_id=0,
    ) if padding_side == "left" else None
    if generated is not None:
        for i, row in enumerate(rows):
            single = model.generate(
                input_ids=torch.tensor([row]), attention_mask=torch.ones(1, len(row), dtype=torch.long),
                pixel_values=pictures[i : i + 1], max_new_tokens=4,
                do_sample=False, eos_token_id=None, pad_token_id=0,
            )
            assert generated[i, length:].tolist() == single[0, len(row):].tolist()


def test_several_pictures_per_sample_average_the_fused_text():
    model = build()
    ids = torch.tensor([prompt(1, [1], [2]) + [IMAGE_TOKEN] + [3, 4]])
    pictures = pixels(2)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pictures).logits
        model.config.encode_chunk_size = 1  # chunked encoding must agree
        chunked = model(input_ids=ids, pixel_values=pictures).logits
    torch.testing.assert_close(out, chunked)


def test_hd_views_are_stitched_and_compressed():
    model = build(resolution_ratio=2, compressor_size=2)
    assert model.config.views_per_picture == 5
    ids = torch.tensor([prompt(4, [1], [2, 3])])
    out = model(input_ids=ids, pixel_values=pixels(1, views=5))
    assert out.compressor_attentions.shape == (1, 4, 64)  # an 8 x 8 stitched grid


def test_save_and_load_round_trip_gives_identical_logits(tmp_path):
    from transformers import AutoConfig, AutoModelForImageTextToText

    import llava_mini  # noqa: F401  (registers the Auto classes)

    model = build(compressor_size=2)
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).compressor_size == 2
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, LlavaMiniForConditionalGeneration)
    ids = torch.tensor([prompt(4, [1, 2], [3, 4])])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=ids, pixel_values=pixels(1)).logits, model(input_ids=ids, pixel_values=pixels(1)).logits,
            rtol=0, atol=0,
        )


def test_siglip_and_qwen2_backbones_work():
    model = build(vision="siglip", text="qwen2")
    assert type(model.prefusion.layers[0]).__name__ == "Qwen2DecoderLayer"
    ids = torch.tensor([prompt(1, [1, 2], [3])])
    out = model(input_ids=ids, pixel_values=pixels(1), labels=ids.masked_fill(ids == IMAGE_TOKEN, -100))
    assert torch.isfinite(out.loss)
    model.generate(input_ids=ids, pixel_values=pixels(1), max_new_tokens=3, do_sample=False, pad_token_id=0)


def test_prefusion_can_start_from_the_llm_layers():
    model = build(prefusion_init="llm")
    model.init_prefusion_from_language_model()
    source = model.language_model.get_decoder().layers[1].mlp.up_proj.weight
    torch.testing.assert_close(model.prefusion.layers[1].mlp.up_proj.weight, source)


def test_vision_feature_cache_skips_the_tower_for_seen_views_and_changes_nothing():
    from llava_mini.model.vision import VisionFeatureCache

    torch.manual_seed(0)
    model = LlavaMiniForConditionalGeneration(tiny_config()).eval()
    k = model.config.num_vision_tokens()
    ids = torch.tensor([[1, 5] + [300] * k + [7, 8]])
    pictures = torch.randn(1, 1, 3, 32, 32)
    with torch.inference_mode():
        expected = model(input_ids=ids, pixel_values=pictures).logits
        cache = VisionFeatureCache(max_entries=2)
        model.vision_tower.feature_cache = cache
        calls = []
        handle = model.vision_tower.model.register_forward_hook(lambda *_: calls.append(1))
        first = model(input_ids=ids, pixel_values=pictures).logits
        second = model(input_ids=ids, pixel_values=pictures).logits
        handle.remove()
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    for _ in range(3):  # least recently used entries go first
        cache.put(VisionFeatureCache.key(torch.randn(3, 4, 4)), torch.zeros(1))
    assert len(cache.entries) == 2
