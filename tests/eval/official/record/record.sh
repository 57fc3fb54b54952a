#!/bin/bash
# Re-records tests/eval/official/*/official/: runs each official judge script unchanged, with the OpenAI call
# replaced by the fake in run_official.py (replies from the fixture's replies*.json). See ../RECORD.md.
#   OFFICIAL=dir with the official scripts   ENV028=venv with openai==0.28.1 numpy   ENV1=venv with openai 1.x pandas numpy tqdm
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
run="$here/record/run_official.py"
tmp=$(mktemp -d)
export PYTHONHASHSEED=0

cd "$here/llava-bench"
mkdir -p official && rm -f official/*
FAKE_REPLIES=replies.json FAKE_REQUESTS=official/requests.jsonl "$ENV028/bin/python" "$run" \
  "$OFFICIAL/eval_gpt_review_bench.py" --question data/questions.jsonl --context data/context.jsonl \
  --rule "$OFFICIAL/rule.json" --answer-list data/answers_gpt4.jsonl data/answers/llava-mini.jsonl \
  --output official/reviews.jsonl > /dev/null
"$ENV028/bin/python" "$OFFICIAL/summarize_gpt_review.py" -f official/reviews.jsonl > official/summary.txt

cd "$here/mm-vet"
mkdir -p official && rm -f official/*
FAKE_REPLIES=replies.json FAKE_REQUESTS=official/requests.jsonl "$ENV1/bin/python" "$run" \
  "$OFFICIAL/mm-vet_evaluator.py" --mmvet_path data --result_file results/llava-mini.json \
  --result_path official > official/stdout.txt 2> /dev/null

cd "$here/video-qa"
mkdir -p official && rm -f official/*
FAKE_REPLIES=replies.json FAKE_REQUESTS=official/requests.jsonl "$ENV028/bin/python" "$run" \
  "$OFFICIAL/eval_video_qa.py" --pred_path pred/merge.jsonl --output_dir "$tmp/video-qa" \
  --output_json official/results.json --api_key none --model_name gpt-3.5-turbo --num_tasks 1 > /dev/null 2>&1

cd "$here/video-chatgpt"
mkdir -p official && rm -f official/*
for task in 1_correctness:correctness:generic 2_detailed_orientation:detail:generic 3_context:context:generic \
            4_temporal:temporal:temporal 5_consistency:consistency:consistency; do
  IFS=: read -r script name pred <<< "$task"
  FAKE_REPLIES="replies/$name.json" FAKE_REQUESTS="official/$name-requests.jsonl" "$ENV028/bin/python" "$run" \
    "$OFFICIAL/evaluate_benchmark_$script.py" --pred_path "pred/$pred.json" --output_dir "$tmp/$name" \
    --output_json "$tmp/$name.json" --api_key none --num_tasks 1 > "official/$name-stdout.txt" 2>&1
done
rm -rf "$tmp"

# The release's copy of the consistency script (question 1 sent twice), for the record; it reads JSON lines.
tmp=$(mktemp -d)
cd "$here/video-chatgpt"
mkdir -p release && rm -f release/*
"$ENV028/bin/python" -c 'import json, sys; [print(json.dumps(e)) for e in json.load(open(sys.argv[1]))]' \
  pred/consistency.json > "$tmp/consistency.jsonl"
FAKE_REPLIES=replies/consistency.json FAKE_REQUESTS=release/consistency-requests.jsonl "$ENV028/bin/python" "$run" \
  "$OFFICIAL/release_eval_benchmark_5_consistency.py" --pred_path "$tmp/consistency.jsonl" --output_dir "$tmp/out" \
  --output_json "$tmp/out.json" --api_key none --api_base "" --model_name gpt-3.5-turbo --num_tasks 1 \
  > release/consistency-stdout.txt 2>&1
rm -rf "$tmp"
