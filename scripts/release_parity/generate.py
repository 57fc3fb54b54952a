"""Reference outputs of the authors' own code (ictnlp/LLaVA-Mini) on small random release-layout checkpoints.

Run by hand, in the release's environment (transformers 4.43), never at test time; see README.md here for the
exact versions and command. It writes, under --out (tests/model/release_parity/ in this repository):

  clip-tower/            a CLIP vision tower (width 96, 4 heads of 24, 2 layers, 56 px, patch 14) and its
                         CLIPImageProcessor; both checkpoints name it as `mm_vision_tower: "../clip-tower"`
  c1/                    C = 1, resolution_ratio 1, the tower's weights stored in the shards, LLaMA-3.1's
                         reserved special tokens
  c2-hd/                 C = 2, resolution_ratio 2, no tower weights in the shards (loaded by name), a tokenizer
                         with ONE reserved special token
  media/image.png        150 x 100 RGB
  media/video.mp4        20 frames at 2 fps, 400 x 300 (the release samples 10 frames)
  references/<ckpt>_<image|video>.safetensors   the release's tensors for one case
  references/index.json  prompts, token ids, generated text, versions

Every step that produces a reference is the release's own code: `load_pretrained_model` (builder.py),
`conv_templates["llava_llama_3_1"]` (conversation.py), `tokenizer_image_token`, `process_images` (mm_utils.py),
`load_video` and `split_image` (eval/run_llava_mini.py, decord), `prepare_inputs_labels_for_multimodal`, the
model's forward and `generate` (llavamini_arch.py, llavamini_llama.py). Departures, all forced or on purpose:

* The compressor's width is hard-coded to 1024 in `build_compressor`; a 1024-wide tower would make the
  checkpoints tens of MB, so `Resampler` is given the tower's width (96) instead. Nothing else changes.
* `load_pretrained_model` always loads in float16; the weights are written as float16-representable float32
  values, so its float16 load is lossless, and the model is then run in float32 on the CPU.
* The two known defects are kept out of the compared outputs: the double BOS (the release's template and its
  tokenizer both add one) is removed from the ids before the forward and generation (the release's raw ids are
  stored too), and no prompt contains token id 0 (which the release hides from pre-fusion); the generator
  checks that.
* conversation.py loads `ICTNLP/llava-mini-llama-3.1-8b`'s tokenizer from the hub at import; the generator
  imports it from a working directory where that name is a local folder holding the checkpoint's tokenizer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerFast

SEED = 1
TOWER = dict(
    hidden_size=96,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=56,
    patch_size=14,
    projection_dim=32,
)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    hidden_act="silu",
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    attention_bias=False,
    mlp_bias=False,
    tie_word_embeddings=False,
    rope_scaling=dict(
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=64,
    ),
)
WEIGHT_STD = 0.1  # larger than LLaMA's 0.02 so that greedy choices are clear (margins are checked)
MAX_NEW_TOKENS = 8
CHECKPOINTS = {
    "c1": dict(compressor_size=1, resolution_ratio=1, tower_in_shards=True, reserved=8),
    "c2-hd": dict(compressor_size=2, resolution_ratio=2, tower_in_shards=False, reserved=1),
}
QUESTIONS = {
    "image": "What colour is the square in the picture?",
    "video": "Which way does the red circle move in this video?",
}
CORPUS = [
    "What colour is the square in the picture? The square is red and the circle is blue.",
    "Which way does the red circle move in this video? It moves from the left to the right.",
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language.",
    "Cutting Knowledge Date: December 2023 Today Date: 26 Jul 2024 system user assistant",
    "a green triangle, a yellow star, the word cat, top left, bottom right, one two three four five",
]
# The shape of Meta's LLaMA-3.1 template: a dated system header, turns closed by <|eot_id|>, and the
# assistant header only with add_generation_prompt.
LLAMA31_TEMPLATE = (
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


def llama31_special_tokens(reserved: int) -> list[str]:
    """LLaMA-3.1's special tokens in its id order, with only `reserved` of its reserved tokens."""
    names = ["<|begin_of_text|>", "<|end_of_text|>"]
    names += [f"<|reserved_special_token_{i}|>" for i in range(min(reserved, 2))]
    names += ["<|finetune_right_pad_id|>"]
    names += [f"<|reserved_special_token_{i}|>" for i in range(2, min(reserved, 3))]
    names += ["<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
    names += [f"<|reserved_special_token_{i}|>" for i in range(3, reserved)]
    return names


def write_tokenizer(directory: Path, reserved: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE with LLaMA-3.1's special tokens, its BOS post-processor and a LLaMA-3.1-style template."""
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    backend.add_special_tokens(llama31_special_tokens(reserved))
    bos = backend.token_to_id("<|begin_of_text|>")
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", model_max_length=2048
    )
    tokenizer.chat_template = LLAMA31_TEMPLATE
    tokenizer.save_pretrained(directory)
    return tokenizer


def fp16_exact_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Random weights (std WEIGHT_STD, norms around 1, biases around 0), rounded to float16-representable values."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("pos_embed"):  # the release's fixed sine-cosine table
                parameter.copy_(parameter.half().float())
                continue
            noise = torch.randn(parameter.shape, generator=generator)
            is_norm = "norm" in name or "ln_" in name or "layer_norm" in name or "layrnorm" in name
            value = (1.0 + 0.1 * noise) if (is_norm and name.endswith("weight")) else WEIGHT_STD * noise
            parameter.copy_(value.half().float())


def write_tower(directory: Path, generator: torch.Generator) -> None:
    config = CLIPVisionConfig(**TOWER)
    tower = CLIPVisionModel(config)
    fp16_exact_(tower, generator)
    tower.save_pretrained(directory, safe_serialization=True)
    CLIPImageProcessor(
        size={"shortest_edge": TOWER["image_size"]},
        crop_size={"height": TOWER["image_size"], "width": TOWER["image_size"]},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    ).save_pretrained(directory)


def write_media(directory: Path, generator: torch.Generator) -> tuple[Path, Path]:
    """A 150 x 100 image and a 20-frame 2 fps 400 x 300 video: gradients, shapes and noise, so resizing matters."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)

    def scene(width: int, height: int, t: float, noise: float) -> np.ndarray:
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        image = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 255], axis=-1)
        cx, cy, r = width * (0.2 + 0.6 * t), height / 2, min(width, height) / 5
        image[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = (230, 30, 30)
        image[int(height * 0.1) : int(height * 0.35), int(width * 0.6) : int(width * 0.8)] = (20, 200, 40)
        image += rng.normal(0, noise, image.shape)
        return np.clip(image, 0, 255).astype(np.uint8)

    image_path = directory / "image.png"
    Image.fromarray(scene(150, 100, 0.3, noise=25)).save(image_path)
    video_path = directory / "video.mp4"
    with av.open(str(video_path), mode="w") as container:
        stream = container.add_stream("libx264", rate=2)
        stream.width, stream.height, stream.pix_fmt = 400, 300, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for index in range(20):
            frame = av.VideoFrame.from_ndarray(scene(400, 300, index / 19, noise=4), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return image_path, video_path


def release_config(settings: dict, tokenizer: PreTrainedTokenizerFast):
    from llavamini.model.language_model.llavamini_llama import LlavaMiniConfig

    vocab = tokenizer.get_vocab()
    return LlavaMiniConfig(
        vocab_size=len(tokenizer),
        **TEXT,
        bos_token_id=vocab["<|begin_of_text|>"],
        eos_token_id=[vocab["<|end_of_text|>"], vocab["<|eom_id|>"], vocab["<|eot_id|>"]],
        architectures=["LlavaMiniLlamaForCausalLM"],
        mm_vision_tower="../clip-tower",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_projector_type="mlp2x_gelu",
        mm_hidden_size=TOWER["hidden_size"],
        mm_patch_merge_type="flat",
        image_aspect_ratio="pad",
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        use_mm_proj=True,
        tokenizer_model_max_length=2048,
        tokenizer_padding_side="right",
        compressor_size=settings["compressor_size"],
        prefusion_layer_num=2,
        resolution_ratio=settings["resolution_ratio"],
    )


def write_checkpoint(directory: Path, name: str, settings: dict, generator: torch.Generator) -> None:
    """A random checkpoint in the release's layout, built with the release's own model class."""
    from llavamini.model.language_model.llavamini_llama import LlavaMiniLlamaForCausalLM

    tokenizer = write_tokenizer(directory, settings["reserved"])
    config = release_config(settings, tokenizer)
    model = LlavaMiniLlamaForCausalLM(config)
    fp16_exact_(model, generator)
    if settings["tower_in_shards"]:
        model.get_model().get_vision_tower().load_model()  # its weights become model.vision_tower.vision_tower.*
    model.save_pretrained(directory, safe_serialization=True, max_shard_size="500KB")
    shards = sorted(directory.glob("model-*.safetensors"))
    if len(shards) < 2:
        raise RuntimeError(f"{directory}: expected several shards, got {shards}")


@contextlib.contextmanager
def working_directory(path: Path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def import_release_eval_modules(tokenizer_dir: Path):
    """conversation.py fetches `ICTNLP/llava-mini-llama-3.1-8b`'s tokenizer at import: serve it from a local folder."""
    with tempfile.TemporaryDirectory() as scratch:
        hub_name = Path(scratch, "ICTNLP", "llava-mini-llama-3.1-8b")
        hub_name.mkdir(parents=True)
        for file in tokenizer_dir.glob("tokenizer*"):
            shutil.copy(file, hub_name / file.name)
        shutil.copy(tokenizer_dir / "special_tokens_map.json", hub_name)
        with working_directory(Path(scratch)):
            from llavamini import conversation
            from llavamini.eval import run_llava_mini
    return conversation, run_llava_mini


class Recorder:
    """Forward hooks on the release's vision tower and compressor (called once per frame for videos)."""

    def __init__(self, model) -> None:
        self.tower: list[torch.Tensor] = []
        self.compressor: list[torch.Tensor] = []
        inner = model.get_model()
        inner.get_vision_tower().register_forward_hook(lambda m, i, o: self.tower.append(o.detach().clone()))
        inner.compressor.register_forward_hook(lambda m, i, o: self.compressor.append(o[0].detach().clone()))

    def clear(self) -> None:
        self.tower.clear()
        self.compressor.clear()


def run_case(
    model, recorder, tokenizer, image_processor, conversation, run_llava_mini, kind, media, settings
) -> dict:
    """The release's preprocessing, prompt, forward and greedy generation for one image or video."""
    from llavamini.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llavamini.mm_utils import process_images, tokenizer_image_token

    question = QUESTIONS[kind]
    conv = conversation.conv_templates["llava_llama_3_1"].copy()
    conv.tokenizer = tokenizer
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + question)  # as run_llava_mini.eval_model
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    raw_ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)

    ratio = settings["resolution_ratio"]
    if kind == "video":  # run_llava_mini.eval_model's video branch
        frames = run_llava_mini.load_video(str(media), num_frm=None)
        pictures = [view for frame in frames for view in run_llava_mini.split_image(frame, n=ratio)]
        pixels = image_processor.preprocess(pictures, return_tensors="pt")["pixel_values"].unsqueeze(0)
        bsz, _, rgb, height, width = pixels.shape
        images = pixels.view(bsz, len(frames), -1, rgb, height, width)
    else:  # its image branch
        image = run_llava_mini.load_image(str(media))
        images = process_images(
            run_llava_mini.split_image(image, n=ratio), image_processor, model.config
        ).unsqueeze(0)
    images = images.float()

    bos = tokenizer.bos_token_id
    if not (raw_ids[0, 0] == bos and raw_ids[0, 1] == bos):
        raise RuntimeError(f"expected the release's double BOS, got {raw_ids[0, :4].tolist()}")
    ids = torch.cat([raw_ids[:, :1], raw_ids[:, 2:]], dim=1)  # the double-BOS defect removed
    if (ids == 0).any():
        raise RuntimeError("a prompt contains token id 0, which the release hides from pre-fusion")

    recorder.clear()
    with torch.inference_mode():
        embeds = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, images)[4]
        tower = torch.stack(recorder.tower)  # (frames or 1, views, patches, width)
        compressed = torch.stack(recorder.compressor)  # (frames or 1, 1, C*C, width)
        logits = model(input_ids=ids, images=images).logits
        output = model.generate(
            ids,
            images=images,
            do_sample=False,
            num_beams=1,
            max_new_tokens=MAX_NEW_TOKENS,
            use_cache=True,
            pad_token_id=tokenizer.convert_tokens_to_ids("<|finetune_right_pad_id|>"),
            output_scores=True,
            return_dict_in_generate=True,
        )
    margins = [float(s[0].topk(2).values.diff().abs()) for s in output.scores]
    greedy = output.sequences[0]
    return dict(
        tensors=dict(
            input_ids_release=raw_ids[0],
            input_ids=ids[0],
            pixel_values=images[0].contiguous(),
            tower_output=tower.contiguous(),
            compressor_output=compressed[:, 0].contiguous(),
            inputs_embeds=embeds[0].contiguous(),
            logits=logits[0].contiguous(),
            greedy_ids=greedy,
        ),
        info=dict(
            question=question,
            prompt=prompt,
            input_ids_release=raw_ids[0].tolist(),
            greedy_ids=greedy.tolist(),
            greedy_text=tokenizer.decode(greedy),
            min_greedy_margin=min(margins),
        ),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="tests/model/release_parity of the repository"
    )
    args = parser.parse_args()
    out = args.out.resolve()
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)

    import llavamini.model.llavamini_arch as arch

    class TowerWidthResampler(arch.Resampler):  # the one change to the release's code: see the docstring
        def __init__(self, grid_size, embed_dim, num_heads, **kwargs):
            super().__init__(grid_size, TOWER["hidden_size"], num_heads, **kwargs)

    arch.Resampler = TowerWidthResampler
    from llavamini.model.builder import load_pretrained_model

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_tower(out / "clip-tower", generator)
    image_path, video_path = write_media(out / "media", generator)
    (out / "references").mkdir()
    index = dict(
        source="https://github.com/ictnlp/LLaVA-Mini @ 47da1137f7b503be685ab5faa9f64a88b102e786",
        versions=dict(
            python=sys.version.split()[0],
            torch=torch.__version__,
            transformers=transformers.__version__,
            decord=__import__("decord").__version__,
            numpy=np.__version__,
            pillow=Image.__version__,
            av=av.__version__,
        ),
        max_new_tokens=MAX_NEW_TOKENS,
        cases={},
    )
    eval_modules = None
    for name, settings in CHECKPOINTS.items():
        directory = out / name
        directory.mkdir()
        # mm_vision_tower "../clip-tower" resolves from the checkpoint's directory, as in the release
        with working_directory(directory):
            write_checkpoint(directory, name, settings, generator)
            if eval_modules is None:
                eval_modules = import_release_eval_modules(directory)
            tokenizer, model, image_processor, _ = load_pretrained_model(
                str(directory), None, "llava-mini", device="cpu", device_map="cpu"
            )
            model.float().eval()  # loaded in float16 (lossless: the weights are float16 values), run in float32
            recorder = Recorder(model)
            for kind, media in (("image", image_path), ("video", video_path)):
                case = run_case(
                    model, recorder, tokenizer, image_processor, *eval_modules, kind, media, settings
                )
                save_file(case["tensors"], out / "references" / f"{name}_{kind}.safetensors")
                index["cases"][f"{name}_{kind}"] = dict(
                    checkpoint=name, media=f"media/{Path(media).name}", **settings, **case["info"]
                )
                print(
                    name, kind, case["info"]["greedy_text"], "min margin", case["info"]["min_greedy_margin"]
                )
    (out / "references" / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
