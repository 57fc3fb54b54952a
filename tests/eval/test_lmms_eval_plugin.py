"""The lmms-eval plugin's parts that do not need lmms-eval: request handling, generation arguments,
log-likelihoods, and the clear error (or the real registration, where lmms-eval is installed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
import torch
from PIL import Image

from llava_mini.eval import lmms_eval_plugin
from llava_mini.eval.lmms_eval_plugin import LlavaMiniAdapter, generation_settings, visual_to_medium
from llava_mini.inference.generate import GenerationSettings, LlavaMini
from llava_mini.processing.processor import Video

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Request:
    """lmms-eval's Instance as the plugin sees it: only `args`."""

    args: tuple


@pytest.fixture(scope="module")
def assistant() -> LlavaMini:
    return LlavaMini.load()


DOCS = {
    ("mme", "test", 0): {"colour": "red"},
    ("mme", "test", 1): {"colour": "blue"},
    ("text", "test", 0): {},
}


def find(task: str, split: str, doc_id: int) -> dict:
    return DOCS[(task, split, doc_id)]


def picture(doc: dict) -> list[Image.Image]:
    return [Image.new("RGB", (20, 20), doc["colour"])]


def test_generation_settings():
    settings = generation_settings(
        {"max_new_tokens": 5, "temperature": 0, "until": "\n\n", "do_sample": False}
    )
    assert settings == GenerationSettings(max_new_tokens=5, temperature=0.0, top_p=1.0, stop=["\n\n"])
    assert generation_settings({"temperature": 0.7}).temperature == 0.7  # a temperature alone means sampling
    assert generation_settings({"temperature": 0.7, "do_sample": False}).temperature == 0.0
    assert generation_settings(None).max_new_tokens == 128


def test_visual_conversion(assistant, tmp_path):
    image = Image.new("RGBA", (8, 8))
    assert visual_to_medium(assistant, image).mode == "RGB"
    frames = visual_to_medium(assistant, [Image.new("RGB", (8, 8))] * 2)
    assert isinstance(frames, Video) and len(frames.frames) == 2
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(path)
    assert isinstance(visual_to_medium(assistant, str(path)), Image.Image)
    with pytest.raises(TypeError, match="unsupported visual"):
        visual_to_medium(assistant, 3)


def test_generate_until_matches_direct_answers_in_order(assistant):
    adapter = LlavaMiniAdapter(assistant, find, batch_size=2)
    short, longer = {"max_new_tokens": 2, "temperature": 0}, {"max_new_tokens": 4, "temperature": 0}
    requests = [
        Request(("What colour is it?", short, picture, 0, "mme", "test")),
        Request(("What colour is it?", longer, picture, 1, "mme", "test")),
        Request(("What colour is it?", short, picture, 1, "mme", "test")),
        Request(("Say something.", short, None, 0, "text", "test")),
    ]
    answers = adapter.generate_until(requests)
    expected = [
        assistant.ask(Image.new("RGB", (20, 20), "red"), "What colour is it?", max_new_tokens=2),
        assistant.ask(Image.new("RGB", (20, 20), "blue"), "What colour is it?", max_new_tokens=4),
        assistant.ask(Image.new("RGB", (20, 20), "blue"), "What colour is it?", max_new_tokens=2),
        assistant.ask(None, "Say something.", max_new_tokens=2),
    ]
    assert answers == expected


def test_loglikelihood_of_the_greedy_answer(assistant):
    adapter = LlavaMiniAdapter(assistant, find)
    image = picture(DOCS[("mme", "test", 0)])
    batch = assistant.prepare([assistant.question_messages("What colour is it?", image)], [image])
    with torch.inference_mode():
        generated = assistant.model.generate(**batch, max_new_tokens=3, do_sample=False)
    greedy = [int(t) for t in generated[0, batch["input_ids"].shape[1] :]]
    logprob, is_greedy = adapter.continuation_logprob("What colour is it?", image, greedy)
    assert is_greedy and logprob <= 0.0
    other = [(greedy[0] + 1) % len(assistant.processor.tokenizer)]
    other_logprob, other_greedy = adapter.continuation_logprob("What colour is it?", image, other)
    assert (
        not other_greedy
        and other_logprob < adapter.continuation_logprob("What colour is it?", image, greedy[:1])[0]
    )
    # the request form: doc_to_target gives the text
    (result,) = adapter.loglikelihood(
        [Request(("What colour is it?", lambda doc: doc["colour"], picture, 0, "mme", "test"))]
    )
    assert result[0] < 0.0 and isinstance(result[1], bool)
    with pytest.raises(ValueError, match="empty"):
        adapter.continuation_logprob("What colour is it?", image, [])


def test_registration():
    entry_points = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry_points["lmms_eval.models"]["llava_mini"] == "llava_mini.eval.lmms_eval_plugin:manifest"
    if lmms_eval_plugin.LMMS_EVAL_AVAILABLE:
        manifest = lmms_eval_plugin.manifest()
        assert manifest.model_id == "llava_mini"
        assert manifest.simple_class_path.endswith("lmms_eval_plugin.LlavaMiniLmms")
    else:
        with pytest.raises(ImportError, match="pip install lmms-eval"):
            lmms_eval_plugin.manifest()
        with pytest.raises(ImportError, match="pip install lmms-eval"):
            lmms_eval_plugin.LlavaMiniLmms()
