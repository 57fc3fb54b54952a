#!/bin/bash
# Re-run every official script on the fixtures and write their outputs next to them (see ../RECORD.md).
# Usage: bash tests/eval/official/drivers/run_all.sh   (from the repository root)
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
DRIVERS=$HERE/drivers
RELEASE=${RELEASE:-/work/envs/vqa-release}     # ictnlp/LLaVA-Mini files + venv with tqdm
VQA_API=${VQA_API:-/work/envs/vqa-vqaapi}      # GT-Vision-Lab/VQA checkout
GQA_EVAL=${GQA_EVAL:-/work/envs/vqa-gqa/eval}  # GQA eval.py as LLaVA runs it
PY3="env PYTHONPATH=$RELEASE/src $RELEASE/venv/bin/python"
PY2="env PYENV_VERSION=2.7.18 python"
WORK=$(mktemp -d)

# strings every processor is run on: the fixtures' replies and ground truths
$PY3 - "$HERE" > "$WORK/strings.json" <<'PYEOF'
import json, sys
root = sys.argv[1]
strings = set()
for line in open(f"{root}/vqav2/merge.jsonl", encoding="utf-8"):
    strings.add(json.loads(line)["text"])
for entry in json.load(open(f"{root}/vqav2/v2_mscoco_val2014_annotations.json", encoding="utf-8"))["annotations"]:
    strings.update(a["answer"] for a in entry["answers"])
print(json.dumps(sorted(strings), ensure_ascii=False))
PYEOF
cp "$WORK/strings.json" "$HERE/strings.json"

# VQAv2 test-dev upload: the release's converter on merge.jsonl (answers) and the test2015 id list
mkdir -p "$WORK/vqav2/answers/llava_vqav2_mscoco_test-dev2015/fixture"
cp "$HERE/vqav2/merge.jsonl" "$WORK/vqav2/answers/llava_vqav2_mscoco_test-dev2015/fixture/"
cp "$HERE/vqav2/llava_vqav2_mscoco_test2015.jsonl" "$WORK/vqav2/"
(cd "$RELEASE/src" && $PY3 scripts/convert_vqav2_for_submission.py --dir "$WORK/vqav2" --split llava_vqav2_mscoco_test-dev2015 --ckpt fixture)
cp "$WORK/vqav2/answers_upload/llava_vqav2_mscoco_test-dev2015/fixture.json" "$HERE/vqav2/official_upload_test-dev.json"

# VQAv2 val: the same converter over the val ids only, then the VQA API on that upload (= the server's score)
mkdir -p "$WORK/val/answers/val/fixture"
cp "$HERE/vqav2/merge.jsonl" "$WORK/val/answers/val/fixture/"
$PY3 -c "import json,sys; [print(json.dumps({'question_id': q['question_id']})) for q in json.load(open(sys.argv[1]))['questions']]" \
    "$HERE/vqav2/v2_OpenEnded_mscoco_val2014_questions.json" > "$WORK/val/llava_vqav2_mscoco_test2015.jsonl"
(cd "$RELEASE/src" && $PY3 scripts/convert_vqav2_for_submission.py --dir "$WORK/val" --split val --ckpt fixture)
$PY2 "$DRIVERS/run_vqaeval.py" "$VQA_API" "$HERE/vqav2/v2_mscoco_val2014_annotations.json" \
    "$HERE/vqav2/v2_OpenEnded_mscoco_val2014_questions.json" "$WORK/val/answers_upload/val/fixture.json" \
    "$HERE/vqav2/official_vqaeval_converted.json" "$WORK/strings.json" "$HERE/vqav2/official_vqaeval_processing.json"
# ... and the VQA API on the raw replies (no converter): the API alone
$PY2 "$DRIVERS/run_vqaeval.py" "$VQA_API" "$HERE/vqav2/v2_mscoco_val2014_annotations.json" \
    "$HERE/vqav2/v2_OpenEnded_mscoco_val2014_questions.json" "$HERE/vqav2/raw_results.json" \
    "$HERE/vqav2/official_vqaeval_raw.json"

# VizWiz test upload: the release's converter
(cd "$RELEASE/src" && $PY3 scripts/convert_vizwiz_for_submission.py --annotation-file "$HERE/vizwiz/llava_test.jsonl" \
    --result-file "$HERE/vizwiz/merge.jsonl" --result-upload-file "$HERE/vizwiz/official_upload_test.json")

# TextVQA: the release's eval script (printed figure), and per-question scores + processor outputs
(cd "$RELEASE/src" && $PY3 -m llava.eval.eval_textvqa --annotation-file "$HERE/textvqa/TextVQA_0.5.1_val.json" \
    --result-file "$HERE/textvqa/answers.jsonl" 2>/dev/null) > "$HERE/textvqa/official_eval_textvqa.txt"
(cd "$RELEASE/src" && $PY3 "$DRIVERS/run_m4c.py" "$WORK/strings.json" "$HERE/m4c_processing.json" \
    "$HERE/textvqa/TextVQA_0.5.1_val.json" "$HERE/textvqa/answers.jsonl" "$HERE/textvqa/official_scores.json" 2>/dev/null)

# GQA: the release's converter, then eval.py in the data folder, as scripts/llavamini/eval_image/gqa.sh does
mkdir -p "$WORK/gqa/eval"
cp "$GQA_EVAL/eval.py" "$WORK/gqa/eval/"
cp "$HERE/gqa/testdev_balanced_questions.json" "$WORK/gqa/"
(cd "$RELEASE/src" && $PY3 scripts/convert_gqa_for_eval.py --src "$HERE/gqa/merge.jsonl" --dst "$WORK/gqa/testdev_balanced_predictions.json")
cp "$WORK/gqa/testdev_balanced_predictions.json" "$HERE/gqa/official_testdev_balanced_predictions.json"
(cd "$WORK/gqa" && $PY3 eval/eval.py --tier testdev_balanced 2>/dev/null) > "$HERE/gqa/official_eval.txt"
rm -rf "$WORK"
echo done
