"""Ask a LLaVA-Mini model about images and videos: load once, then `ask` (optionally streaming)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event, Thread

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from llava_mini.model.configuration import LlavaMiniConfig
from llava_mini.model.loading import Quantization, is_hub_id, load_options, weight_report_error
from llava_mini.model.modeling import LlavaMiniForConditionalGeneration
from llava_mini.model.release import is_release_checkpoint, load_release
from llava_mini.processing.image import LlavaMiniImageProcessor, describe_error, load_image
from llava_mini.processing.processor import LlavaMiniProcessor, Medium, Video, is_video
from llava_mini.processing.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN
from llava_mini.processing.video import VideoFile

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif"}
SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[1] / "pretrained" / "llava-mini-tiny"


@dataclass
class GenerationSettings:
    """Decoding options; temperature 0 means greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None

    def generate_kwargs(self) -> dict:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        kwargs: dict = {"max_new_tokens": self.max_new_tokens}
        if self.temperature == 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=None)
        return kwargs


@dataclass
class Completion:
    """One answer with its token counts; finish_reason is "stop" or "length"."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def finish_reason(completion_tokens: int, last_token: int | None, stop_ids: set[int], max_new_tokens: int) -> str:
    """"stop" when the answer ended on a stop token or a stop string (before max_new_tokens), else "length"."""
    stopped = last_token is not None and (last_token in stop_ids or completion_tokens < max_new_tokens)
    return "stop" if stopped else "length"


@dataclass
class StreamControl:
    """Shared with a running `stream_chat`: `cancelled.set()` stops generating after the current token; once
    the stream is over, `finish_reason` says why it ended ("stop", "length", or "cancelled")."""

    cancelled: Event = field(default_factory=Event)
    completion_tokens: int = 0
    last_token: int | None = None
    finish_reason: str | None = None


class _StreamWatch(StoppingCriteria):
    """Counts the tokens a streamed generation makes and stops it once its control is cancelled."""

    def __init__(self, control: StreamControl, prompt_length: int) -> None:
        self.control, self.prompt_length = control, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        self.control.completion_tokens = input_ids.shape[1] - self.prompt_length
        self.control.last_token = int(input_ids[0, -1])
        stop = self.control.cancelled.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def load_medium(
    path: str | os.PathLike,
    fps: float = 1.0,
    max_frames: int | None = None,
    image_processor: LlavaMiniImageProcessor | None = None,
) -> Medium:
    """An image file -> PIL image; a video file (by suffix) -> a `VideoFile` decoded lazily, in chunks.

    Sizes are checked against `image_processor`'s limits (max_pixels, max_side, max_frame_pixels) before decoding.
    """
    path = Path(path)
    limits = image_processor or LlavaMiniImageProcessor()
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return VideoFile(path, fps, max_frames, limits.max_frame_pixels, limits.max_side)
    return load_image(path, limits.max_pixels, limits.max_side)


def load_checked_model(path: str, options: dict) -> LlavaMiniForConditionalGeneration:
    """`from_pretrained` whose failures name the model and the cause: a config transformers rejects, weights
    that are empty, truncated or garbage, and weights missing or in excess (a config whose layer count does not
    match its weights would otherwise load with random layers and answer nonsense)."""
    try:
        config = LlavaMiniConfig.from_pretrained(path)
    except OSError as error:  # transformers' own words (no config.json, unreachable hub), plus which model
        raise OSError(f"could not load the model {path}: {error}") from error
    except Exception as error:  # ValueError, TypeError, KeyError, ... from a field it rejects
        raise ValueError(f"{path}: config.json is not a valid llava-mini config ({describe_error(error)})") from error
    try:
        network, report = LlavaMiniForConditionalGeneration.from_pretrained(
            path, config=config, output_loading_info=True, **options
        )
    except OSError as error:
        raise OSError(f"could not load the model {path}: {error}") from error
    except Exception as error:  # SafetensorError on empty / truncated / garbage files, KeyError on an unknown activation
        raise ValueError(f"could not load the model {path} ({describe_error(error)})") from error
    problem = weight_report_error(path, report)
    if problem:
        raise ValueError(problem)
    return network


def load_processor(path: str) -> LlavaMiniProcessor:
    """The saved processor; a tokenizer or processor file that cannot be read is named."""
    try:
        return LlavaMiniProcessor.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise type(error)(f"could not load the processor of {path}: {error}") from error
    except Exception as error:  # a garbage tokenizer.json, ...
        raise ValueError(f"could not load the processor of {path} ({describe_error(error)})") from error


def resolve_model_path(model: str | os.PathLike | None) -> str:
    """A local directory, or a hub id (on machines that can reach the hub); None -> the shipped model."""
    if model is None:
        if not (SHIPPED_MODEL_DIR / "config.json").is_file():
            raise FileNotFoundError(
                f"the shipped model is missing at {SHIPPED_MODEL_DIR}; pass --model DIR or a hub id"
            )
        return str(SHIPPED_MODEL_DIR)
    if is_hub_id(model):
        return str(model)  # from_pretrained downloads it, or says why it cannot
    path = Path(model).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {model}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{model} is not a model directory: it has no config.json")
    return str(path)


class LlavaMini:
    """A loaded model and processor. `LlavaMini.load().ask("photo.jpg", "What is in it?")`."""

    def __init__(self, model: LlavaMiniForConditionalGeneration, processor: LlavaMiniProcessor) -> None:
        self.model = model.eval()
        self.processor = processor

    @classmethod
    def load(
        cls,
        model: str | os.PathLike | None = None,
        device: str = "cpu",
        dtype: torch.dtype | str = torch.float32,
        device_map: str | dict | None = None,
        quantization: Quantization | None = None,
    ) -> LlavaMini:
        """Our layout or the official release's (docs/release.md); precision and placement: `load_options`."""
        path = resolve_model_path(model)
        options = load_options(device, dtype, device_map, quantization)
        if is_release_checkpoint(path):
            return cls(*load_release(path, **options))
        return cls(load_checked_model(path, options), load_processor(path))

    @property
    def config(self):
        return self.model.config

    def set_resolution_ratio(self, ratio: int) -> None:
        """High resolution (sec. 4.2): ratio x ratio crops plus the global view; 2 = 672 px for a 336 px tower.

        The compressor still gives C*C tokens per picture; its positions are resized to the stitched grid.
        """
        if ratio < 1:
            raise ValueError(f"resolution ratio must be >= 1, got {ratio}")
        self.config.resolution_ratio = ratio
        self.processor.image_processor.resolution_ratio = ratio
        self.processor.num_vision_tokens = self.config.num_vision_tokens()

    def medium(self, source: str | os.PathLike | Medium) -> Medium:
        if isinstance(source, (Image.Image, Video, VideoFile, torch.Tensor)):
            return source
        return load_medium(
            source, self.config.video_fps, self.config.video_max_frames, self.processor.image_processor
        )

    def prepare(
        self, conversations: Sequence[Sequence[dict]], media: Sequence[Sequence[Medium]]
    ) -> dict[str, torch.Tensor]:
        """Left-padded model inputs for a batch of conversations, on the model's device and dtype."""
        batch = self.processor(conversations, [list(m) for m in media], add_generation_prompt=True)
        device = self.model.device
        batch = {key: value.to(device) for key, value in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        return batch

    def question_messages(self, question: str, media: Sequence[Medium]) -> list[dict]:
        if not question.strip():
            raise ValueError("the question is empty")
        markers = "".join((VIDEO_TOKEN if is_video(m) else IMAGE_TOKEN) + "\n" for m in media)
        has_marker = IMAGE_TOKEN in question or VIDEO_TOKEN in question
        return self.processor.build_messages([("user", question if has_marker else markers + question)])

    def stop_token_ids(self) -> list[int]:
        tokenizer = self.processor.tokenizer
        ids = {tokenizer.eos_token_id}
        ids.update(
            tokenizer.convert_tokens_to_ids(token)
            for token in ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>")
            if token in tokenizer.get_vocab()
        )
        return sorted(i for i in ids if i is not None)

    def _generate_kwargs(self, batch: dict, settings: GenerationSettings) -> dict:
        kwargs = dict(batch, **settings.generate_kwargs())
        kwargs.update(eos_token_id=self.stop_token_ids(), pad_token_id=self.processor.tokenizer.pad_token_id)
        if settings.stop:
            kwargs.update(stop_strings=list(settings.stop), tokenizer=self.processor.tokenizer)
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        return kwargs

    def chat(self, messages: Sequence[dict], media: Sequence[Medium], settings: GenerationSettings) -> str:
        """Answer the last user turn of `messages` (media fill the placeholders in order)."""
        return self.chat_batch([messages], [media], settings)[0]

    def chat_batch(
        self,
        conversations: Sequence[Sequence[dict]],
        media: Sequence[Sequence[Medium]],
        settings: GenerationSettings,
    ) -> list[str]:
        """Answer several conversations in one left-padded batch (same answers as one at a time)."""
        return [completion.text for completion in self.complete_batch(conversations, media, settings)]

    def complete_batch(
        self,
        conversations: Sequence[Sequence[dict]],
        media: Sequence[Sequence[Medium]],
        settings: GenerationSettings,
    ) -> list[Completion]:
        """Like `chat_batch`, with token counts and why each answer ended."""
        batch = self.prepare(conversations, media)
        with torch.inference_mode():
            output = self.model.generate(**self._generate_kwargs(batch, settings))
        prompt_length = batch["input_ids"].shape[1]
        stop_ids, pad_id = set(self.stop_token_ids()), self.processor.tokenizer.pad_token_id
        completions = []
        for row, mask in zip(output, batch["attention_mask"], strict=True):
            generated = [int(t) for t in row[prompt_length:]]
            while generated and generated[-1] == pad_id and pad_id not in stop_ids:
                generated.pop()
            last = generated[-1] if generated else None
            completions.append(
                Completion(
                    text=trim_at_stop(self.processor.decode(generated), settings.stop),
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=len(generated),
                    finish_reason=finish_reason(len(generated), last, stop_ids, settings.max_new_tokens),
                )
            )
        return completions

    def stream_chat(
        self,
        messages: Sequence[dict],
        media: Sequence[Medium],
        settings: GenerationSettings,
        control: StreamControl | None = None,
    ) -> Iterator[str]:
        """Like `chat`, yielding text pieces as they are generated.

        Generation runs in a worker thread and stops after the current token when `control.cancelled` is set
        or the reader stops early (it closes the generator, or Ctrl-C interrupts it); the worker is joined before
        this returns, so no thread is left running inside the model (an interpreter exiting under one aborts).
        `control` then tells why the stream ended and how many tokens it made.
        """
        control = control or StreamControl()
        batch = self.prepare([messages], [media])
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = self._generate_kwargs(batch, settings)
        kwargs["stopping_criteria"] = StoppingCriteriaList([_StreamWatch(control, batch["input_ids"].shape[1])])
        failures: list[BaseException] = []
        worker = Thread(target=self._generate_into, args=(kwargs, streamer, failures), daemon=True)
        worker.start()
        try:
            yield from streamer
        except BaseException:  # the reader left (closed the iterator, Ctrl-C): stop generating too
            control.cancelled.set()
            raise
        finally:
            worker.join()
        if failures:  # e.g. a video that fails to decode half-way: the error reaches the caller
            raise failures[0]
        if control.cancelled.is_set():
            control.finish_reason = "cancelled"
        else:
            stop_ids = set(self.stop_token_ids())
            control.finish_reason = finish_reason(
                control.completion_tokens, control.last_token, stop_ids, settings.max_new_tokens
            )

    def _generate_into(self, kwargs: dict, streamer: TextIteratorStreamer, failures: list[BaseException]) -> None:
        """Run generate() for `stream_chat`; on failure end the stream so its reader never waits forever."""
        try:
            with torch.inference_mode():
                self.model.generate(**kwargs, streamer=streamer)
        except BaseException as error:  # noqa: BLE001 - handed to the reading thread
            failures.append(error)
            streamer.end()

    def ask(
        self,
        media: str | os.PathLike | Medium | Sequence[str | os.PathLike | Medium] | None,
        question: str,
        settings: GenerationSettings | None = None,
        **overrides,
    ) -> str:
        """One question about zero, one or several images/videos (paths or loaded media)."""
        settings = settings or GenerationSettings(**overrides)
        if media is None:
            sources: list = []
        elif isinstance(media, (str, os.PathLike, Image.Image, Video, VideoFile, torch.Tensor)):
            sources = [media]
        else:
            sources = list(media)
        loaded = [self.medium(source) for source in sources]
        return self.chat(self.question_messages(question, loaded), loaded, settings)


def trim_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut the answer at the first stop string (generation stops after it appears)."""
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return text[:cut].rstrip() if cut >= 0 else text
