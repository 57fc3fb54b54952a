"""lmms-eval model plugin: evaluate LLaVA-Mini on any lmms-eval task.

    pip install lmms-eval            # not a dependency of this package
    python -m lmms_eval --model llava_mini --model_args pretrained=DIR,device=cuda,batch_size=8 --tasks mme

Registration: lmms-eval (0.4 and later) reads the `lmms_eval.models` entry point group; this package's
pyproject.toml points `llava_mini` at `manifest()`, which returns a `ModelManifest` naming
`LlavaMiniLmms`. Older releases that only know `@register_model` get it too when this module is imported.

`LlavaMiniLmms` is lmms-eval's "simple" model interface: `generate_until` (requests whose `args` are
(context, gen_kwargs, doc_to_visual, doc_id, task, split)) and `loglikelihood` ((context, doc_to_target,
doc_to_visual, doc_id, task, split)). The work is done by `LlavaMiniAdapter`, which needs no lmms-eval and is
tested on its own; the class deriving from lmms-eval's base only adds the registration and the base's state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from llava_mini.inference.generate import GenerationSettings, LlavaMini
from llava_mini.processing.processor import Medium, Video

try:  # lmms-eval is optional: everything below works without it except the registered class
    from lmms_eval.api.model import lmms as _LmmsBase

    LMMS_EVAL_AVAILABLE = True
except ImportError:
    _LmmsBase = object
    LMMS_EVAL_AVAILABLE = False

MODEL_ID = "llava_mini"
MISSING_LMMS_EVAL = (
    "the lmms-eval plugin needs lmms-eval: `pip install lmms-eval` (it is not a dependency of llava-mini); "
    "`llava-mini eval TASK` runs the paper's benchmarks without it"
)
Docs = Callable[[str, str, int], dict]  # (task, split, doc_id) -> the task's document


def generation_settings(gen_kwargs: dict | None, default_max_new_tokens: int = 128) -> GenerationSettings:
    """lmms-eval's generation arguments -> ours: max_new_tokens, temperature (0 = greedy), top_p, until."""
    gen_kwargs = dict(gen_kwargs or {})
    until = gen_kwargs.get("until") or []
    if isinstance(until, str):
        until = [until]
    temperature = float(gen_kwargs.get("temperature") or 0.0)
    if not gen_kwargs.get("do_sample", temperature > 0):
        temperature = 0.0
    return GenerationSettings(
        max_new_tokens=int(gen_kwargs.get("max_new_tokens") or default_max_new_tokens),
        temperature=temperature,
        top_p=float(gen_kwargs.get("top_p") or 1.0),
        stop=[s for s in until if s],
    )


def visual_to_medium(assistant: LlavaMini, visual: Any) -> Medium:
    """What a task's doc_to_visual returns -> a medium: PIL image, image/video path, or a list of frames."""
    if isinstance(visual, Image.Image):
        return visual.convert("RGB")
    if isinstance(visual, (str, os.PathLike)):
        return assistant.medium(visual)
    if isinstance(visual, dict) and "path" in visual:
        return assistant.medium(visual["path"])
    if isinstance(visual, (list, tuple)) and visual and all(isinstance(v, Image.Image) for v in visual):
        return Video([v.convert("RGB") for v in visual])
    raise TypeError(f"unsupported visual from doc_to_visual: {type(visual).__name__}")


class LlavaMiniAdapter:
    """lmms-eval's two request kinds over a loaded `LlavaMini`; `docs(task, split, doc_id)` finds a document."""

    def __init__(self, assistant: LlavaMini, docs: Docs, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.assistant, self.docs, self.batch_size = assistant, docs, batch_size

    def _media(self, doc_to_visual: Callable | None, task: str, split: str, doc_id: int) -> list[Medium]:
        if doc_to_visual is None:
            return []
        visuals = doc_to_visual(self.docs(task, split, doc_id)) or []
        if not isinstance(visuals, (list, tuple)):
            visuals = [visuals]
        return [visual_to_medium(self.assistant, v) for v in visuals if v is not None]

    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """Greedy (or sampled) answers, batched by identical generation arguments, in request order."""
        answers: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(repr(sorted((request.args[1] or {}).items())), []).append(index)
        for indices in groups.values():
            settings = generation_settings(requests[indices[0]].args[1])
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                media, conversations = [], []
                for index in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[index].args
                    medium = self._media(doc_to_visual, task, split, doc_id)
                    media.append(medium)
                    conversations.append(self.assistant.question_messages(str(context), medium))
                for index, text in zip(
                    chunk, self.assistant.chat_batch(conversations, media, settings), strict=True
                ):
                    answers[index] = text
        return [a if a is not None else "" for a in answers]

    @torch.inference_mode()
    def continuation_logprob(
        self, context: str, media: Sequence[Medium], continuation_ids: Sequence[int]
    ) -> tuple[float, bool]:
        """log p(continuation | user turn with context), and whether greedy decoding would produce it.

        Scored the way answers are generated: the prompt is prefilled (pre-fusion runs over the prompt's text
        only) and the continuation is fed as decode steps over the cache. A single forward pass over prompt +
        continuation would also pre-fuse the continuation with the image, which generation never does.
        """
        if not continuation_ids:
            raise ValueError("the continuation is empty")
        batch = self.assistant.prepare([self.assistant.question_messages(context, media)], [list(media)])
        target = torch.tensor([list(continuation_ids)], device=batch["input_ids"].device)  # (1, T)
        prefill = self.assistant.model(**batch, use_cache=True)
        logits = [prefill.logits[0, -1:]]
        if target.shape[1] > 1:
            mask = torch.cat([batch["attention_mask"], torch.ones_like(target)], dim=1)
            decode = self.assistant.model(
                input_ids=target[:, :-1],
                attention_mask=mask[:, :-1],
                past_key_values=prefill.past_key_values,
                use_cache=True,
            )
            logits.append(decode.logits[0])
        stacked = torch.cat(logits).float()  # (T, V): the prediction for each continuation token
        logprob = torch.log_softmax(stacked, dim=-1).gather(1, target[0, :, None]).sum()
        return float(logprob), bool((stacked.argmax(-1) == target[0]).all())

    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        results = []
        tokenizer = self.assistant.processor.tokenizer
        for request in requests:
            context, doc_to_target, doc_to_visual, doc_id, task, split = request.args
            document = self.docs(task, split, doc_id)
            continuation = doc_to_target(document) if callable(doc_to_target) else doc_to_target
            if isinstance(continuation, (list, tuple)):
                continuation = continuation[0]
            ids = tokenizer(str(continuation), add_special_tokens=False).input_ids
            results.append(
                self.continuation_logprob(str(context), self._media(doc_to_visual, task, split, doc_id), ids)
            )
        return results


class LlavaMiniLmms(_LmmsBase):
    """lmms-eval model `llava_mini` (model_args: pretrained, device, dtype, batch_size, fps, max_frames)."""

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int | str = 1,
        fps: float | None = None,
        max_frames: int | None = None,
        **unused: Any,
    ) -> None:
        if not LMMS_EVAL_AVAILABLE:
            raise ImportError(MISSING_LMMS_EVAL)
        super().__init__()
        assistant = LlavaMini.load(pretrained, device=device, dtype=getattr(torch, dtype))
        if fps is not None:
            assistant.config.video_fps = float(fps)
        if max_frames is not None:
            assistant.config.video_max_frames = int(max_frames)
        self.adapter = LlavaMiniAdapter(assistant, self._document, int(batch_size))

    def _document(self, task: str, split: str, doc_id: int) -> dict:
        return self.task_dict[task][split][doc_id]

    def generate_until(self, requests: list) -> list[str]:
        return self.adapter.generate_until(requests)

    def loglikelihood(self, requests: list) -> list[tuple[float, bool]]:
        return self.adapter.loglikelihood(requests)

    def generate_until_multi_round(self, requests: list) -> list[str]:
        raise NotImplementedError("multi-round generation is not supported by the llava_mini plugin")


def manifest() -> Any:
    """Entry point for lmms-eval's `lmms_eval.models` group."""
    try:
        from lmms_eval.models.registry_v2 import ModelManifest
    except ImportError as error:
        raise ImportError(MISSING_LMMS_EVAL) from error
    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.LlavaMiniLmms")


if LMMS_EVAL_AVAILABLE:  # releases before the entry-point registry register models by decorator
    try:
        from lmms_eval.api.registry import register_model

        register_model(MODEL_ID)(LlavaMiniLmms)
    except (ImportError, ValueError, AssertionError):  # no decorator registry, or already registered
        pass
