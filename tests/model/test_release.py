"""Loading the official release's checkpoint layout (docs/release.md) and matching its computation.

A tiny checkpoint is written here in the release's layout (its config field names, its weight names, a
LLaMA-3.1-style tokenizer built locally), loaded with `load_release`, and its logits are compared with a
step-by-step computation written from /work/shared/spec/official-llava-mini.md: CLIP hidden states at
`mm_vision_select_layer`, the compressor's arithmetic, the projector, pre-fusion over the release's token
order (the whole prompt, placeholder masked, its position ids), then LLaMA.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from llava_mini.inference.generate import LlavaMini
from llava_mini.model.loading import load_options
from llava_mini.model.release import (
    is_release_checkpoint,
    load_release,
    read_weight_index,
    vision_config_from_weights,
)
from llava_mini.processing.chat_templates import RELEASE_SYSTEM_PROMPT
from tests.conftest import TOKENIZER_CORPUS

IMAGE_SIZE, PATCH = 32, 8  # a 4 x 4 grid of vision tokens
TOWER_PREFIX = "model.vision_tower.vision_tower.vision_model."
RELEASE_SPECIAL_TOKENS = [  # LLaMA-3.1's first special tokens, in its id order (128000, 128001, ...)
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
# The shape of Meta's LLaMA-3.1 template: a dated system header, turns closed by <|eot_id|>, and the
# assistant header only with add_generation_prompt.
LLAMA31_STYLE_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)
QUESTION = "what colour is the red square ? yes !"


# Writing a tiny checkpoint in the release's layout ---------------------------------------------------
def release_tokenizer_files(directory: Path) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    backend.train_from_iterator(TOKENIZER_CORPUS, trainer=trainer)
    backend.add_special_tokens(RELEASE_SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"
    )
    tokenizer.chat_template = LLAMA31_STYLE_TEMPLATE
    tokenizer.save_pretrained(directory)
    return tokenizer


def sincos_table(grid: int, dim: int) -> torch.Tensor:
    """MAE's 2D table as the spec states it: first half the column, second half the row; sin then cos."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    row, col = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )
    halves = []
    for axis in (col.reshape(-1), row.reshape(-1)):
        angles = axis[:, None] * omega[None, :]
        halves += [angles.sin(), angles.cos()]
    return torch.cat(halves, dim=1).float()


def perturbed(state: dict[str, torch.Tensor], generator: torch.Generator, scale: float = 0.05) -> dict:
    """Random offsets on every tensor, so norms are not all ones and biases not all zeros."""
    return {
        key: value + scale * torch.randn(value.shape, generator=generator) for key, value in state.items()
    }


def text_fields(vocab_size: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        ),
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
    )


def vision_fields(width: int = 128, heads: int = 2) -> dict:
    return dict(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=3,
        num_attention_heads=heads,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
    )


def write_release(
    directory: Path,
    compressor_size: int = 1,
    vision: dict | None = None,
    store_tower: bool = True,
    tower_name: str | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Write config.json, two safetensors shards and tokenizer files as the release lays them out.

    Returns every weight under its release name (the tower under the release's prefix even when not stored).
    tower_name: `mm_vision_tower`; None writes the tower's config.json to `clip-tower/` beside the weights
    and names that directory (relative to the checkpoint), so nothing is looked up on the hub.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = release_tokenizer_files(directory)
    text = text_fields(len(tokenizer))
    vision = vision or vision_fields()
    if tower_name is None:
        CLIPVisionConfig(**vision).save_pretrained(directory / "clip-tower")
        tower_name = "clip-tower"
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(LlamaConfig(**text))
    tower = CLIPVisionModel(CLIPVisionConfig(**vision))
    weights = perturbed(llama.state_dict(), generator)
    tower_weights = perturbed(tower.state_dict(), generator)
    # The release's tower was saved by transformers 4.x, which nests CLIP's modules under `vision_model.`.
    weights.update({f"{TOWER_PREFIX}{key}": value for key, value in tower_weights.items()})
    for index in range(2):
        layer = LlamaDecoderLayer(LlamaConfig(**text), layer_idx=index)
        layer_weights = perturbed(layer.state_dict(), generator, scale=0.2)
        weights.update(
            {f"model.prefusion_layers.{index}.{key}": value for key, value in layer_weights.items()}
        )
    dv, dt = vision["hidden_size"], text["hidden_size"]

    def randn(*shape: int, scale: float) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=generator)

    weights.update(
        {
            "model.mm_projector.0.weight": randn(dt, dv, scale=dv**-0.5),
            "model.mm_projector.0.bias": randn(dt, scale=0.1),
            "model.mm_projector.2.weight": randn(dt, dt, scale=dt**-0.5),
            "model.mm_projector.2.bias": randn(dt, scale=0.1),
            "model.compressor.query": randn(compressor_size**2, dv, scale=1.0),
            "model.compressor.pos_embed": sincos_table(compressor_size, dv),
            "model.compressor.ln_q.weight": 1 + randn(dv, scale=0.1),
            "model.compressor.ln_q.bias": randn(dv, scale=0.1),
            "model.compressor.ln_kv.weight": 1 + randn(dv, scale=0.1),
            "model.compressor.ln_kv.bias": randn(dv, scale=0.1),
            "model.compressor.attn.in_proj_weight": randn(3 * dv, dv, scale=dv**-0.5),
            "model.compressor.attn.in_proj_bias": randn(3 * dv, scale=0.1),
            "model.compressor.attn.out_proj.weight": randn(dv, dv, scale=dv**-0.5),
            "model.compressor.attn.out_proj.bias": randn(dv, scale=0.1),
        }
    )
    stored = {key: value.to(dtype).contiguous() for key, value in weights.items()}
    if not store_tower:
        stored = {key: value for key, value in stored.items() if not key.startswith("model.vision_tower.")}
    names = sorted(stored)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file_name, keys in shards.items():
        save_file({key: stored[key] for key in keys}, str(directory / file_name), metadata={"format": "pt"})
    index = {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in stored.values())},
        "weight_map": {key: file_name for file_name, keys in shards.items() for key in keys},
    }
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config = dict(
        _name_or_path="tiny-llava-mini",
        architectures=["LlavaMiniLlamaForCausalLM"],
        model_type="llava_mini_llama",
        torch_dtype=str(dtype).removeprefix("torch."),
        transformers_version="4.43.1",
        use_cache=True,
        **text,
        mm_vision_tower=tower_name,
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_projector_type="mlp2x_gelu",
        mm_hidden_size=dv,
        mm_patch_merge_type="flat",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        image_aspect_ratio="pad",
        image_grid_pinpoints=None,
        tokenizer_model_max_length=2048,
        tokenizer_padding_side="right",
        use_mm_proj=True,
        tune_mm_mlp_adapter=False,
        compressor_size=compressor_size,
        prefusion_layer_num=2,
        resolution_ratio=1,
    )
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return {key: value.to(dtype).float() for key, value in weights.items()}


# The release's computation, step by step (spec sections in the comments) ----------------------------
def reference_logits(
    weights: dict[str, torch.Tensor],
    config: dict,
    vision: dict,
    prompt_ids: list[int],
    image_index: int,
    pixels: torch.Tensor,
) -> torch.Tensor:
    """Logits (1, L - 1 + C*C, V) for one image, the prompt's placeholder at `image_index`."""
    # Vision tower: hidden states of layer mm_vision_select_layer, class token dropped.
    tower = CLIPVisionModel(CLIPVisionConfig(**vision)).eval()
    tower.load_state_dict(
        {k[len(TOWER_PREFIX) :]: v for k, v in weights.items() if k.startswith(TOWER_PREFIX)}
    )
    hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[
        config["mm_vision_select_layer"]
    ]
    x = hidden[0, 1:]  # (N, Dv)
    num_tokens, width = x.shape

    # Compressor: query = ln_q(q) + pos(q); key = ln_kv(x) + pos resized (bicubic) to the grid; value = ln_kv(x).
    def w(name: str) -> torch.Tensor:
        return weights[f"model.compressor.{name}"]

    kv = F.layer_norm(x, (width,), w("ln_kv.weight"), w("ln_kv.bias"), eps=1e-5)
    side, grid = config["compressor_size"], math.isqrt(num_tokens)
    pos = w("pos_embed")
    key_pos = pos
    if side != grid:
        image = pos.reshape(1, side, side, width).permute(0, 3, 1, 2)
        key_pos = F.interpolate(image, size=(grid, grid), mode="bicubic", align_corners=False)
        key_pos = key_pos.permute(0, 2, 3, 1).reshape(grid * grid, width)
    query = F.layer_norm(w("query"), (width,), w("ln_q.weight"), w("ln_q.bias"), eps=1e-5) + pos
    key = kv + key_pos
    wq, wk, wv = w("attn.in_proj_weight").chunk(3)
    bq, bk, bv = w("attn.in_proj_bias").chunk(3)
    heads, head_dim = 8, width // 8
    q = (query @ wq.T + bq).reshape(-1, heads, head_dim).transpose(0, 1)  # (h, K, d)
    k = (key @ wk.T + bk).reshape(-1, heads, head_dim).transpose(0, 1)  # (h, N, d)
    v = (kv @ wv.T + bv).reshape(-1, heads, head_dim).transpose(0, 1)
    attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(head_dim), dim=-1)
    compressed = (attention @ v).transpose(0, 1).reshape(-1, width)
    compressed = compressed @ w("attn.out_proj.weight").T + w("attn.out_proj.bias")  # (K, Dv)

    # Projector mlp2x_gelu, applied to the N vision tokens and the K compressed ones.
    def project(features: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(
            features @ weights["model.mm_projector.0.weight"].T + weights["model.mm_projector.0.bias"]
        )
        return hidden @ weights["model.mm_projector.2.weight"].T + weights["model.mm_projector.2.bias"]

    vision_tokens, compressed_tokens = project(x), project(compressed)
    num_compressed = compressed_tokens.shape[0]

    # Pre-fusion over [N vision ; K compressed ; the WHOLE prompt], causal, the placeholder masked as a key
    # (embedded as the release does: id clamped to 0); positions count unmasked tokens, placeholder -> 1.
    text = LlamaConfig(**{key: config[key] for key in text_fields(0)}, attn_implementation="eager")
    embed = weights["model.embed_tokens.weight"]
    ids = torch.tensor(prompt_ids)
    ids[image_index] = 0
    sequence = torch.cat([vision_tokens, compressed_tokens, embed[ids]]).unsqueeze(0)
    length = sequence.shape[1]
    masked = torch.zeros(length, dtype=torch.bool)
    masked[num_tokens + num_compressed + image_index] = True
    blocked = torch.ones(length, length, dtype=torch.bool).triu(1) | masked[None, :]
    mask = torch.zeros(length, length).masked_fill(blocked, torch.finfo(torch.float32).min)[None, None]
    positions = (~masked).long().cumsum(0) - 1
    positions[masked] = 1
    positions = positions[None]
    rotary = LlamaRotaryEmbedding(text)
    cos_sin = rotary(sequence, positions)
    for index in range(config["prefusion_layer_num"]):
        layer = LlamaDecoderLayer(text, layer_idx=index).eval()
        prefix = f"model.prefusion_layers.{index}."
        layer.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
        sequence = layer(sequence, attention_mask=mask, position_ids=positions, position_embeddings=cos_sin)
    fused_vision = sequence[0, num_tokens : num_tokens + num_compressed]
    fused_text = sequence[0, num_tokens + num_compressed :]

    # The LLM: the prompt in order, fused text at text positions, the K fused compressed tokens at <image>.
    inputs = torch.cat([fused_text[:image_index], fused_vision, fused_text[image_index + 1 :]]).unsqueeze(0)
    llama = LlamaForCausalLM(text).eval()
    llama.load_state_dict(
        {
            k: v
            for k, v in weights.items()
            if k.startswith(("model.embed_tokens", "model.layers", "model.norm", "lm_head"))
        }
    )
    position_ids = torch.arange(inputs.shape[1])[None]
    return llama(inputs_embeds=inputs, position_ids=position_ids).logits


# Tests ---------------------------------------------------------------------------------------------
def pixels(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def prompt_messages(processor) -> list[dict]:
    return processor.build_messages([("user", "<image>\n" + QUESTION)])


def our_logits(model, processor) -> tuple[torch.Tensor, list[int]]:
    sample = processor.encode(prompt_messages(processor), [pixels()], add_generation_prompt=True)
    ids = torch.tensor([sample.input_ids])
    with torch.no_grad():
        logits = model(
            input_ids=ids, pixel_values=sample.pixel_values, attention_mask=torch.ones_like(ids)
        ).logits
    return logits, sample.input_ids


def release_prompt_ids(directory: Path) -> tuple[list[int], int]:
    """The release's prompt ids: its template, [system, user], add_generation_prompt=False, split at <image>."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    messages = [
        {"role": "system", "content": RELEASE_SYSTEM_PROMPT},
        {"role": "user", "content": "<image>\n" + QUESTION},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    before, after = text.split("<image>")
    ids_before = tokenizer(before, add_special_tokens=False).input_ids
    ids_after = tokenizer(after, add_special_tokens=False).input_ids
    return ids_before + [-200] + ids_after, len(ids_before)


@pytest.mark.parametrize("compressor_size", [1, 2])
def test_release_logits_match_the_step_by_step_computation(tmp_path, compressor_size):
    weights = write_release(tmp_path / "release", compressor_size=compressor_size)
    config = json.loads((tmp_path / "release" / "config.json").read_text())
    model, processor = load_release(tmp_path / "release")
    logits, ids = our_logits(model, processor)

    release_ids, image_index = release_prompt_ids(tmp_path / "release")
    num_slots = compressor_size**2
    expected_ids = (
        release_ids[:image_index] + [processor.image_token_id] * num_slots + release_ids[image_index + 1 :]
    )
    assert ids == expected_ids  # the release's prompt, one placeholder per vision token
    assert 0 in ids  # token id 0 is an ordinary token here (the release hides it from pre-fusion)
    with torch.no_grad():
        expected = reference_logits(weights, config, vision_fields(), release_ids, image_index, pixels())
    assert logits.shape == expected.shape == (1, len(release_ids) - 1 + num_slots, config["vocab_size"])
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_release_tokenizer_prompt_format_and_stop_ids(tmp_path):
    write_release(tmp_path / "release")
    model, processor = load_release(tmp_path / "release")
    tokenizer = processor.tokenizer
    vocab = tokenizer.get_vocab()
    # <image> and <video> take the first two reserved ids: the vocabulary (and the logits) keep their size.
    original = PreTrainedTokenizerFast.from_pretrained(tmp_path / "release").get_vocab()
    assert (vocab["<image>"], vocab["<video>"]) == (
        original["<|reserved_special_token_0|>"],
        original["<|reserved_special_token_1|>"],
    )
    assert len(tokenizer) == model.config.text_config.vocab_size == 300 + len(RELEASE_SPECIAL_TOKENS)
    assert model.config.image_token_id == vocab["<image>"]
    assert processor.system_prompt == RELEASE_SYSTEM_PROMPT
    rendered = processor.render(prompt_messages(processor), add_generation_prompt=True)
    assert rendered.count("<|begin_of_text|>") == 1
    assert rendered.endswith(QUESTION + "<|eot_id|>")  # no assistant header, as the release renders it
    assert "Cutting Knowledge Date" in rendered  # the checkpoint's own template
    assert model.generation_config.eos_token_id == [
        vocab["<|eot_id|>"],
        vocab["<|eom_id|>"],
        vocab["<|end_of_text|>"],
    ]
    assert tokenizer.pad_token_id == vocab["<|finetune_right_pad_id|>"]

    _, with_header = load_release(tmp_path / "release", assistant_header=True)
    rendered = with_header.render(prompt_messages(with_header), add_generation_prompt=True)
    assert rendered.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_vision_tower_config_and_weights_by_name_when_not_stored(tmp_path):
    vision = vision_fields(width=64, heads=4)  # 4 heads: only the named config can say so
    weights = write_release(
        tmp_path / "release", vision=vision, store_tower=False, tower_name=str(tmp_path / "clip")
    )
    tower = CLIPVisionModel(CLIPVisionConfig(**vision))
    tower.load_state_dict(
        {k[len(TOWER_PREFIX) :]: v for k, v in weights.items() if k.startswith(TOWER_PREFIX)}
    )
    tower.save_pretrained(tmp_path / "clip")
    model, processor = load_release(tmp_path / "release")
    assert model.config.vision_config.num_attention_heads == 4
    torch.testing.assert_close(model.vision_tower.model.state_dict(), tower.state_dict())
    config = json.loads((tmp_path / "release" / "config.json").read_text())
    release_ids, image_index = release_prompt_ids(tmp_path / "release")
    logits, _ = our_logits(model, processor)
    with torch.no_grad():
        expected = reference_logits(weights, config, vision, release_ids, image_index, pixels())
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_vision_config_is_read_off_the_stored_weights(tmp_path):
    write_release(tmp_path / "release")
    config = vision_config_from_weights(read_weight_index(tmp_path / "release"))
    assert config == dict(model_type="clip_vision_model", **vision_fields())


def test_convert_then_load_gives_the_same_logits_and_prompt(tmp_path):
    from llava_mini.cli import main

    write_release(tmp_path / "release", compressor_size=2)
    model, processor = load_release(tmp_path / "release")
    expected, expected_ids = our_logits(model, processor)
    assert main(["convert", str(tmp_path / "release"), str(tmp_path / "ours"), "--dtype", "float32"]) == 0
    assert (tmp_path / "ours" / "model.safetensors").is_file()
    assert not is_release_checkpoint(tmp_path / "ours")
    converted = LlavaMini.load(tmp_path / "ours")
    logits, ids = our_logits(converted.model, converted.processor)
    assert ids == expected_ids
    torch.testing.assert_close(logits, expected, atol=0, rtol=0)
    assert converted.processor.system_prompt == RELEASE_SYSTEM_PROMPT
    assert converted.model.generation_config.eos_token_id == model.generation_config.eos_token_id


def test_a_loaded_release_saves_in_our_layout(tmp_path):
    write_release(tmp_path / "release")
    model, processor = load_release(tmp_path / "release")
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    again = LlavaMini.load(tmp_path / "saved")
    torch.testing.assert_close(our_logits(again.model, again.processor)[0], our_logits(model, processor)[0])


def test_llava_mini_load_dispatches_on_a_release_dir_and_answers(tmp_path):
    write_release(tmp_path / "release")
    assert is_release_checkpoint(tmp_path / "release")
    assistant = LlavaMini.load(tmp_path / "release")
    completion = assistant.complete_batch(
        [assistant.question_messages(QUESTION, [pixels()])], [[pixels()]], settings=_greedy(4)
    )[0]
    assert completion.completion_tokens <= 4
    assert assistant.stop_token_ids() == sorted(assistant.model.generation_config.eos_token_id)


def _greedy(max_new_tokens: int):
    from llava_mini.inference.generate import GenerationSettings

    return GenerationSettings(max_new_tokens=max_new_tokens)


def test_dtype_auto_keeps_the_stored_precision_and_bf16_loads(tmp_path):
    write_release(tmp_path / "release", dtype=torch.bfloat16)
    model, _ = load_release(tmp_path / "release", dtype="auto")
    assert model.dtype == torch.bfloat16
    model, _ = load_release(tmp_path / "release", **load_options(dtype="float16"))
    assert model.language_model.lm_head.weight.dtype == torch.float16


def test_quantisation_errors_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        load_options(device="cpu", quantization="4bit")
    with pytest.raises(ValueError, match="quantization must be"):
        load_options(device="cuda", quantization="3bit")
    with pytest.raises(ValueError, match="unknown dtype"):
        load_options(dtype="float64")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install bitsandbytes"):
        load_options(device="cuda", quantization="8bit")


def test_quantising_a_release_on_cpu_is_refused_before_loading(tmp_path):
    write_release(tmp_path / "release")
    with pytest.raises(ValueError, match="8bit quantisation needs a CUDA GPU"):
        LlavaMini.load(tmp_path / "release", quantization="8bit")


def test_bad_release_checkpoints_are_named(tmp_path):
    write_release(tmp_path / "release")
    config_path = tmp_path / "release" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(dict(config, mm_patch_merge_type="spatial_unpad")))
    with pytest.raises(ValueError, match="mm_patch_merge_type='spatial_unpad'"):
        load_release(tmp_path / "release")

    write_release(tmp_path / "no-tower", store_tower=False, tower_name=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="hold no vision tower.*--vision-tower"):
        load_release(tmp_path / "no-tower")

    lacking = tmp_path / "lacking"
    write_release(lacking)
    index = json.loads((lacking / "model.safetensors.index.json").read_text())
    shard = lacking / index["weight_map"]["model.compressor.query"]
    tensors = load_file(str(shard))
    del tensors["model.compressor.query"]
    save_file(tensors, str(shard))
    del index["weight_map"]["model.compressor.query"]
    (lacking / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="weights missing from the release checkpoint.*compressor.query"):
        load_release(lacking)

    extra = tmp_path / "extra"
    write_release(extra)
    save_file({"model.image_newline": torch.zeros(64)}, str(extra / "model-extra.safetensors"))
    index = json.loads((extra / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.image_newline"] = "model-extra.safetensors"
    (extra / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="model.image_newline"):
        load_release(extra)
