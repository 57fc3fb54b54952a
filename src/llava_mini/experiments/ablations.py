"""The paper's ablations in miniature (sec. 6.1-6.3, Tables 7, 8, 12): `llava-mini experiment ablations`.

Set up as the paper sets them up: every arm starts from one shared start that has never seen a vision token,
runs its own stage 1 and stage 2, and is compared after training, with its learning curve.

1. The shared start (`OUT/start`, built once, reused when present): a vision tower taught to see by vision
   pre-training on the world's `scenes.jsonl` (train/vision_pretraining.py, our stand-in for CLIP), and an LLM
   with its BPE tokenizer trained on TEXT ONLY: the world's captions and answers with every picture and
   `<image>` / `<video>` marker removed, so no vision token ever reaches it (the stand-in for Vicuna / LLaMA).
2. Stage 1 per seed (`OUT/align/seed<k>`): projector alignment (mode "align": tower and LLM frozen, every
   vision token, no compression or pre-fusion), as the paper's stage 1. It does not depend on the arm (the
   paper's stage 1 applies neither compression nor pre-fusion), so every arm of a seed reuses it.
3. Stage 2 per arm x seed (`OUT/<arm>/seed<k>`): instruction tuning with the arm's arrangement; held-out
   accuracy every `eval_every` steps is appended to `curve.jsonl` (the learning curve). Then the arm is
   scored on the held-out set and on the independent test set (`llava-mini data independent`).
4. Speed where the LLM dominates the cost, as in the paper: every arm's prefill on a wider, deeper LLM
   (`TIMING_LLM`, random weights, the start's vision tower shape), side by side in one process, beside the
   flops tool's count for that configuration (`OUT/timing.json`).

Stage settings not set by the budget (learning rates, vision pre-training, model preset, tokenizer size,
tower input) come from a base recipe (`--recipe`, default `recipes/tiny_cpu_robust.yaml`): its stages of
modes "components" (whose `vision_pretraining` block is used), "align" and "instruct".

Layout of `--out DIR` (anything present is reused; an arm x seed with a result.json is never rerun, and a
killed stage resumes from its last checkpoint, written every `eval_every` steps):
    DIR/start/stage0-text/final/          the shared start (and its vision-pretrained/ tower)
    DIR/align/seed<k>/stage0-align/final/ stage 1 of seed k
    DIR/<arm>/seed<k>/train/stage0-instruct/final/, curve.jsonl, answers.jsonl, test_answers.jsonl,
    DIR/<arm>/seed<k>/result.json         written last
    DIR/timing.json                       prefill of every arm on the timing LLM
    DIR/experiment.json                   budget, recipe and world of DIR: a run with others is refused
    DIR/results.json, results.md, curves_<group>.png, accuracy_vs_*.png   over every result in DIR
`--merge DIR ...` builds the tables and plots from several such folders (arms and seeds run in parallel
sessions from copies of one start); results made from different starts are refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from llava_mini.analysis.plotting import new_figure, save_figure
from llava_mini.data.records import ConversationRecord
from llava_mini.eval.synth import Question, evaluate, load_questions, markdown_table, score
from llava_mini.model.configuration import LlavaMiniConfig
from llava_mini.train.args import RecipeArgs, StageArgs, load_recipe
from llava_mini.train.checkpoint import list_checkpoints, truncate_log
from llava_mini.train.recipe import TrainRecipe

logger = logging.getLogger(__name__)

DEFAULT_PREFUSION_LAYERS = 2  # N of the shipped model (recipes/tiny_cpu.yaml, stage 2)
BASELINE_ARM = "llava-v1.5"
START_SEED = 0  # the shared start is one for every arm and seed; seeds vary stage 1 and stage 2
# Every arm sets all of these, so nothing is inherited from the stage-1 checkpoint's config.
BASE_FIELDS: dict[str, Any] = {
    "compressor_type": "query",
    "compressor_size": 1,
    "prefusion_layers": DEFAULT_PREFUSION_LAYERS,
    "prefusion_init": "random",
    "arrangement": "release",
    "inside_llm_layers": 0,
    "vision_tokens_to_llm": True,
}
# The LLM of the speed columns (random weights, timing only): wider and deeper than the tiny one, so the LLM
# dominates the cost as in the paper (N = 2 pre-fusion layers are 1/8 of its depth, as N = 4 of Vicuna-7B's 32).
TIMING_LLM: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 16,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
}
MEDIA_MARKER = re.compile(r"<(image|video)>\n?")
TRAIN_FILES = ("captions.json", "instructions.json", "scenes.jsonl")


# Arms -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    """One ablation arm: LlavaMiniConfig fields that differ from LLaVA-Mini's (`BASE_FIELDS`), and flags.

    text_only: train and evaluate with the media removed from every conversation (the no-vision floor).
    """

    name: str
    description: str
    model: dict[str, Any] = field(default_factory=dict)
    text_only: bool = False
    paper: str = ""

    @property
    def fields(self) -> dict[str, Any]:
        return {**BASE_FIELDS, **self.model}


ARMS: tuple[Arm, ...] = (
    Arm(
        BASELINE_ARM,
        "every vision token to the LLM, no compression, no pre-fusion",
        {"compressor_type": "none", "prefusion_layers": 0},
        paper="Table 7, row 1",
    ),
    Arm("query-c1-n0", "C*C=1 by learned queries, no pre-fusion", {"prefusion_layers": 0}, paper="Table 7"),
    Arm(
        "pool-c1-n0",
        "C*C=1 by average pooling, no pre-fusion",
        {"compressor_type": "pool", "prefusion_layers": 0},
        paper="Table 8",
    ),
    Arm("mini-c1-n1", "LLaVA-Mini, C*C=1, N=1 pre-fusion layer", {"prefusion_layers": 1}, paper="Table 7"),
    Arm("mini-c1-n2", "LLaVA-Mini, C*C=1, N=2, random pre-fusion init (as released)", {}, paper="Table 7"),
    Arm("mini-c1-n4", "LLaVA-Mini, C*C=1, N=4", {"prefusion_layers": 4}, paper="Table 7"),
    Arm("mini-c4-n2", "LLaVA-Mini, C*C=4, N=2", {"compressor_size": 2}, paper="Table 7, lower part"),
    Arm("mini-c16-n2", "LLaVA-Mini, C*C=16, N=2", {"compressor_size": 4}, paper="Table 7, lower part"),
    Arm(
        "mini-c1-n2-llm-init",
        "LLaVA-Mini as shipped: C*C=1, N=2, pre-fusion copied from the LLM's first 2 layers",
        {"prefusion_init": "llm"},
        paper="sec. 4.1",
    ),
    Arm(
        "prefusion-only",
        "pre-fusion sees the pictures, the LLM gets no vision token (a marker slot)",
        {"vision_tokens_to_llm": False},
        paper="floor",
    ),
    Arm(
        "text-only",
        "no vision at all: questions without media",
        {"compressor_type": "none", "prefusion_layers": 0},
        text_only=True,
        paper="floor",
    ),
    Arm(
        "inside-llm-c1-m2",
        "compression inside the LLM: its first 2 layers see every vision token, then C*C=1",
        {"arrangement": "inside_llm", "inside_llm_layers": DEFAULT_PREFUSION_LAYERS, "prefusion_layers": 0},
        paper="Table 12",
    ),
)


def arms_by_name(names: Sequence[str] | None) -> tuple[Arm, ...]:
    """The named arms, in the canonical order; None -> all. Unknown names are an error that lists them."""
    if not names:
        return ARMS
    known = {arm.name: arm for arm in ARMS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return tuple(arm for arm in ARMS if arm.name in set(names))


def prefusion_series_value(arm: Arm) -> int | None:
    """N of arms that differ from LLaVA-Mini (C*C=1, learned queries) only in N, for the accuracy-vs-N plot."""
    fields = arm.fields
    same = {**BASE_FIELDS, "prefusion_layers": fields["prefusion_layers"]}
    return fields["prefusion_layers"] if fields == same and not arm.text_only else None


def compression_series_value(arm: Arm) -> int | None:
    """C*C of arms that differ from LLaVA-Mini only in C, for the accuracy-vs-C*C plot."""
    fields = arm.fields
    same = {**BASE_FIELDS, "compressor_size": fields["compressor_size"]}
    return fields["compressor_size"] ** 2 if fields == same and not arm.text_only else None


# One learning-curve plot per group of arms (the paper's tables); the baseline is in each for reference.
CURVE_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "table7": (
        "Table 7: pre-fusion layers N and tokens C*C",
        (BASELINE_ARM, "query-c1-n0", "mini-c1-n1", "mini-c1-n2", "mini-c1-n4", "mini-c4-n2", "mini-c16-n2"),
    ),
    "table8": ("Table 8: learned queries vs pooling", (BASELINE_ARM, "query-c1-n0", "pool-c1-n0")),
    "table12": (
        "Table 12 and pre-fusion initialisation",
        (BASELINE_ARM, "inside-llm-c1-m2", "mini-c1-n2", "mini-c1-n2-llm-init"),
    ),
    "floors": ("floors: no vision token, no vision", (BASELINE_ARM, "mini-c1-n2", "prefusion-only", "text-only")),
}


# Budgets ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """How much each part trains and evaluates (every stage uses `batch_size`; `None` limits: every question).

    vision_epochs: vision pre-training epochs over scenes.jsonl; text_steps: text-only LLM steps (the start);
    align_steps: stage 1 per seed; instruct_steps: stage 2 per arm x seed, with held-out accuracy on
    `curve_limit` questions every `eval_every` steps; eval_limit: questions of the final held-out and test
    evaluations; timing_repeats: prefill forwards per arm on the timing LLM.
    """

    name: str
    vision_epochs: float
    text_steps: int
    align_steps: int
    instruct_steps: int
    batch_size: int
    eval_every: int
    curve_limit: int | None
    eval_limit: int | None
    eval_batch_size: int
    timing_repeats: int
    seeds: int
    threads: int | None

    def check(self) -> None:
        counts = {name: getattr(self, name) for name in ("text_steps", "align_steps", "instruct_steps",
                                                          "batch_size", "eval_every", "eval_batch_size")}
        bad = {name: value for name, value in counts.items() if value < 1}
        if bad or self.vision_epochs <= 0:
            raise ValueError(f"budget {self.name}: steps, sizes and vision_epochs must be positive, got {bad or counts}")


BUDGETS: dict[str, Budget] = {
    # The whole pipeline end to end with tiny counts, to shake code out (docs/ablations/README.md, pilot).
    "pilot": Budget(
        "pilot",
        vision_epochs=1.0,
        text_steps=30,
        align_steps=10,
        instruct_steps=30,
        batch_size=32,
        eval_every=10,
        curve_limit=40,
        eval_limit=100,
        eval_batch_size=32,
        timing_repeats=3,
        seeds=2,
        threads=1,
    ),
    # The converged run (docs/ablations/README.md: how to run it, time per arm, why these counts), on the
    # randomized world of recipes/tiny_cpu_robust.yaml (20,000 pictures + 7,000 videos, one record each):
    # vision pre-training as that recipe; the text-only LLM one epoch of captions + instructions (1,700 x 32);
    # stage 1 one epoch of captions (850 x 32), as the paper's stage 1; stage 2 3,000 steps (about 2.8
    # epochs with videos twice) because every arm must learn to read pictures into an LLM that never saw
    # one (the robust recipe's LLM gets 1,700 steps with pictures, then 2,000); the curves (every 250 steps,
    # 300 questions) show whether that was enough.
    "converged": Budget(
        "converged",
        vision_epochs=10.0,
        text_steps=1700,
        align_steps=850,
        instruct_steps=3000,
        batch_size=32,
        eval_every=250,
        curve_limit=300,
        eval_limit=None,
        eval_batch_size=32,
        timing_repeats=10,
        seeds=2,
        threads=1,
    ),
}


@dataclass(frozen=True)
class AblationSettings:
    """Where things are and what to run. `recipe`: the base recipe (stage settings, model preset);
    `train_data`: a world folder with captions.json, instructions.json and scenes.jsonl; `data`: the held-out
    questions; `test_data`: a second test set (the independent one) or None; `device`: "cpu" or "cuda";
    `timing`: measure prefill on `timing_llm` (LLM config fields over the start's) after the arms."""

    out: Path
    recipe: Path
    train_data: Path
    data: Path
    budget: Budget
    seeds: tuple[int, ...]
    test_data: Path | None = None
    arms: tuple[Arm, ...] = ARMS
    device: str = "cpu"
    timing: bool = True
    timing_llm: dict[str, Any] = field(default_factory=lambda: dict(TIMING_LLM))
    command: str | None = None

    def check(self) -> None:
        """Raise FileNotFoundError / ValueError naming the path or option that is wrong."""
        self.budget.check()
        missing = [name for name in TRAIN_FILES if not (self.train_data / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"--train-data {self.train_data}: no {', '.join(missing)} (make the world with "
                "`llava-mini data synth --world randomized --out DIR`)"
            )
        for option, folder in (("--data", self.data), ("--test-data", self.test_data)):
            if folder is not None and not (folder / "questions.jsonl").is_file():
                raise FileNotFoundError(
                    f"{option} {folder}: no questions.jsonl (make one with `llava-mini data synth` or "
                    "`llava-mini data independent`)"
                )
        if not self.seeds:
            raise ValueError("--seeds must be >= 1")
        read_base_recipe(self.recipe)


# Recipes ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaseRecipe:
    """The base recipe's settings and its stage of each mode (the first one of that mode)."""

    args: RecipeArgs
    components: StageArgs
    align: StageArgs
    instruct: StageArgs


def read_base_recipe(path: Path) -> BaseRecipe:
    """Load `--recipe`; it must build from a preset and hold stages of modes components (with a
    vision_pretraining block), align and instruct."""
    args = load_recipe(path)
    stages: dict[str, StageArgs] = {}
    for stage in args.stages:
        stages.setdefault(stage.mode, stage)
    missing = [mode for mode in ("components", "align", "instruct") if mode not in stages]
    if missing:
        raise ValueError(f"--recipe {path}: needs stages of modes components, align and instruct; no {', '.join(missing)}")
    if stages["components"].vision_pretraining is None:
        raise ValueError(f"--recipe {path}: its components stage has no vision_pretraining block")
    if not args.preset:
        raise ValueError(f"--recipe {path}: the experiment builds its start from scratch and needs `preset`")
    return BaseRecipe(args, stages["components"], stages["align"], stages["instruct"])


def without_media(record: ConversationRecord) -> ConversationRecord:
    """The same conversation with its media and their `<image>` / `<video>` markers removed."""
    turns = [(role, MEDIA_MARKER.sub("", text).strip()) for role, text in record.turns]
    return replace(record, media_kind=None, media=[], turns=turns)


@dataclass
class LearningCurve:
    """Held-out accuracy every `every` steps of a stage, appended to `path` (jsonl, one point per line).

    Each point: step, accuracy per split (eval/synth.py's `score`), wall and process CPU seconds per
    training step since the previous point (evaluation excluded; with one thread the CPU seconds are what the
    step costs on an idle core, whatever else shares the machine) and the evaluation's seconds.
    """

    path: Path
    questions: list[Question]
    every: int
    batch_size: int
    with_media: bool
    since: float = field(default_factory=time.perf_counter)
    since_cpu: float = field(default_factory=time.process_time)
    since_step: int = 0

    def restart(self, step: int) -> None:
        """A stage (re)starts at `step`: later points are dropped (they are computed again)."""
        truncate_log(self.path, step)
        self.since, self.since_cpu, self.since_step = time.perf_counter(), time.process_time(), step

    def due(self, step: int, total_steps: int) -> bool:
        return step % self.every == 0 or step == total_steps

    def record(self, step: int, model, processor) -> dict:
        """Evaluate `model` (left in train mode, torch's RNG untouched) and append the point."""
        from llava_mini.inference.generate import LlavaMini

        trained, trained_cpu = time.perf_counter() - self.since, time.process_time() - self.since_cpu
        started = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            records = evaluate(LlavaMini(model, processor), self.questions, self.batch_size, self.with_media)
        model.train()
        accuracy = score(records)
        point = {
            "step": step,
            "accuracy": {split: entry["accuracy"] for split, entry in accuracy.items()},
            "questions": len(records),
            "seconds_per_step": trained / max(1, step - self.since_step),
            "cpu_seconds_per_step": trained_cpu / max(1, step - self.since_step),
            "eval_seconds": time.perf_counter() - started,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(point) + "\n")
        self.since, self.since_cpu, self.since_step = time.perf_counter(), time.process_time(), step
        return point


def steady_cpu_seconds_per_step(curve: Sequence[dict]) -> float | None:
    """Process CPU seconds per stage-2 step over the curve's intervals after the first (which also holds
    building the model and reading the data); the only interval when there is one; None without points."""
    intervals = list(zip([0, *[point["step"] for point in curve]], curve, strict=False))
    steady = intervals[1:] or intervals
    steps = sum(point["step"] - before for before, point in steady)
    if not steady or steps == 0 or any("cpu_seconds_per_step" not in point for _, point in steady):
        return None
    return sum(point["cpu_seconds_per_step"] * (point["step"] - before) for before, point in steady) / steps


def read_curve(path: Path) -> list[dict]:
    """The points of a curve.jsonl (none when absent)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class AblationRecipe(TrainRecipe):
    """TrainRecipe for one part of the experiment (always resumable): `text_only` reads the records without
    their media (the text-only start, the text-only arm); `curve` evaluates during the stage."""

    def __init__(self, args: RecipeArgs, text_only: bool, curve: LearningCurve | None = None) -> None:
        super().__init__(args, resume=True)
        self.text_only = text_only
        self.curve = curve

    def read_records(self, stage: StageArgs) -> list[ConversationRecord]:
        records = super().read_records(stage)
        return [without_media(record) for record in records] if self.text_only else records

    def run_stage(self, index: int, stage: StageArgs, previous: Path | None) -> Path:
        if self.curve is not None:
            checkpoints = list_checkpoints(self.stage_dir(index, stage))
            self.curve.restart(checkpoints[-1][0] if checkpoints else 0)
        return super().run_stage(index, stage, previous)

    def after_step(self, stage, stage_dir, step, total_steps, model, processor) -> None:
        if self.curve is not None and self.curve.due(step, total_steps):
            point = self.curve.record(step, model, processor)
            logger.info("%s step %d: held-out accuracy %.3f", stage_dir, step, point["accuracy"]["all"])


def part_args(base: BaseRecipe, settings: AblationSettings, output_dir: Path, stage: StageArgs, seed: int) -> RecipeArgs:
    """The base recipe's settings for one part of the experiment: one stage, the world, the seed."""
    return replace(
        base.args,
        output_dir=str(output_dir),
        stages=[stage],
        data_root=str(settings.train_data),
        seed=seed,
        threads=settings.budget.threads,
        device="cpu" if settings.device == "cpu" else "auto",
    )


def start_recipe(settings: AblationSettings, base: BaseRecipe) -> tuple[AblationRecipe, StageArgs]:
    """The shared start: vision pre-training, then the LLM and tokenizer on the world's text without pictures
    (mode "components" with the tower frozen after its pre-training; no record holds a picture)."""
    budget = settings.budget
    stage = replace(
        base.components,
        name="text",
        data=["captions.json", "instructions.json"],
        max_steps=budget.text_steps,
        batch_size=budget.batch_size,
        grad_accum=1,
        save_every=max(1, budget.text_steps // 5),
        keep_checkpoints=1,
        frozen=["vision_tower"],
        repeat={},
        vision_pretraining={**base.components.vision_pretraining, "epochs": budget.vision_epochs},
    )
    args = part_args(base, settings, settings.out / "start", stage, START_SEED)
    return AblationRecipe(args, text_only=True), stage


def align_recipe(settings: AblationSettings, base: BaseRecipe, seed: int) -> tuple[AblationRecipe, StageArgs]:
    """Stage 1 of one seed: the projector learns to map the tower into the frozen text-only LLM."""
    budget = settings.budget
    stage = replace(
        base.align,
        max_steps=budget.align_steps,
        batch_size=budget.batch_size,
        grad_accum=1,
        save_every=max(1, budget.align_steps // 5),
        keep_checkpoints=1,
        model={},
        vision_pretraining=None,
    )
    args = part_args(base, settings, settings.out / "align" / f"seed{seed}", stage, seed)
    return AblationRecipe(args, text_only=False), stage


def arm_recipe(
    arm: Arm, seed: int, settings: AblationSettings, base: BaseRecipe, run_dir: Path
) -> tuple[AblationRecipe, StageArgs]:
    """Stage 2 of one arm x seed with its learning curve; checkpoints at every curve point (resume)."""
    budget = settings.budget
    stage = replace(
        base.instruct,
        max_steps=budget.instruct_steps,
        batch_size=budget.batch_size,
        grad_accum=1,
        save_every=budget.eval_every,
        keep_checkpoints=1,
        model=arm.fields,
        vision_pretraining=None,
    )
    curve = LearningCurve(
        run_dir / "curve.jsonl",
        select_questions(settings.data, budget.curve_limit),
        budget.eval_every,
        budget.eval_batch_size,
        with_media=not arm.text_only,
    )
    args = part_args(base, settings, run_dir / "train", stage, seed)
    return AblationRecipe(args, arm.text_only, curve), stage


def run_part(recipe: AblationRecipe, stage: StageArgs, previous: Path | None) -> tuple[Path, float | None]:
    """Train one stage unless its final/ exists; returns final/ and the seconds it took (None if reused)."""
    final = recipe.stage_dir(0, stage) / "final"
    if (final / "config.json").is_file():
        return final, None
    started, started_cpu = time.perf_counter(), time.process_time()
    recipe.run_stage(0, stage, previous)
    seconds = time.perf_counter() - started
    timing = {"seconds": seconds, "cpu_seconds": time.process_time() - started_cpu, "steps": stage.max_steps}
    (final.parent / "timing.json").write_text(json.dumps(timing) + "\n")
    return final, seconds


def stage_seconds(final: Path) -> float | None:
    timing = final.parent / "timing.json"
    return json.loads(timing.read_text())["seconds"] if timing.is_file() else None


def fingerprint(final: Path) -> str:
    """sha256 of a saved model's weights: results from different starts must not be merged."""
    digest = hashlib.sha256()
    for path in sorted(final.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_start(settings: AblationSettings, base: BaseRecipe) -> Path:
    """The shared start's final/ (trained now or reused)."""
    recipe, stage = start_recipe(settings, base)
    final, seconds = run_part(recipe, stage, None)
    if seconds is not None:
        print(f"shared start (vision pre-training + text-only LLM): {seconds:.0f} s", flush=True)
    return final


def build_align(settings: AblationSettings, base: BaseRecipe, seed: int, start: Path) -> Path:
    """Stage 1 of `seed` from the shared start (trained now or reused)."""
    recipe, stage = align_recipe(settings, base, seed)
    final, seconds = run_part(recipe, stage, start)
    if seconds is not None:
        print(f"stage 1, seed {seed}: {seconds:.0f} s", flush=True)
    return final


# Evaluation and cost ----------------------------------------------------------------------------------
def select_questions(path: Path, limit: int | None) -> list[Question]:
    """The first `limit` questions taken round-robin over (modality, type), so every type is represented
    equally (file order within a type); None or a limit above the set's size -> every question."""
    questions = load_questions(path)
    if limit is None or limit >= len(questions):
        return questions
    groups: dict[tuple[str, str], list[Question]] = defaultdict(list)
    for question in questions:
        groups[(question.modality, question.type)].append(question)
    chosen: list[Question] = []
    depth = 0
    while len(chosen) < limit:
        for group in groups.values():
            if depth < len(group) and len(chosen) < limit:
                chosen.append(group[depth])
        depth += 1
    return chosen


def llm_vision_tokens(config, text_only: bool) -> int:
    """Vision tokens per picture in the LLM's input (for "inside_llm": after its first layers)."""
    if text_only or not config.vision_tokens_to_llm:
        return 0
    return config.num_vision_tokens()


def trainable_modules(model) -> dict[str, int]:
    """Parameters that stage 2 trains in this model, per top-level module (as `set_trainable` sets them)."""
    from llava_mini.train.freezing import set_trainable

    trainable = set(set_trainable(model, "instruct"))
    counts: dict[str, int] = defaultdict(int)
    for name, parameter in model.named_parameters():
        if name in trainable:
            counts[name.split(".")[0]] += parameter.numel()
    model.requires_grad_(False)
    return dict(counts)


def count_flops(model, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one forward over `batch` (FlopCounterMode: 2 per multiply-add; matmuls, attention, convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(**batch)
    return int(counter.get_total_flops())


def prefill_seconds(model, batch: dict[str, torch.Tensor], repeats: int) -> float:
    """Median wall time of `repeats` forwards over the prompt (after one warm-up)."""
    device = next(model.parameters()).device

    def run() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        model(**batch, use_cache=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    with torch.inference_mode():
        run()
        return statistics.median(run() for _ in range(max(1, repeats)))


def measure_cost(assistant, questions: Sequence[Question], with_media: bool, repeats: int) -> dict[str, dict]:
    """FLOPs and prefill time of the first image question and the first video question of the set."""
    cost = {}
    for modality in ("image", "video"):
        question = next((q for q in questions if q.modality == modality), None)
        if question is None:
            continue
        media = [assistant.medium(question.media_path)] if with_media else []
        batch = assistant.prepare([assistant.question_messages(question.question, media)], [media])
        cost[modality] = {
            "question": question.id,
            "prompt_tokens": int(batch["input_ids"].shape[1]),
            "flops": count_flops(assistant.model, batch),
            "prefill_seconds": prefill_seconds(assistant.model, batch, repeats),
        }
    return cost


def flops_tool_gflops(init_config, arm: Arm) -> dict[str, float] | None:
    """The flops tool's count (`llava-mini flops`: weight products only, L = 43 text tokens) for one image and
    for a video of `video_max_frames` frames, in GFLOPs; None for arms it does not model (text-only, inside-LLM)."""
    from llava_mini.analysis.flops import count_flops, derive_config

    if arm.text_only or arm.fields["arrangement"] == "inside_llm":
        return None
    config = derive_config(init_config, **arm.fields)
    frames = config.video_max_frames or 8
    return {
        "image": count_flops(config, frames=1).total / 1e9,
        "video": count_flops(config, frames=frames).total / 1e9,
        "video_frames": frames,
    }


# Speed where the LLM dominates -------------------------------------------------------------------------
def timing_config(start_config: LlavaMiniConfig, arm: Arm, llm: dict[str, Any]) -> LlavaMiniConfig:
    """The start's vision tower and vocabulary with the timing LLM (`llm` fields over the start's LLM), in
    the arm's arrangement."""
    from llava_mini.analysis.flops import derive_config

    text = start_config.text_config.to_dict()
    for key in ("transformers_version", "architectures", "dtype"):
        text.pop(key, None)
    return derive_config(start_config, text_config={**text, **llm}, **arm.fields)


def measure_timing(
    start: Path, arms: Sequence[Arm], repeats: int, llm: dict[str, Any], device: str = "cpu", rounds: int = 2
) -> dict:
    """Prefill of one image question (43 text tokens, as the flops tool) for every arm on the timing LLM,
    random weights, in this one process: `rounds` passes over the arms (so a change of load hits every arm),
    each the median of `repeats` forwards after a warm-up; the arm's time is the median over rounds. Beside
    it: FLOPs of that forward (FlopCounterMode) and the flops tool's count for the same configuration."""
    from llava_mini.analysis.flops import PAPER_TEXT_TOKENS
    from llava_mini.analysis.latency import build_random_model, prompt_ids

    start_config = LlavaMiniConfig.from_pretrained(start)
    size = int(start_config.vision_config.image_size)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 1, 3, size, size, generator=generator).to(device)  # (P, S, 3, H, W)
    runs: dict[str, list[float]] = defaultdict(list)
    entries: dict[str, dict] = {}
    for _ in range(rounds):
        for arm in arms:
            config = timing_config(start_config, arm, llm)
            torch.manual_seed(0)
            model = build_random_model(config, torch.device(device), torch.float32)
            ids = prompt_ids(config, PAPER_TEXT_TOKENS, 0 if arm.text_only else 1, torch.Generator().manual_seed(0))
            ids = ids.to(device)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            if not arm.text_only:
                batch["pixel_values"] = pixels
            runs[arm.name].append(prefill_seconds(model, batch, repeats))
            if arm.name not in entries:
                entries[arm.name] = {
                    "prompt_tokens": int(ids.shape[1]),
                    "llm_vision_tokens": llm_vision_tokens(config, arm.text_only),
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "flops": count_flops(model, batch),
                    "flops_tool": flops_tool_gflops(config, arm),
                }
            del model
    baseline = statistics.median(runs[BASELINE_ARM]) if BASELINE_ARM in runs else None
    for name, entry in entries.items():
        entry["prefill_seconds_runs"] = runs[name]
        entry["prefill_seconds"] = statistics.median(runs[name])
        entry["prefill_ratio_vs_baseline"] = entry["prefill_seconds"] / baseline if baseline else None
    llm_layers = int(llm.get("num_hidden_layers", start_config.text_config.num_hidden_layers))
    return {"llm": llm, "llm_layers": llm_layers, "text_tokens": PAPER_TEXT_TOKENS, "repeats": repeats,
            "rounds": rounds, "device": device, "threads": torch.get_num_threads(), "arms": entries}


def timing_of(out: Path, start: Path, settings: AblationSettings) -> dict:
    """OUT/timing.json, measured for every arm (`ARMS`, whatever --arms says) when absent."""
    path = out / "timing.json"
    if path.is_file():
        return json.loads(path.read_text())
    started = time.perf_counter()
    timing = measure_timing(start, ARMS, settings.budget.timing_repeats, settings.timing_llm, settings.device)
    timing["seconds"] = time.perf_counter() - started
    path.write_text(json.dumps(timing, indent=2) + "\n")
    print(f"timing LLM prefill of {len(ARMS)} arms: {timing['seconds']:.0f} s", flush=True)
    return timing


# One arm x seed ---------------------------------------------------------------------------------------
def evaluate_on(assistant, folder: Path, limit: int | None, batch_size: int, with_media: bool, answers: Path) -> dict:
    """Score `assistant` on `limit` questions of `folder` (every type equally), writing every answer."""
    questions = select_questions(folder, limit)
    started = time.perf_counter()
    records = evaluate(assistant, questions, batch_size=batch_size, with_media=with_media)
    with answers.open("w") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    return {"data": str(folder), "questions": len(records), "seconds": time.perf_counter() - started,
            "accuracy": score(records)}


def run_arm(arm: Arm, seed: int, settings: AblationSettings, base: BaseRecipe, start: Path, align: Path) -> dict:
    """Stage 2, evaluation and cost of one arm x seed; its result.json is reused when it exists (resume)."""
    from llava_mini.inference.generate import LlavaMini

    run_dir = settings.out / arm.name / f"seed{seed}"
    result_path = run_dir / "result.json"
    if result_path.is_file():
        logger.info("%s seed %d: finished earlier, reusing %s", arm.name, seed, result_path)
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe, stage = arm_recipe(arm, seed, settings, base, run_dir)
    final, _ = run_part(recipe, stage, align)
    losses = json.loads((final / "training_summary.json").read_text())["losses"]
    curve = read_curve(run_dir / "curve.jsonl")
    assistant = LlavaMini.load(final, device=settings.device)
    budget, with_media = settings.budget, not arm.text_only
    held_out = evaluate_on(assistant, settings.data, budget.eval_limit, budget.eval_batch_size, with_media,
                           run_dir / "answers.jsonl")
    test = None
    if settings.test_data is not None:
        test = evaluate_on(assistant, settings.test_data, budget.eval_limit, budget.eval_batch_size, with_media,
                           run_dir / "test_answers.jsonl")
    config = assistant.config
    seconds = stage_seconds(final)
    curve_eval = sum(point["eval_seconds"] for point in curve)
    result = {
        "arm": arm.name,
        "seed": seed,
        "description": arm.description,
        "paper": arm.paper,
        "fields": arm.fields,
        "text_only": arm.text_only,
        "llm_vision_tokens_per_picture": llm_vision_tokens(config, arm.text_only),
        "prefusion_layers": int(config.prefusion_layers),
        "compressed_tokens": None if config.compressor_type == "none" else int(config.compressor_size) ** 2,
        "trainable_parameters": trainable_modules(assistant.model),
        "start": {"path": str(start), "sha256": fingerprint(start), "seconds": stage_seconds(start)},
        "align": {"path": str(align), "seconds": stage_seconds(align)},
        "train": {
            "final": str(final),
            "steps": len(losses),
            "batch_size": stage.batch_size,
            "seconds": seconds,
            "curve_eval_seconds": curve_eval,
            "seconds_per_step": (seconds - curve_eval) / len(losses) if seconds and losses else None,
            "cpu_seconds_per_step": steady_cpu_seconds_per_step(curve),
            "final_loss": losses[-1] if losses else None,
        },
        "curve": curve,
        "eval": held_out,
        "test": test,
        "cost": measure_cost(assistant, select_questions(settings.data, None), with_media, budget.timing_repeats),
        "budget": asdict(budget),
        "command": settings.command,
        "commit": source_commit(),
    }
    (run_dir / "results.md").write_text(markdown_table(held_out["accuracy"]) + "\n")
    temporary = result_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    temporary.replace(result_path)  # written last and atomically: its presence means "done"
    return result


def source_commit() -> str | None:
    """The git commit of this source tree (with "-dirty" when it has changes), or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


# Aggregation ------------------------------------------------------------------------------------------
def spread(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min, max and the values."""
    values = list(values)
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def accuracy_spread(runs: Sequence[dict], key: str) -> dict:
    """Per split, mean and spread over the runs that have evaluation `key` ("eval" or "test")."""
    scored = [run[key]["accuracy"] for run in runs if run.get(key)]
    splits = sorted({split for accuracy in scored for split in accuracy})
    return {
        split: spread([accuracy[split]["accuracy"] for accuracy in scored if split in accuracy])
        for split in splits
    }


def mean_curve(runs: Sequence[dict]) -> list[dict]:
    """The learning curve over seeds: at each step every seed reached, mean and spread of "all"."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for point in run.get("curve", []):
            by_step[point["step"]].append(point["accuracy"]["all"])
    return [{"step": step, **spread(values)} for step, values in sorted(by_step.items()) if len(values) == len(runs)]


def aggregate(results: Sequence[dict]) -> list[dict]:
    """One entry per arm (first-seen order): accuracy per split on the held-out and test sets as mean and
    spread over seeds, the mean learning curve, training speed, the tiny model's cost, and each modality's
    tiny-model prefill time as a ratio to the baseline arm's (None without a baseline run)."""
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        by_arm[result["arm"]].append(result)
    summaries = []
    for name, runs in by_arm.items():
        runs = sorted(runs, key=lambda run: run["seed"])
        first = runs[0]
        cost = {}
        for modality in first["cost"]:
            seconds = [run["cost"][modality]["prefill_seconds"] for run in runs if modality in run["cost"]]
            cost[modality] = {
                "flops": first["cost"][modality]["flops"],
                "prefill_seconds": statistics.fmean(seconds),
            }
        per_step = [run["train"].get("cpu_seconds_per_step") for run in runs]
        summaries.append(
            {
                "arm": name,
                "description": first["description"],
                "paper": first["paper"],
                "fields": first["fields"],
                "text_only": first["text_only"],
                "seeds": [run["seed"] for run in runs],
                "llm_vision_tokens_per_picture": first["llm_vision_tokens_per_picture"],
                "prefusion_layers": first["prefusion_layers"],
                "compressed_tokens": first["compressed_tokens"],
                "trainable_parameters": sum(first["trainable_parameters"].values()),
                "train_seconds": [run["train"]["seconds"] for run in runs],
                "cpu_seconds_per_step": [value for value in per_step if value is not None],
                "steps": first["train"]["steps"],
                "accuracy": accuracy_spread(runs, "eval"),
                "test_accuracy": accuracy_spread(runs, "test"),
                "curve": mean_curve(runs),
                "cost": cost,
            }
        )
    baseline = next((summary for summary in summaries if summary["arm"] == BASELINE_ARM), None)
    for summary in summaries:
        for modality, cost in summary["cost"].items():
            reference = baseline["cost"].get(modality) if baseline else None
            cost["prefill_ratio_vs_baseline"] = (
                cost["prefill_seconds"] / reference["prefill_seconds"] if reference else None
            )
    return summaries


def format_spread(entry: dict | None) -> str:
    if entry is None:
        return "-"
    return f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def results_markdown(summaries: Sequence[dict], report: dict) -> str:
    """The main table (speed on the timing LLM, FLOPs, accuracy), the per-question-type table, the arms."""
    budget, timing = report["budget"], report.get("timing")
    timing_llm = (
        f"timing LLM: {timing['llm']['hidden_size']} wide, {timing['llm_layers']} layers, random weights"
        if timing else "no timing run"
    )
    lines = [
        f"# Ablations (budget `{budget['name']}`: stage 2 {budget['instruct_steps']} steps x batch "
        f"{budget['batch_size']} per arm from one shared start; held-out {report['questions']} questions, test "
        f"{report['test_questions']}; accuracy in % as mean ± std over seeds; {timing_llm})",
        "",
        "| arm | paper | LLM vision tokens / picture | N | C*C | GFLOPs image (timing LLM) "
        "| prefill vs baseline (timing LLM) | prefill vs baseline (tiny LLM) "
        "| held-out image | held-out video | held-out all | independent all | CPU s / step | seeds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for summary in summaries:
        lines.append(main_row(summary, (timing or {}).get("arms", {}).get(summary["arm"])))
    for title, key in (("held-out", "accuracy"), ("independent test set", "test_accuracy")):
        types = sorted({split for summary in summaries for split in summary[key] if "/" in split})
        if not types:
            continue
        lines += ["", f"Accuracy per question type, {title} (%, mean ± std over seeds):", ""]
        lines.append("| arm | " + " | ".join(types) + " |")
        lines.append("| --- |" + " ---: |" * len(types))
        for summary in summaries:
            cells = [format_spread(summary[key].get(split)) for split in types]
            lines.append(f"| {summary['arm']} | " + " | ".join(cells) + " |")
    lines += ["", "Arms:", ""]
    lines += [f"- `{summary['arm']}`: {summary['description']}" for summary in summaries]
    lines += [
        "",
        "N is the number of pre-fusion layers (for `inside-llm`, the LLM layers that see every vision token). "
        "GFLOPs: one prefill of one image and 43 text tokens on the timing LLM, `llava-mini flops`'s count "
        "(weight products only); for the arms it does not model (text-only, inside-LLM, marked *) torch's "
        "FlopCounterMode over the forward, which on a CPU also counts weight products only (it does not see "
        "the fused attention kernel). Prefill vs baseline: median forward time over the baseline arm's; timing "
        "LLM: random weights, every arm in one process; tiny LLM: the trained arm on the first held-out image "
        "question. CPU s / step: process CPU seconds per stage-2 step (one thread, batch as above), after the "
        "first curve interval, learning-curve evaluations excluded.",
    ]
    return "\n".join(lines) + "\n"


def main_row(summary: dict, timing: dict | None) -> str:
    """One arm's row of the main table."""
    accuracy, test = summary["accuracy"], summary["test_accuracy"]
    layers = summary["fields"].get("inside_llm_layers") or summary["prefusion_layers"]
    compressed = summary["compressed_tokens"] if summary["compressed_tokens"] is not None else "-"
    tool = (timing or {}).get("flops_tool")
    counted = f"{tool['image']:.2f}" if tool else (f"{timing['flops'] / 1e9:.2f}*" if timing else "-")
    speed = timing.get("prefill_ratio_vs_baseline") if timing else None
    tiny = summary["cost"].get("image", {}).get("prefill_ratio_vs_baseline")
    per_step = summary["cpu_seconds_per_step"]
    step_seconds = f"{statistics.fmean(per_step):.2f}" if per_step else "-"
    return (
        f"| {summary['arm']} | {summary['paper']} | {summary['llm_vision_tokens_per_picture']} | {layers} "
        f"| {compressed} | {counted} | {format_ratio(speed)} | {format_ratio(tiny)} "
        f"| {format_spread(accuracy.get('image'))} | {format_spread(accuracy.get('video'))} "
        f"| {format_spread(accuracy.get('all'))} | {format_spread(test.get('all'))} | {step_seconds} "
        f"| {len(summary['seeds'])} |"
    )


# Plots ------------------------------------------------------------------------------------------------
def plot_series(
    path: Path, points: Sequence[tuple[float, dict]], xlabel: str, baseline: dict | None, log2_x: bool
) -> None:
    """Accuracy (all / image / video, mean with std bars) against one arm property; baseline dashed."""
    figure, axes = new_figure(figsize=(5.5, 4))
    points = sorted(points, key=lambda point: point[0])
    xs = [x for x, _ in points]
    for split, colour in (("all", "black"), ("image", "tab:blue"), ("video", "tab:orange")):
        entries = [summary["accuracy"].get(split) for _, summary in points]
        if any(entry is None for entry in entries):
            continue
        means = [100 * entry["mean"] for entry in entries]
        errors = [100 * entry["std"] for entry in entries]
        axes.errorbar(xs, means, yerr=errors, marker="o", capsize=3, color=colour, label=split)
        if baseline is not None and split in baseline["accuracy"]:
            axes.axhline(
                100 * baseline["accuracy"][split]["mean"], color=colour, linestyle="--", linewidth=0.8
            )
    if log2_x:
        axes.set_xscale("log", base=2)
    axes.set_xticks(xs, [f"{x:g}" for x in xs])
    axes.set_xlabel(xlabel)
    axes.set_ylabel("held-out accuracy (%)")
    axes.set_title(f"accuracy vs {xlabel} (dashed: {BASELINE_ARM})", fontsize=9)
    axes.legend(fontsize=8)
    save_figure(figure, path)


def plot_accuracy_vs_flops(path: Path, summaries: Sequence[dict], timing: dict) -> None:
    """Each arm's held-out accuracy (mean, std bars) against its prefill FLOPs on the timing LLM."""
    figure, axes = new_figure(figsize=(7, 4.5))
    for summary in summaries:
        entry, cost = summary["accuracy"].get("all"), timing["arms"].get(summary["arm"])
        if entry is None or cost is None:
            continue
        x = cost["flops"] / 1e9
        axes.errorbar([x], [100 * entry["mean"]], yerr=[100 * entry["std"]], marker="o", capsize=3)
        axes.annotate(
            summary["arm"], (x, 100 * entry["mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    axes.set_xscale("log")
    axes.set_xlabel(f"GFLOPs of one image-question prefill (timing LLM, {timing['llm_layers']} layers)")
    axes.set_ylabel("held-out accuracy, all questions (%)")
    axes.set_title("accuracy vs FLOPs", fontsize=9)
    save_figure(figure, path)


def plot_curves(path: Path, title: str, names: Sequence[str], results: Sequence[dict]) -> bool:
    """Held-out accuracy against stage-2 step for the named arms: each seed thin, their mean thick.
    Returns False (and writes nothing) when none of the arms has a curve."""
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        if result["arm"] in names and result.get("curve"):
            by_arm[result["arm"]].append(result)
    if not by_arm:
        return False
    figure, axes = new_figure(figsize=(7, 4.5))
    colours = [f"C{index}" for index in range(10)]
    for colour, name in zip(colours, [name for name in names if name in by_arm], strict=False):
        runs = by_arm[name]
        for run in runs:
            steps = [point["step"] for point in run["curve"]]
            axes.plot(steps, [100 * point["accuracy"]["all"] for point in run["curve"]], color=colour,
                      linewidth=0.6, alpha=0.5)
        mean = mean_curve(runs)
        axes.plot([p["step"] for p in mean], [100 * p["mean"] for p in mean], color=colour, linewidth=2,
                  marker="o", markersize=3, label=f"{name} ({len(runs)} seeds)")
    axes.set_xlabel("stage-2 step")
    axes.set_ylabel("held-out accuracy, all questions (%)")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    save_figure(figure, path)
    return True


def write_plots(out: Path, summaries: Sequence[dict], results: Sequence[dict], timing: dict | None) -> list[Path]:
    """curves_<group>.png (one per `CURVE_GROUPS` entry with a curve), accuracy_vs_flops.png (with a timing
    run), accuracy_vs_n.png (C*C=1, N varies) and accuracy_vs_cc.png (N=2, C varies)."""
    written = []
    for group, (title, names) in CURVE_GROUPS.items():
        if plot_curves(out / f"curves_{group}.png", title, names, results):
            written.append(out / f"curves_{group}.png")
    if timing is not None:
        plot_accuracy_vs_flops(out / "accuracy_vs_flops.png", summaries, timing)
        written.append(out / "accuracy_vs_flops.png")
    by_name = {summary["arm"]: summary for summary in summaries}
    baseline = by_name.get(BASELINE_ARM)
    for filename, value_of, label, log2_x in (
        ("accuracy_vs_n.png", prefusion_series_value, "N (pre-fusion layers, C*C=1)", False),
        ("accuracy_vs_cc.png", compression_series_value, f"C*C (vision tokens, N={DEFAULT_PREFUSION_LAYERS})", True),
    ):
        points = [(value_of(arm), by_name[arm.name]) for arm in ARMS if arm.name in by_name and value_of(arm) is not None]
        if points:
            plot_series(out / filename, points, label, baseline, log2_x)
            written.append(out / filename)
    return written


# The experiment ---------------------------------------------------------------------------------------
def collect_results(folders: Sequence[Path]) -> list[dict]:
    """Every <arm>/seed<k>/result.json under the folders, in `ARMS` order then seed. The same arm x seed in
    two folders, or results from different shared starts, are errors that name the files."""
    found: dict[tuple[str, int], Path] = {}
    results = []
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such results folder")
        for path in sorted(folder.glob("*/seed*/result.json")):
            result = json.loads(path.read_text())
            key = (result["arm"], result["seed"])
            if key in found:
                raise ValueError(f"{key[0]} seed {key[1]} is in both {found[key]} and {path}; keep one")
            found[key] = path
            results.append(result)
    budgets = {json.dumps(result["budget"], sort_keys=True): result for result in results}
    if len(budgets) > 1:
        names = "; ".join(f"{r['arm']} seed {r['seed']}: {r['budget']}" for r in budgets.values())
        raise ValueError(f"results were trained with different budgets ({names}); merge one budget at a time")
    starts = {result["start"]["sha256"]: result for result in results}
    if len(starts) > 1:
        names = ", ".join(f"{r['arm']} seed {r['seed']} ({sha[:12]})" for sha, r in starts.items())
        raise ValueError(f"results come from different shared starts: {names}; copy one OUT/start to every session")
    order = {arm.name: index for index, arm in enumerate(ARMS)}
    return sorted(results, key=lambda result: (order.get(result["arm"], len(order)), result["seed"]))


def write_report(out: Path, results: Sequence[dict], timing: dict | None) -> dict:
    """results.json, results.md and the plots in `out`, from `results` (and the timing run, if any)."""
    if not results:
        raise ValueError(f"no finished arm x seed to report in {out} (no <arm>/seed<k>/result.json)")
    out.mkdir(parents=True, exist_ok=True)
    summaries = aggregate(results)
    first = results[0]
    report = {
        "budget": first["budget"],
        "start": first["start"],
        "questions": first["eval"]["questions"],
        "test_questions": first["test"]["questions"] if first.get("test") else 0,
        "data": first["eval"]["data"],
        "test_data": first["test"]["data"] if first.get("test") else None,
        "commits": sorted({str(result.get("commit")) for result in results}),
        "commands": sorted({result["command"] for result in results if result.get("command")}),
        "timing": timing,
        "arms": summaries,
        "runs": [
            {"arm": r["arm"], "seed": r["seed"], "curve": r["curve"], "train": r["train"], "align": r["align"]}
            for r in results
        ],
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(summaries, report))
    write_plots(out, summaries, results, timing)
    return report


def claim_folder(settings: AblationSettings) -> None:
    """Write OUT/experiment.json on first use; later runs must use the same budget (threads aside), base
    recipe and training world, since everything in OUT is reused."""
    path = settings.out / "experiment.json"
    budget = {key: value for key, value in asdict(settings.budget).items() if key != "threads"}
    claim = {"budget": budget, "recipe": str(settings.recipe), "train_data": str(settings.train_data)}
    if path.is_file():
        earlier = json.loads(path.read_text())
        changed = sorted(
            f"{key}: {earlier['budget'].get(key)} -> {value}" for key, value in budget.items()
            if earlier["budget"].get(key) != value
        ) + [f"{key}: {earlier[key]} -> {claim[key]}" for key in ("recipe", "train_data") if earlier[key] != claim[key]]
        if changed:
            raise ValueError(f"{settings.out} was made with other settings ({'; '.join(changed)}); use another --out")
        return
    settings.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(claim, indent=2) + "\n")


def run_ablations(settings: AblationSettings) -> dict:
    """The shared start, stage 1 per seed and every selected arm x seed (all resumable), the timing run,
    then the report over every result in `settings.out`."""
    settings.check()
    claim_folder(settings)
    if settings.budget.threads:
        torch.set_num_threads(settings.budget.threads)
    base = read_base_recipe(settings.recipe)
    start = build_start(settings, base)
    runs = [(arm, seed) for arm in settings.arms for seed in settings.seeds]
    started = time.perf_counter()
    for index, (arm, seed) in enumerate(runs, start=1):
        align = build_align(settings, base, seed, start)
        result = run_arm(arm, seed, settings, base, start, align)
        accuracy = result["eval"]["accuracy"]["all"]["accuracy"]
        print(
            f"[{index}/{len(runs)}] {arm.name} seed {seed}: held-out accuracy {100 * accuracy:.1f}% "
            f"({time.perf_counter() - started:.0f} s elapsed)",
            flush=True,
        )
    timing = timing_of(settings.out, start, settings) if settings.timing else None
    return write_report(settings.out, collect_results([settings.out]), timing)


def merge_ablations(folders: Sequence[Path], out: Path) -> dict:
    """The report over the results of several folders (parallel sessions), with the first timing.json found."""
    results = collect_results(folders)
    timing = next((json.loads((f / "timing.json").read_text()) for f in folders if (f / "timing.json").is_file()), None)
    return write_report(out, results, timing)


def add_ablations_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--budget",
        choices=sorted(BUDGETS),
        default="converged",
        help="converged: the full experiment (docs/ablations/README.md); pilot: every part with tiny counts",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: the budget's)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="run seeds first..first+K-1; processes given different seeds or --arms can share --out",
    )
    parser.add_argument("--out", default="runs/ablations", help="output folder (reruns reuse what is there)")
    parser.add_argument(
        "--recipe", default="recipes/tiny_cpu_robust.yaml", help="base recipe: model preset and stage settings"
    )
    parser.add_argument(
        "--train-data", default="runs/synth-robust",
        help="world to train on (`llava-mini data synth --world randomized`)",
    )
    parser.add_argument(
        "--data", default="runs/randomized-heldout", help="held-out questions (the same world, another seed)"
    )
    parser.add_argument(
        "--test-data", default="runs/independent",
        help="second test set (`llava-mini data independent`); 'none' to skip",
    )
    parser.add_argument("--limit", type=int, default=None, help="final evaluation questions (default: the budget's)")
    parser.add_argument("--instruct-steps", type=int, default=None, help="stage-2 steps per arm (default: the budget's)")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="stage-2 steps between learning-curve points and checkpoints (default: the budget's)")
    parser.add_argument("--arms", default=None, help="comma-separated arm names (default: all; see --list)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the budget's)")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing-LLM prefill run")
    parser.add_argument("--prepare", action="store_true",
                        help="only build the shared start and stage 1 of the seeds (before parallel runs)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="build results and plots in --out from these folders' results; trains nothing")
    parser.add_argument("--list", action="store_true", help="print the arms and the budget, run nothing")


def positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{option} must be >= 1, got {value}")


def run_ablations_command(args: argparse.Namespace) -> int:
    budget = BUDGETS[args.budget]
    positive(args.limit, "--limit")
    positive(args.threads, "--threads")
    positive(args.seeds, "--seeds")
    positive(args.instruct_steps, "--instruct-steps")
    positive(args.eval_every, "--eval-every")
    if args.first_seed < 0:
        raise ValueError(f"--first-seed must be >= 0, got {args.first_seed}")
    budget = replace(
        budget,
        eval_limit=args.limit or budget.eval_limit,
        threads=args.threads or budget.threads,
        instruct_steps=args.instruct_steps or budget.instruct_steps,
        eval_every=args.eval_every or budget.eval_every,
    )
    seeds = args.seeds or budget.seeds
    arms = arms_by_name([name.strip() for name in args.arms.split(",") if name.strip()] if args.arms else None)
    if args.list:
        for arm in arms:
            print(f"{arm.name:22} {arm.paper:22} {arm.description}")
        print(f"budget {budget.name}: {json.dumps(asdict(budget))}; seeds {args.first_seed}..{args.first_seed + seeds - 1}")
        return 0
    if args.merge:
        merge_ablations([Path(folder) for folder in args.merge], Path(args.out))
        print((Path(args.out) / "results.md").read_text())
        return 0
    settings = AblationSettings(
        out=Path(args.out),
        recipe=Path(args.recipe),
        train_data=Path(args.train_data),
        data=Path(args.data),
        test_data=None if args.test_data.lower() == "none" else Path(args.test_data),
        budget=budget,
        seeds=tuple(range(args.first_seed, args.first_seed + seeds)),
        arms=arms,
        device=args.device,
        timing=not args.no_timing,
        command=shlex.join(["llava-mini", *sys.argv[1:]]) if sys.argv else None,
    )
    if args.prepare:
        prepare(settings)
        return 0
    run_ablations(settings)
    print((settings.out / "results.md").read_text())
    return 0


def prepare(settings: AblationSettings) -> None:
    """Build the shared start and stage 1 of every seed, so parallel processes find them ready."""
    settings.check()
    claim_folder(settings)
    if settings.budget.threads:
        torch.set_num_threads(settings.budget.threads)
    base = read_base_recipe(settings.recipe)
    start = build_start(settings, base)
    for seed in settings.seeds:
        build_align(settings, base, seed, start)
