"""Driver: the release's m4c EvalAIAnswerProcessor on strings, and its TextVQA per-question scores.

PYTHONPATH=RELEASE_SRC python run_m4c.py STRINGS_JSON STRINGS_OUT [TEXTVQA_ANNOTATIONS ANSWERS_JSONL SCORES_OUT]
Per-question scores follow llava/eval/eval_textvqa.py's lookup ((image id, question from the prompt) ->
annotation) and TextVQAAccuracyEvaluator, one question at a time.
"""

import json
import sys

from llava.eval.eval_textvqa import prompt_processor
from llava.eval.m4c_evaluator import EvalAIAnswerProcessor, TextVQAAccuracyEvaluator

processor = EvalAIAnswerProcessor()
with open(sys.argv[1], encoding="utf-8") as handle:
    strings = json.load(handle)
with open(sys.argv[2], "w", encoding="utf-8") as handle:
    json.dump({s: processor(s) for s in strings}, handle, indent=1, sort_keys=True, ensure_ascii=False)
if len(sys.argv) > 3:
    with open(sys.argv[3], encoding="utf-8") as handle:
        annotations = json.load(handle)["data"]
    table = {(a["image_id"], a["question"].lower()): a for a in annotations}
    evaluator = TextVQAAccuracyEvaluator()
    scores = []
    with open(sys.argv[4], encoding="utf-8") as handle:
        for line in handle:
            result = json.loads(line)
            annotation = table[(result["question_id"], prompt_processor(result["prompt"]))]
            pair = {"pred_answer": result["text"], "gt_answers": annotation["answers"]}
            scores.append(
                {"question_id": annotation["question_id"], "score": evaluator.eval_pred_list([pair])}
            )
    with open(sys.argv[5], "w", encoding="utf-8") as handle:
        json.dump(scores, handle, indent=1)
