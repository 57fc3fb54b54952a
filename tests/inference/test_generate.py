"""End to end on a random tiny model written to disk: load, ask about an image and a video, stream."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image

from llava_mini.cli import build_parser, main
from llava_mini.inference.generate import GenerationSettings, LlavaMini, trim_at_stop
from llava_mini.inference.random_model import write_random_model
from llava_mini.processing.processor import Video
from tests.conftest import SHARED_MEDIA


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("random-tiny"))


@pytest.fixture(scope="module")
def assistant(model_dir) -> LlavaMini:
    return LlavaMini.load(model_dir)


def test_ask_about_an_image_greedy_is_deterministic(assistant):
    image = Image.new("RGB", (120, 80), "red")
    first = assistant.ask(image, "what colour is the square ?", max_new_tokens=5)
    assert isinstance(first, str)
    assert first == assistant.ask(image, "what colour is the square ?", max_new_tokens=5)


def test_streaming_gives_the_same_text_as_one_shot(assistant):
    image = Image.new("RGB", (64, 64), "blue")
    media = [image]
    messages = assistant.question_messages("how many circles are there ?", media)
    settings = GenerationSettings(max_new_tokens=6)
    streamed = "".join(assistant.stream_chat(messages, media, settings)).strip()
    assert streamed == assistant.chat(messages, media, settings)


def test_video_and_several_images(assistant):
    frames = [Image.new("RGB", (48, 48), colour) for colour in ("red", "green", "blue")]
    assert isinstance(assistant.ask(Video(frames), "which direction does the circle move ?", max_new_tokens=3), str)
    two = [Image.new("RGB", (48, 48), "red"), Image.new("RGB", (48, 48), "green")]
    assert isinstance(assistant.ask(two, "what colour ?", max_new_tokens=3), str)


def test_sampling_with_a_seed_is_reproducible(assistant):
    image = Image.new("RGB", (64, 64), "green")
    settings = GenerationSettings(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=3)
    assert assistant.ask(image, "describe the image .", settings) == assistant.ask(image, "describe the image .", settings)


def test_stop_strings_trim_the_answer():
    assert trim_at_stop("a red square . and more", ["."]) == "a red square"
    assert trim_at_stop("no stop here", ["###"]) == "no stop here"


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="top_p"):
        GenerationSettings(top_p=0).generate_kwargs()


def test_cli_lists_subcommands_and_answers_about_a_real_photo(model_dir, capsys):
    help_text = build_parser().format_help()
    for command in ("ask", "init", "data", "train"):
        assert command in help_text
    photo = SHARED_MEDIA / "extreme_ironing.jpg"
    if not photo.is_file():
        pytest.skip("shared media not present")
    code = main(["ask", str(photo), "what is the man doing ?", "--model", str(model_dir), "--max-new-tokens", "4"])
    assert code == 0
    assert capsys.readouterr().out.endswith("\n")  # the streamed answer, then a newline


def test_cli_reports_a_missing_file_clearly(model_dir, capsys):
    code = main(["ask", "/nonexistent/photo.png", "what ?", "--model", str(model_dir)])
    assert code == 2
    assert "/nonexistent/photo.png" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("{tmp}/absent", "model directory not found: {tmp}/absent"),
        ("{tmp}", "{tmp} is not a model directory: it has no config.json"),
        ("{tmp}/no-weights", "could not load the model {tmp}/no-weights: "),
    ],
)
def test_cli_names_a_model_it_cannot_load(model, message, tmp_path, capsys):
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text("{}")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(photo)
    code = main(["ask", str(photo), "what ?", "--model", model.format(tmp=tmp_path)])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"llava-mini: error: {message.format(tmp=tmp_path)}")
    assert "Traceback" not in error


def test_an_empty_question_is_refused(model_dir, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(photo)
    code = main(["ask", str(photo), "  ", "--model", str(model_dir)])
    assert code == 2
    assert "the question is empty" in capsys.readouterr().err


def test_a_video_file_is_streamed_in_chunks_and_answers_like_its_frames_in_memory(assistant, tmp_path):
    import numpy as np

    from llava_mini.model.pictures import PictureStream
    from llava_mini.processing.video import VideoFile, read_video_frames, write_video

    rng = np.random.default_rng(0)
    path = tmp_path / "clip.mp4"
    write_video(path, rng.integers(0, 255, (12, 48, 48, 3), dtype=np.uint8), fps=2)
    video = assistant.medium(path)
    assert isinstance(video, VideoFile) and video.num_frames == 6
    in_memory = Video(read_video_frames(path, fps=assistant.config.video_fps))
    image = Image.new("RGB", (48, 48), "red")
    media = [image, video]
    messages = assistant.question_messages("what happens ?", media)
    batch = assistant.prepare([messages], [media])
    assert isinstance(batch["pixel_values"], PictureStream) and batch["pixel_values"].num_pictures == 7
    def logits(chosen_media, chunk_size):
        assistant.config.encode_chunk_size = chunk_size
        try:
            with torch.inference_mode():
                return assistant.model(**assistant.prepare([messages], [chosen_media])).logits
        finally:
            assistant.config.encode_chunk_size = 64

    reference = logits([image, in_memory], 64)
    torch.testing.assert_close(logits(media, 64), reference)
    torch.testing.assert_close(logits(media, 2), reference)  # chunks straddle the image and the video
    settings = GenerationSettings(max_new_tokens=4)
    assert assistant.chat(messages, media, settings) == assistant.chat(messages, [image, in_memory], settings)


def test_hd_mode_feeds_crops_and_the_global_view_and_keeps_k_tokens(model_dir):
    assistant = LlavaMini.load(model_dir)
    k = assistant.processor.num_vision_tokens
    assistant.set_resolution_ratio(2)
    image = Image.new("RGB", (96, 64), "red")
    batch = assistant.prepare([assistant.question_messages("what colour ?", [image])], [[image]])
    size = assistant.processor.image_processor.size
    assert batch["pixel_values"].shape == (1, 5, 3, size, size)
    assert int((batch["input_ids"] == assistant.config.image_token_id).sum()) == k
    assert isinstance(assistant.ask(image, "what colour ?", max_new_tokens=3), str)
    with pytest.raises(ValueError, match="resolution ratio"):
        assistant.set_resolution_ratio(0)


def test_cli_hd_flag(model_dir, capsys):
    from tests.conftest import REPO_ROOT

    image = REPO_ROOT / "assets" / "baby_cake.png"
    assert main(["ask", str(image), "what is it ?", "--model", str(model_dir), "--hd", "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().out.endswith("\n")


def test_a_failure_inside_streaming_generation_reaches_the_reader(assistant, monkeypatch):
    def broken_generate(**kwargs):
        kwargs["streamer"].put(torch.tensor([[1, 2]]))  # the prompt, as generate() sends it first
        raise RuntimeError("decoding failed half-way")

    monkeypatch.setattr(assistant.model, "generate", broken_generate)
    image = Image.new("RGB", (32, 32), "red")
    messages = assistant.question_messages("what colour ?", [image])
    with pytest.raises(RuntimeError, match="half-way"):
        list(assistant.stream_chat(messages, [image], GenerationSettings(max_new_tokens=3)))


def broken_copy(model_dir, tmp_path, name: str):
    """A copy of the random model with one file broken (`name` says how)."""
    import json
    import shutil

    target = tmp_path / name
    shutil.copytree(model_dir, target)
    weights = target / "model.safetensors"
    data = weights.read_bytes()
    config = json.loads((target / "config.json").read_text())
    if name == "empty-weights":
        weights.write_bytes(b"")
    elif name == "truncated-weights":
        weights.write_bytes(data[: len(data) * 9 // 10])
    elif name == "garbage-weights":
        weights.write_bytes(bytes(range(256)) * 64)
    elif name == "extra-layer":
        config["text_config"]["num_hidden_layers"] += 1
    elif name == "one-layer-less":
        config["text_config"]["num_hidden_layers"] -= 1
    elif name == "feature-layer":
        config["vision_feature_layer"] = 99
    elif name == "activation":
        config["text_config"]["hidden_act"] = "nope"
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty-weights", r"could not load the model .*empty-weights \(SafetensorError: .*header too small"),
        ("truncated-weights", r"could not load the model .*truncated-weights \(SafetensorError: .*not fully covered"),
        ("garbage-weights", r"could not load the model .*garbage-weights \(SafetensorError"),
        ("extra-layer", r"extra-layer: the weights do not match its config.json: 9 weights missing from the checkpoint "
         r"\(language_model.model.layers.4.input_layernorm.weight"),
        ("one-layer-less", r"one-layer-less: the weights do not match its config.json: 9 weights in the checkpoint but "
         r"not in the model \(language_model.model.layers.3.input_layernorm.weight"),
        ("feature-layer", r"config.json is not a valid llava-mini config \(ValueError: vision_feature_layer=99 is out "
         r"of range: the vision tower has 4 layers"),
        ("activation", r"could not load the model .*activation \(KeyError: 'nope'\)"),
    ],
)
def test_cli_names_broken_model_files_in_one_line(name, message, model_dir, tmp_path, capsys):
    code = main(["ask", "what ?", "--model", str(broken_copy(model_dir, tmp_path, name))])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error and len(error.strip().splitlines()) == 1, error
    assert re.search(message, error), error


@pytest.mark.parametrize(
    ("device", "message"),
    [("cuda", "device 'cuda': no CUDA device is available"), ("gpu", "invalid device 'gpu'")],
)
def test_cli_names_a_device_it_cannot_use(device, message, model_dir, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU
    code = main(["ask", "what ?", "--model", str(model_dir), "--device", device])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith(f"llava-mini: error: {message}") and "Traceback" not in error


def test_cli_names_corrupt_and_oversized_media(model_dir, tmp_path, capsys):
    from tests.processing.test_image import png_bytes

    (tmp_path / "strip.png").write_bytes(png_bytes(20_000, 1))
    (tmp_path / "cut.png").write_bytes(png_bytes(40, 30)[:70])
    (tmp_path / "cut.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 50)
    for name, words in (("strip.png", "exceeds the limit"), ("cut.png", "cut.png"), ("cut.mp4", "cut.mp4")):
        code = main(["ask", str(tmp_path / name), "what ?", "--model", str(model_dir)])
        error = capsys.readouterr().err
        assert code == 2 and words in error and "Traceback" not in error, error
