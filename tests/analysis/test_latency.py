"""`llava-mini bench`: every field filled with sane values on a tiny config (speed is never asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from llava_mini.analysis.latency import (
    bench_config,
    cache_nbytes,
    markdown_table,
    plot_report,
    run_benchmark,
    variant_configs,
)
from llava_mini.cli import main
from tests.conftest import tiny_config


def kv_bytes_per_token(config, element_size: int = 4) -> int:
    text = config.text_config
    return 2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim * element_size


def test_variants_share_the_backbone():
    config = tiny_config(prefusion_layers=2)
    variants = dict(variant_configs(config, (1, 2, 4)))
    assert list(variants) == ["baseline", "mini-C1", "mini-C2", "mini-C4"]
    assert variants["baseline"].compressor_type == "none" and variants["baseline"].prefusion_layers == 0
    assert variants["baseline"].num_vision_tokens() == config.num_patches == 16
    for size in (1, 2, 4):
        mini = variants[f"mini-C{size}"]
        assert (mini.compressor_type, mini.compressor_size, mini.prefusion_layers) == ("query", size, 2)
        assert mini.text_config.to_dict() == config.text_config.to_dict()
    with pytest.raises(ValueError, match="compressor_size"):
        variant_configs(config, (8,))  # the 4 x 4 grid has no 8 x 8 compression


def test_bench_presets_keep_the_image_token_in_the_vocabulary():
    for name in ("bench-cpu", "llava-mini-llama3.1-8b", "llava-mini-vicuna-7b"):
        config = bench_config(name)
        assert config.image_token_id < config.text_config.vocab_size
    assert bench_config("bench-cpu").num_patches == 256
    with pytest.raises(ValueError, match="unknown preset"):
        bench_config("nope")


def test_bench_on_a_tiny_config(tmp_path):
    config = tiny_config()
    report = run_benchmark(config, repeats=1, text_tokens=8, new_tokens=2, compressor_sizes=(1, 2))
    assert [v.name for v in report.variants] == ["baseline", "mini-C1", "mini-C2"]
    per_token = kv_bytes_per_token(config)
    for variant in report.variants:
        tokens = variant.vision_tokens_per_image
        assert variant.kv_bytes_per_image == per_token * tokens
        assert variant.kv_bytes_per_frame == per_token * tokens
        assert variant.prompt_tokens == 8 + tokens
        assert 0 < variant.prefill_ms <= variant.ttft_ms
        assert variant.decode_tokens_per_s > 0
        assert variant.peak_memory_bytes >= variant.kv_bytes_per_image  # at least its own cache
        assert variant.parameters > 0
        assert len(variant.prefill_ms_runs) == len(variant.ttft_ms_runs) == 1
    baseline, mini = report.variants[0], report.variants[1]
    assert baseline.vision_tokens_per_image == 16 and mini.vision_tokens_per_image == 1
    assert (baseline.prefill_speedup, baseline.decode_speedup, baseline.kv_ratio) == (1.0, 1.0, 1.0)
    assert mini.kv_ratio == pytest.approx(1 / 16)
    assert mini.prefill_speedup == pytest.approx(baseline.prefill_ms / mini.prefill_ms)
    assert "| mini-C2 | 4 |" in markdown_table(report)
    figure = plot_report(report, tmp_path / "bench.png")
    assert figure.read_bytes().startswith(b"\x89PNG") and figure.stat().st_size > 1000
    with pytest.raises(ValueError, match="repeats"):
        run_benchmark(config, repeats=0)


def test_cache_nbytes_rejects_non_caches():
    with pytest.raises(TypeError, match="transformers Cache"):
        cache_nbytes((torch.zeros(2), torch.zeros(2)))


def test_bench_command(tmp_path, capsys):
    plot = tmp_path / "bench.png"
    argv = ["bench", "--preset", "tiny", "--repeats", "1", "--sizes", "1", "--text-tokens", "4"]
    assert main(argv + ["--new-tokens", "1", "--json", "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["preset"] == "tiny" and report["device"] == "cpu" and report["dtype"] == "float32"
    assert [v["name"] for v in report["variants"]] == ["baseline", "mini-C1"]
    assert "profiler" in report["memory_method"]
    assert plot.stat().st_size > 1000
    assert main(["bench", "--preset", "tiny", "--sizes", "x"]) == 2
