"""Runs the LLaVA-Mini release's own evaluation scripts on the fixtures and records what they print and write.

Not part of the test suite: run by hand, in an environment of its own (Python 3 with numpy and Pillow), with
the folder holding the release's scripts (see RECORD.md for the exact commands and source versions):

    python tests/eval/official/run_release.py RELEASE_SCRIPTS_DIR

eval_pope.py, eval_science_qa.py and convert_seed_for_submission.py run as the release's shell scripts call
them. mvbench_mc.py, mlvu_mc.py and egoschema_mc.py load a model and decode videos before they score; here
they are imported with stand-ins for torch, decord and the llavamini package (never called), and
`get_model_output` / `load_pretrained_model` are replaced so that `run_inference` gets the fixture's
answers in dataset order. Their scoring code runs untouched.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).parent
STUBBED = ("torch", "torchvision", "transformers", "llavamini", "decord", "requests", "shortuuid", "tqdm")


class _Anything:
    """Any attribute, call or subclassing works; stands in for what the scripts import but the scoring never uses."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        return _Anything()

    def __getattr__(self, name: str):
        return _Anything()


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "tqdm":
            return lambda iterable, *args, **kwargs: iterable
        return type(name, (_Anything,), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        pass


def run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    return f"$ {' '.join(command)}\n[exit {done.returncode}]\n{done.stdout}{done.stderr}"


def record_pope(scripts: Path, out: Path) -> None:
    """One run per split (an annotation folder with that split alone), so a crash in one hides no other."""
    data = HERE / "pope"
    for split in ("adversarial", "popular", "random"):
        with tempfile.TemporaryDirectory() as folder:
            annotation = Path(folder) / "coco"
            annotation.mkdir()
            shutil.copy(data / "coco" / f"coco_pope_{split}.json", annotation)
            text = run(
                [sys.executable, str(scripts / "eval_pope.py"), "--annotation-dir", str(annotation),
                 "--question-file", "llava_pope_test.jsonl", "--result-file", "answers.jsonl"],
                data,
            )  # fmt: skip
        (out / f"eval_pope_{split}.txt").write_text(text.replace(folder, "TMP"), encoding="utf-8")


def record_scienceqa(scripts: Path, out: Path) -> None:
    data = HERE / "scienceqa"
    text = run(
        [sys.executable, str(scripts / "eval_science_qa.py"), "--base-dir", ".", "--result-file", "answers.jsonl",
         "--output-file", str(out / "merge_output.json"), "--output-result", str(out / "merge_result.json")],
        data,
    )  # fmt: skip
    (out / "eval_science_qa.txt").write_text(text.replace(str(out), "OUT"), encoding="utf-8")


def record_seed(scripts: Path, out: Path) -> None:
    data = HERE / "seed_bench"
    text = run(
        [sys.executable, str(scripts / "convert_seed_for_submission.py"), "--annotation-file", "SEED-Bench.json",
         "--result-file", "answers.jsonl", "--result-upload-file", str(out / "upload.jsonl")],
        data,
    )  # fmt: skip
    (out / "convert_seed_for_submission.txt").write_text(text.replace(str(out), "OUT"), encoding="utf-8")


def load_script(path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _answers(path: Path) -> list[str]:
    return [
        json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def record_video(scripts: Path, out: Path, script: str, benchmark: str, arguments: dict) -> None:
    """run_inference of a release video script with the fixture's answers in place of the model's."""
    module = load_script(scripts / script)
    replies = iter(_answers(HERE / benchmark / "answers.jsonl"))
    module.get_model_output = lambda *args, **kwargs: next(replies)
    module.load_pretrained_model = lambda *args, **kwargs: (None, _Anything(), None, None)
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(HERE / benchmark):
        namespace = argparse.Namespace(
            model_path="-", model_name="llava-mini", model_base=None, conv_mode="llava_llama_3_1",
            output_dir=folder, output_name="1_0", num_chunks=1, chunk_idx=0, device="cpu", **arguments,
        )  # fmt: skip
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            module.run_inference(namespace)
        for produced in sorted(Path(folder).iterdir()):
            shutil.copy(produced, out / produced.name)
    lines = [line for line in printed.getvalue().splitlines() if not line.startswith("{'q_uid'")]
    (out / f"{Path(script).stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert next(replies, None) is None, f"{script}: not every fixture answer was used"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", type=Path, help="folder with the release's evaluation scripts")
    scripts = parser.parse_args().scripts.resolve()
    sys.meta_path.insert(0, _StubFinder())
    outputs = {name: HERE / name / "official" for name in
               ("pope", "scienceqa", "seed_bench", "mvbench", "mlvu", "egoschema")}  # fmt: skip
    for folder in outputs.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
    record_pope(scripts, outputs["pope"])
    record_scienceqa(scripts, outputs["scienceqa"])
    record_seed(scripts, outputs["seed_bench"])
    record_video(scripts, outputs["mvbench"], "mvbench_mc.py", "mvbench", {"data_dir": "."})
    record_video(scripts, outputs["mlvu"], "mlvu_mc.py", "mlvu", {"data_dir": "."})
    with tempfile.TemporaryDirectory() as videos:
        for entry in json.loads((HERE / "egoschema" / "mc.json").read_text(encoding="utf-8")):
            (Path(videos) / f"{entry['q_uid']}.mp4").touch()  # the script only checks that the file exists
        arguments = {"video_dir": videos, "gt_file": "mc.json"}
        record_video(scripts, outputs["egoschema"], "egoschema_mc.py", "egoschema", arguments)


if __name__ == "__main__":
    main()
