"""Precision and placement for `from_pretrained`: dtype, device map, 8-bit / 4-bit weights (bitsandbytes)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal

import torch

Quantization = Literal["8bit", "4bit"]

# Kept in full precision when quantising: the compressor's nn.MultiheadAttention reads its projection weights
# directly (a bitsandbytes Linear would break it), the projector and the vision tower are small and
# precision-sensitive, and the output layer is left alone as transformers does by default.
QUANTIZATION_SKIP_MODULES = ("vision_tower", "compressor", "projector", "lm_head")

DTYPE_NAMES: dict[str, torch.dtype | str] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "auto": "auto",
}


def is_hub_id(source: str | os.PathLike) -> bool:
    """Whether `source` reads as a hub id ("namespace/name") rather than a local path."""
    text = str(source)
    return not (Path(text).expanduser().exists() or text.startswith((".", "/", "~")) or text.count("/") != 1)


def check_device(device: str | torch.device) -> torch.device:
    """`device` parsed, and present on this machine; ValueError naming it otherwise ("cuda" without CUDA, "gpu")."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"invalid device {str(device)!r}; use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"device {str(device)!r}: no CUDA device is available (torch {torch.__version__}, {build})")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r}: MPS is not available on this machine")
    elif parsed.type not in ("cpu", "cuda", "mps", "xpu", "meta"):
        raise ValueError(f"device {str(device)!r} is not supported; use cpu, cuda, cuda:N or mps")
    return parsed


def weight_report_error(source: str, report: dict) -> str | None:
    """A message naming the weights a checkpoint lacks, has in excess or has in the wrong shape
    (from `from_pretrained(..., output_loading_info=True)`); None when everything matched."""
    problems = []
    for key, what in (
        ("missing_keys", "missing from the checkpoint"),
        ("unexpected_keys", "in the checkpoint but not in the model"),
        ("mismatched_keys", "of another shape in the checkpoint"),
    ):
        names = sorted(str(name[0] if isinstance(name, tuple) else name) for name in report.get(key) or ())
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            problems.append(f"{len(names)} weights {what} ({shown})")
    if not problems:
        return None
    return f"{source}: the weights do not match its config.json: " + "; ".join(problems)


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype | str:
    """A torch dtype, or one of `DTYPE_NAMES` ("bf16", "float16", "auto", ...) -> what from_pretrained takes."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        return dtype
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPE_NAMES)}")
    return DTYPE_NAMES[dtype]


def quantization_config(quantization: Quantization, compute_dtype: torch.dtype):
    """A BitsAndBytesConfig that quantises the LLM and the pre-fusion layers only (`QUANTIZATION_SKIP_MODULES`)."""
    from transformers import BitsAndBytesConfig

    skip = list(QUANTIZATION_SKIP_MODULES)
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=skip,
    )


def load_options(
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    device_map: str | dict | None = None,
    quantization: Quantization | None = None,
) -> dict:
    """Keyword arguments for `from_pretrained` (ours and `load_release`): `dtype`, `device_map`,
    and `quantization_config` for 8-bit / 4-bit weights.

    device: where the whole model goes when `device_map` is None ("cpu", "cuda", "cuda:1").
    device_map: "auto" (accelerate spreads the layers over the visible devices) or an explicit map.
    quantization: "8bit" or "4bit" via bitsandbytes; needs a CUDA device and the `bitsandbytes` package.
    Raises ValueError naming the setting that cannot be honoured here.
    """
    resolved = resolve_dtype(dtype)
    options: dict = {
        "dtype": resolved,
        "device_map": device_map if device_map is not None else {"": str(device)},
    }
    if quantization is None:
        if device_map is None:
            check_device(device)
        return options
    if quantization not in ("8bit", "4bit"):
        raise ValueError(f"quantization must be '8bit', '4bit' or None, got {quantization!r}")
    placements = list(device_map.values()) if isinstance(device_map, dict) else [device_map or device]
    on_cuda = all(
        str(place) == "auto" or str(place).startswith("cuda") or isinstance(place, int)
        for place in placements
    )
    if not on_cuda or not torch.cuda.is_available():
        where = "no CUDA device is available" if on_cuda else f"the model would be placed on {placements}"
        raise ValueError(
            f"{quantization} quantisation needs a CUDA GPU (bitsandbytes kernels), but {where}; "
            "load in float32/bfloat16 instead, or pass a cuda device"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(
            f"{quantization} quantisation needs the bitsandbytes package: pip install bitsandbytes"
        )
    compute_dtype = (
        resolved if isinstance(resolved, torch.dtype) and resolved != torch.float32 else torch.bfloat16
    )
    options["quantization_config"] = quantization_config(quantization, compute_dtype)
    return options


__all__ = [
    "QUANTIZATION_SKIP_MODULES",
    "Quantization",
    "check_device",
    "load_options",
    "quantization_config",
    "resolve_dtype",
    "weight_report_error",
]
