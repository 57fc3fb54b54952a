"""The paper's benchmarks (11 image, 7 video), one module per family, listed in one registry.

`get_benchmark("gqa")` -> `Benchmark`; `BENCHMARKS` maps every name to its benchmark. Importing this package
loads no model and no torch.
"""

from __future__ import annotations

from llava_mini.eval.benchmarks import (
    gqa,
    judged_image,
    mmbench,
    mme,
    pope,
    scienceqa,
    seed,
    video_choice,
    video_qa,
    vqa,
)
from llava_mini.eval.benchmarks.base import Benchmark, Item, Results

BENCHMARKS: dict[str, Benchmark] = {
    benchmark.name: benchmark
    for module in (vqa, gqa, scienceqa, pope, mme, mmbench, seed, judged_image, video_qa, video_choice)
    for benchmark in module.BENCHMARKS
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}") from None


__all__ = ["BENCHMARKS", "Benchmark", "Item", "Results", "get_benchmark"]
