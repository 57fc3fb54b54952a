"""The paper's ablations in miniature (sec. 6.1-6.3, Tables 7, 8, 12): `llava-mini experiment ablations`.

Every arm starts from the same stage-1 checkpoint (the tiny recipe's `stage1-align/final`: same vision
tower, LLM, projector and tokenizer), then runs stage 2 (mode "instruct") with the same data, steps,
optimiser and seeds; only the studied part differs. Each arm x seed is evaluated on the same held-out
synthetic questions (image and video, per question type), and its cost is measured on one image and one
video question: FLOPs of one prefill forward (torch's FlopCounterMode, 2 FLOPs per multiply-add, matrix
products and attention only) and the median wall time of a few prefill forwards, reported as a ratio to the
LLaVA-v1.5 arm's. The arms (`ARMS`) and the budgets (`BUDGETS`) are data.

Model switches the arms use: `vision_tokens_to_llm=False` (pre-fusion only: each picture keeps one
content-free marker slot, so the model can still tell which sample a picture belongs to) and
`arrangement="inside_llm"` (model/inside_llm.py: the LLM's first layers see every vision token, the later
layers, and their KV cache, only the compressed ones).

Layout of `--out DIR`:
    DIR/<arm>/seed<k>/train/stage0-instruct/final/   the trained model (reused if present)
    DIR/<arm>/seed<k>/answers.jsonl                  every answer
    DIR/<arm>/seed<k>/result.json                    written last: an arm x seed with it is never rerun
    DIR/results.json, DIR/results.md                 mean and spread over seeds, side by side
    DIR/accuracy_vs_flops.png, accuracy_vs_n.png, accuracy_vs_cc.png
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
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
from llava_mini.train.args import RecipeArgs, StageArgs
from llava_mini.train.recipe import TrainRecipe

logger = logging.getLogger(__name__)

DEFAULT_PREFUSION_LAYERS = 2  # N of the shipped model (recipes/tiny_cpu.yaml, stage 2)
BASELINE_ARM = "llava-v1.5"
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
MEDIA_MARKER = re.compile(r"<(image|video)>\n?")


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


# Budgets ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """How much each arm trains and evaluates. `max_steps` None trains `epochs` over the records."""

    name: str
    max_steps: int | None
    epochs: float
    batch_size: int
    lr: float
    multimodal_lr: float | None
    warmup_ratio: float
    save_every: int
    eval_limit: int | None
    eval_batch_size: int
    timing_repeats: int
    seeds: int
    threads: int | None
    video_repeat: int = 2  # videos seen this many times per epoch, as in the tiny recipe's stage 2
    group_by: str = "length"  # batches of one modality and length (train/sampling.py), as the stage-1 checkpoint was made


BUDGETS: dict[str, Budget] = {
    # 12 arms x 2 seeds in about 1 h on 2 CPU cores (one process per seed, `--first-seed`, 1 thread each):
    # 150 steps x 32 = 4,800 samples per arm, 500 held-out questions (50 per question type). Measured
    # (train + eval, s per arm x seed): llava-v1.5 408, query/pool-c1-n0 140, mini-c1-n1 222, mini-c1-n2 273,
    # mini-c1-n4 432, mini-c4-n2 337, mini-c16-n2 372 (docs/ablations/results.json has every arm).
    "small": Budget(
        "small",
        max_steps=150,
        epochs=1.0,
        batch_size=32,
        lr=5e-4,
        multimodal_lr=5e-4,
        warmup_ratio=0.03,
        save_every=10**9,
        eval_limit=500,
        eval_batch_size=32,
        timing_repeats=10,
        seeds=2,
        threads=2,
    ),
    # Two epochs of stage 2 for every arm, the whole held-out set, 3 seeds: for a GPU (`--device cuda`).
    "full": Budget(
        "full",
        max_steps=None,
        epochs=2.0,
        batch_size=32,
        lr=5e-4,
        multimodal_lr=5e-4,
        warmup_ratio=0.03,
        save_every=200,
        eval_limit=None,
        eval_batch_size=64,
        timing_repeats=20,
        seeds=3,
        threads=None,
    ),
}


@dataclass(frozen=True)
class AblationSettings:
    """Where things are and what to run. `init` is a stage-1 checkpoint; `data` the held-out questions;
    `train_data` the folder with instructions.json; `device` "cpu" or "cuda"."""

    out: Path
    init: Path
    data: Path
    train_data: Path
    budget: Budget
    seeds: tuple[int, ...]
    arms: tuple[Arm, ...] = ARMS
    device: str = "cpu"

    def check(self) -> None:
        """Raise FileNotFoundError / ValueError naming the path or option that is wrong."""
        if not (self.init / "config.json").is_file():
            raise FileNotFoundError(
                f"--init {self.init}: no config.json; train the stage-1 checkpoint first "
                "(`llava-mini train recipes/tiny_cpu.yaml`)"
            )
        init = json.loads((self.init / "config.json").read_text())
        if init.get("compressor_type") != "none" or init.get("prefusion_layers", 0) != 0:
            raise ValueError(
                f"--init {self.init} has compression or pre-fusion; pass a stage-1 (align) checkpoint so every "
                "arm's compressor and pre-fusion start fresh"
            )
        if not (self.data / "questions.jsonl").is_file():
            raise FileNotFoundError(
                f"--data {self.data}: no questions.jsonl (make one with `llava-mini data synth`)"
            )
        if not (self.train_data / "instructions.json").is_file():
            raise FileNotFoundError(f"--train-data {self.train_data}: no instructions.json")
        if not self.seeds:
            raise ValueError("--seeds must be >= 1")


# Training ---------------------------------------------------------------------------------------------
def without_media(record: ConversationRecord) -> ConversationRecord:
    """The same conversation with its media and their `<image>` / `<video>` markers removed."""
    turns = [(role, MEDIA_MARKER.sub("", text).strip()) for role, text in record.turns]
    return replace(record, media_kind=None, media=[], turns=turns)


class AblationRecipe(TrainRecipe):
    """The training recipe for one arm; the text-only arm reads the same records without their media."""

    def __init__(self, args: RecipeArgs, text_only: bool) -> None:
        super().__init__(args, resume=True)
        self.text_only = text_only

    def read_records(self, stage: StageArgs) -> list[ConversationRecord]:
        records = super().read_records(stage)
        return [without_media(record) for record in records] if self.text_only else records


def arm_recipe(
    arm: Arm, seed: int, settings: AblationSettings, run_dir: Path
) -> tuple[AblationRecipe, StageArgs]:
    """A one-stage recipe: stage 2 ("instruct") of `arm` from the stage-1 checkpoint, with the budget's settings."""
    from llava_mini.model.configuration import LlavaMiniConfig

    budget = settings.budget
    init_config = LlavaMiniConfig.from_pretrained(settings.init)
    processor_settings = settings.init / "processor_config.json"
    system_prompt = (
        json.loads(processor_settings.read_text()).get("system_prompt")
        if processor_settings.is_file()
        else None
    )
    stage = StageArgs(
        name="instruct",
        mode="instruct",
        data=["instructions.json"],
        epochs=budget.epochs,
        max_steps=budget.max_steps,
        batch_size=budget.batch_size,
        lr=budget.lr,
        multimodal_lr=budget.multimodal_lr,
        warmup_ratio=budget.warmup_ratio,
        save_every=budget.save_every,
        keep_checkpoints=1,
        model=arm.fields,
        repeat={"video": budget.video_repeat},
        group_by=budget.group_by,
    )
    args = RecipeArgs(
        output_dir=str(run_dir / "train"),
        stages=[stage],
        data_root=str(settings.train_data),
        seed=seed,
        threads=budget.threads,
        device="cpu" if settings.device == "cpu" else "auto",
        system_prompt=system_prompt,
        video_fps=init_config.video_fps,
        video_max_frames=init_config.video_max_frames,
    )
    return AblationRecipe(args, arm.text_only), stage


def train_arm(arm: Arm, seed: int, settings: AblationSettings, run_dir: Path) -> dict:
    """Train (or reuse) the arm's stage 2; returns steps, seconds and the last loss."""
    recipe, stage = arm_recipe(arm, seed, settings, run_dir)
    final = recipe.stage_dir(0, stage) / "final"
    timing_path = run_dir / "train" / "timing.json"
    if not (final / "config.json").is_file():
        started = time.perf_counter()
        recipe.run_stage(0, stage, settings.init)
        timing_path.write_text(json.dumps({"seconds": time.perf_counter() - started}) + "\n")
    losses = json.loads((final / "training_summary.json").read_text())["losses"]
    seconds = json.loads(timing_path.read_text())["seconds"] if timing_path.is_file() else None
    return {
        "final": str(final),
        "steps": len(losses),
        "batch_size": stage.batch_size,
        "seconds": seconds,
        "samples_per_s": len(losses) * stage.batch_size / seconds if seconds else None,
        "final_loss": losses[-1] if losses else None,
    }


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


# One arm x seed ---------------------------------------------------------------------------------------
def run_arm(arm: Arm, seed: int, settings: AblationSettings) -> dict:
    """Train, evaluate and measure one arm x seed; reuse its result.json when it exists (resume)."""
    from llava_mini.inference.generate import LlavaMini

    run_dir = settings.out / arm.name / f"seed{seed}"
    result_path = run_dir / "result.json"
    if result_path.is_file():
        logger.info("%s seed %d: finished earlier, reusing %s", arm.name, seed, result_path)
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    train = train_arm(arm, seed, settings, run_dir)
    assistant = LlavaMini.load(train["final"], device=settings.device)
    config = assistant.config
    questions = select_questions(settings.data, settings.budget.eval_limit)
    started = time.perf_counter()
    records = evaluate(
        assistant, questions, batch_size=settings.budget.eval_batch_size, with_media=not arm.text_only
    )
    eval_seconds = time.perf_counter() - started
    with (run_dir / "answers.jsonl").open("w") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
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
        "train": train,
        "eval": {"questions": len(records), "seconds": eval_seconds, "accuracy": score(records)},
        "cost": measure_cost(assistant, questions, not arm.text_only, settings.budget.timing_repeats),
    }
    (run_dir / "results.md").write_text(markdown_table(result["eval"]["accuracy"]) + "\n")
    temporary = result_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    temporary.replace(result_path)  # written last and atomically: its presence means "done"
    return result


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


def aggregate(results: Sequence[dict]) -> list[dict]:
    """One entry per arm (first-seen order): accuracy per split as mean and spread over seeds, cost, and
    each modality's prefill time as a ratio to the baseline arm's (None without a baseline run)."""
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        by_arm[result["arm"]].append(result)
    summaries = []
    for name, runs in by_arm.items():
        splits = sorted({split for run in runs for split in run["eval"]["accuracy"]})
        first = runs[0]
        cost = {}
        for modality in first["cost"]:
            seconds = [run["cost"][modality]["prefill_seconds"] for run in runs if modality in run["cost"]]
            cost[modality] = {
                "flops": first["cost"][modality]["flops"],
                "prefill_seconds": statistics.fmean(seconds),
            }
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
                "accuracy": {
                    split: spread(
                        [
                            run["eval"]["accuracy"][split]["accuracy"]
                            for run in runs
                            if split in run["eval"]["accuracy"]
                        ]
                    )
                    for split in splits
                },
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


def results_markdown(summaries: Sequence[dict], budget: Budget, questions: int) -> str:
    """The main table (cost and accuracy side by side) and the per-question-type table."""
    training = f"{budget.max_steps} steps" if budget.max_steps else f"{budget.epochs:g} epochs"
    lines = [
        f"# Ablations (budget `{budget.name}`: {training} x batch {budget.batch_size} per arm, {questions} "
        "held-out questions; accuracy in % as mean ± std over seeds)",
        "",
        "| arm | paper | LLM vision tokens / picture | N | C*C | trainable params | GFLOPs image / video "
        "(flops tool) | GFLOPs image / video (measured) | prefill vs baseline (image) | prefill vs baseline (video) "
        "| image acc | video acc | all acc | seeds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for summary in summaries:
        lines.append(main_row(summary))
    types = sorted({split for summary in summaries for split in summary["accuracy"] if "/" in split})
    lines += ["", "Accuracy per question type (%, mean ± std over seeds):", ""]
    lines.append("| arm | " + " | ".join(types) + " |")
    lines.append("| --- |" + " ---: |" * len(types))
    for summary in summaries:
        cells = [format_spread(summary["accuracy"].get(split)) for split in types]
        lines.append(f"| {summary['arm']} | " + " | ".join(cells) + " |")
    lines += ["", "Arms:", ""]
    lines += [f"- `{summary['arm']}`: {summary['description']}" for summary in summaries]
    lines += [
        "",
        "N is the number of pre-fusion layers (for `inside-llm`, the LLM layers that see every vision token). "
        "GFLOPs (flops tool): `llava-mini flops`'s count for the arm's configuration (2 per multiply-add, weight "
        "products only, 43 text tokens; one image, or a video of the recipe's frame limit), '-' for arms it does "
        "not model (text-only, inside-LLM). GFLOPs (measured): one prefill forward of the first image / video "
        "question of the held-out set, everything torch's FlopCounterMode counts, attention included. "
        "Prefill vs baseline: median forward time over the baseline arm's, same question.",
    ]
    return "\n".join(lines) + "\n"


def main_row(summary: dict) -> str:
    """One arm's row of the main table."""
    image, video, accuracy = (
        summary["cost"].get("image", {}),
        summary["cost"].get("video", {}),
        summary["accuracy"],
    )
    layers = summary["fields"].get("inside_llm_layers") or summary["prefusion_layers"]
    compressed = summary["compressed_tokens"] if summary["compressed_tokens"] is not None else "-"
    measured = " / ".join(f"{cost['flops'] / 1e9:.3f}" if cost else "-" for cost in (image, video))
    tool = summary.get("flops_tool_gflops")
    counted = f"{tool['image']:.3f} / {tool['video']:.3f}" if tool else "-"
    return (
        f"| {summary['arm']} | {summary['paper']} | {summary['llm_vision_tokens_per_picture']} | {layers} "
        f"| {compressed} | {summary['trainable_parameters'] / 1e6:.2f}M | {counted} | {measured} "
        f"| {format_ratio(image.get('prefill_ratio_vs_baseline'))} "
        f"| {format_ratio(video.get('prefill_ratio_vs_baseline'))} "
        f"| {format_spread(accuracy.get('image'))} | {format_spread(accuracy.get('video'))} "
        f"| {format_spread(accuracy.get('all'))} | {len(summary['seeds'])} |"
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
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"accuracy vs {xlabel} (dashed: {BASELINE_ARM})", fontsize=9)
    axes.legend(fontsize=8)
    save_figure(figure, path)


def plot_accuracy_vs_flops(path: Path, summaries: Sequence[dict]) -> None:
    """Each arm's overall accuracy (mean, std bars) against its image-question prefill FLOPs."""
    figure, axes = new_figure(figsize=(7, 4.5))
    for summary in summaries:
        if "image" not in summary["cost"] or "all" not in summary["accuracy"]:
            continue
        x = summary["cost"]["image"]["flops"] / 1e9
        entry = summary["accuracy"]["all"]
        axes.errorbar([x], [100 * entry["mean"]], yerr=[100 * entry["std"]], marker="o", capsize=3)
        axes.annotate(
            summary["arm"], (x, 100 * entry["mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    axes.set_xscale("log")
    axes.set_xlabel("GFLOPs of one image-question prefill")
    axes.set_ylabel("accuracy, all questions (%)")
    axes.set_title("accuracy vs FLOPs", fontsize=9)
    save_figure(figure, path)


def write_plots(out: Path, summaries: Sequence[dict], arms: Sequence[Arm]) -> list[Path]:
    """accuracy_vs_flops.png, accuracy_vs_n.png (C*C=1, N varies) and accuracy_vs_cc.png (N=2, C varies);
    a series plot is written when at least one of its arms ran."""
    by_name = {summary["arm"]: summary for summary in summaries}
    baseline = by_name.get(BASELINE_ARM)
    written = [out / "accuracy_vs_flops.png"]
    plot_accuracy_vs_flops(written[0], summaries)
    for filename, value_of, label, log2_x in (
        ("accuracy_vs_n.png", prefusion_series_value, "N (pre-fusion layers, C*C=1)", False),
        (
            "accuracy_vs_cc.png",
            compression_series_value,
            f"C*C (vision tokens, N={DEFAULT_PREFUSION_LAYERS})",
            True,
        ),
    ):
        points = [
            (value_of(arm), by_name[arm.name])
            for arm in arms
            if arm.name in by_name and value_of(arm) is not None
        ]
        if points:
            plot_series(out / filename, points, label, baseline, log2_x)
            written.append(out / filename)
    return written


# The experiment ---------------------------------------------------------------------------------------
def run_ablations(settings: AblationSettings) -> dict:
    """Every arm x seed (resumable), then results.json, results.md and the plots in `settings.out`."""
    settings.check()
    if settings.budget.threads:
        torch.set_num_threads(settings.budget.threads)
    settings.out.mkdir(parents=True, exist_ok=True)
    runs = [(arm, seed) for arm in settings.arms for seed in settings.seeds]
    results = []
    started = time.perf_counter()
    for index, (arm, seed) in enumerate(runs, start=1):
        result = run_arm(arm, seed, settings)
        results.append(result)
        accuracy = result["eval"]["accuracy"]["all"]["accuracy"]
        print(
            f"[{index}/{len(runs)}] {arm.name} seed {seed}: accuracy {100 * accuracy:.1f}% "
            f"({time.perf_counter() - started:.0f} s elapsed)",
            flush=True,
        )
    summaries = aggregate(results)
    init_config = LlavaMiniConfig.from_pretrained(settings.init)
    arms = {arm.name: arm for arm in settings.arms}
    for summary in summaries:
        summary["flops_tool_gflops"] = flops_tool_gflops(init_config, arms[summary["arm"]])
    questions = results[0]["eval"]["questions"] if results else 0
    report = {
        "budget": asdict(settings.budget),
        "seeds": list(settings.seeds),
        "init": str(settings.init),
        "data": str(settings.data),
        "train_data": str(settings.train_data),
        "questions": questions,
        "arms": summaries,
    }
    (settings.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (settings.out / "results.md").write_text(results_markdown(summaries, settings.budget, questions))
    write_plots(settings.out, summaries, settings.arms)
    return report


def add_ablations_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--budget",
        choices=sorted(BUDGETS),
        default="small",
        help="small: 12 arms x 2 seeds in under 2 h on 2 CPU cores; full: 2 epochs per arm, for a GPU",
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: the budget's)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="run seeds first..first+K-1; processes given different seeds can share --out, and a last run "
        "over all seeds reuses their results and writes the tables",
    )
    parser.add_argument("--out", default="runs/ablations", help="output folder (reruns skip finished arms)")
    parser.add_argument(
        "--init", default="runs/tiny/stage1-align/final", help="stage-1 checkpoint every arm starts from"
    )
    parser.add_argument(
        "--data", default="runs/synth-heldout", help="held-out set from `llava-mini data synth`"
    )
    parser.add_argument("--train-data", default="runs/synth-train", help="folder with instructions.json")
    parser.add_argument("--limit", type=int, default=None, help="held-out questions (default: the budget's)")
    parser.add_argument("--arms", default=None, help="comma-separated arm names (default: all; see --list)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the budget's)")
    parser.add_argument("--list", action="store_true", help="print the arms and the budget, run nothing")


def run_ablations_command(args: argparse.Namespace) -> int:
    budget = BUDGETS[args.budget]
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        budget = replace(budget, eval_limit=args.limit)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        budget = replace(budget, threads=args.threads)
    seeds = args.seeds if args.seeds is not None else budget.seeds
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    if args.first_seed < 0:
        raise ValueError(f"--first-seed must be >= 0, got {args.first_seed}")
    arms = arms_by_name(
        [name.strip() for name in args.arms.split(",") if name.strip()] if args.arms else None
    )
    if args.list:
        for arm in arms:
            print(f"{arm.name:22} {arm.paper:22} {arm.description}")
        print(f"budget {budget.name}: {json.dumps(asdict(budget))}; seeds {args.first_seed}..{args.first_seed + seeds - 1}")
        return 0
    settings = AblationSettings(
        out=Path(args.out),
        init=Path(args.init),
        data=Path(args.data),
        train_data=Path(args.train_data),
        budget=budget,
        seeds=tuple(range(args.first_seed, args.first_seed + seeds)),
        arms=arms,
        device=args.device,
    )
    run_ablations(settings)
    print((settings.out / "results.md").read_text())
    return 0
