"""LLaVA-format records: parsing and errors that name file, entry and field."""

from __future__ import annotations

import json

import pytest

from llava_mini.data.records import RecordError, load_records


def write(path, entries):
    path.write_text(json.dumps(entries))
    return path


def test_llava_records_are_parsed(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    path = write(tmp_path / "data.json", [
        {"id": "x", "image": "a.png", "conversations": [
            {"from": "human", "value": "What is it?"}, {"from": "gpt", "value": "a cat"}]},
        {"id": "t", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    ])
    first, second = load_records(path)
    assert first.media == [tmp_path / "a.png"] and first.media_kind == "image"
    assert first.turns == [("user", "<image>\nWhat is it?"), ("assistant", "a cat")]  # placeholder added
    assert second.media == [] and second.media_kind is None


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"id": "m"}, "missing field 'conversations'"),
        ({"id": "r", "conversations": [{"from": "robot", "value": "x"}]}, "unknown role"),
        ({"id": "o", "conversations": [{"from": "gpt", "value": "x"}]}, "alternation"),
        ({"id": "f", "image": "nope.png", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "y"}]}, "missing file"),
        ({"id": "p", "conversations": [{"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "y"}]}, "1 placeholders"),
    ],
)
def test_errors_name_the_file_entry_and_field(tmp_path, entry, message):
    path = write(tmp_path / "bad.json", [entry])
    with pytest.raises(RecordError, match=message) as error:
        load_records(path)
    assert "bad.json entry 0" in str(error.value) and f"id {entry['id']}" in str(error.value)


def test_jsonl_and_missing_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}) + "\n")
    assert load_records(path)[0].turns[1] == ("assistant", "b")
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "none.json")
