"""Load the official LLaVA-Mini release (`ICTNLP/llava-mini-llama-3.1-8b`) into this project's model.

The release is a LLaVA-style checkpoint: one flat config.json (`model_type: "llava_mini_llama"`, LLaMA's text
fields at top level plus `mm_*` and LLaVA-Mini fields) and LLaMA-style weight names with the new modules
under `model.` (see /work/shared/spec/official-llava-mini.md and docs/release.md). This module

* recognises such a directory (`is_release_checkpoint`),
* maps its config to a `LlavaMiniConfig` (`release_config_to_llava_mini`; the vision tower's config is read
  from `mm_vision_tower` as the release does, its weights from the shards when stored there),
* renames its weights to ours while `from_pretrained` streams them (`RELEASE_KEY_MAPPING`),
* gives its tokenizer real `<image>` / `<video>` tokens (two of LLaMA-3's reserved special tokens, so the
  vocabulary and the logits keep their size; new tokens when too few are reserved) and the release's
  prompt format (`release_tokenizer`),
* and returns the model with a matching processor (`load_release`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import Tokenizer
from transformers import AutoConfig, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from llava_mini.model.configuration import LlavaMiniConfig
from llava_mini.model.loading import is_hub_id, load_options
from llava_mini.model.modeling import LlavaMiniForConditionalGeneration
from llava_mini.processing.chat_templates import RELEASE_SYSTEM_PROMPT
from llava_mini.processing.image import LlavaMiniImageProcessor
from llava_mini.processing.processor import LlavaMiniProcessor
from llava_mini.processing.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN

logger = logging.getLogger(__name__)

RELEASE_MODEL_TYPE = "llava_mini_llama"
RELEASE_ARCHITECTURE = "LlavaMiniLlamaForCausalLM"
RELEASE_COMPRESSOR_HEADS = 8  # nn.MultiheadAttention(1024, 8) in the release's code, not a config field
CLIP_HEAD_DIM = 64  # every CLIP ViT (B, L) uses 64-wide heads: the one size the weights do not show
STOP_TOKENS = ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>")  # 128009, 128008, 128001 in LLaMA-3.1
PAD_TOKEN = "<|finetune_right_pad_id|>"  # 128004 in LLaMA-3.1
RESERVED_TOKEN = re.compile(r"<\|reserved_special_token_\d+\|>")
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"

VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
# Release weight name (regex on the start of the key) -> ours. Each key matches at most one entry. The
# compressor's attention is an nn.MultiheadAttention in both, so its fused in_proj_weight (3D x D) maps as is.
# The tower was saved by transformers 4.x's CLIPVisionModel (`vision_model.` inside); transformers 5's is flat.
RELEASE_KEY_MAPPING: dict[str, str] = {
    r"^model\.vision_tower\.vision_tower\.vision_model\.": "vision_tower.model.",
    r"^model\.mm_projector\.": "projector.",
    r"^model\.compressor\.": "compressor.",
    r"^model\.prefusion_layers\.": "prefusion.layers.",
    r"^model\.embed_tokens\.": "language_model.model.embed_tokens.",
    r"^model\.layers\.": "language_model.model.layers.",
    r"^model\.norm\.": "language_model.model.norm.",
    r"^lm_head\.": "language_model.lm_head.",
}
# Keys some transformers 4.x checkpoints carry that have no counterpart (recomputed buffers).
IGNORED_RELEASE_KEYS = re.compile(r"\.rotary_emb\.inv_freq$")

# config.json fields that describe the release's multimodal parts rather than its LLaMA backbone.
MULTIMODAL_FIELDS = frozenset(
    {
        "mm_vision_tower", "mm_vision_select_layer", "mm_vision_select_feature", "mm_projector_type",
        "mm_hidden_size", "mm_patch_merge_type", "mm_use_im_start_end", "mm_use_im_patch_token",
        "image_aspect_ratio", "image_grid_pinpoints", "tokenizer_model_max_length", "tokenizer_padding_side",
        "compressor_size", "prefusion_layer_num", "resolution_ratio", "use_mm_proj", "mm_projector_lr",
        "mm_vision_tower_lr", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter", "unfreeze_mm_vision_tower",
    }
)  # fmt: skip

# Prepended to the checkpoint's chat template for the release's exact prompt: the release renders
# [system, user] with add_generation_prompt=False, so whatever the template emits after the user turn
# (and nothing more) is the prompt. Our processor asks for the generation prompt; this makes the
# template ignore the request. `assistant_header=True` keeps the template as is instead.
EXACT_PROMPT_PREFIX = "{%- set add_generation_prompt = false -%}\n"


# Reading the checkpoint ----------------------------------------------------------------------------
def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error


def is_release_config(config: dict) -> bool:
    """True for the release's config.json: its model_type or architecture, or LLaVA fields plus LLaVA-Mini's."""
    if config.get("model_type") == RELEASE_MODEL_TYPE or RELEASE_ARCHITECTURE in (
        config.get("architectures") or []
    ):
        return True
    return "mm_vision_tower" in config and "compressor_size" in config and "vision_config" not in config


def is_release_checkpoint(source: str | os.PathLike) -> bool:
    """Whether `source` (a directory, or a hub id when the hub is reachable) holds a release-layout checkpoint."""
    path = Path(source)
    if path.is_dir():
        config_path = path / "config.json"
        return config_path.is_file() and is_release_config(read_json(config_path))
    if not is_hub_id(source):
        return False
    try:  # a hub id: the config is fetched (and cached) as from_pretrained would
        from huggingface_hub import hf_hub_download

        return is_release_config(read_json(Path(hf_hub_download(str(source), "config.json"))))
    except Exception:  # unreachable hub, unknown repo: not ours to report here; from_pretrained will
        return False


def local_checkpoint_dir(source: str | os.PathLike) -> Path:
    """A local directory for `source`: itself, or a hub snapshot of the release's config, tokenizer and weights."""
    path = Path(source)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.jinja", "tokenizer*"]
    return Path(snapshot_download(str(source), allow_patterns=patterns))


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str  # safetensors names: "F32", "BF16", "F16", ...


def read_weight_index(directory: Path) -> dict[str, TensorInfo]:
    """Name -> shape and dtype of every stored tensor, read from the safetensors headers (no tensor is loaded)."""
    index_path = directory / SAFETENSORS_INDEX
    if index_path.is_file():
        files = sorted(set(read_json(index_path)["weight_map"].values()))
    elif (directory / SAFETENSORS_SINGLE).is_file():
        files = [SAFETENSORS_SINGLE]
    else:
        raise FileNotFoundError(
            f"{directory} has no {SAFETENSORS_INDEX} or {SAFETENSORS_SINGLE}: the release's weights are missing"
        )
    tensors: dict[str, TensorInfo] = {}
    for name in files:
        with safe_open(directory / name, framework="pt") as handle:
            for key in handle.keys():
                view = handle.get_slice(key)
                tensors[key] = TensorInfo(tuple(view.get_shape()), view.get_dtype())
    return tensors


SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def stored_dtype(tensors: dict[str, TensorInfo]) -> torch.dtype:
    """The dtype the release stores its LLM in (read from the token embedding)."""
    info = tensors.get("model.embed_tokens.weight")
    if info is None or info.dtype not in SAFETENSORS_DTYPES:
        return torch.float32
    return SAFETENSORS_DTYPES[info.dtype]


def rename_release_key(key: str) -> str | None:
    """Our name for a release weight name, or None when no entry of RELEASE_KEY_MAPPING covers it."""
    for pattern, replacement in RELEASE_KEY_MAPPING.items():
        renamed, count = re.subn(pattern, replacement, key, count=1)
        if count:
            return renamed
    return None


# Configuration -------------------------------------------------------------------------------------
def vision_config_from_weights(tensors: dict[str, TensorInfo]) -> dict | None:
    """A CLIP vision config read off the stored tower's weight shapes (None when the tower is not stored).

    Widths, depth, patch and image size come from the shapes; the head count, which no shape shows, is
    guessed as width / 64 (16 heads for ViT-L/14-336); CLIP's defaults give the rest. Used to check the named
    tower's config against the weights, and as a last resort when that config cannot be read.
    """
    prefix = VISION_PREFIX
    if prefix + "embeddings.patch_embedding.weight" not in tensors:
        return None
    width, _, patch, _ = tensors[prefix + "embeddings.patch_embedding.weight"].shape
    positions = tensors[prefix + "embeddings.position_embedding.weight"].shape[0]
    side = math.isqrt(positions - 1)
    if side * side != positions - 1:
        raise ValueError(
            f"the stored vision tower has {positions} positions; expected a square grid plus a class token"
        )
    layer_ids = {
        int(key[len(prefix) :].split(".")[2]) for key in tensors if key.startswith(prefix + "encoder.layers.")
    }
    intermediate = tensors[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0]
    return dict(
        model_type="clip_vision_model",
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=len(layer_ids),
        num_attention_heads=max(1, width // CLIP_HEAD_DIM),
        image_size=side * patch,
        patch_size=patch,
    )


def resolve_vision_tower(name: str, checkpoint: Path) -> str:
    """Where `mm_vision_tower` points: an existing directory (as given, which is how the release reads it, or
    relative to the checkpoint), else the name itself (a hub id)."""
    given = Path(name).expanduser()
    if given.is_dir():
        return str(given)
    beside = checkpoint / name
    if not given.is_absolute() and beside.is_dir():
        return str(beside)
    return name


def vision_config_by_name(name: str) -> dict:
    """The vision config of the tower `name` (a local directory or a hub id), as the release reads it
    (`CLIPVisionConfig.from_pretrained(mm_vision_tower)`); a full CLIP config gives its vision part."""
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"the vision tower's config names {name!r}, which could not be loaded ({error}); pass "
            "vision_tower=DIR (CLI: --vision-tower DIR) with a local copy of that model"
        ) from error
    config = getattr(config, "vision_config", config)  # a full CLIP checkpoint nests the tower's config
    return config.to_dict()


TOWER_SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "image_size", "patch_size")


def release_vision_config(tower_source: str | None, stored: dict | None, checkpoint: Path) -> dict:
    """The tower's config: from `mm_vision_tower` as the release builds it; read off the stored weights (heads
    guessed 64 wide, with a warning) only when no config can be had. A named config that contradicts the
    stored weights is an error."""
    named, reason = None, "no mm_vision_tower in config.json"
    if tower_source:
        local = Path(tower_source).is_dir()
        if local or is_hub_id(tower_source):
            try:
                named = vision_config_by_name(tower_source)
            except ValueError as error:
                reason = str(error)
        else:
            reason = f"{tower_source!r} is neither a directory (as given or in {checkpoint}) nor a hub id"
    if named is None:
        if stored is None:
            raise ValueError(
                f"{checkpoint}: the release's weights hold no vision tower and its config could not be read: "
                f"{reason}; pass vision_tower=DIR (CLI: --vision-tower DIR) with a local copy of that model"
            )
        logger.warning(
            "%s: the vision tower's config could not be read (%s); guessing it from the stored weights with "
            "%d attention heads (width %d / %d). A tower whose heads are not %d wide will compute wrongly: "
            "pass vision_tower=DIR with its config.json",
            checkpoint, reason, stored["num_attention_heads"], stored["hidden_size"], CLIP_HEAD_DIM, CLIP_HEAD_DIM,
        )  # fmt: skip
        return stored
    if stored is not None:
        differing = [
            f"{key} {named.get(key)} vs {stored[key]}"
            for key in TOWER_SHAPE_FIELDS
            if named.get(key) != stored[key]
        ]
        if differing:
            raise ValueError(
                f"{checkpoint}: the vision tower config of {tower_source!r} does not fit the stored tower's "
                f"weights ({'; '.join(differing)})"
            )
    return named


def text_config_from_release(release: dict) -> dict:
    """The LLaMA fields of the release's flat config, as a text config dict."""
    known = set(AutoConfig.for_model("llama").to_dict()) | {"rope_scaling", "rope_theta"}
    skipped = {"architectures", "model_type", "transformers_version", "_name_or_path", "torch_dtype", "dtype"}
    unknown = sorted(set(release) - known - MULTIMODAL_FIELDS - skipped)
    if unknown:
        logger.info("ignoring release config fields with no counterpart: %s", ", ".join(unknown))
    text = {key: value for key, value in release.items() if key in known and key not in skipped}
    return dict(model_type="llama", **text)


def release_config_to_llava_mini(release: dict, vision_config: dict, image_token_id: int) -> LlavaMiniConfig:
    """Map the release's config.json fields to a LlavaMiniConfig; unsupported settings raise ValueError."""
    select = release.get("mm_vision_select_feature", "patch")
    if select not in ("patch", "cls_patch"):
        raise ValueError(f"config.json: mm_vision_select_feature={select!r}; expected 'patch' or 'cls_patch'")
    projector = release.get("mm_projector_type", "linear")
    if projector not in ("mlp2x_gelu", "linear"):
        raise ValueError(f"config.json: mm_projector_type={projector!r}; expected 'mlp2x_gelu' or 'linear'")
    unsupported = {
        "mm_patch_merge_type": (release.get("mm_patch_merge_type", "flat"), ("flat",)),
        "mm_use_im_start_end": (release.get("mm_use_im_start_end", False), (False,)),
        "image_aspect_ratio": (release.get("image_aspect_ratio", "pad"), ("pad",)),
    }
    for field_name, (value, allowed) in unsupported.items():
        if value not in allowed:
            raise ValueError(f"config.json: {field_name}={value!r} is not supported (only {allowed})")
    vision_width = int(vision_config["hidden_size"])
    if int(release.get("mm_hidden_size", vision_width)) != vision_width:
        raise ValueError(
            f"config.json: mm_hidden_size={release['mm_hidden_size']} but the vision tower is {vision_width} wide"
        )
    return LlavaMiniConfig(
        vision_config=vision_config,
        text_config=text_config_from_release(release),
        image_token_id=image_token_id,
        compressor_type="query",
        compressor_size=int(release["compressor_size"]),
        compressor_num_heads=RELEASE_COMPRESSOR_HEADS,
        prefusion_layers=int(release.get("prefusion_layer_num", 4)),
        arrangement="release",
        vision_feature_layer=int(release.get("mm_vision_select_layer", -2)),
        vision_feature_select="patch" if select == "patch" else "full",
        projector_type=projector,
        resolution_ratio=int(release.get("resolution_ratio", 1)),
        tie_word_embeddings=bool(release.get("tie_word_embeddings", False)),
    )


# Tokenizer -----------------------------------------------------------------------------------------
def rename_special_tokens(
    tokenizer: PreTrainedTokenizerFast, renames: dict[int, str]
) -> PreTrainedTokenizerFast:
    """A copy of `tokenizer` whose added tokens with the given ids carry new names (ids unchanged)."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    for entry in data["added_tokens"]:
        if entry["id"] in renames:
            entry["content"] = renames[entry["id"]]
    special = {
        name: getattr(tokenizer, name) for name in ("bos_token", "eos_token", "unk_token", "pad_token")
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)),
        chat_template=tokenizer.chat_template,
        model_max_length=tokenizer.model_max_length,
        **{name: value for name, value in special.items() if value is not None},
    )


def release_tokenizer(source: str | os.PathLike, assistant_header: bool = False) -> PreTrainedTokenizerBase:
    """The release's tokenizer with `<image>` / `<video>` tokens, its pad token and the release's prompt format.

    The two media tokens take the ids of LLaMA-3's first two reserved special tokens (128002, 128003 in
    the release), which the release never uses: the vocabulary and the logits keep their size. A tokenizer
    with fewer reserved tokens gets the rest as new tokens after its last id (logged; `load_release` grows
    the embeddings when they have no row for them).
    """
    # Not AutoTokenizer: it would parse config.json, whose model_type transformers does not know.
    tokenizer = PreTrainedTokenizerFast.from_pretrained(source)
    vocab = tokenizer.get_vocab()
    missing = [token for token in (IMAGE_TOKEN, VIDEO_TOKEN) if token not in vocab]
    if missing:
        reserved = sorted(token_id for token, token_id in vocab.items() if RESERVED_TOKEN.fullmatch(token))
        renames = dict(zip(reserved, missing, strict=False))
        if renames:
            tokenizer = rename_special_tokens(tokenizer, renames)
        added = missing[len(renames) :]
        if added:  # too few reserved tokens: new ids after the last one, every other id unchanged
            first_id = len(tokenizer)
            tokenizer.add_special_tokens(
                {"additional_special_tokens": added}, replace_extra_special_tokens=False
            )
            logger.warning(
                "the tokenizer in %s has %d unused reserved special token(s); added %s as new token(s) %s",
                source, len(renames), " and ".join(added),
                ", ".join(str(tokenizer.convert_tokens_to_ids(t)) for t in added),
            )  # fmt: skip
            if tokenizer.convert_tokens_to_ids(added[0]) != first_id:
                raise ValueError(
                    f"the tokenizer in {source}: {added[0]} did not get the next free id {first_id}"
                )
    if tokenizer.chat_template is None:
        raise ValueError(
            f"the tokenizer in {source} has no chat_template: the release's prompt format needs it"
        )
    if PAD_TOKEN in tokenizer.get_vocab():
        tokenizer.pad_token = PAD_TOKEN
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not assistant_header and not tokenizer.chat_template.startswith(EXACT_PROMPT_PREFIX):
        tokenizer.chat_template = EXACT_PROMPT_PREFIX + tokenizer.chat_template
    return tokenizer


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The release's stop ids: <|eot_id|>, <|eom_id|>, <|end_of_text|> (those the tokenizer has), else eos."""
    vocab = tokenizer.get_vocab()
    ids = [vocab[token] for token in STOP_TOKENS if token in vocab]
    return ids or [tokenizer.eos_token_id]


# Loading -------------------------------------------------------------------------------------------
def load_release(
    source: str | os.PathLike,
    vision_tower: str | os.PathLike | None = None,
    assistant_header: bool = False,
    **load_kwargs,
) -> tuple[LlavaMiniForConditionalGeneration, LlavaMiniProcessor]:
    """Load a release-layout checkpoint (directory or hub id) as our model plus a matching processor.

    vision_tower: the CLIP tower (directory or hub id) whose config.json gives the tower's shape and head
        count, and whose weights are used when the release's shards do not hold them (default: its
        `mm_vision_tower`, as a directory as given or relative to the checkpoint, else a hub id); a local
        directory works offline.
    assistant_header: False renders prompts exactly as the release does (its chat template with
        add_generation_prompt=False); True lets our processor append the assistant header.
    load_kwargs: `from_pretrained` options, as `llava_mini.model.loading.load_options` builds them
        (dtype, device_map, quantization_config); default float32 on the CPU. dtype "auto" keeps the
        release's stored precision.
    """
    directory = local_checkpoint_dir(source)
    release = read_json(directory / "config.json")
    if not is_release_config(release):
        model_type = release.get("model_type")
        raise ValueError(
            f"{directory / 'config.json'} is not a LLaVA-Mini release config (model_type {model_type!r})"
        )
    tensors = read_weight_index(directory)
    unmapped = sorted(
        key for key in tensors if rename_release_key(key) is None and not IGNORED_RELEASE_KEYS.search(key)
    )
    if unmapped:
        raise ValueError(
            f"{directory}: {len(unmapped)} weights have no counterpart here, e.g. {unmapped[:5]}"
        )
    tokenizer = release_tokenizer(directory, assistant_header=assistant_header)

    tower_name = str(vision_tower) if vision_tower is not None else release.get("mm_vision_tower")
    tower_source = resolve_vision_tower(tower_name, directory) if tower_name else None
    stored_config = vision_config_from_weights(tensors)
    tower_stored = stored_config is not None
    vision_config = release_vision_config(tower_source, stored_config, directory)
    config = release_config_to_llava_mini(
        release, vision_config, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    )

    options = load_options() | load_kwargs
    if options.get("dtype") == "auto":
        options["dtype"] = stored_dtype(tensors)
    model, info = LlavaMiniForConditionalGeneration.from_pretrained(
        directory, config=config, key_mapping=RELEASE_KEY_MAPPING, output_loading_info=True, **options
    )
    missing = [key for key in info["missing_keys"] if tower_stored or not key.startswith("vision_tower.")]
    if missing:
        raise ValueError(
            f"{directory}: weights missing from the release checkpoint, e.g. {sorted(missing)[:5]}"
        )
    if not tower_stored:
        load_vision_tower(model, tower_source)
    fit_embeddings_to_tokenizer(model, tokenizer)
    # from_pretrained remembers the renaming to save in the source's layout; this model is ours now,
    # so `save_pretrained` must write our names (tested in tests/model/test_release.py).
    model._weight_conversions = []
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    image_processor = LlavaMiniImageProcessor(
        size=int(config.vision_config.image_size),
        resolution_ratio=config.resolution_ratio,
        frame_resize="release",
    )
    processor = LlavaMiniProcessor.for_config(
        config, tokenizer, image_processor, system_prompt=RELEASE_SYSTEM_PROMPT
    )
    return model, processor


def fit_embeddings_to_tokenizer(
    model: LlavaMiniForConditionalGeneration, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Give media tokens added past the checkpoint's vocabulary embedding rows (only when it has none).

    The new rows are zeros; a media token's embedding is never read (its slots receive vision tokens), and
    generation never emits it (`suppress_tokens`), so every other token's logits and choices are unchanged.
    """
    rows = model.get_input_embeddings().weight.shape[0]
    needed = max(tokenizer.convert_tokens_to_ids(token) for token in (IMAGE_TOKEN, VIDEO_TOKEN)) + 1
    if needed <= rows:
        return
    model.language_model.resize_token_embeddings(needed, mean_resizing=False)
    model.config.text_config.vocab_size = needed
    with torch.no_grad():
        model.get_input_embeddings().weight[rows:] = 0
        model.get_output_embeddings().weight[rows:] = 0
    model.generation_config.suppress_tokens = list(range(rows, needed))
    logger.warning("the embeddings grew from %d to %d rows for the added media tokens", rows, needed)


def load_vision_tower(model: LlavaMiniForConditionalGeneration, name: str) -> None:
    """Fill the vision tower from the pretrained model `name` (what the release's code does at load time)."""
    tower = model.vision_tower.model
    parameter = next(tower.parameters())
    pretrained = type(tower).from_pretrained(name, dtype=parameter.dtype)
    tower.load_state_dict(pretrained.state_dict())


__all__ = [
    "RELEASE_KEY_MAPPING",
    "is_release_checkpoint",
    "load_release",
    "release_config_to_llava_mini",
    "release_tokenizer",
    "rename_release_key",
    "vision_config_from_weights",
]
