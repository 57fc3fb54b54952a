"""Latency, memory and KV-cache size: the all-tokens baseline against LLaVA-Mini at C*C = 1, 4, 16, 64.

Same flags as `llava-mini bench` (see docs/benchmarks.md), e.g.
    python benchmarks/latency.py --device cpu --repeats 5 --plot bench-cpu.png
    python benchmarks/latency.py --device cuda --preset llava-mini-vicuna-7b --dtype float16
"""

import sys

from llava_mini.analysis.latency import main

if __name__ == "__main__":
    sys.exit(main())
