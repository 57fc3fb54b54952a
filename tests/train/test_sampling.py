"""Sample order: seeded epochs, and grouping batches by modality and length."""

from collections import Counter
from pathlib import Path

import pytest

from llava_mini.data.records import ConversationRecord
from llava_mini.train.sampling import epoch_order, group_batches, length_key, modality_key


def record(kind: str | None, text: str) -> ConversationRecord:
    media = [Path(f"x.{kind}")] if kind else []
    return ConversationRecord(id=text, media_kind=kind, media=media, turns=[("user", text), ("assistant", "a")])


def test_epoch_order_covers_every_sample_once_per_epoch_and_is_seeded():
    order = epoch_order(10, 25, seed=3)
    assert len(order) == 25
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))
    assert order == epoch_order(10, 25, seed=3)
    assert order != epoch_order(10, 25, seed=4)
    with pytest.raises(ValueError, match="at least one"):
        epoch_order(0, 5, seed=0)


def test_length_key_orders_text_then_images_then_videos_then_length():
    keys = [length_key(record(kind, text)) for kind, text in [("video", "q"), (None, "q"), ("image", "long q"), ("image", "q")]]
    assert sorted(keys) == [keys[1], keys[3], keys[2], keys[0]]


def test_grouping_keeps_the_samples_and_makes_batches_of_one_modality():
    kinds = ["image"] * 48 + ["video"] * 16
    records = [record(kind, "q" * (index % 7 + 1)) for index, kind in enumerate(kinds)]
    keys = [length_key(r) for r in records]
    order = epoch_order(len(records), 128, seed=0)
    grouped = group_batches(order, keys, global_batch=8, seed=1, window_batches=8)
    assert Counter(grouped) == Counter(order)  # same samples, same number of times
    for start in range(0, len(order), 64):  # nothing crosses a window
        assert Counter(grouped[start : start + 64]) == Counter(order[start : start + 64])

    def mixed_batches(sequence: list[int]) -> int:
        batches = [sequence[i : i + 8] for i in range(0, len(sequence), 8)]
        return sum(len({records[i].media_kind for i in batch}) > 1 for batch in batches)

    assert mixed_batches(order) > 8  # random batches mix images and videos
    assert mixed_batches(grouped) <= 2  # at most one mixed batch per window
    assert grouped == group_batches(order, keys, global_batch=8, seed=1, window_batches=8)


def test_modality_grouping_keeps_each_modality_in_its_shuffled_order():
    kinds = ["image", "video"] * 32
    records = [record(kind, "q" * (index % 7 + 1)) for index, kind in enumerate(kinds)]
    order = epoch_order(len(records), 64, seed=0)
    grouped = group_batches(order, [modality_key(r) for r in records], global_batch=8, seed=1, window_batches=8)
    batches = [grouped[i : i + 8] for i in range(0, 64, 8)]
    assert all(len({records[i].media_kind for i in batch}) == 1 for batch in batches)
    images = [i for i in order if records[i].media_kind == "image"]
    image_batches = [batch for batch in batches if records[batch[0]].media_kind == "image"]
    assert sorted(sum(image_batches, [])) == sorted(images)
    assert all(batch == images[images.index(batch[0]) : images.index(batch[0]) + 8] for batch in image_batches)
    lengths = [len(records[i].turns[0][1]) for i in images]
    assert lengths != sorted(lengths)  # not sorted by length


def test_grouping_needs_whole_global_batches():
    with pytest.raises(ValueError, match="multiple of the global batch"):
        group_batches(list(range(10)), [(1, 1)] * 10, global_batch=4, seed=0)
