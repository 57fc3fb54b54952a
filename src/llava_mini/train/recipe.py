"""TrainRecipe: the paper's two-stage training (sec. 4.3, appendix B) as one readable loop.

`llava-mini train RECIPE [--resume] [key=value ...]` runs every stage of the recipe in order; each stage
starts from the previous stage's `final/` weights. Runs on one CPU, one GPU, or many processes launched
with torchrun / accelerate (DDP; FSDP and DeepSpeed through accelerate configs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs, PartialState
from accelerate.logging import get_logger
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm import tqdm
from transformers import AutoConfig, AutoTokenizer, get_cosine_schedule_with_warmup

from llava_mini.data.dataset import ConversationDataset
from llava_mini.data.records import ConversationRecord, load_records
from llava_mini.model.configuration import LlavaMiniConfig
from llava_mini.model.modeling import IGNORE_INDEX, LlavaMiniForConditionalGeneration
from llava_mini.model.presets import preset_config
from llava_mini.processing.image import LlavaMiniImageProcessor
from llava_mini.processing.processor import LlavaMiniProcessor
from llava_mini.processing.tokenizer import EXTRA_SPECIAL_TOKENS, IMAGE_TOKEN, train_bpe_tokenizer
from llava_mini.train.args import RecipeArgs, StageArgs, load_recipe
from llava_mini.train.checkpoint import (
    atomic_directory_write,
    list_checkpoints,
    load_training_state,
    prune_checkpoints,
    save_training_state,
    truncate_log,
)
from llava_mini.train.freezing import parameter_groups, set_trainable
from llava_mini.train.sampling import GROUP_KEYS, epoch_order, group_batches
from llava_mini.train.vision_pretraining import VisionPretrainingArgs, pretrain_vision_tower

logger = get_logger(__name__)  # logs on the main process only

STAGE_MODEL_DEFAULTS = {
    # Stage 1 of the paper: "compression and modality pre-fusion modules are not yet applied".
    "align": {"compressor_type": "none", "prefusion_layers": 0},
    "components": {"compressor_type": "none", "prefusion_layers": 0},
}


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All safetensors tensors of a saved model directory (sharded or not)."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {directory}")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        weights.update(load_file(str(file)))
    return weights


def launched_distributed_type() -> str | None:
    """"FSDP" or "DEEPSPEED" when `accelerate launch` was given such a config (it sets ACCELERATE_USE_*)."""
    for kind in ("FSDP", "DEEPSPEED"):
        if os.environ.get(f"ACCELERATE_USE_{kind}", "false").lower() == "true":
            return kind
    return None


def repeat_by_media_kind(records: list[ConversationRecord], repeat: dict[str, int]) -> list[ConversationRecord]:
    """Each record `repeat[kind]` times (kind "image", "video", or "text" for records without media);
    `StageArgs` has checked the kinds and counts."""
    return [record for record in records for _ in range(repeat.get(record.media_kind or "text", 1))]


class TrainRecipe:
    """setup -> train -> save, for each stage of a recipe."""

    def __init__(self, args: RecipeArgs, resume: bool = False) -> None:
        self.args = args
        self.resume = resume
        self.output_dir = Path(args.output_dir)
        self.data_root = Path(args.data_root)
        # Multi-process CPU runs (torchrun / accelerate launch without GPUs) use gloo.
        self.on_cpu = args.device == "cpu" or not torch.cuda.is_available()

    # Building --------------------------------------------------------------------------------------
    def stage_dir(self, index: int, stage: StageArgs) -> Path:
        return self.output_dir / f"stage{index}-{stage.name}"

    def read_records(self, stage: StageArgs) -> list[ConversationRecord]:
        records: list[ConversationRecord] = []
        media_root = self.data_root / stage.media_root if stage.media_root else None
        for name in stage.data:
            records.extend(load_records(self.data_root / name, media_root))
        if not records:
            raise ValueError(f"stage {stage.name}: no training records in {stage.data}")
        return repeat_by_media_kind(records, stage.repeat)

    def model_fields(self, stage: StageArgs) -> dict:
        """LLaVA-Mini fields of a stage: the class defaults, the recipe's model, the stage mode's forced
        settings (stage 1 runs without compression and pre-fusion), then the stage's own overrides."""
        defaults = {name: LlavaMiniConfig.__dataclass_fields__[name].default for name in ("compressor_type", "prefusion_layers")}
        return {**defaults, **self.args.model, **STAGE_MODEL_DEFAULTS.get(stage.mode, {}), **stage.model}

    def build_from_scratch(self, stage: StageArgs, records: list[ConversationRecord]):
        """Stage 0 of the tiny recipe: a tokenizer trained on the data and a randomly initialised preset."""
        texts = [text for record in records for _, text in record.turns]
        if self.args.system_prompt:
            texts.append(self.args.system_prompt)
        tokenizer = train_bpe_tokenizer(texts, self.args.tokenizer_vocab_size, self.args.chat_template)
        fields = self.model_fields(stage)
        text_overrides = {**fields.pop("text_config", {}), "vocab_size": len(tokenizer)}
        config = preset_config(
            self.args.preset,
            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            text_config=text_overrides,
            video_fps=self.args.video_fps,
            video_max_frames=self.args.video_max_frames,
            **fields,
        )
        return LlavaMiniForConditionalGeneration(config), tokenizer

    def build_from_pretrained_parts(self, stage: StageArgs):
        """A pretrained vision tower and LLM (hub ids or local paths) joined by fresh LLaVA-Mini modules."""
        tokenizer = AutoTokenizer.from_pretrained(self.args.language_model)
        missing = [t for t in EXTRA_SPECIAL_TOKENS if t in (IMAGE_TOKEN, "<video>") and t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        text_config = AutoConfig.from_pretrained(self.args.language_model)
        text_config.vocab_size = max(text_config.vocab_size, len(tokenizer))
        vision_config = AutoConfig.from_pretrained(self.args.vision_tower)
        vision_config = getattr(vision_config, "vision_config", vision_config)
        config = LlavaMiniConfig(
            vision_config=vision_config,
            text_config=text_config,
            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            video_fps=self.args.video_fps,
            video_max_frames=self.args.video_max_frames,
            **self.model_fields(stage),
        )
        model = LlavaMiniForConditionalGeneration(config)
        tower = type(model.vision_tower.model).from_pretrained(self.args.vision_tower, config=config.vision_config)
        model.vision_tower.model.load_state_dict(tower.state_dict())
        language_model = type(model.language_model).from_pretrained(self.args.language_model)
        language_model.resize_token_embeddings(config.text_config.vocab_size)
        model.language_model.load_state_dict(language_model.state_dict())
        return model, tokenizer

    def build_from_previous(self, stage: StageArgs, previous: Path):
        """Start from the previous stage: same weights by name, new modules (compressor, pre-fusion) fresh."""
        config = LlavaMiniConfig.from_pretrained(previous)
        for key, value in self.model_fields(stage).items():
            if key not in ("vision_config", "text_config"):  # the architecture comes with the weights
                setattr(config, key, value)
        config.validate_llava_mini_fields()
        model = LlavaMiniForConditionalGeneration(config)
        result = model.load_state_dict(load_weights(previous), strict=False)
        if result.missing_keys:
            logger.info("fresh modules in stage %s: %d tensors", stage.name, len(result.missing_keys))
        if config.prefusion_init == "llm" and model.prefusion is not None:
            model.init_prefusion_from_language_model()
        tokenizer = AutoTokenizer.from_pretrained(previous)
        return model, tokenizer

    def build(self, stage: StageArgs, previous: Path | None, records: list[ConversationRecord]):
        if previous is not None:
            model, tokenizer = self.build_from_previous(stage, previous)
        elif self.args.preset:
            model, tokenizer = self.build_from_scratch(stage, records)
        elif self.args.vision_tower and self.args.language_model:
            model, tokenizer = self.build_from_pretrained_parts(stage)
        else:
            raise ValueError("a recipe needs `preset` (from scratch) or `vision_tower` + `language_model`")
        image_processor = LlavaMiniImageProcessor(size=int(model.config.vision_config.image_size))
        processor = LlavaMiniProcessor.for_config(model.config, tokenizer, image_processor, self.args.system_prompt)
        return model, processor

    # Running ---------------------------------------------------------------------------------------
    def run(self) -> Path:
        """Run every stage not yet finished; returns the last stage's `final/` directory."""
        if self.args.threads:
            torch.set_num_threads(self.args.threads)
        PartialState(cpu=self.on_cpu)  # the process group, before the first (main-process-only) log line
        previous: Path | None = None
        for index, stage in enumerate(self.args.stages):
            final = self.stage_dir(index, stage) / "final"
            if not (final / "config.json").is_file():
                self.run_stage(index, stage, previous)
            else:
                logger.info("stage %s already finished at %s", stage.name, final)
            previous = final
        return previous

    def micro_batches(self, order: list[int], step: int, stage: StageArgs, rank: int, world: int) -> list[list[int]]:
        """This rank's micro-batches of optimizer step `step`: the same global samples for any split."""
        size = stage.batch_size * stage.grad_accum * world
        start = step * size
        window = [order[(start + i) % len(order)] for i in range(size)]
        return [
            window[(micro * world + rank) * stage.batch_size : (micro * world + rank + 1) * stage.batch_size]
            for micro in range(stage.grad_accum)
        ]

    def run_stage(self, index: int, stage: StageArgs, previous: Path | None) -> Path:
        stage_dir = self.stage_dir(index, stage)
        accelerator = Accelerator(
            cpu=self.on_cpu,
            mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[self.args.precision],
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        launched = launched_distributed_type()
        if launched is not None and accelerator.distributed_type.value != launched:
            # accelerate shards with FSDP / DeepSpeed only on accelerators; on CPUs the config runs as DDP
            logger.warning(
                "accelerate was launched with a %s config but runs %s: without GPUs every process holds the "
                "whole model and optimizer state (plain data parallelism over gloo, same results)",
                launched, accelerator.distributed_type.value,
            )
        torch.manual_seed(self.args.seed + index)
        records = self.read_records(stage)
        model, processor = self.build(stage, previous, records)
        checkpoints = list_checkpoints(stage_dir)
        if stage.vision_pretraining is not None and not (self.resume and checkpoints):
            self.pretrain_vision(stage, stage_dir, model, processor, accelerator.is_main_process)
        trainable = set_trainable(model, stage.mode, stage.frozen)
        logger.info("stage %s trains %d tensors on %d process(es), %s", stage.name, len(trainable),
                    accelerator.num_processes, accelerator.distributed_type.value)
        if self.args.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        dataset = ConversationDataset(records, processor, self.args.video_fps, self.args.video_max_frames)
        world, rank = accelerator.num_processes, accelerator.process_index
        global_batch = stage.batch_size * stage.grad_accum * world
        total_steps = stage.max_steps or max(1, math.ceil(stage.epochs * len(dataset) / global_batch))
        order = epoch_order(len(dataset), total_steps * global_batch, self.args.seed)
        if stage.group_by != "none":
            keys = [GROUP_KEYS[stage.group_by](record) for record in records]
            order = group_batches(order, keys, global_batch, seed=self.args.seed * 1000 + index)

        optimizer = torch.optim.AdamW(parameter_groups(model, stage.lr, stage.multimodal_lr, stage.weight_decay))
        scheduler = get_cosine_schedule_with_warmup(optimizer, round(stage.warmup_ratio * total_steps), total_steps)
        start_step, losses = 0, []
        if self.resume and checkpoints:
            step, path = checkpoints[-1]
            model.load_state_dict(load_weights(path), strict=False)
            state = load_training_state(path)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            start_step, losses = step, state["losses"]
            logger.info("resuming stage %s at step %d", stage.name, step)
        model, optimizer = accelerator.prepare(model, optimizer)

        batches = [self.micro_batches(order, step, stage, rank, world) for step in range(start_step, total_steps)]
        loader = DataLoader(
            dataset,
            batch_sampler=[micro for step_batches in batches for micro in step_batches],
            collate_fn=partial(processor.collate, padding_side="right"),
            num_workers=stage.data_workers,
            prefetch_factor=4 if stage.data_workers else None,
        )
        iterator = iter(loader)
        progress = tqdm(
            range(start_step, total_steps),
            initial=start_step,
            total=total_steps,
            desc=f"{stage.name}",
            disable=not accelerator.is_main_process,
        )
        log_path = stage_dir / "log.jsonl"
        if accelerator.is_main_process:
            truncate_log(log_path, start_step)
        started = time.perf_counter()
        model.train()
        for step in progress:
            loss = self.train_step(model, accelerator, [next(iterator) for _ in range(stage.grad_accum)], stage)
            if stage.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), stage.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss)
            done = step + 1
            rate = (done - start_step) * global_batch / (time.perf_counter() - started)
            progress.set_postfix(loss=f"{loss:.4f}", samples_per_s=f"{rate:.1f}")
            if accelerator.is_main_process and (done % self.args.log_every == 0 or done == total_steps):
                stage_dir.mkdir(parents=True, exist_ok=True)
                with log_path.open("a") as handle:
                    entry = {"step": done, "loss": loss, "lr": scheduler.get_last_lr()[0], "samples_per_s": rate}
                    handle.write(json.dumps(entry) + "\n")
            self.after_step(stage, stage_dir, done, total_steps, accelerator.unwrap_model(model), processor)
            if done % stage.save_every == 0 and done < total_steps:
                self.save(accelerator, model, processor, stage_dir / f"checkpoint-{done}", optimizer, scheduler, losses)
                if accelerator.is_main_process:
                    prune_checkpoints(stage_dir, stage.keep_checkpoints)
        final = stage_dir / "final"
        self.save(accelerator, model, processor, final, None, None, losses, stage)
        accelerator.end_training()
        return final

    def after_step(
        self, stage: StageArgs, stage_dir: Path, step: int, total_steps: int, model, processor
    ) -> None:
        """Called on every process after optimizer step `step` (1-based), before that step's checkpoint is
        written; nothing by default. `experiments/ablations.py` evaluates held-out accuracy here (its
        learning curves). A subclass that uses the model must leave it in train mode and its RNG untouched."""

    def pretrain_vision(self, stage: StageArgs, stage_dir: Path, model, processor, is_main: bool) -> None:
        """Supervised vision pre-training before the stage (tiny recipe); its result is saved atomically
        and reused, so a resumed run does not repeat it. Every process computes the same tower."""
        target = stage_dir / "vision-pretrained"
        weights = target / "vision_tower.safetensors"
        if weights.is_file():
            model.vision_tower.load_state_dict(load_file(str(weights)))
        else:
            try:
                settings = VisionPretrainingArgs(**stage.vision_pretraining)
            except TypeError as error:
                raise ValueError(f"stage {stage.name}: bad vision_pretraining block ({error})") from error
            checkpoint = stage_dir / "vision-pretraining-checkpoint"  # resumable state, removed once done
            summary = pretrain_vision_tower(
                model.vision_tower,
                processor.image_processor,
                self.data_root,
                settings,
                self.args.seed,
                checkpoint=checkpoint,
                resume=self.resume,
                main_process=is_main,
            )

            def write(directory: Path) -> None:
                state = {key: value.contiguous() for key, value in model.vision_tower.state_dict().items()}
                save_file(state, str(directory / "vision_tower.safetensors"))
                (directory / "summary.json").write_text(json.dumps(summary) + "\n")

            if is_main:
                atomic_directory_write(target, write)
                shutil.rmtree(checkpoint, ignore_errors=True)

    def train_step(self, model, accelerator: Accelerator, micro_batches: list[dict], stage: StageArgs) -> float:
        """Forward/backward over the step's micro-batches; the loss is normalised by the step's target tokens
        across all processes, so any batch x accumulation x process split gives the same gradient."""
        targets = sum(int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()) for batch in micro_batches)
        targets = int(accelerator.reduce(torch.tensor(targets, device=accelerator.device), reduction="sum"))
        if targets == 0:
            raise ValueError(f"stage {stage.name}: a training step has no target tokens")
        step_loss = torch.zeros((), device=accelerator.device)
        for position, batch in enumerate(micro_batches):
            batch = {key: value.to(accelerator.device) for key, value in batch.items()}
            last = position == len(micro_batches) - 1
            context = accelerator.no_sync(model) if not last else nullcontext()
            with context, accelerator.autocast():
                loss = model(**batch, num_items_in_batch=targets).loss
                accelerator.backward(loss * accelerator.num_processes)  # DDP averages gradients over processes
            step_loss += loss.detach()
        return float(accelerator.reduce(step_loss, reduction="sum"))

    def save(self, accelerator, model, processor, target: Path, optimizer, scheduler, losses, stage=None) -> None:
        accelerator.wait_for_everyone()
        unwrapped = accelerator.unwrap_model(model)
        state_dict = accelerator.get_state_dict(model)
        if accelerator.is_main_process:

            def write(directory: Path) -> None:
                unwrapped.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
                processor.save_pretrained(directory)
                if optimizer is not None:
                    save_training_state(
                        directory,
                        {
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "rng": torch.get_rng_state(),
                            "losses": losses,
                        },
                    )
                else:
                    summary = {
                        "losses": losses,
                        "stage": asdict(stage) if stage else None,
                        # what ran: on CPUs accelerate runs FSDP and DeepSpeed configs as DDP (MULTI_CPU)
                        "distributed_type": accelerator.distributed_type.value,
                        "launched_with": launched_distributed_type(),
                        "processes": accelerator.num_processes,
                    }
                    (directory / "training_summary.json").write_text(json.dumps(summary) + "\n")

            atomic_directory_write(target, write)
        accelerator.wait_for_everyone()


def run_recipe(path: str, overrides: list[str] = (), resume: bool = False) -> Path:
    return TrainRecipe(load_recipe(path, list(overrides)), resume=resume).run()


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML (see recipes/)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stages.0.max_steps=10")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint of each stage")


def run_train(args: argparse.Namespace) -> int:
    final = run_recipe(args.recipe, args.overrides, args.resume)
    if PartialState().is_main_process:
        print(f"trained model: {final}")
    return 0
