"""LlavaMiniProcessor: chat template -> token ids with vision slots, labels, and pixel values.

Each `<image>` in a message becomes K placeholder ids (K = vision tokens per picture that reach the LLM)
and each `<video>` becomes T*K (T sampled frames), so the model only has to fill slots in order.
Labels mark the assistant turns (answer and end-of-turn token); everything else is IGNORE_INDEX.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from llava_mini.model.configuration import LlavaMiniConfig
from llava_mini.model.pictures import PictureStream, concat_pictures, picture_count
from llava_mini.processing.image import LlavaMiniImageProcessor
from llava_mini.processing.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN
from llava_mini.processing.video import VideoFile

IGNORE_INDEX = -100
PROCESSOR_CONFIG_NAME = "processor_config.json"


@dataclass
class Video:
    """Sampled frames of one video, in time order."""

    frames: list[Image.Image]


Medium = Image.Image | Video | VideoFile | torch.Tensor


@dataclass
class VideoFilePixels:
    """The pixel values (T, S, 3, H, W) of a video file, decoded and preprocessed a chunk at a time."""

    video: VideoFile
    image_processor: LlavaMiniImageProcessor

    @property
    def num_pictures(self) -> int:
        return self.video.num_frames

    @property
    def num_views(self) -> int:
        return self.image_processor.views_per_picture

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """(p, S, 3, H, W) chunks; each frame is preprocessed as it is decoded (never a chunk of full-size frames)."""
        for frames in self.video.iter_frames(chunk_size=size, transform=self.image_processor.preprocess_frame):
            yield torch.stack(frames)


@dataclass
class EncodedSample:
    """One conversation: ids (L,), labels (L,), pixel values (P, S, 3, H, W) (a tensor or a stream) or None."""

    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor | PictureStream | None = None
    meta: dict = field(default_factory=dict)


def is_video(medium: Medium) -> bool:
    return isinstance(medium, (Video, VideoFile))


def message_text(content: str | Sequence[dict]) -> str:
    """A message's content as text with `<image>` / `<video>` markers (accepts OpenAI-style part lists)."""
    if isinstance(content, str):
        return content
    pieces = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            pieces.append(part["text"])
        elif kind in ("image", "image_url"):
            pieces.append(IMAGE_TOKEN + "\n")
        elif kind in ("video", "video_url"):
            pieces.append(VIDEO_TOKEN + "\n")
        else:
            raise ValueError(f"unsupported message content part type {kind!r}")
    return "".join(pieces)


class LlavaMiniProcessor:
    """Tokenizer + image processor + the number of vision slots per picture."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: LlavaMiniImageProcessor,
        num_vision_tokens: int,
        system_prompt: str | None = None,
        max_length: int | None = None,
    ) -> None:
        for token in (IMAGE_TOKEN, VIDEO_TOKEN):
            if token not in tokenizer.get_vocab():
                raise ValueError(f"the tokenizer has no {token} token; add it as a special token")
        if tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat_template")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.num_vision_tokens = num_vision_tokens
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)

    @classmethod
    def for_config(
        cls,
        config: LlavaMiniConfig,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: LlavaMiniImageProcessor,
        system_prompt: str | None = None,
        max_length: int | None = None,
    ) -> LlavaMiniProcessor:
        return cls(tokenizer, image_processor, config.num_vision_tokens(), system_prompt, max_length)

    # Persistence -----------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        settings = {
            "processor_class": type(self).__name__,
            "num_vision_tokens": self.num_vision_tokens,
            "system_prompt": self.system_prompt,
            "max_length": self.max_length,
        }
        (directory / PROCESSOR_CONFIG_NAME).write_text(json.dumps(settings, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> LlavaMiniProcessor:
        directory = Path(directory)
        settings_path = directory / PROCESSOR_CONFIG_NAME
        if not settings_path.is_file():
            raise FileNotFoundError(f"{settings_path} not found: not a llava-mini processor directory")
        settings = json.loads(settings_path.read_text())
        settings.pop("processor_class", None)
        return cls(
            AutoTokenizer.from_pretrained(directory),
            LlavaMiniImageProcessor.from_pretrained(directory),
            **settings,
        )

    # Prompt building -------------------------------------------------------------------------------
    def build_messages(self, turns: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
        """(role, text) turns -> chat messages, with the processor's system prompt first if it has one."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return messages + [{"role": role, "content": text} for role, text in turns]

    def render(self, messages: Sequence[dict], add_generation_prompt: bool) -> str:
        normalised = [{"role": m["role"], "content": message_text(m["content"])} for m in messages]
        return self.tokenizer.apply_chat_template(
            normalised, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def target_spans(self, messages: Sequence[dict]) -> list[tuple[int, int]]:
        """Character spans of the assistant turns in the rendered conversation (answer + end of turn)."""
        spans = []
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = len(self.render(messages[:index], add_generation_prompt=True))
            end = len(self.render(messages[: index + 1], add_generation_prompt=False))
            spans.append((start, end))
        return spans

    # Encoding --------------------------------------------------------------------------------------
    def preprocess_medium(self, medium: Medium) -> torch.Tensor | VideoFilePixels:
        """A medium -> (P, S, 3, H, W): one picture for an image, T for a video (lazily for a video file)."""
        if isinstance(medium, torch.Tensor):
            return medium if medium.dim() == 5 else medium.unsqueeze(0)
        if isinstance(medium, VideoFile):
            return VideoFilePixels(medium, self.image_processor)
        if isinstance(medium, Video):
            return self.image_processor.preprocess_frames(medium.frames)
        if isinstance(medium, Image.Image):
            return self.image_processor.preprocess_image(medium).unsqueeze(0)
        raise TypeError(f"unsupported medium {type(medium).__name__}; pass a PIL image or a Video")

    def encode(
        self,
        messages: Sequence[dict],
        media: Sequence[Medium] = (),
        add_generation_prompt: bool = True,
    ) -> EncodedSample:
        """Render, tokenize and expand one conversation; labels cover the assistant turns."""
        text = self.render(messages, add_generation_prompt=add_generation_prompt)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = self.target_spans(messages)
        markers = [i for i in encoding.input_ids if i in (self.image_token_id, self.video_token_id)]
        if len(markers) != len(media):
            raise ValueError(
                f"the conversation has {len(markers)} media placeholders ({IMAGE_TOKEN}/{VIDEO_TOKEN}) "
                f"but {len(media)} media were given"
            )
        pictures = [self.preprocess_medium(medium) for medium in media]
        input_ids: list[int] = []
        labels: list[int] = []
        media_index = 0
        for token_id, (start, _) in zip(encoding.input_ids, encoding.offset_mapping, strict=True):
            if token_id in (self.image_token_id, self.video_token_id):
                expected_video = token_id == self.video_token_id
                if is_video(media[media_index]) != expected_video and not isinstance(
                    media[media_index], torch.Tensor
                ):
                    kind = "video" if expected_video else "image"
                    raise ValueError(f"placeholder {media_index + 1} expects a {kind}, got {type(media[media_index]).__name__}")
                slots = picture_count(pictures[media_index]) * self.num_vision_tokens
                input_ids.extend([self.image_token_id] * slots)
                labels.extend([IGNORE_INDEX] * slots)
                media_index += 1
                continue
            is_target = any(span_start <= start < span_end for span_start, span_end in spans)
            input_ids.append(token_id)
            labels.append(token_id if is_target else IGNORE_INDEX)
        if self.max_length is not None and len(input_ids) > self.max_length:
            raise ValueError(f"the prompt has {len(input_ids)} tokens, over the limit of {self.max_length}")
        pixel_values = concat_pictures(pictures) if pictures else None
        return EncodedSample(input_ids=input_ids, labels=labels, pixel_values=pixel_values)

    def collate(self, samples: Sequence[EncodedSample], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Pad samples into a batch: input_ids, attention_mask, labels (B, L), pixel_values (P, S, 3, H, W)."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        length = max(len(sample.input_ids) for sample in samples)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for row, sample in enumerate(samples):
            size = len(sample.input_ids)
            columns = slice(length - size, length) if padding_side == "left" else slice(0, size)
            input_ids[row, columns] = torch.tensor(sample.input_ids)
            labels[row, columns] = torch.tensor(sample.labels)
            attention_mask[row, columns] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        pictures = [sample.pixel_values for sample in samples if sample.pixel_values is not None]
        if pictures:
            batch["pixel_values"] = concat_pictures(pictures)
        return batch

    def __call__(
        self,
        conversations: Sequence[Sequence[dict]],
        media: Sequence[Sequence[Medium]] | None = None,
        add_generation_prompt: bool = True,
        padding_side: str = "left",
        return_labels: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Encode a batch of conversations (left padding by default, for generation)."""
        media = media if media is not None else [()] * len(conversations)
        if len(media) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(media)} media lists")
        samples = [
            self.encode(messages, sample_media, add_generation_prompt)
            for messages, sample_media in zip(conversations, media, strict=True)
        ]
        batch = self.collate(samples, padding_side=padding_side)
        if not return_labels:
            batch.pop("labels")
        return batch

    def decode(self, token_ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens).strip()
