"""Driver (Python 2.7, as the VQA API requires): score a result file with GT-Vision-Lab/VQA's VQAEval.

python2 run_vqaeval.py VQA_API_DIR ANNOTATIONS QUESTIONS RESULTS OUT_JSON [STRINGS_JSON STRINGS_OUT]
Writes the API's own figures (accuracy dict and per-question evalQA, rounded by the API to 2 digits) and,
optionally, the API's processPunctuation + processDigitArticle of each string in STRINGS_JSON.
"""

import io
import json
import sys

api, annotations, questions, results, out = sys.argv[1:6]
sys.path.insert(0, api + "/PythonHelperTools/vqaTools")
sys.path.insert(0, api + "/PythonEvaluationTools")
from vqa import VQA  # noqa: E402
from vqaEvaluation.vqaEval import VQAEval  # noqa: E402

vqa = VQA(annotations, questions)
result = vqa.loadRes(results, questions)
evaluator = VQAEval(vqa, result, n=2)
evaluator.evaluate()
payload = {
    "accuracy": evaluator.accuracy,
    "evalQA": {str(key): value for key, value in evaluator.evalQA.items()},
}
with io.open(out, "w", encoding="utf-8") as handle:  # noqa: UP020 (Python 2)
    handle.write(json.dumps(payload, indent=1, sort_keys=True, ensure_ascii=False))
if len(sys.argv) > 6:
    strings = json.load(io.open(sys.argv[6], encoding="utf-8"))  # noqa: UP020
    processed = {s: evaluator.processDigitArticle(evaluator.processPunctuation(s)) for s in strings}
    with io.open(sys.argv[7], "w", encoding="utf-8") as handle:  # noqa: UP020
        handle.write(json.dumps(processed, indent=1, sort_keys=True, ensure_ascii=False))
