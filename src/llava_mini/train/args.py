"""Typed recipe arguments, parsed from YAML with `key=value` overrides; unknown keys are errors."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

import yaml
from pydantic import TypeAdapter, ValidationError

from llava_mini.data.records import MARKERS
from llava_mini.train.sampling import GROUP_KEYS

# What `StageArgs.repeat` can name: a medium of the LLaVA record format, or "text" (records without media).
REPEATABLE_KINDS = (*MARKERS, "text")
# What `StageArgs.group_by` can name: "none" or a sort key of train/sampling.py.
BATCH_GROUPINGS = ("none", *GROUP_KEYS)

StageMode = Literal["components", "align", "instruct"]


class RecipeLoader(yaml.SafeLoader):
    """YAML as PyYAML reads it, except that 1e-4 is a number (YAML 1.2), not the string "1e-4"."""


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=RecipeLoader)


@dataclass
class StageArgs:
    """One training stage (paper sec. 4.3, appendix B Table 9).

    mode: "components" trains everything from scratch in baseline mode (the tiny recipe's stage 0);
    "align" is stage 1 (projector only, no compression or pre-fusion); "instruct" is stage 2
    (everything but the vision tower, with compression and pre-fusion).
    """

    name: str
    mode: StageMode
    data: list[str]
    media_root: str | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-4
    multimodal_lr: float | None = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    save_every: int = 500
    keep_checkpoints: int = 2
    model: dict[str, Any] = field(default_factory=dict)
    # Modules kept frozen on top of the mode's choice, e.g. [vision_tower] after vision pre-training.
    frozen: list[str] = field(default_factory=list)
    # Data mix: records of a media kind ("image", "video", "text") repeated this many times per epoch,
    # e.g. {video: 2} when videos are few (the synthetic world has 1 video per 5 images).
    repeat: dict[str, int] = field(default_factory=dict)
    # "modality": batches of one modality; "length": of one modality and similar length; "none": random
    # (train/sampling.py). Grouping pads less and keeps the samples of an epoch.
    group_by: Literal["none", "modality", "length"] = "none"
    # Processes that read and encode media (decode videos, resize pictures, tokenise) ahead of the training
    # step, so that decoding overlaps the forward/backward pass; 0 reads them in the training process.
    data_workers: int = 0
    # Tiny recipe only: first teach a from-scratch vision tower to see (train/vision_pretraining.py).
    vision_pretraining: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.repeat) - set(REPEATABLE_KINDS))
        if unknown:
            raise ValueError(
                f"stage {self.name}: repeat names unknown media kind(s) {unknown}; expected {list(REPEATABLE_KINDS)}"
            )
        bad = {kind: times for kind, times in self.repeat.items() if not isinstance(times, int) or times < 1}
        if bad:
            raise ValueError(f"stage {self.name}: repeat counts must be whole numbers >= 1, got {bad}")
        if not isinstance(self.data_workers, int) or self.data_workers < 0:
            raise ValueError(f"stage {self.name}: data_workers must be a whole number >= 0, got {self.data_workers!r}")
        if self.group_by not in BATCH_GROUPINGS:
            raise ValueError(f"stage {self.name}: group_by is {self.group_by!r}; expected one of {list(BATCH_GROUPINGS)}")


@dataclass
class RecipeArgs:
    """A whole recipe: where data and outputs live, how the model is built, and its stages."""

    output_dir: str
    stages: list[StageArgs]
    data_root: str = "."
    seed: int = 0
    threads: int | None = None
    device: Literal["auto", "cpu"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    gradient_checkpointing: bool = False
    log_every: int = 10
    # Building the model: a preset (from scratch), or pretrained parts by hub id / local path.
    preset: str | None = None
    vision_tower: str | None = None
    language_model: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    tokenizer_vocab_size: int = 512
    chat_template: str = "llama3"
    system_prompt: str | None = None
    video_fps: float = 1.0
    video_max_frames: int | None = None


def build_dataclass(cls: type, values: dict, where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {sorted(known)}")
    missing = [
        f.name for f in dataclasses.fields(cls)
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
    hints = get_type_hints(cls)
    for name, value in values.items():
        try:
            TypeAdapter(hints[name]).validate_python(value, strict=True)
        except ValidationError as error:
            reason = error.errors()[0]["msg"]
            raise ValueError(f"{where}: {name} = {value!r} is invalid: {reason}") from None
    return cls(**values)


def apply_override(tree: dict, assignment: str) -> None:
    """`a.b=3` sets tree["a"]["b"] = 3 (YAML-typed); `stages.1.lr=1e-4` indexes lists."""
    if "=" not in assignment:
        raise ValueError(f"override {assignment!r} must look like key=value")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.split(".")
    node: Any = tree
    for depth, key in enumerate(keys):
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                where = ".".join(keys[:depth]) or "the recipe"
                raise ValueError(f"override {assignment!r}: {where} has {len(node)} entries (0-{len(node) - 1})")
            key = int(key)
        elif not isinstance(node, dict):
            raise ValueError(f"override {assignment!r}: {'.'.join(keys[:depth])} is a value, not a section")
        if depth == len(keys) - 1:
            node[key] = read_yaml(raw)
        else:
            node = node[key] if isinstance(node, list) else node.setdefault(key, {})


def load_recipe(path: str | os.PathLike, overrides: list[str] = ()) -> RecipeArgs:
    """Read a recipe YAML; relative paths (output_dir, data_root) are taken from the current directory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
    tree = read_yaml(path.read_text()) or {}
    for assignment in overrides:
        apply_override(tree, assignment)
    stages = tree.pop("stages", None)
    if not stages:
        raise ValueError(f"{path}: a recipe needs a non-empty 'stages' list")
    parsed = [build_dataclass(StageArgs, dict(stage), f"{path} stages[{i}]") for i, stage in enumerate(stages)]
    return build_dataclass(RecipeArgs, {**tree, "stages": parsed}, str(path))
