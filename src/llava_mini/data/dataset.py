"""A lazy dataset over conversation records: media are loaded and encoded when an item is read."""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset

from llava_mini.data.records import ConversationRecord
from llava_mini.processing.image import load_image
from llava_mini.processing.processor import EncodedSample, LlavaMiniProcessor, Medium, Video
from llava_mini.processing.video import read_video_frames


class ConversationDataset(Dataset):
    """records -> EncodedSample (ids, labels on assistant turns, pixel values)."""

    def __init__(
        self,
        records: Sequence[ConversationRecord],
        processor: LlavaMiniProcessor,
        video_fps: float = 1.0,
        video_max_frames: int | None = None,
    ) -> None:
        self.records = list(records)
        self.processor = processor
        self.video_fps = video_fps
        self.video_max_frames = video_max_frames

    def __len__(self) -> int:
        return len(self.records)

    def load_media(self, record: ConversationRecord) -> list[Medium]:
        if record.media_kind == "video":
            return [Video(read_video_frames(path, self.video_fps, self.video_max_frames)) for path in record.media]
        return [load_image(path) for path in record.media]

    def __getitem__(self, index: int) -> EncodedSample:
        record = self.records[index]
        try:
            media = self.load_media(record)
            messages = self.processor.build_messages(record.turns)
            return self.processor.encode(messages, media, add_generation_prompt=False)
        except (ValueError, OSError) as error:
            raise ValueError(f"record {record.id}: {error}") from error
